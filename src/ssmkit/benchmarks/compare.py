"""``ssmkit compare``: train several mixers on one task with the same budget and seeds, side by side.

The spec (``CompareSpec``) names the mixers, the task or preset, the seeds, the budget and the
``key=value`` overrides; ``runs()`` turns it into one validated ``RunConfig`` per mixer
(``ssmkit.runs.resolve_run``: the same rule as ``ssmkit train``, with this command's default
preset) and ``cells()`` into the units of work. A cell is one mixer trained with one seed
(``Cell``); it is trained with ``training.fit``, measured (``measure.py``) and becomes one record
of results.json. Then the bare mixers are timed at a few lengths (``measure.speed_vs_length``),
and ``report.py`` writes results.json, the table and the plots.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .. import __version__
from ..runs import RunConfig, build_model, build_task, resolve_run
from ..tasks import Task, chance_accuracy, higher_is_better, naive_baseline, primary_metric
from ..training import fit
from .measure import machine, measure_speed, speed_vs_length, state_floats
from .published import published_for
from .report import FORMAT, VERSION, write_results

DEFAULT_PRESET = "selective_copy_small"
DEFAULT_MIXERS = ["mamba", "s4d", "attention", "lstm"]
DEFAULT_LENGTHS = [256, 1024, 4096]
SPEED_BATCH = 2  # sequences per call in the speed / memory vs length measurement


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of a comparison: ``mixer`` trained with ``seed`` on ``task``; one results.json record.

    ``key`` names what belongs to the cell alone (its training log ``runs/<key>/``)."""

    task: str
    mixer: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.mixer}-seed{self.seed}"


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

    @property
    def preset_name(self) -> str | None:
        """The preset the runs start from (None: the plain defaults on ``task``)."""
        return self.preset or (DEFAULT_PRESET if self.task is None else None)

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

    def cells(self, task: str) -> list[Cell]:
        """Every (mixer, seed) of the comparison, mixer by mixer."""
        return [Cell(task, mixer, seed) for mixer in self.mixers for seed in self.seeds]


def run_cell(cell: Cell, run: RunConfig, task: Task, log_dir: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Train one cell and measure it; returns its results.json record."""
    cfg = dataclasses.replace(run.train, seed=cell.seed, log_dir=run.train.log_dir or log_dir)
    torch.manual_seed(cell.seed)  # the model's initialization
    model = build_model(task, run)
    n_params = sum(p.numel() for p in model.parameters())
    wall, cpu = time.perf_counter(), time.process_time()
    # a repeated comparison into the same folder moves each cell's earlier run aside (never deletes it)
    result = fit(task, model, cfg, log=log, run=dataclasses.replace(run, train=cfg).to_json(), overwrite=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    metrics = {k: float(v) for k, v in result.items() if k.startswith(("test_", "best_val_"))}
    return {
        "mixer": cell.mixer, "seed": cell.seed, "task": cell.task,
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
    for cell in spec.cells(info.name):
        run = runs[cell.mixer]
        length = f"{run.train.epochs} epochs" if run.train.epochs else f"{run.train.steps} steps"
        log(f"== {cell.mixer}, seed {cell.seed}: {length} on {info.name}")
        records.append(run_cell(cell, run, task, str(out / "runs" / cell.key), log))  # metrics.jsonl per cell
    log(f"== speed and memory vs length: {', '.join(runs)} at L = {spec.lengths}")
    rows = speed_vs_length(list(runs), spec.lengths, SPEED_BATCH, first.model.d_model)
    task_cfg = dataclasses.asdict(task.cfg) if dataclasses.is_dataclass(getattr(task, "cfg", None)) else first.task_cfg
    results = {
        "format": FORMAT, "version": VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "task": info.name, "task_cfg": task_cfg, "task_info": dataclasses.asdict(info),
        "metric": f"test_{metric}", "higher_is_better": higher_is_better(metric),
        "chance": chance, "baseline": baseline,
        "mixers": list(runs), "seeds": list(spec.seeds), "preset": spec.preset_name,
        "overrides": list(spec.overrides), "budget_steps": spec.budget,
        "configs": {m: r.to_json() for m, r in runs.items()},
        "runs": records,
        "speed_vs_length": rows,
        "speed_settings": {"batch": SPEED_BATCH, "d_model": first.model.d_model, "lengths": list(spec.lengths)},
        # the papers' numbers are for the task's own sequence (e.g. 784 pixels), not another architecture's view of it
        "published": [dataclasses.asdict(p) for p in published_for(info.name, task_cfg, list(runs))]
        if first.arch == "sequence" else [],
        "machine": machine(),
        "ssmkit_version": __version__, "torch_version": torch.__version__,
        "total_seconds": time.perf_counter() - started,
    }
    write_results(results, out)
    return results
