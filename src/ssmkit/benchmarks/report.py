"""The report of a comparison: results.json (its format), the Markdown table, the plots, the README block.

``results.json`` holds every number with the versions and settings: the task, the metric and
which way is better, the chance level and the baseline, every mixer's RunConfig, one record per
cell (one mixer trained with one seed: its metrics and measurements, ``measure.py``), the speed
vs length rows and the machine. The table shows the mean ± sample std over seeds of each mixer,
the chance level (always answering the most frequent test answer), the seasonal naive forecast
as a row on forecasting tasks, and published numbers where the task's setting matches a paper's
(``published.py``). Every file is written atomically (``ssmkit.io``).
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from ..io import atomic_write, write_text

FORMAT, VERSION = "ssmkit-compare", 1


# ---------------------------------------------------------------- files


def write_results(results: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """results.json, results.md and the PNG plots under ``out``, each written atomically; returns
    their paths (also recorded in ``results["files"]``)."""
    from . import plots

    out = Path(out)
    paths = {"json": out / "results.json", "table": out / "results.md",
             "metric_plot": out / "metric.png", "speed_plot": out / "speed_memory.png"}
    write_text(paths["json"], json.dumps(results, indent=1, allow_nan=True) + "\n")
    write_text(paths["table"], markdown_table(results) + "\n")
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
