"""``ssmkit compare``: the surveys' experiment, cell by cell, resumable and shardable.

``compare(spec, out)`` plans the grid (``grid.CompareSpec.plan``: everything is validated before
anything trains), then runs this shard's cells:

- a **training cell** trains one mixer with one seed on one task at one length with
  ``training.fit`` (its run folder ``runs/<key>/`` holds checkpoints, so an interrupted cell
  continues from its last one), scores the test split at that length and at every evaluation
  length (``measure.evaluate_lengths``: recurrent mixers in their linear-cost mode, attention as
  long as it is predicted to fit the memory and the time budget; a length that cannot run is
  recorded with its reason), records the task's closed-loop roll-outs when it has them
  (``Task.rollout_metrics``: the dynamical systems), and measures speed and memory on one training batch;
- a **speed cell** times one bare mixer at the paper width over the speed lengths
  (``measure.speed_curve``), skipping lengths predicted not to fit, saying why.

Each finished cell is written atomically to ``cells/<key>.json`` and never rewritten: the same
command run again skips it. ``compare.json`` records the command; a second command into the same
folder is refused, and ``merge`` refuses shards of different commands. The report (``report.py``)
is built from the cell files, so a merged grid and an unsharded one give the same report.
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
from ..config import to_json
from ..io import write_text
from ..runs import RunConfig, build_model, build_task
from ..tasks import Task, chance_accuracy, naive_baseline
from ..training import fit, latest_checkpoint
from .grid import Cell, CompareSpec
from .measure import evaluate_lengths, machine, measure_speed, speed_curve, state_floats

SPEC_FILE, CELLS = "compare.json", "cells"
SPEC_FORMAT = "ssmkit-compare-spec"


# ---------------------------------------------------------------- the command's folder


def claim_out(spec: CompareSpec, out: Path) -> None:
    """Record the command in ``out/compare.json``; refuse a folder that holds another command's cells."""
    path = out / SPEC_FILE
    mine = {"format": SPEC_FORMAT, "identity": spec.identity(), "hash": spec.identity_hash()}
    if path.is_file():
        saved = read_spec(path)
        if saved["hash"] != mine["hash"]:
            diff = sorted(k for k in mine["identity"] if saved["identity"].get(k) != mine["identity"][k])
            raise ValueError(f"{out} holds the cells of another comparison (it differs in {diff}); choose another "
                             "--out, or run the same command to continue it")
        return
    write_text(path, json.dumps(mine, indent=1) + "\n")


def read_spec(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable comparison record ({e})") from None
    if not isinstance(data, dict) or data.get("format") != SPEC_FORMAT or "hash" not in data:
        raise ValueError(f"{path}: not an ssmkit comparison record (format {SPEC_FORMAT!r} expected)")
    return data


def read_cell(path: Path) -> dict[str, Any] | None:
    """A finished cell's record (None when the file is missing or unreadable: the cell runs again)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and "key" in data and "kind" in data else None


# ---------------------------------------------------------------- cells


def _task_yardsticks(task: Task) -> dict[str, Any]:
    """Chance and the naive baseline of the task's test split, beside each cell's metrics."""
    return {"chance": chance_accuracy(task), "baseline": naive_baseline(task)}


def run_train_cell(cell: Cell, run: RunConfig, spec: CompareSpec, folder: Path,
                   log: Callable[[str], None]) -> dict[str, Any]:
    """Train, evaluate and measure one training cell; returns its record."""
    task = build_task(run)
    steps = run.train.steps
    cfg = dataclasses.replace(run.train, seed=cell.seed, log_dir=str(folder), checkpoint_dir=str(folder),
                              checkpoint_every=run.train.checkpoint_every or max(1, steps // 4), keep_checkpoints=1)
    torch.manual_seed(cell.seed)  # the model's initialization
    model = build_model(task, run)
    trained = dataclasses.replace(run, train=cfg)
    resume = latest_checkpoint(folder) is not None  # an interrupted cell continues from its checkpoint
    wall, cpu = time.perf_counter(), time.process_time()
    # a run folder without a checkpoint is an attempt killed before its first save: moved aside, never reused
    result = fit(task, model, cfg, log=log, run=trained.to_json(), resume=resume, overwrite=not resume)
    train_wall = time.perf_counter() - wall
    metrics = {k: float(v) for k, v in result.items() if k.startswith(("test_", "best_val_"))}
    batch = cfg.batch_size
    evals = evaluate_lengths(model, run, spec.eval_lengths_for(cell.length, cell.task), cfg.eval_batch_size,
                             spec.eval_seconds, log)
    rollout = task.rollout_metrics(model)  # closed-loop scores (dynamics tasks), None for the others
    return {
        "kind": "train", "key": cell.key, "task": cell.task, "mixer": cell.mixer, "seed": cell.seed,
        "train_length": cell.length, "task_info": to_json(task.info), "config": trained.to_json(),
        "metrics": metrics, "steps": int(result["steps"]), "tokens": int(result["steps"]) * batch * task.info.length,
        "parameters": sum(p.numel() for p in model.parameters()),
        "state_floats": state_floats(model, task.info.length), "resumed": resume,
        **_task_yardsticks(task),
        "speed": measure_speed(task, model, batch),
        "eval": evals,
        **({"rollout": rollout} if rollout is not None else {}),
        "train_seconds": train_wall, "wall_seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu, "device": str(next(model.parameters()).device),
    }


def run_speed_cell(cell: Cell, spec: CompareSpec, log: Callable[[str], None]) -> dict[str, Any]:
    wall = time.perf_counter()
    rows = speed_curve(cell.mixer, spec.speed_lengths, spec.speed_d_model, log=log)
    return {"kind": "speed", "key": cell.key, "mixer": cell.mixer, "d_model": spec.speed_d_model,
            "rows": rows, "wall_seconds": time.perf_counter() - wall}


def _stamp(record: dict[str, Any], spec: CompareSpec) -> dict[str, Any]:
    return {**record, "spec_hash": spec.identity_hash(), "ssmkit_version": __version__,
            "torch_version": torch.__version__, "machine": machine(),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def run_cells(spec: CompareSpec, out: str | Path, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run this shard's unfinished cells under ``out``; returns every finished record of the shard."""
    plan = spec.plan()  # every setting checked before anything trains
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    claim_out(spec, out)
    cells = spec.shard_cells(spec.cells(plan))
    records = []
    threads = torch.get_num_threads()
    if spec.thread_count() is not None:
        torch.set_num_threads(spec.thread_count())
    try:
        for i, cell in enumerate(cells, 1):
            records.append(_run_cell(cell, f"[{i}/{len(cells)}]", plan, spec, out, log))
    finally:
        torch.set_num_threads(threads)
    return records


def _run_cell(cell: Cell, progress: str, plan: dict, spec: CompareSpec, out: Path,
              log: Callable[[str], None]) -> dict[str, Any]:
    """Skip a finished cell (its record), else run it and write its file."""
    path = out / CELLS / f"{cell.key}.json"
    done = read_cell(path)
    if done is not None and done.get("spec_hash") == spec.identity_hash():
        log(f"== {progress} {cell.key}: finished earlier, skipped")
        return done
    log(f"== {progress} {cell.key}")
    if cell.kind == "train":
        record = run_train_cell(cell, plan[cell.task, cell.length][cell.mixer], spec,
                                out / "runs" / cell.key, log)
    else:
        record = run_speed_cell(cell, spec, log)
    record = _stamp(record, spec)
    write_text(path, json.dumps(record, indent=1, allow_nan=True) + "\n")  # the cell's one write
    return record


def collect(spec: CompareSpec, folders: list[Path]) -> list[dict[str, Any]]:
    """Every cell of ``spec`` from the cell files of ``folders`` (shards of the same command); raises
    naming the missing cells when the grid is not complete."""
    plan = spec.plan()
    wanted = {c.key for c in spec.cells(plan)}
    found: dict[str, dict[str, Any]] = {}
    for folder in folders:
        for path in sorted((folder / CELLS).glob("*.json")):
            record = read_cell(path)
            if record is None or record.get("spec_hash") != spec.identity_hash() or record["key"] not in wanted:
                continue
            found.setdefault(record["key"], record)
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(f"{len(missing)} cell(s) of this comparison have no result yet: {missing[:8]}"
                         + (" ..." if len(missing) > 8 else "") + "; run the missing shards (or the command "
                         "again) and merge")
    return [found[c.key] for c in spec.cells(plan)]


def compare(spec: CompareSpec, out: str | Path, log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Run the comparison under ``out`` and write its report (``out/report/``); returns the results.
    A shard of several writes its cells only and returns None (``merge`` builds the report)."""
    from .plots import require_matplotlib
    from .report import build_results, write_report

    require_matplotlib()  # before hours of training, not after
    started = time.perf_counter()
    run_cells(spec, out, log)
    if spec.shard[1] > 1:
        log(f"shard {spec.shard[0]}/{spec.shard[1]} done; when every shard is, build the report with "
            f"ssmkit compare --merge DIR ... --out DIR")
        return None
    results = build_results(spec, collect(spec, [Path(out)]), time.perf_counter() - started)
    write_report(results, Path(out))
    return results


def merge(folders: list[str | Path], out: str | Path) -> dict[str, Any]:
    """The report of a comparison run as shards in ``folders`` (each with its compare.json)."""
    from .report import build_results, write_report

    folders = [Path(f) for f in folders]
    specs = {}
    for folder in folders:
        specs[folder] = read_spec(folder / SPEC_FILE)
    hashes = {s["hash"] for s in specs.values()}
    if len(hashes) > 1:
        groups = {h: [str(f) for f, s in specs.items() if s["hash"] == h] for h in hashes}
        raise ValueError(f"these folders hold shards of different comparison commands: {groups}; merge only the "
                         "shards of one command")
    spec = spec_from_identity(next(iter(specs.values()))["identity"])
    records = collect(spec, folders)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    claim_out(spec, out)
    for record in records:  # the merged folder holds every cell, so it can be merged or re-reported again
        path = out / CELLS / f"{record['key']}.json"
        if read_cell(path) is None:
            write_text(path, json.dumps(record, indent=1, allow_nan=True) + "\n")
    results = build_results(spec, records, None)
    write_report(results, out)
    return results


def spec_from_identity(identity: dict[str, Any]) -> CompareSpec:
    fields = {f.name for f in dataclasses.fields(CompareSpec)}
    return CompareSpec(**{k: v for k, v in identity.items() if k in fields})
