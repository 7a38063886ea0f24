"""Sharded checkpoints of FSDP runs: each process writes its own shards (``torch.distributed.checkpoint``).

A sharded checkpoint is a ``step-XXXXXXXX/`` folder, like a full one (``checkpoint.py``), holding

- ``shard-RRRRR-model-00001-of-00001.safetensors``, one per process that holds anything: its shards of
  the weights (keys ``model.<name>``), of the optimizer state (``optimizer.<name>.<state>``, e.g.
  ``optimizer.head.weight.exp_avg``) and of the best-val weights (``best.<name>``); each tensor's
  offset in the full tensor is in the file's safetensors header (``DCP_SHARDING_INFO``). Written by
  ``torch.distributed.checkpoint.save`` through its safetensors writer (``HuggingFaceStorageWriter``
  with ``save_distributed=True``), so reading never unpickles (DCP's default ``.metadata`` file is a
  pickle; this layout has none: the headers are the metadata);
- ``state.json``: format ``ssmkit-sharded-checkpoint``, then the full layout's fields (step, progress,
  config, every process's RNG states, the world size, ...), the optimizer's param groups and scalar
  state with parameters named (not numbered), ``parts`` (which of model / optimizer / best it holds),
  and the size and SHA-256 of every shard file;
- ``run.json`` as in the full layout.

The folder appears atomically: process 0 opens the temporary folder (``checkpoint.checkpoint_folder``,
the one home of atomic checkpoint writes), every process writes its shards into it, each hashes its
share of the files, and process 0 writes state.json and renames the folder into place. A process
killed while writing leaves a hidden temporary folder, removed by the next save; the newest complete
checkpoint stays usable.

Reading: ``load_sharded`` (a resume) has every process read its own shards straight into its
sharded parameters and optimizer state; it needs the world size the checkpoint was written with.
``read_sharded_in_full`` assembles the full tensors in one process without a process group
(``ssmkit eval``, ``checkpoint.read_checkpoint``), and ``full_copy`` writes them as a full checkpoint,
which resumes on any number of processes.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..io import write_text
from .checkpoint import (
    BEST, MODEL, OPTIMIZER, RUN, SHARDED_FORMAT, STATE, VERSION, CheckpointError, checkpoint_folder,
    checkpoint_path, file_record, join_optimizer_state, read_state, save_checkpoint, split_optimizer_state,
    verify_file, write_state,
)
from .distributed import Dist
from .run_folder import read_run

PARTS = {"model": MODEL, "optimizer": OPTIMIZER, "best": BEST}  # key prefix -> the full layout's file
SUFFIX = ".safetensors"


def _objects(value: Any, d: Dist) -> list[Any]:
    """Every process's ``value``, in rank order."""
    if d.world == 1 or not dist.is_initialized():
        return [value]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, value)
    return out


def _raise_first(errors: list[str | None]) -> None:
    """Every process raises the first error any of them found (so none waits in a collective)."""
    found = [e for e in errors if e]
    if found:
        raise CheckpointError(found[0])


def _failures(e: BaseException) -> str:
    """DCP's CheckpointException (a BaseException holding every process's error) as one line each."""
    failures = getattr(e, "failures", None)
    if not failures:
        return f"{type(e).__name__}: {e}"
    return "; ".join(f"process {rank}: {type(exc).__name__}: {exc}" for rank, (exc, _) in sorted(failures.items()))


def _no_dist() -> bool:
    return not dist.is_initialized()


@contextlib.contextmanager
def _quiet_one_process() -> Iterator[None]:
    """DCP warns whenever it runs without a process group; for ssmkit that is the intended one-process
    read (and a one-process run's save), not news."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


# ---------------------------------------------------------------- writing


def save_sharded(directory: str | Path, step: int, model: nn.Module, opt: torch.optim.Optimizer,
                 best: dict[str, Tensor] | None, state: dict[str, Any], keep: int,
                 documents: dict[str, Any] | None, d: Dist) -> Path:
    """Write ``step-XXXXXXXX`` in the sharded layout (a collective: every process calls it). ``best`` is
    each process's shards of the best-val weights (``distributed.model_state(..., sharded=True)``)."""
    from torch.distributed.checkpoint import HuggingFaceStorageWriter, save
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    tensors = {f"model.{k}": v for k, v in get_model_state_dict(model).items()}
    opt_tensors, opt_rest = split_optimizer_state(get_optimizer_state_dict(model, opt))  # keyed "<name>.<state>"
    tensors.update({f"optimizer.{k}": v for k, v in opt_tensors.items()})
    if best is not None:
        tensors.update({f"best.{k}": v for k, v in best.items()})
    parts = ["model", "optimizer"] + (["best"] if best is not None else [])
    with contextlib.ExitStack() as stack:
        tmp, error = None, None
        if d.main:
            try:
                tmp = str(stack.enter_context(checkpoint_folder(directory, step, keep)))
            except OSError as e:
                error = f"checkpoint {checkpoint_path(directory, step)}: cannot create its temporary folder ({e})"
        tmp, error = _objects((tmp, error), d)[0]
        _raise_first([error])
        try:
            with _quiet_one_process():
                save(tensors, storage_writer=HuggingFaceStorageWriter(tmp, save_distributed=True), no_dist=_no_dist())
        except (Exception, CheckpointException) as e:  # every process gets the same CheckpointException
            raise CheckpointError(f"checkpoint {checkpoint_path(directory, step)}: writing the shards failed "
                                  f"({_failures(e)}); the previous checkpoint is kept") from None
        records, error = {}, None
        try:  # every process hashes its share of the files (on a shared file system all see all)
            names = sorted(p.name for p in Path(tmp).glob(f"*{SUFFIX}"))
            records = {n: file_record(Path(tmp) / n) for n in names[d.rank::d.world]}
        except OSError as e:
            error = f"checkpoint {checkpoint_path(directory, step)}: cannot read back a shard file ({e})"
        gathered = _objects((records, error), d)
        _raise_first([e for _, e in gathered])
        if d.main:
            files = {n: rec for part, _ in gathered for n, rec in part.items()}
            meta = {"format": SHARDED_FORMAT, "version": VERSION, "step": step, **state, "optimizer": opt_rest,
                    "parts": parts, "files": dict(sorted(files.items()))}
            write_state(Path(tmp), meta, documents)
    return checkpoint_path(directory, step)


# ---------------------------------------------------------------- checking


def _stray_files(path: Path, meta: dict[str, Any]) -> str | None:
    """Safetensors files in the folder that state.json does not list (the reader would read them)."""
    stray = sorted(p.name for p in path.glob(f"*{SUFFIX}") if p.name not in meta["files"])
    if stray:
        return f"{path}: {stray} are not listed in {STATE}; a sharded checkpoint holds only its own shard files"
    return None


def _check_parts(path: Path, meta: dict[str, Any]) -> None:
    parts = meta.get("parts")
    if not isinstance(parts, list) or not {"model", "optimizer"} <= set(parts) or not set(parts) <= set(PARTS):
        raise CheckpointError(f"{path / STATE}: field 'parts' must list 'model', 'optimizer' and optionally "
                              f"'best', got {parts!r}")


def verify_shards(path: Path, meta: dict[str, Any], d: Dist) -> None:
    """Sizes and SHA-256 of every shard file, each process checking its share; all raise together."""
    error = _stray_files(path, meta)
    if error is None:
        try:
            for name in sorted(meta["files"])[d.rank::d.world]:
                verify_file(path, name, meta["files"][name])
        except CheckpointError as e:
            error = str(e)
    _raise_first(_objects(error, d))


def check_world(path: Path, meta: dict[str, Any], world: int) -> None:
    """A sharded checkpoint resumes on the number of processes that wrote it (module doc)."""
    saved = meta.get("world_size")
    if saved != world:
        raise CheckpointError(
            f"{path}: a sharded checkpoint written by {saved} process(es), resumed on {world}; a sharded resume "
            f"needs the same number: relaunch with torchrun --nproc_per_node {saved} (over all nodes: {saved} "
            "processes), or convert it to a full checkpoint, which resumes on any number of processes (the "
            "random streams then restart from the seed): "
            f"python -c \"from ssmkit.training import full_copy; full_copy('{path}', 'NEW_RUN_FOLDER')\", then "
            "resume from NEW_RUN_FOLDER")


# ---------------------------------------------------------------- reading


def _reader(path: Path):
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    return HuggingFaceStorageReader(str(path))


def _load(template: dict[str, Tensor], path: Path, what: str, alone: bool) -> None:
    """Fill ``template`` (full tensors, ``alone``: in this process only; or this process's shards, with
    the others) from the shard files; a mismatch names the checkpoint."""
    from torch.distributed.checkpoint import load
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        with _quiet_one_process():
            load(template, storage_reader=_reader(path), no_dist=alone or _no_dist())
    except (Exception, CheckpointException) as e:  # DCP gathers every process's failure into one
        raise CheckpointError(f"{path} does not fit {what}: {_failures(e)}") from None


def load_sharded(path: Path, meta: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer, d: Dist
                 ) -> dict[str, Tensor] | None:
    """Resume: every process reads its shards of the weights and optimizer state into ``model`` and
    ``opt`` (a collective); returns its shards of the best-val weights (None when not saved)."""
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict, get_optimizer_state_dict, set_model_state_dict, set_optimizer_state_dict,
    )

    _check_parts(path, meta)
    check_world(path, meta, d.world)
    verify_shards(path, meta, d)
    weights = get_model_state_dict(model)
    opt_state = get_optimizer_state_dict(model, opt)  # creates the state a fresh optimizer lacks
    opt_tensors, _ = split_optimizer_state(opt_state)
    best = {k: torch.empty_like(v) for k, v in weights.items()} if "best" in meta["parts"] else None
    template = {**{f"model.{k}": v for k, v in weights.items()},
                **{f"optimizer.{k}": v for k, v in opt_tensors.items()},
                **({f"best.{k}": v for k, v in best.items()} if best is not None else {})}
    _load(template, path, "this model and optimizer", alone=False)
    set_model_state_dict(model, {k: template[f"model.{k}"] for k in weights})
    state: dict[str, dict[str, Any]] = {}
    for key in opt_tensors:
        name, _, entry = key.rpartition(".")
        state.setdefault(name, {})[entry] = template[f"optimizer.{key}"]
    for name, entries in meta["optimizer"]["scalars"].items():
        state.setdefault(name, {}).update(entries)
    groups = join_optimizer_state({}, {"param_groups": meta["optimizer"]["param_groups"], "scalars": {}})
    try:
        set_optimizer_state_dict(model, opt, {"state": state, "param_groups": groups["param_groups"]})
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path / STATE}: the optimizer state does not fit this run's optimizer: {e}") from None
    return best


def read_sharded_in_full(path: Path, meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Tensor]]]:
    """The whole checkpoint in this process (no process group needed), as ``checkpoint.read_checkpoint``
    returns a full one: {MODEL, OPTIMIZER (parameters numbered in group order), BEST} and state.json
    with its ``optimizer`` entry numbered the same way."""
    _check_parts(path, meta)
    error = _stray_files(path, meta)
    if error:
        raise CheckpointError(error)
    for name, rec in meta["files"].items():
        verify_file(path, name, rec)
    try:
        layout = _reader(path).read_metadata().state_dict_metadata
    except Exception as e:  # safetensors raises its own error type for malformed files
        raise CheckpointError(f"{path}: a shard file is not a readable safetensors file ({e})") from None
    full = {k: torch.empty(m.size, dtype=m.properties.dtype) for k, m in layout.items()}
    _load(full, path, "its own shard layout", alone=True)
    files: dict[str, dict[str, Tensor]] = {PARTS[p]: {} for p in meta["parts"]}
    for key, value in full.items():
        part, _, name = key.partition(".")
        if part not in meta["parts"]:
            raise CheckpointError(f"{path}: tensor {key!r} belongs to none of the saved parts {meta['parts']}")
        files[PARTS[part]][name] = value
    groups = meta["optimizer"]["param_groups"]
    number = {name: i for i, name in enumerate(n for g in groups for n in g["params"])}
    optimizer = {}
    for key, value in files[OPTIMIZER].items():
        name, _, entry = key.rpartition(".")
        if name not in number:
            raise CheckpointError(f"{path}: optimizer state {key!r} is for no parameter of the saved param groups")
        optimizer[f"{number[name]}.{entry}"] = value
    files[OPTIMIZER] = optimizer
    numbered = {"param_groups": [{**g, "params": [number[n] for n in g["params"]]} for g in groups],
                "scalars": {str(number[n]): v for n, v in meta["optimizer"]["scalars"].items()}}
    return {**meta, "optimizer": numbered}, files


def full_copy(checkpoint: str | Path, directory: str | Path, keep: int = 1) -> Path:
    """Write the sharded checkpoint ``checkpoint`` (a step-XXXXXXXX folder) as a full checkpoint of the
    same step in the run folder ``directory`` (with its run.json), in one process: a resume from it
    runs on any number of processes. Returns the new checkpoint folder."""
    path = Path(checkpoint)
    meta = read_state(path)
    if meta["format"] != SHARDED_FORMAT:
        raise CheckpointError(f"{path}: already a full checkpoint (format {meta['format']!r}); resume from it as is")
    meta, files = read_sharded_in_full(path, meta)
    run = read_run(path) or read_run(path.parent)
    state = {k: v for k, v in meta.items() if k not in ("format", "version", "step", "files", "parts")}
    out = save_checkpoint(directory, meta["step"], files, state, keep, documents={RUN: run} if run else None)
    if run is not None:
        write_text(Path(directory) / RUN, json.dumps(run, indent=1) + "\n")
    return out
