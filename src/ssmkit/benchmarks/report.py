"""The report of a comparison, built from its cell records: results.json, tables, plots, report.html.

``build_results`` gathers the cells into ``results.json``'s dict (the command, one record per cell,
the machine and versions); ``tables`` turns it into the report's tables, once, and both renderers
read them: Markdown (``markdown``; the README block) and a self-contained HTML page (``html.py``).
``write_report`` writes ``out/report/`` as one atomic folder (``ssmkit.io.atomic_folder``): a
reader sees the previous report or the new one, never a mix.

Tables: the test metric at each training length (tasks x lengths, mean ± sample std over seeds,
the average per mixer, chance and published numbers); extrapolation (each trained model scored at
longer lengths, or the reason a length was skipped); the bare layers' speed, memory and state vs
length with the crossover against attention; closed-loop roll-outs (error and invariant drift vs
horizon) for tasks that have them; the trained configurations' size and speed.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import statistics
from pathlib import Path
from typing import Any

from .. import __version__
from ..io import atomic_folder, write_text
from ..tasks import higher_is_better, is_fraction, task_metric
from ..tasks.length import length_knob
from .grid import SPEED_BASELINE, CompareSpec
from .measure import machine
from .published import published_for

FORMAT, VERSION = "ssmkit-compare", 2
REPORT = "report"


@dataclasses.dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


# ---------------------------------------------------------------- results


def build_results(spec: CompareSpec, records: list[dict[str, Any]], total_seconds: float | None) -> dict[str, Any]:
    train = [r for r in records if r["kind"] == "train"]
    speed = [r for r in records if r["kind"] == "speed"]
    tasks: dict[str, Any] = {}
    for r in train:
        t = tasks.setdefault(r["task"], {"lengths": {}, "info": r["task_info"]})
        kind = r["task_info"]["kind"]
        metric = task_metric(kind, r["task_info"].get("metric", ""))
        t["metric"] = f"test_{metric}"
        t["higher_is_better"] = higher_is_better(metric)
        t["length_knob"] = length_knob(r["task"])
        t["lengths"].setdefault(str(r["train_length"]), {"chance": r["chance"], "baseline": r["baseline"],
                                                         "task_cfg": r["config"]["task_cfg"]})
    for name, t in tasks.items():
        cfgs = [v["task_cfg"] for v in t["lengths"].values()]
        t["published"] = [dataclasses.asdict(p) for c in cfgs[:1] for p in published_for(name, c, spec.mixers)]
    return {
        "format": FORMAT, "version": VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "spec": spec.identity(), "mixers": list(spec.mixers), "seeds": list(spec.seeds), "tasks": tasks,
        "cells": train, "speed": speed, "machine": machine(),
        "ssmkit_version": __version__, "torch_version": train[0]["torch_version"] if train else None,
        "cell_seconds": sum(r["wall_seconds"] for r in records), "total_seconds": total_seconds,
    }


def load_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (expected the results.json written by ssmkit compare)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); expected the results.json written by ssmkit compare") from None
    if not isinstance(results, dict) or results.get("format") != FORMAT or results.get("version") != VERSION:
        raise ValueError(f"{path}: not an ssmkit compare results file (format {FORMAT!r} version {VERSION} expected)")
    return results


# ---------------------------------------------------------------- numbers


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, 0.0, 0
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def metric_text(metric: str, values: list[float]) -> str:
    """Mean (± sample std when several seeds) in the metric's unit: fractions (accuracy, mIoU) in percent."""
    mean, std, n = _mean_std(values)
    if n == 0:
        return "-"
    scale, digits = (100.0, 1) if is_fraction(metric) else (1.0, 4)
    return f"{scale * mean:.{digits}f}" + (f" ± {scale * std:.{digits}f}" if n > 1 else "")


def si(x: float) -> str:
    for unit, f in (("M", 1e6), ("k", 1e3)):
        if abs(x) >= f:
            return f"{x / f:.1f}{unit}"
    return f"{x:.0f}"


def _cells(results: dict[str, Any], task: str, length: int, mixer: str) -> list[dict[str, Any]]:
    return [c for c in results["cells"] if c["task"] == task and c["train_length"] == length and c["mixer"] == mixer]


def _lengths(results: dict[str, Any], task: str) -> list[int]:
    return sorted(int(L) for L in results["tasks"][task]["lengths"])


def crossover(rows: dict[str, dict[int, float]], name: str) -> int | None:
    """The shortest speed length from which ``name`` is faster than attention at every longer length
    both measured (None: never, or no common length)."""
    base = rows.get(SPEED_BASELINE, {})
    common = sorted(L for L in rows.get(name, {}) if L in base)
    for i, L in enumerate(common):
        if all(rows[name][M] < base[M] for M in common[i:]):
            return L
    return None


def speed_rows(results: dict[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    """mixer -> length -> its speed row (measured or skipped)."""
    return {r["mixer"]: {row["length"]: row for row in r["rows"]} for r in results["speed"]}


# ---------------------------------------------------------------- tables


def tables(results: dict[str, Any]) -> list[Table]:
    out = [_accuracy_table(results)]
    out += [t for task in results["tasks"] for t in _extrapolation_tables(results, task)]
    out += [t for task in results["tasks"] for t in _rollout_tables(results, task)]
    if results["speed"]:
        out.append(_speed_table(results))
    out.append(_trained_table(results))
    return out


SECONDARY = {"test_mse": "test_mae"}  # shown beside the primary metric


def _with_secondary(metric: str, metrics: list[dict[str, float]]) -> str:
    text = metric_text(metric, [m.get(metric, math.nan) for m in metrics])
    second = SECONDARY.get(metric)
    if second is not None and any(second in m for m in metrics):
        text += f" (mae {metric_text(second, [m.get(second, math.nan) for m in metrics])})"
    return text


def _accuracy_table(results: dict[str, Any]) -> Table:
    columns = [(task, L) for task in results["tasks"] for L in _lengths(results, task)]
    header = ["mixer"] + [f"{task} L={L}" for task, L in columns] + (["average"] if len(columns) > 1 else [])
    rows = []
    baselines = [results["tasks"][t]["lengths"][str(L)]["baseline"] for t, L in columns]
    if any(b is not None for b in baselines):
        rows.append([next(b["name"] for b in baselines if b is not None)]
                    + [_with_secondary(results["tasks"][t]["metric"], [b["metrics"]]) if b is not None else "-"
                       for (t, _), b in zip(columns, baselines)] + (["-"] if len(columns) > 1 else []))
    for mixer in results["mixers"]:
        row, means = [f"`{mixer}`"], []
        for task, L in columns:
            metric = results["tasks"][task]["metric"]
            cells = _cells(results, task, L, mixer)
            row.append(_with_secondary(metric, [c["metrics"] for c in cells]))
            means.append(_mean_std([c["metrics"].get(metric, math.nan) for c in cells])[0])
        if len(columns) > 1:
            same = len({results["tasks"][t]["metric"] for t, _ in columns}) == 1
            row.append(metric_text(results["tasks"][columns[0][0]]["metric"], [statistics.fmean(means)])
                       if same and not any(math.isnan(m) for m in means) else "-")
        rows.append(row)
    # chance is an accuracy (the most frequent answer): shown only in an accuracy column, never beside
    # bits per token, an error or an mIoU, where it would read as a value of that metric
    chance = ["chance"] + [
        metric_text("accuracy", [results["tasks"][t]["lengths"][str(L)]["chance"]])
        if results["tasks"][t]["lengths"][str(L)]["chance"] is not None and _is_accuracy(results["tasks"][t]["metric"])
        else "-" for t, L in columns]
    rows.append(chance + (["-"] if len(columns) > 1 else []))
    notes = []
    for task, t in results["tasks"].items():
        for p in t["published"]:
            value = "fails" if p["accuracy"] is None else f"{p['accuracy']:g} %"
            notes.append(f"{p['model']} on {task}: {value} ({p['source']}{'; ' + p['note'] if p['note'] else ''})")
    metrics = sorted({t["metric"].removeprefix("test_") for t in results["tasks"].values()})
    seeds = results["seeds"]
    note = (f"{'; '.join(sorted({_direction(t) for t in results['tasks'].values()})).capitalize()}, at the training "
            "length; "
            + (f"mean ± std over seeds {seeds}." if len(seeds) > 1 else f"seed {seeds[0]}.")
            + (" Published, at the papers' settings (not ssmkit runs): " + "; ".join(notes) + "." if notes else ""))
    title = "Accuracy" if metrics == ["accuracy"] else f"Test {', '.join(metrics)}"
    return Table(f"{title} at the training length", header, rows, note)


def _is_accuracy(metric: str) -> bool:
    return metric.removeprefix("test_") == "accuracy"


def _direction(t: dict[str, Any]) -> str:
    """``"test bits_per_token, lower is better"``: what a table of task ``t``'s metric shows."""
    return f"test {t['metric'].removeprefix('test_')}, {'higher' if t['higher_is_better'] else 'lower'} is better"


def _extrapolation_tables(results: dict[str, Any], task: str) -> list[Table]:
    t = results["tasks"][task]
    metric = t["metric"]
    out = []
    for L in _lengths(results, task):
        cells = [c for c in results["cells"] if c["task"] == task and c["train_length"] == L]
        evals = sorted({e["length"] for c in cells for e in c["eval"]})
        if not evals:
            continue
        header = ["mixer", f"L={L} (trained)"] + [f"{E} (x{E / L:g})" for E in evals]
        rows, skipped = [], []
        for mixer in results["mixers"]:
            mine = _cells(results, task, L, mixer)
            row = [f"`{mixer}`", metric_text(metric, [c["metrics"].get(metric, math.nan) for c in mine])]
            for E in evals:
                got = [e for c in mine for e in c["eval"] if e["length"] == E]
                done = [e["metrics"].get(metric.removeprefix("test_"), math.nan) for e in got if "metrics" in e]
                if done:
                    row.append(metric_text(metric, done))
                else:
                    row.append("skipped")
                    skipped += [f"{mixer} at {E}: {e['skipped']}" for e in got[:1] if "skipped" in e]
            rows.append(row)
        note = (f"Models trained at L = {L} scored ({_direction(t)}) on the test split of {task} rebuilt at each longer length "
                f"({t['length_knob']}); recurrent mixers run in their linear-cost mode, attention with the "
                "positions it was trained with (RoPE).")
        if skipped:
            note += " Skipped: " + "; ".join(skipped) + "."
        out.append(Table(f"Extrapolation: {task} trained at L = {L}", header, rows, note))
    return out


def _rollout_tables(results: dict[str, Any], task: str) -> list[Table]:
    """Closed-loop roll-outs (``Task.rollout_metrics``) per training length: the relative error and
    each invariant's relative drift at each horizon, mean (± std) over seeds."""
    out = []
    for L in _lengths(results, task):
        cells = [c for c in results["cells"] if c["task"] == task and c["train_length"] == L and "rollout" in c]
        if not cells:
            continue
        first = cells[0]["rollout"]
        horizons, names = first["horizons"], sorted(first["invariant_drift"])
        header = ["mixer"] + [f"error h={h}" for h in horizons] + [f"{n} drift h={horizons[-1]}" for n in names]
        rows = []
        for mixer in results["mixers"]:
            mine = [c["rollout"] for c in _cells(results, task, L, mixer) if "rollout" in c]
            if not mine:
                continue
            row = [f"`{mixer}`"] + [_sci([r["error"][i] for r in mine]) for i in range(len(horizons))]
            rows.append(row + [_sci([r["invariant_drift"][n][-1] for r in mine]) for n in names])
        note = (f"Each model reads the first {first['warmup']} states of every test trajectory, then runs on its own "
                f"predictions (z_t+1 = z_t + {first['dt']:g} * output, the state carried) for {horizons[-1]} steps; "
                "error: ||predicted - true|| / ||true|| at h steps after the last observed state; drift: "
                "|I(predicted) - I(z_0)| / |I(z_0)| of each invariant; means over the test trajectories.")
        out.append(Table(f"Roll-outs: {task} trained at L = {L}", header, rows, note))
    return out


def _sci(values: list[float]) -> str:
    mean, std, n = _mean_std(values)
    if n == 0:
        return "-"
    return f"{mean:.2e}" + (f" ± {std:.1e}" if n > 1 else "")


def _speed_table(results: dict[str, Any]) -> Table:
    by = speed_rows(results)
    lengths = sorted({L for rows in by.values() for L in rows})
    seconds = {m: {L: r["forward_s"] for L, r in rows.items() if "forward_s" in r} for m, rows in by.items()}
    header = ["mixer"] + [f"L={L}: s / MB / state" for L in lengths] + [f"faster than {SPEED_BASELINE} from L"]
    rows = []
    for mixer, per_length in by.items():
        row = [f"`{mixer}`"]
        for L in lengths:
            r = per_length.get(L)
            if r is None:
                row.append("-")
            elif "skipped" in r:
                row.append(f"skipped / - / {si(r['state_floats'])}")
            else:
                row.append(f"{r['forward_s']:.3f} / {r['activation_mb']:.0f} / {si(r['state_floats'])}")
        cross = crossover(seconds, mixer) if mixer != SPEED_BASELINE else None
        row.append("-" if mixer == SPEED_BASELINE else (str(cross) if cross else "not in range"))
        rows.append(row)
    width = results["speed"][0]["d_model"]
    skipped = [f"{m} at {L}: {r['skipped']}" for m, rows_ in by.items() for L, r in rows_.items() if "skipped" in r]
    note = (f"One bare layer, D = {width}, batch 1, float32, auto mode: forward seconds (inference), MB saved "
            "for backward by a training forward, state floats per sequence after L tokens (attention: its KV "
            "cache). Ratios within this run are what to read; other load on the machine moves absolute seconds."
            + (" Skipped: " + "; ".join(skipped) + "." if skipped else ""))
    return Table("Speed, memory and state vs length", header, rows, note)


def _trained_table(results: dict[str, Any]) -> Table:
    header = ["task", "L", "mixer", "params", "state floats", "train tok/s", "infer tok/s", "act. MB",
              "tokens trained", "train s"]
    rows = []
    for task in results["tasks"]:
        for L in _lengths(results, task):
            for mixer in results["mixers"]:
                cs = _cells(results, task, L, mixer)
                if not cs:
                    continue

                def mean(key: str, sub: str | None = None) -> float:
                    return statistics.fmean(c[sub][key] if sub else c[key] for c in cs)

                rows.append([task, str(L), f"`{mixer}`", si(mean("parameters")), si(mean("state_floats")),
                             si(mean("train_tokens_per_s", "speed")), si(mean("inference_tokens_per_s", "speed")),
                             f"{mean('activation_mb', 'speed'):.1f}", si(mean("tokens")),
                             f"{mean('train_seconds'):.0f}"])
    return Table("Trained configurations", header, rows,
                 "Parameters, state floats at the training length, tokens/s on one training batch (train: forward "
                 "+ backward), MB saved for backward, tokens seen in training and training seconds (mean over seeds).")


# ---------------------------------------------------------------- renderers and files


def markdown(results: dict[str, Any]) -> str:
    parts = [summary(results)]
    for t in tables(results):
        lines = [f"**{t.title}**", "", "| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
        lines += ["| " + " | ".join(r) + " |" for r in t.rows]
        if t.note:
            lines += ["", t.note]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def summary(results: dict[str, Any]) -> str:
    spec, m = results["spec"], results["machine"]
    threads = spec.get("threads") or m["torch_threads"]
    tasks = ", ".join(f"`{t}`" for t in results["tasks"])
    steps = "/".join(str(n) for n in sorted({c["steps"] for c in results["cells"]}))
    batches = "/".join(str(n) for n in sorted({c["config"]["train"]["batch_size"] for c in results["cells"]}))
    took = f"; {results['total_seconds'] / 60:.1f} min in all" if results.get("total_seconds") else ""
    archs = sorted({(c["config"]["arch"], json.dumps(c["config"]["arch_cfg"], sort_keys=True))
                    for c in results["cells"] if c["config"].get("arch", "sequence") != "sequence"})
    return (f"Mixers {', '.join(f'`{x}`' for x in results['mixers'])} on {tasks}"
            + "".join(f", arch `{a}` {cfg}" for a, cfg in archs)
            + (f" (preset `{spec['preset']}`)" if spec.get("preset") else "")
            + f"; {steps} steps of batch {batches} per run, the same for every mixer (budget rule: "
            f"{spec['budget_rule']}); "
            f"seeds {results['seeds']}. ssmkit {results['ssmkit_version']}, torch {results['torch_version']} on "
            f"{m['cuda'] or 'CPU'} ({threads} thread{'s' if threads != 1 else ''}){took}.")


PLOTS = {"accuracy_vs_train_length": "accuracy vs training length", "accuracy_vs_eval_length": "extrapolation",
         "speed_memory_state": "speed, memory and state vs length"}


def write_report(results: dict[str, Any], out: Path) -> Path:
    """``out/report/``: results.json, results.md, the PNG plots and report.html, as one atomic folder."""
    from . import html, plots

    folder = out / REPORT
    with atomic_folder(folder) as tmp:
        write_text(tmp / "results.json", json.dumps(results, indent=1, allow_nan=True) + "\n")
        write_text(tmp / "results.md", markdown(results) + "\n")
        drawn = {name: tmp / f"{name}.png" for name in PLOTS}
        plots.accuracy_vs_train_length(results, drawn["accuracy_vs_train_length"])
        plots.accuracy_vs_eval_length(results, drawn["accuracy_vs_eval_length"])
        if results["speed"]:
            plots.speed_memory_state(results, drawn["speed_memory_state"])
        write_text(tmp / "report.html", html.page(results, tables(results),
                                                  {k: p for k, p in drawn.items() if p.exists()}))
    results["files"] = {name: str(folder / name) for name in ("results.json", "results.md", "report.html")}
    return folder


def readme_block(results_path: str | Path) -> str:
    """The README's comparison section body, regenerated from a results.json."""
    results = load_results(results_path)
    return (f"<!-- generated by: ssmkit compare --readme-table {results_path} -->\n"
            f"{markdown(results)}\n<!-- end of generated table -->")
