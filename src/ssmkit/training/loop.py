"""The training loop: ``fit`` trains a task's model, ``evaluate`` averages a split's metrics exactly.

One optimizer step per global batch: AdamW over the tag-built parameter groups, warmup + cosine
lr, gradient clipping, optional bf16 autocast and truncated BPTT (``tbptt.py``). Evaluation on val
every ``eval_every`` steps drives early stopping, and the test split is scored at the end with the
best-val weights. The data stream is a pure function of (seed, epoch), so a run is fully described
by its weights, optimizer state, step, data position and RNG states: that is what a checkpoint
holds, and ``fit(..., resume=True)`` continues bit for bit where the last one left off. Under FSDP
the checkpoints are sharded by default (``sharded_checkpoint.py``): each process writes and reads
its own shards, and the rest is the same. Beside the
checkpoints and in each one, fit writes run.json, the run's description (``description.py``), so
that ``ssmkit eval`` can rebuild the model of any checkpoint.
Under ``torchrun`` the same code runs on every process (``distributed.py``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from .. import __version__, runtime
from ..io import write_text
from ..models.backbone import Backbone
from ..tasks.base import Batch, Task
from ..tasks.metrics import improves, task_metric
from . import context_parallel, distributed
from .checkpoint import (
    BEST, MODEL, OPTIMIZER, RUN, SHARDED_FORMAT, CheckpointError, decode_bytes, encode_bytes,
    join_optimizer_state, latest_checkpoint, read_checkpoint, read_state, save_checkpoint, split_optimizer_state,
)
from ..config import check_types
from .config import TrainConfig
from .description import describe_run
from .distributed import Dist, all_gather_bytes, all_sum
from .optim import param_groups
from .progress import Reporter, TrainMeter
from .run_folder import OPERATIONAL, RunFolderError, claim, read_run, run_differences
from .schedule import warmup_cosine
from .sharded_checkpoint import load_sharded, save_sharded
from .tbptt import forward_backward, loss_weight


@dataclasses.dataclass
class Position:
    """Where a run is, beyond its tensors: saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epoch of the next training batch
    batch_index: int = 0  # index of the next training batch within its epoch
    best_metric: float | None = None  # best val metric so far
    best_step: int = 0
    evals_since_best: int = 0
    stopped_early: bool = False
    lr_scale: float = 1.0  # on_nonfinite=skip halves it at each skipped step
    skipped_steps: int = 0  # steps whose update was dropped for a non-finite loss or gradient
    skips_in_a_row: int = 0


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss, gradient or weight; nothing non-finite was saved."""


def steps_per_epoch(task: Task, batch_size: int, world: int) -> int:
    n = task.info.sizes.get("train", 0)
    if n <= 0:
        raise ValueError(f"invalid config value for 'epochs': task {task.info.name!r} has no fixed epoch "
                         f"(sizes['train'] = {n}); set steps instead")
    full, rest = divmod(n, batch_size)
    return full + (rest >= world)  # a last batch with fewer rows than processes is skipped


def train_batches(task: Task, batch_size: int, seed: int, epoch: int, index: int, world: int
                  ) -> Iterator[tuple[int, int, Batch]]:
    """(epoch, index, global batch) from the data position (epoch, index) on, epoch after epoch."""
    while True:
        produced = False
        for i, batch in enumerate(task.batches("train", batch_size, seed=seed, epoch=epoch)):
            produced = True
            if i >= index and batch.inputs.shape[0] >= world:  # every process needs at least one row
                yield epoch, i, batch
        if not produced:
            raise ValueError(f"task {task.info.name!r} produced no training batches in epoch {epoch}")
        epoch, index = epoch + 1, 0


def _tokens(batch: Batch) -> int:
    return batch.inputs.shape[0] * batch.inputs.shape[1] if batch.mask is None else int(batch.mask.sum())


@torch.no_grad()
def evaluate(task: Task, model: nn.Module, split: str, batch_size: int = 256, *, bf16: bool = False
             ) -> dict[str, float]:
    """Exact metric averages over a whole split (each process scores its slice of every batch)."""
    if isinstance(model, DistributedDataParallel):
        model = model.module
    device = next(model.parameters()).device
    d = distributed.current(device)
    was_training = model.training
    model.eval()
    totals: dict[str, list[float]] = {}
    for batch in task.batches(split, batch_size):
        part = distributed.shard(batch, d)
        if part.inputs.shape[0] == 0:
            if distributed.is_sharded(model):  # FSDP gathers weights in every forward: every rank joins
                model(batch.inputs[:1].to(device), **Batch(batch.inputs[:1], batch.targets[:1], *(
                    None if t is None else t[:1] for t in (batch.mask, batch.dt))).to(device).model_kwargs())
            continue
        part = part.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            outputs = model(part.inputs, **part.model_kwargs())  # mask, and dt when the batch has it
        for name, (total, count) in task.metrics(outputs.float(), part).items():
            acc = totals.setdefault(name, [0.0, 0])
            acc[0] += total
            acc[1] += count
    model.train(was_training)
    # with fewer rows than processes some ranks score nothing: every rank sums the same names
    names = distributed.all_names(list(totals), d)
    flat = all_sum([v for n in names for v in totals.get(n, (0.0, 0))], d)
    averages = {n: flat[2 * i] / max(flat[2 * i + 1], 1) for i, n in enumerate(names)}
    return {**averages, **task.derived_metrics(averages)}


def fit(task: Task, model: nn.Module, cfg: TrainConfig | None = None, *,
        log: Callable[[str], None] = print, resume: bool | str | Path = False,
        run: dict[str, Any] | None = None, overwrite: bool = False) -> dict[str, float]:
    """Train ``model`` on ``task``; returns test metrics (``test_<name>``), best val metric and timing.

    ``resume=True`` continues from the newest checkpoint in ``cfg.checkpoint_dir``; a path names a
    checkpoint folder. The model ends with the best-val weights when the run evaluated on val.
    With ``cfg.checkpoint_dir`` set, ``run`` (``ssmkit.runs.RunConfig.to_json()``; default: described
    from the task's and the model's recipes) is written as run.json beside the checkpoints and in each.

    The checkpoint and log folders are claimed first (``run_folder.claim``: an OS lock, and a folder
    that holds another run is refused unless ``resume`` continues it or ``overwrite`` moves it
    aside). A resume compares the saved run description with ``run``: a change of the model or the
    data is refused naming each field, a change of training settings is a warning. Nothing of the
    run is rewritten before these checks pass.
    """
    cfg = TrainConfig() if cfg is None else cfg
    run = run if run is not None else describe_run(task, model, cfg)
    d = distributed.setup(cfg.device)
    clean = False
    try:
        with contextlib.ExitStack() as folders:
            _claim_folders(folders, cfg, d, bool(resume), overwrite, log)
            if cfg.deterministic:  # docs/training.md: bitwise-reproducible on CPU
                folders.enter_context(runtime.deterministic())
            result = _fit(task, model, cfg, d, log, resume, run)
        clean = True
        return result
    finally:
        distributed.teardown(d, clean)


def _claim_folders(stack: contextlib.ExitStack, cfg: TrainConfig, d: Dist, resume: bool, overwrite: bool,
                   log: Callable[[str], None]) -> None:
    """Process 0 claims the run's folders; under torchrun every process learns whether it could."""
    error = None
    if d.main:
        try:
            for folder in dict.fromkeys(str(Path(f).resolve()) for f in (cfg.checkpoint_dir, cfg.log_dir) if f):
                stack.enter_context(claim(folder, resume=resume, overwrite=overwrite, log=log))
        except RunFolderError as e:
            error = e
    failed = all_sum([float(error is not None)], d)[0] if d.world > 1 else float(error is not None)
    if error is not None:
        raise error
    if failed:
        raise RunFolderError("process 0 could not claim the run folders (see its error)")


def _fit(task: Task, model: nn.Module, cfg: TrainConfig, d: Dist, log: Callable[[str], None],
         resume: bool | str | Path, run: dict[str, Any] | None) -> dict[str, float]:
    start = time.perf_counter()
    torch.manual_seed(cfg.seed + d.rank)  # dropout streams differ between processes
    model.to(d.device)
    checkpoint_blocks(model, cfg.checkpoint_activations)
    comm = _context_parallel(cfg, d, task, model)
    if comm is None and cfg.batch_size < d.world:
        raise ValueError(f"invalid config value for 'batch_size': {cfg.batch_size} is fewer rows than the "
                         f"{d.world} processes")
    row_world = 1 if comm is not None else d.world  # context-parallel ranks share every row
    total = cfg.epochs * steps_per_epoch(task, cfg.batch_size, row_world) if cfg.epochs else cfg.steps
    warmup = int(cfg.warmup_fraction * total)
    metric = task_metric(task.info.kind, task.info.metric) if cfg.val_metric == "auto" else cfg.val_metric
    fsdp = cfg.parallel == "fsdp" and d.world > 1
    if fsdp:  # the optimizer must see the sharded parameters
        distributed.wrap(model, d, "fsdp")
    opt = torch.optim.AdamW(param_groups(model, cfg.lr, cfg.weight_decay, cfg.ssm_lr), betas=cfg.betas)
    peaks = [g["lr"] for g in opt.param_groups]
    pos, best, notes = Position(), None, []
    if resume:
        pos, best, notes = _restore(resume, cfg, d, task, model, opt, run)
    if cfg.checkpoint_dir and run is not None and d.main:  # before training: an interrupted run is described too
        write_text(Path(cfg.checkpoint_dir) / RUN, json.dumps(run, indent=1) + "\n")
    report = Reporter(cfg, total, pos.step, d, log, resumed=bool(resume))
    for note in notes:
        report.message(note)
    n_params = sum(p.numel() for p in model.parameters())
    report.message(f"train {task.info.name}: {total} steps{f' ({cfg.epochs} epochs)' if cfg.epochs else ''}, "
                   f"global batch {cfg.batch_size} over {d.world} process(es) on {d.device}"
                   + (f" ({cfg.parallel})" if d.world > 1 and comm is None else "")
                   + (f", each sequence split over {comm.world} ranks" if comm is not None else "") + ", "
                   f"{n_params} parameters" + (f"; resumed at step {pos.step}" if resume else ""))
    net = model if comm is not None or fsdp else distributed.wrap(model, d)
    meter = TrainMeter()
    batches = train_batches(task, cfg.batch_size, cfg.seed, pos.epoch, pos.batch_index, row_world)
    model.train()
    try:
        while pos.step < total and not pos.stopped_early:
            epoch, index, batch = next(batches)
            local = distributed.shard(batch, d) if comm is None else context_parallel.split_batch(batch, comm)
            weight = loss_weight(task, local)
            global_weight = all_sum([weight], d)[0]
            factor = warmup_cosine(pos.step, total, warmup, cfg.min_lr_ratio)
            for group, peak in zip(opt.param_groups, peaks):
                group["lr"] = peak * factor * pos.lr_scale
            log_now = (pos.step + 1) % cfg.log_every == 0 or pos.step + 1 == total
            opt.zero_grad(set_to_none=True)
            loss_sum, outputs = forward_backward(task, net, local.to(d.device), chunk=cfg.tbptt,
                                                 scale=d.world / max(global_weight, 1), bf16=cfg.bf16,
                                                 keep_outputs=log_now)
            if comm is not None:  # each rank holds its share of every gradient (context_parallel module doc)
                context_parallel.reduce_gradients(model, comm, average=True)
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            if cfg.grad_clip:
                norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            else:
                norm = nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=d.device)
            if isinstance(norm, DTensor):  # FSDP: the global norm, replicated
                norm = norm.full_tensor()
            if _finite(loss_sum, norm, d):
                opt.step()
                pos.skips_in_a_row = 0
                meter.add(loss_sum, weight, _tokens(local))
            else:
                _diverged(cfg, pos, loss_sum / max(weight, 1), norm, report)
            pos.step, pos.epoch, pos.batch_index = pos.step + 1, epoch, index + 1
            report.advance()
            if log_now:
                for part, out in outputs:
                    meter.add_metrics(task.metrics(out.float(), part))
                report.record("train", pos.step, {"epoch": epoch, "lr": peaks[0] * factor, **meter.summary(d)})
            if cfg.eval_every and (pos.step % cfg.eval_every == 0 or pos.step == total):
                with _whole_rows(model, comm):
                    best = _validate(task, model, cfg, pos, metric, best, report)
            if cfg.checkpoint_dir and (pos.step == total or pos.stopped_early
                                       or (cfg.checkpoint_every and pos.step % cfg.checkpoint_every == 0)):
                _save(cfg, d, task, pos, model, opt, best, report, run)
        result: dict[str, float] = {"steps": pos.step}
        if best is not None:
            distributed.load_model_state(model, best, cfg.sharded_checkpoints)
            result.update({f"best_val_{metric}": pos.best_metric, "best_step": pos.best_step})
        with _whole_rows(model, comm):
            test = evaluate(task, model, "test", cfg.eval_batch_size, bf16=cfg.bf16)
        report.record("test", pos.step, {**test, "weights": "best-val" if best is not None else "final"})
        result.update({f"test_{k}": v for k, v in test.items()})
        result["train_seconds"] = time.perf_counter() - start
        return result
    finally:
        report.close()
        if comm is not None:
            context_parallel.disable(model)


def _context_parallel(cfg: TrainConfig, d: Dist, task: Task, model: nn.Module) -> context_parallel.Comm | None:
    """Context parallelism over every process when ``cfg.context_parallel`` > 1 (checked here, at the start)."""
    R = cfg.context_parallel
    if R == 1:
        return None
    if R != d.world:
        raise ValueError(f"invalid config value for 'context_parallel': {R} must equal the number of processes "
                         f"({d.world}); launch with torchrun --nproc_per_node {R}")
    if not task.info.kind.per_position:
        raise ValueError(f"invalid config value for 'context_parallel': splitting sequences needs a per-position "
                         f"task (tag, lm, predict, trajectory), task {task.info.name!r} is '{task.info.kind}'")
    comm = context_parallel.Comm.of()
    context_parallel.enable(model, comm)
    return comm


def _whole_rows(model: nn.Module, comm: context_parallel.Comm | None):
    """Evaluation scores whole rows, each process its slice of them, with context parallelism paused."""
    return contextlib.nullcontext() if comm is None else context_parallel.paused(model)


def checkpoint_blocks(model: nn.Module, on: bool) -> None:
    """Turn activation checkpointing of every ``Backbone`` in ``model`` on or off (``checkpoint_activations``)."""
    stacks = [m for m in model.modules() if isinstance(m, Backbone)]
    if on and not stacks:
        raise ValueError(f"invalid config value for 'checkpoint_activations': {type(model).__name__} has no "
                         "residual stack (models.Backbone) whose blocks could be recomputed")
    for stack in stacks:
        stack.checkpoint_blocks = on


def _finite(loss_sum: Tensor, norm: Tensor, d: Dist) -> bool:
    """Whether this step's loss and global gradient norm are finite on every process (one host sync;
    under DDP the processes agree through one small all-reduce, so they stop or skip together)."""
    ok = bool(torch.isfinite(loss_sum) & torch.isfinite(norm))
    return all_sum([float(not ok)], d)[0] == 0 if d.world > 1 else ok


def _last_good(cfg: TrainConfig) -> str:
    if not cfg.checkpoint_dir:
        return "none (no checkpoint_dir)"
    path = latest_checkpoint(cfg.checkpoint_dir)
    return f"{path} (resume from it with --resume, e.g. with a lower lr)" if path else "none written yet"


def _diverged(cfg: TrainConfig, pos: Position, loss: Tensor, norm: Tensor, report: Reporter) -> None:
    """A step with a non-finite loss or gradient: stop (the default) or drop its update and halve the lr."""
    what = f"loss {float(loss):.4g}, gradient norm {float(norm):.4g}"
    if cfg.on_nonfinite == "skip" and pos.skips_in_a_row < cfg.max_skips:
        pos.lr_scale *= 0.5
        pos.skipped_steps += 1
        pos.skips_in_a_row += 1
        report.message(f"step {pos.step + 1}: {what}; update skipped, lr scale now {pos.lr_scale:g} "
                       f"({pos.skips_in_a_row} of {cfg.max_skips} skips in a row)")
        return
    tail = f" after {pos.skips_in_a_row} skipped steps in a row" if cfg.on_nonfinite == "skip" else ""
    raise DivergenceError(f"training diverged at step {pos.step + 1}: {what}{tail}; last good checkpoint: "
                          f"{_last_good(cfg)}")


def _nonfinite_weight(model: nn.Module, d: Dist) -> str | None:
    """The name of the first parameter of ``model`` holding NaN or Inf (None when all are finite);
    under FSDP each process checks its shards and the processes agree (so all raise together)."""
    bad = None
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p.to_local() if isinstance(p, DTensor) else p).all()):
            bad = name
            break
    if distributed.is_sharded(model) and all_sum([float(bad is not None)], d)[0] and bad is None:
        bad = "(a shard held by another process)"
    return bad


def _validate(task: Task, model: nn.Module, cfg: TrainConfig, pos: Position, metric: str,
              best: dict[str, Tensor] | None, report: Reporter) -> dict[str, Tensor] | None:
    """Score val, keep the best weights (a CPU copy), count evaluations without improvement."""
    values = evaluate(task, model, "val", cfg.eval_batch_size, bf16=cfg.bf16)
    report.record("val", pos.step, values)
    if metric not in values:
        raise ValueError(f"invalid config value for 'val_metric': {metric!r} is not reported by task "
                         f"{task.info.name!r} (it reports {sorted(values)})")
    value = values[metric]
    if improves(value, pos.best_metric, metric):
        pos.best_metric, pos.best_step, pos.evals_since_best = value, pos.step, 0
        return distributed.model_state(model, cfg.sharded_checkpoints)
    pos.evals_since_best += 1
    if cfg.patience and pos.evals_since_best >= cfg.patience:
        pos.stopped_early = True
        report.message(f"early stop at step {pos.step}: val {metric} has not improved on "
                       f"{pos.best_metric:.4g} (step {pos.best_step}) for {cfg.patience} evaluations")
    return best


def _rng_states(d: Dist) -> dict[str, list[str]]:
    """Every rank's generator states as base64 text (gathered: a collective)."""
    rng = {"torch_cpu": [encode_bytes(b) for b in all_gather_bytes(torch.get_rng_state().numpy().tobytes(), d)]}
    if d.device.type == "cuda":
        cuda = torch.cuda.get_rng_state(d.device).numpy().tobytes()
        rng["cuda"] = [encode_bytes(b) for b in all_gather_bytes(cuda, d)]
    return rng


def _config_json(cfg: TrainConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _save(cfg: TrainConfig, d: Dist, task: Task, pos: Position, model: nn.Module,
          opt: torch.optim.Optimizer, best: dict[str, Tensor] | None, report: Reporter,
          run: dict[str, Any] | None) -> None:
    bad = _nonfinite_weight(model, d)
    if bad is not None:  # finite loss and gradients, yet an update overflowed (e.g. a huge lr)
        raise DivergenceError(f"training diverged at step {pos.step}: weight {bad!r} holds NaN or Inf after the "
                              f"update; not saved; last good checkpoint: {_last_good(cfg)}")
    state = {"progress": dataclasses.asdict(pos), "config": _config_json(cfg), "rng": _rng_states(d),
             "task": task.info.name, "world_size": d.world,
             "versions": {"ssmkit": __version__, "torch": torch.__version__}}
    documents = {RUN: run} if run is not None else None
    if cfg.sharded_checkpoints:  # every process writes its shards (a collective)
        path = save_sharded(cfg.checkpoint_dir, pos.step, model, opt, best, state, cfg.keep_checkpoints,
                            documents, d)
        report.message(f"saved checkpoint {path} (sharded over {d.world} process(es))")
    else:
        weights, optimizer = distributed.full_model_state(model), distributed.full_optimizer_state(model, opt)
        if d.main:
            tensors, rest = split_optimizer_state(optimizer)
            files = {MODEL: weights, OPTIMIZER: tensors, **({BEST: best} if best is not None else {})}
            path = save_checkpoint(cfg.checkpoint_dir, pos.step, files, {**state, "optimizer": rest},
                                   cfg.keep_checkpoints, documents=documents)
            report.message(f"saved checkpoint {path}")
    distributed.barrier(d)  # nobody races ahead (or exits) before the checkpoint is on disk


def _check_resume_fields(meta: dict, path: Path) -> None:
    """What a resume reads beyond read_checkpoint's generic checks, as errors naming the field."""
    cpu = meta["rng"].get("torch_cpu")
    if not isinstance(cpu, list) or not cpu or not all(isinstance(r, str) for r in cpu):
        raise CheckpointError(f"{path / 'state.json'}: field 'rng.torch_cpu' must be a non-empty list of base64 "
                              "strings (one generator state per process)")
    opt = meta["optimizer"]
    if not isinstance(opt.get("param_groups"), list) or not isinstance(opt.get("scalars"), dict):
        raise CheckpointError(f"{path / 'state.json'}: field 'optimizer' must be an object with 'param_groups' "
                              "(a list) and 'scalars' (an object)")


def _restore(resume: bool | str | Path, cfg: TrainConfig, d: Dist, task: Task, model: nn.Module,
             opt: torch.optim.Optimizer, run: dict[str, Any] | None
             ) -> tuple[Position, dict[str, Tensor] | None, list[str]]:
    """Check that the checkpoint's run may continue as ``run``, then load weights, optimizer, position
    and RNG; returns notes to show."""
    if resume is True:
        if not cfg.checkpoint_dir:
            raise ValueError("resume=True needs checkpoint_dir (the folder holding step-XXXXXXXX checkpoints)")
        path = latest_checkpoint(cfg.checkpoint_dir)
        if path is None:
            raise FileNotFoundError(f"resume: no step-XXXXXXXX checkpoint in checkpoint_dir={cfg.checkpoint_dir!r}")
    else:
        path = Path(resume)
    meta = read_state(path)
    _check_resume_fields(meta, path)
    if meta.get("task") != task.info.name:
        raise CheckpointError(f"{path}: a checkpoint of task {meta.get('task')!r}, not {task.info.name!r}")
    saved_run = read_run(path) or read_run(path.parent)
    changes: list[str] = []
    if saved_run is not None and run is not None:
        refuse, changes = run_differences(saved_run, run)
        if refuse:
            raise RunFolderError(f"resume from {path} refused: these settings change the model or the data "
                                 f"(saved -> now): {'; '.join(refuse)}. Resume with the saved settings, or start a "
                                 "new run in another folder")
    else:  # a checkpoint without a run description: compare the training settings alone
        saved, now = meta["config"], _config_json(cfg)
        changes = [f"train.{k}: {saved.get(k)!r} -> {v!r}" for k, v in now.items()
                   if saved.get(k) != v and k not in OPERATIONAL]
    sharded = meta["format"] == SHARDED_FORMAT
    if sharded:  # every process reads its own shards (same world size; sharded_checkpoint.check_world)
        best = load_sharded(path, meta, model, opt, d)
    else:
        meta, files = read_checkpoint(path)
        try:
            distributed.load_full_model_state(model, files[MODEL])
        except (RuntimeError, KeyError) as e:
            raise CheckpointError(f"{path / MODEL} does not fit the model: {e}") from None
        best = files.get(BEST)
    bad = _nonfinite_weight(model, d)
    if bad is not None:
        raise CheckpointError(f"{path}: weight {bad!r} holds NaN or Inf (a diverged run); resume from an "
                              "earlier checkpoint")
    try:
        if not sharded:
            distributed.load_full_optimizer_state(model, opt, join_optimizer_state(files[OPTIMIZER], meta["optimizer"]))
        pos = Position(**meta["progress"])
        check_types(pos)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path / 'state.json'}: optimizer or progress state does not fit this run: {e}") from None
    if best is not None and sharded != cfg.sharded_checkpoints:  # the run changed checkpoint_format
        best = distributed.as_layout(best, model, cfg.sharded_checkpoints)
    notes = [f"resuming from {path} (step {pos.step})"]
    rng = meta["rng"]
    if len(rng["torch_cpu"]) == d.world:
        try:
            torch.set_rng_state(torch.frombuffer(bytearray(decode_bytes(rng["torch_cpu"][d.rank])), dtype=torch.uint8))
            if d.device.type == "cuda" and len(rng.get("cuda", [])) == d.world:
                cuda = torch.frombuffer(bytearray(decode_bytes(rng["cuda"][d.rank])), dtype=torch.uint8)
                torch.cuda.set_rng_state(cuda, d.device)
        except (ValueError, RuntimeError) as e:  # binascii.Error is a ValueError
            raise CheckpointError(f"{path / 'state.json'}: field 'rng' does not hold generator states: {e}") from None
    else:
        notes.append(f"resume: the checkpoint ran on {len(rng['torch_cpu'])} process(es), this run on "
                     f"{d.world}; random streams (dropout) restart from the seed")
    if changes:
        notes.append(f"resume: training settings differ from the checkpoint's (saved -> now): {'; '.join(changes)}; "
                     "the run will not repeat an uninterrupted one exactly")
    return pos, best, notes
