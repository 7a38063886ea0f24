"""PNG plots of a comparison (accuracy vs training length, extrapolation, speed / memory / state vs
length) and of ``ssmkit bench --plot``.

matplotlib is an optional extra (``pip install ssmkit[plot]``), imported only here and only when
a plot is drawn. Figures are drawn on the Agg canvas directly (no pyplot), so plotting never
touches the interactive backend or global state of the calling program.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def require_matplotlib() -> None:
    """Raise a clear ImportError now (before hours of training) when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ImportError("plots need matplotlib: pip install 'ssmkit[plot]' (or pip install matplotlib)") from e


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, list[Any]]:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _accuracy_axis(ax: Any, metric: str) -> float:
    scale = 100.0 if metric.endswith("accuracy") else 1.0
    ax.set_ylabel(metric.removeprefix("test_").replace("_", " ") + (" (%)" if scale == 100.0 else ""))
    if scale == 100.0:
        ax.set_ylim(-2, 105)
    return scale


MARKERS = "osD^vP*X"  # one per mixer, so lines that coincide (two mixers at 100 %) stay visible


def _legend_below(ax: Any, ncols: int = 2) -> None:
    ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=ncols, frameon=False)


def _mean(values: list[float]) -> float:
    values = [v for v in values if v == v]  # NaN-free
    return sum(values) / len(values) if values else float("nan")


def accuracy_vs_train_length(results: dict[str, Any], path: Path) -> None:
    """One panel per task: the test metric at each training length, a line per mixer, chance dashed."""
    tasks = list(results["tasks"])
    fig, axes = _figure(1.0 + 3.6 * len(tasks), 3.8, ncols=len(tasks))
    for ax, task in zip(axes, tasks):
        t = results["tasks"][task]
        metric = t["metric"]
        scale = _accuracy_axis(ax, metric)
        lengths = sorted(int(L) for L in t["lengths"])
        for k, mixer in enumerate(results["mixers"]):
            ys = [_mean([c["metrics"].get(metric, float("nan")) for c in results["cells"]
                         if c["task"] == task and c["train_length"] == L and c["mixer"] == mixer]) for L in lengths]
            ax.plot(lengths, [scale * y for y in ys], marker=MARKERS[k % len(MARKERS)], alpha=0.8, label=mixer)
        chance = [t["lengths"][str(L)]["chance"] for L in lengths]
        if all(c is not None for c in chance):
            ax.plot(lengths, [scale * c for c in chance], color="grey", linestyle="--", label="chance")
        ax.set(xscale="log", xlabel="training length L", title=task)
        ax.set_xticks(lengths, [str(L) for L in lengths])
        ax.tick_params(axis="x", which="minor", labelbottom=False)
        _legend_below(ax, ncols=3)
    fig.savefig(path, format="png", dpi=110)


def accuracy_vs_eval_length(results: dict[str, Any], path: Path) -> None:
    """One panel per task: each trained model's test metric at its training length and beyond (a
    line per mixer, one line style per training length; a skipped length leaves a gap)."""
    tasks = list(results["tasks"])
    fig, axes = _figure(1.0 + 4.2 * len(tasks), 4.6, ncols=len(tasks))
    styles = ["-", "--", ":", "-."]
    colors = {m: f"C{i}" for i, m in enumerate(results["mixers"])}
    markers = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(results["mixers"])}
    for ax, task in zip(axes, tasks):
        t = results["tasks"][task]
        metric = t["metric"]
        scale = _accuracy_axis(ax, metric)
        lengths = sorted(int(L) for L in t["lengths"])
        ticks = set()
        for k, L in enumerate(lengths):
            for mixer in results["mixers"]:
                cells = [c for c in results["cells"] if c["task"] == task and c["train_length"] == L
                         and c["mixer"] == mixer]
                points = {L: _mean([c["metrics"].get(metric, float("nan")) for c in cells])}
                for E in sorted({e["length"] for c in cells for e in c["eval"]}):
                    points[E] = _mean([e["metrics"][metric.removeprefix("test_")] for c in cells for e in c["eval"]
                                       if e["length"] == E and "metrics" in e])
                xs = sorted(points)
                ticks.update(xs)
                ax.plot(xs, [scale * points[x] for x in xs], marker=markers[mixer], markersize=4, color=colors[mixer],
                        alpha=0.8, linestyle=styles[k % len(styles)], label=f"{mixer} (trained at {L})")
        ax.set(xscale="log", xlabel="evaluation length", title=f"{task}: extrapolation")
        ax.set_xticks(sorted(ticks), [str(x) for x in sorted(ticks)], rotation=45)
        ax.tick_params(axis="x", which="minor", labelbottom=False)
        _legend_below(ax, ncols=2)
    fig.savefig(path, format="png", dpi=110)


def speed_memory_state(results: dict[str, Any], path: Path) -> None:
    """Forward seconds, MB saved for backward and state floats of each bare layer vs length (log-log)."""
    fig, axes = _figure(12.0, 3.6, ncols=3)
    panels = (("forward_s", "seconds (forward)"), ("activation_mb", "MB saved for backward"),
              ("state_floats", "state floats per sequence"))
    lengths = sorted({row["length"] for r in results["speed"] for row in r["rows"]})
    for ax, (key, label) in zip(axes, panels):
        for r in results["speed"]:
            rows = [row for row in r["rows"] if key in row]
            style = {"linestyle": "--", "color": "black"} if r["mixer"] == "attention" else {}
            ax.plot([row["length"] for row in rows], [row[key] for row in rows], marker="o", label=r["mixer"], **style)
        ax.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel=label)
        ax.set_xticks(lengths, [str(L) for L in lengths])
        ax.tick_params(axis="x", which="minor", labelbottom=False)
        ax.legend(fontsize="small")
    axes[0].set_title(f"one layer, D = {results['speed'][0]['d_model']}, batch 1")
    fig.savefig(path, format="png", dpi=110)


def bench_curves(rows: list[Any], baseline: str, path: Path, title: str) -> None:
    """``ssmkit bench --plot``: seconds vs length per mixer (log-log), the baseline dashed, and the
    ratio to the baseline beside it (below 1 = faster than the baseline; a curve crossing 1 is the
    crossover length). ``rows`` are ``speed.BenchRow``; fwd+bwd when measured, else forward."""
    fig, (t_ax, r_ax) = _figure(9.0, 3.6, ncols=2)
    timed = [r for r in rows if r.forward_s is not None]
    backward = all(r.backward_s is not None for r in timed)
    seconds = {(r.name, r.length): r.backward_s if backward else r.forward_s for r in timed}
    lengths = sorted({r.length for r in timed})
    for name in dict.fromkeys(r.name for r in timed):
        mine = [L for L in lengths if (name, L) in seconds]
        style = {"linestyle": "--", "color": "black"} if name == baseline else {}
        t_ax.plot(mine, [seconds[name, L] for L in mine], marker="o", label=name, **style)
        if name != baseline:
            both = [L for L in mine if (baseline, L) in seconds]
            r_ax.plot(both, [seconds[name, L] / seconds[baseline, L] for L in both], marker="o", label=name)
    r_ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
    what = "forward + backward" if backward else "forward"
    t_ax.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel=f"seconds ({what})", title=title)
    r_ax.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel=f"time / {baseline}",
             title=f"ratio to {baseline} (same run)")
    for ax in (t_ax, r_ax):
        ax.set_xticks(lengths, [str(L) for L in lengths])
        ax.tick_params(axis="x", which="minor", labelbottom=False)
        ax.legend(fontsize="small")
    fig.savefig(path, format="png", dpi=120)
