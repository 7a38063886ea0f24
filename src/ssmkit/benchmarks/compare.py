"""``ssmkit compare``: train several mixers on one task with the same budget and seeds, side by side.

For every (mixer, seed) the same ``RunConfig`` (a preset or the defaults, plus ``key=value``
overrides) is trained with ``training.fit``; then, on the trained model and one training batch
(B x L tokens):

- train tokens/s: forward + loss + backward, best of 3 after a warm-up call (no optimizer step);
- inference tokens/s: the forward alone under ``no_grad`` in eval mode, best of 3;
- activation memory: bytes of the tensors saved for backward by one training forward (each
  storage once, parameters excluded), through ``torch.autograd.graph.saved_tensors_hooks``:
  exact and the same on every device, it is what the architecture adds to training memory;
- peak memory: CUDA: the most allocated during one training step; CPU: parameters + gradients +
  activation memory (the resident set cannot show it: a warm allocator reuses freed pages);
- state size: floats of recurrent state per sequence after L tokens, summed over the layers
  (``state_size_at(L)``: attention's KV cache grows with L, a recurrent state does not).

Then ``speed.bench_mixers`` times the bare mixers at a few lengths, and their activation memory is
measured the same way, for the speed / memory plot.
``results.json`` holds every number with the versions and settings; the Markdown table shows the
mean ± sample std over seeds, the chance level (always answering the most frequent test answer)
and published numbers where the task's setting matches a paper's (``published.py``).
Forecasting tasks also get the seasonal naive forecast's test MSE / MAE (``tasks.naive_baseline``),
scored like the models: the task's own ``metrics`` over the same test batches, in the same
standardized units; the table shows MAE beside MSE and the baseline as a row.
Every file is written atomically (a temporary file in the same folder, then renamed).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .. import __version__
from ..io import atomic_write
from ..tasks import Task, chance_accuracy, higher_is_better, naive_baseline, primary_metric
from ..runs import RunConfig, build_model, build_task, resolve_run
from ..training import fit
from . import speed
from .published import published_for
from .timing import best_time

FORMAT, VERSION = "ssmkit-compare", 1
DEFAULT_PRESET = "selective_copy_small"
DEFAULT_MIXERS = ["mamba", "s4d", "attention", "lstm"]
DEFAULT_LENGTHS = [256, 1024, 4096]
SPEED_BATCH = 2  # sequences per call in the speed / memory vs length measurement


@dataclasses.dataclass
class CompareSpec:
    """What ``ssmkit compare`` runs; ``runs()`` turns it into one validated RunConfig per mixer."""

    mixers: list[str]
    task: str | None = None  # None: the preset's task
    preset: str | None = None  # None with task None: DEFAULT_PRESET
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    budget: int | None = None  # optimizer steps per run; None: the preset's
    overrides: list[str] = dataclasses.field(default_factory=list)
    lengths: list[int] = dataclasses.field(default_factory=lambda: list(DEFAULT_LENGTHS))

    def runs(self) -> dict[str, RunConfig]:
        if not self.mixers:
            raise ValueError("compare needs at least one mixer (--mixers a,b,c)")
        if len(set(self.mixers)) != len(self.mixers):
            raise ValueError(f"--mixers names a mixer twice: {self.mixers}")
        if not self.seeds:
            raise ValueError("compare needs at least one seed (--seeds 0,1)")
        if self.budget is not None and self.budget <= 0:
            raise ValueError(f"invalid value for --budget: {self.budget} steps (expected > 0)")
        if any(L <= 0 for L in self.lengths):
            raise ValueError(f"invalid value for --lengths: {self.lengths} (expected lengths > 0)")
        for item in self.overrides:
            if item.partition("=")[0].strip() in ("mixer", "seed"):
                raise ValueError(f"override {item!r}: compare sets the mixer and seed of each run; "
                                 "use --mixers and --seeds")
        budget = [f"steps={self.budget}", "epochs=0"] if self.budget is not None else []
        out = {mixer: resolve_run(self.task, mixer, self.preset, budget + self.overrides, DEFAULT_PRESET)
               for mixer in self.mixers}
        tasks = {(r.task, json.dumps(r.task_cfg, sort_keys=True)) for r in out.values()}
        if len(tasks) > 1:  # one task instance serves every run: the mixers must see the same data
            raise ValueError(f"the runs of {self.mixers} use different task settings {sorted(tasks)}")
        return out


# ---------------------------------------------------------------- measurements


def state_floats(model: torch.nn.Module, length: int) -> int:
    """Floats of recurrent state per sequence after ``length`` tokens, summed over the layers."""
    return sum(block.mixer.state_size_at(length) for block in model.backbone.blocks)


def saved_bytes(fn: Callable[[], object], exclude: set[int] = frozenset()) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn`` runs, each storage counted once
    (storages whose data_ptr is in ``exclude``, e.g. the parameters, are not counted)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in exclude:
            storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def measure_speed(task: Task, model: torch.nn.Module, batch_size: int, repeats: int = 3) -> dict[str, Any]:
    """Train and inference tokens/s, activation and peak memory of ``model`` on one training batch
    (see the module docstring)."""
    device = next(model.parameters()).device
    batch = next(iter(task.batches("train", batch_size, seed=0))).to(device)
    tokens = batch.inputs.shape[0] * batch.inputs.shape[1]
    was_training = model.training

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        task.loss(model(batch.inputs, mask=batch.mask), batch).backward()

    def forward() -> None:
        with torch.no_grad():
            model(batch.inputs, mask=batch.mask)

    model.train()
    params = list(model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    activation = saved_bytes(lambda: task.loss(model(batch.inputs, mask=batch.mask), batch),
                             exclude={p.untyped_storage().data_ptr() for p in params})
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        train_step()
        torch.cuda.synchronize(device)
        peak, kind = torch.cuda.max_memory_allocated(device), "cuda: max allocated in one training step"
    else:
        peak, kind = 2 * param_bytes + activation, "cpu: parameters + gradients + activations"

    def timed(fn: Callable[[], None]) -> float:
        if device.type != "cuda":
            return best_time(fn, repeats)

        def synced() -> None:
            fn()
            torch.cuda.synchronize(device)

        return best_time(synced, repeats)

    train_s = timed(train_step)
    model.eval()
    infer_s = timed(forward)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {"train_tokens_per_s": tokens / train_s, "inference_tokens_per_s": tokens / infer_s,
            "activation_mb": activation / 2**20, "peak_memory_mb": peak / 2**20, "peak_memory_kind": kind,
            "measured_batch": [batch_size, batch.inputs.shape[1]]}


def mixer_activation_mb(name: str, length: int, batch: int, d_model: int) -> float:
    """Activation memory (MB) of one bare mixer's forward on (batch, length, d_model) inputs."""
    from ..layers import create_mixer

    torch.manual_seed(0)
    mixer = create_mixer(name, d_model)
    x = torch.randn(batch, length, d_model, requires_grad=True)
    params = {p.untyped_storage().data_ptr() for p in mixer.parameters()}
    return saved_bytes(lambda: mixer(x), exclude=params) / 2**20


def run_one(run: RunConfig, task: Task, seed: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Train one (mixer, seed) and measure it; returns its results.json record."""
    cfg = dataclasses.replace(run.train, seed=seed)
    torch.manual_seed(seed)  # the model's initialization
    model = build_model(task, run)
    n_params = sum(p.numel() for p in model.parameters())
    wall, cpu = time.perf_counter(), time.process_time()
    result = fit(task, model, cfg, log=log, run=dataclasses.replace(run, train=cfg).to_json())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    metrics = {k: float(v) for k, v in result.items() if k.startswith(("test_", "best_val_"))}
    return {
        "mixer": run.model.mixer, "seed": seed, "task": task.info.name,
        "metrics": metrics, "steps": int(result["steps"]),
        "parameters": n_params, "state_size": state_floats(model, task.info.length), "state_length": task.info.length,
        **measure_speed(task, model, cfg.batch_size),
        "wall_seconds": wall, "cpu_seconds": cpu, "device": str(next(model.parameters()).device),
        "ssmkit_version": __version__, "torch_version": torch.__version__,
    }


def compare(spec: CompareSpec, out: str | Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the comparison, write results.json, results.md and the plots under ``out``; returns results."""
    from .plots import require_matplotlib

    runs = spec.runs()  # every config checked before anything trains
    require_matplotlib()
    out = Path(out)
    first = next(iter(runs.values()))
    task = build_task(first)
    info = task.info
    metric = primary_metric(info.kind)
    chance = chance_accuracy(task) if metric == "accuracy" else None
    baseline = naive_baseline(task)
    started = time.perf_counter()
    records = []
    for mixer, run in runs.items():
        for seed in spec.seeds:
            length = f"{run.train.epochs} epochs" if run.train.epochs else f"{run.train.steps} steps"
            log(f"== {mixer}, seed {seed}: {length} on {info.name}")
            log_dir = run.train.log_dir or str(out / "runs" / f"{mixer}-seed{seed}")  # metrics.jsonl per run
            records.append(run_one(dataclasses.replace(run, train=dataclasses.replace(run.train, log_dir=log_dir)),
                                   task, seed, log))
    log(f"== speed and memory vs length: {', '.join(runs)} at L = {spec.lengths}")
    rows = [dataclasses.asdict(r) for r in speed.bench_mixers(list(runs), spec.lengths, batch=SPEED_BATCH,
                                                              d_model=first.model.d_model)]
    for row in rows:
        row["activation_mb"] = mixer_activation_mb(row["name"], row["length"], SPEED_BATCH, first.model.d_model)
    task_cfg = dataclasses.asdict(task.cfg) if dataclasses.is_dataclass(getattr(task, "cfg", None)) else first.task_cfg
    results = {
        "format": FORMAT, "version": VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "task": info.name, "task_cfg": task_cfg, "task_info": dataclasses.asdict(info),
        "metric": f"test_{metric}", "higher_is_better": higher_is_better(metric), "chance": chance,
        "baseline": baseline,
        "mixers": list(runs), "seeds": list(spec.seeds), "preset": spec.preset or (DEFAULT_PRESET if spec.task is None else None),
        "overrides": list(spec.overrides), "budget_steps": spec.budget,
        "configs": {m: r.to_json() for m, r in runs.items()},
        "runs": records,
        "speed_vs_length": rows,
        "speed_settings": {"batch": SPEED_BATCH, "d_model": first.model.d_model, "lengths": list(spec.lengths)},
        # the papers' numbers are for the task's own sequence (e.g. 784 pixels), not another architecture's view of it
        "published": [dataclasses.asdict(p) for p in published_for(info.name, task_cfg, list(runs))]
        if first.arch == "sequence" else [],
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "ssmkit_version": __version__, "torch_version": torch.__version__,
        "total_seconds": time.perf_counter() - started,
    }
    write_results(results, out)
    return results


# ---------------------------------------------------------------- files


def write_results(results: dict[str, Any], out: Path) -> dict[str, Path]:
    """results.json, results.md and the PNG plots under ``out``; returns their paths."""
    from . import plots

    paths = {"json": out / "results.json", "table": out / "results.md",
             "metric_plot": out / "metric.png", "speed_plot": out / "speed_memory.png"}
    atomic_write(paths["json"], lambda p: p.write_text(json.dumps(results, indent=1, allow_nan=True) + "\n"))
    atomic_write(paths["table"], lambda p: p.write_text(markdown_table(results) + "\n"))
    atomic_write(paths["metric_plot"], lambda p: plots.metric_bars(results, p))
    atomic_write(paths["speed_plot"], lambda p: plots.speed_memory(results, p))
    results["files"] = {k: str(v) for k, v in paths.items()}
    return paths


def load_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (expected the results.json written by ssmkit compare)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); expected the results.json written by ssmkit compare") from None
    if not isinstance(results, dict) or results.get("format") != FORMAT:
        raise ValueError(f"{path}: not an ssmkit compare results file (format {FORMAT!r} expected)")
    return results


# ---------------------------------------------------------------- table


def secondary_metrics(results: dict[str, Any]) -> list[str]:
    """Test metrics shown beside the primary one: MAE beside MSE."""
    return ["test_mae"] if results["metric"] == "test_mse" else []


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per mixer: mean and sample std over seeds of the metric and every measurement."""
    out = []
    for mixer in results["mixers"]:
        recs = [r for r in results["runs"] if r["mixer"] == mixer]
        row: dict[str, Any] = {"mixer": mixer, "n": len(recs)}
        values = {"metric": [r["metrics"].get(results["metric"], math.nan) for r in recs]}
        for name in secondary_metrics(results):
            values[name] = [r["metrics"].get(name, math.nan) for r in recs]
        for key in ("parameters", "state_size", "train_tokens_per_s", "inference_tokens_per_s", "activation_mb",
                    "peak_memory_mb", "wall_seconds"):
            values[key] = [r[key] for r in recs]
        for key, v in values.items():
            row[key] = statistics.fmean(v)
            row[key + "_std"] = statistics.stdev(v) if len(v) > 1 else 0.0
        out.append(row)
    return out


def _metric_text(results: dict[str, Any], mean: float, std: float, n: int) -> str:
    scale = 100.0 if results["metric"].endswith("accuracy") else 1.0
    digits = 1 if scale == 100.0 else 4
    if math.isnan(mean):
        return "-"
    return f"{scale * mean:.{digits}f}" + (f" ± {scale * std:.{digits}f}" if n > 1 else "")


def _si(x: float) -> str:
    for unit, f in (("M", 1e6), ("k", 1e3)):
        if abs(x) >= f:
            return f"{x / f:.1f}{unit}"
    return f"{x:.0f}"


def markdown_table(results: dict[str, Any]) -> str:
    info = results["task_info"]
    metric = results["metric"].removeprefix("test_")
    unit = " %" if metric == "accuracy" else ""
    seeds = results["seeds"]
    steps = {r["steps"] for r in results["runs"]}
    published: dict[str, list[dict]] = {}
    for p in results["published"]:
        published.setdefault(p["mixer"], []).append(p)
    L = info["length"]
    lines = [
        f"Task `{info['name']}` ({info['kind']}, L = {L}; {info['notes']}); "
        + "".join(f"arch `{c['arch']}` {json.dumps(c['arch_cfg'], sort_keys=True)}; "
                  for c in list(results["configs"].values())[:1] if c.get("arch", "sequence") != "sequence")
        + f"{'/'.join(str(s) for s in sorted(steps))} steps per run; "
        + (f"seeds {', '.join(map(str, seeds))} (mean ± std)." if len(seeds) > 1 else f"seed {seeds[0]}.")
    ]
    if results["chance"] is not None:
        lines[0] += f" Chance: {100 * results['chance']:.1f} % (always the most frequent answer)."
    baseline = results.get("baseline")  # absent from files written before baselines existed
    if baseline is not None:
        lines[0] += (f" Baseline: {baseline['name']}, the last season of the lookback repeated, on the same "
                     "test windows in the same standardized units.")
    extra = secondary_metrics(results)
    header = ["mixer", f"test {metric}{unit}"] + [f"test {m.removeprefix('test_')}" for m in extra] + (
        ["published"] if published else []) + [
        "params", f"state floats (L={L})", "train tok/s", "infer tok/s", "act. MB", "peak MB", "wall s"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    if baseline is not None:
        values = [baseline["metrics"].get(m, math.nan) for m in [results["metric"], *extra]]
        cells = [baseline["name"], *(_metric_text(results, v, 0.0, 1) for v in values)]
        lines.append("| " + " | ".join(cells + ["-"] * (len(header) - len(cells))) + " |")
    for row in summarize(results):
        cells = [f"`{row['mixer']}`", _metric_text(results, row["metric"], row["metric_std"], row["n"])]
        cells += [_metric_text(results, row[m], row[m + "_std"], row["n"]) for m in extra]
        if published:
            cells.append("; ".join(
                ("fail" if p["accuracy"] is None else f"{p['accuracy']:g}") + f" ({p['model']})"
                for p in published.get(row["mixer"], [])) or "-")
        cells += [_si(row["parameters"]), _si(row["state_size"]), _si(row["train_tokens_per_s"]),
                  _si(row["inference_tokens_per_s"]), f"{row['activation_mb']:.1f}", f"{row['peak_memory_mb']:.1f}",
                  f"{row['wall_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    m = results["machine"]
    first = results["runs"][0]
    lines += ["", f"Measured with ssmkit {results['ssmkit_version']}, torch {results['torch_version']} on "
                  f"{m['cuda'] or 'CPU'} ({m['torch_threads']} threads); tokens/s on one batch of "
                  f"{first['measured_batch'][0]} x {first['measured_batch'][1]} (train: forward + backward); "
                  f"act. MB: tensors saved for backward; peak MB: {first['peak_memory_kind']}."]
    if published:
        sources = sorted({f"{p['model']}: {p['source']}" + (f" ({p['note']})" if p["note"] else "")
                          for p in results["published"]})
        lines.append("Published (the papers' numbers at this task's setting, not ssmkit runs): " + "; ".join(sources) + ".")
    return "\n".join(lines)


def readme_block(results_path: str | Path) -> str:
    """The README's comparison section body, regenerated from a results.json."""
    results = load_results(results_path)
    return (f"<!-- generated by: ssmkit compare --readme-table {results_path} -->\n"
            f"{markdown_table(results)}\n<!-- end of generated table -->")
