"""PNG plots of a comparison: the metric per mixer, and speed / memory vs sequence length.

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


def metric_bars(results: dict[str, Any], path: Path) -> None:
    """Bars of the test metric per mixer (mean, std over seeds as error bars), chance, baseline and published marks."""
    from .report import summarize

    rows = summarize(results)
    metric = results["metric"].removeprefix("test_")
    scale = 100.0 if metric == "accuracy" else 1.0
    fig, (ax,) = _figure(1.6 + 1.1 * len(rows), 3.6)
    x = list(range(len(rows)))
    ax.bar(x, [scale * r["metric"] for r in rows], yerr=[scale * r["metric_std"] for r in rows],
           color="tab:blue", capsize=4, label="ssmkit (mean ± std over seeds)")
    published = [(i, p) for i, r in enumerate(rows) for p in results["published"]
                 if p["mixer"] == r["mixer"] and p["accuracy"] is not None]
    if published:
        ax.scatter([i for i, _ in published], [p["accuracy"] for _, p in published], marker="D", color="tab:red",
                   zorder=3, label="published")
    if results["chance"] is not None:
        ax.axhline(scale * results["chance"], color="grey", linestyle="--",
                   label=f"chance ({scale * results['chance']:.3g}{' %' if scale == 100.0 else ''})")
    baseline = results.get("baseline")
    if baseline is not None and results["metric"] in baseline["metrics"]:
        value = baseline["metrics"][results["metric"]]
        ax.axhline(value, color="tab:orange", linestyle=":", label=f"{baseline['name']} ({value:.3g})")
    ax.set_xticks(x, [r["mixer"] for r in rows])
    ax.set_ylabel(f"test {metric}" + (" (%)" if scale == 100.0 else ""))
    ax.set_title(f"{results['task']} (L = {results['task_info']['length']})")
    if metric == "accuracy":
        ax.set_ylim(0, 105)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=2, frameon=False)
    fig.savefig(path, format="png", dpi=120)


def speed_memory(results: dict[str, Any], path: Path) -> None:
    """Forward + backward seconds and activation memory of each bare mixer vs length (log-log)."""
    fig, (t_ax, m_ax) = _figure(9.0, 3.6, ncols=2)
    rows = results["speed_vs_length"]
    for name in dict.fromkeys(r["name"] for r in rows):
        mine = sorted((r for r in rows if r["name"] == name), key=lambda r: r["length"])
        lengths = [r["length"] for r in mine]
        t_ax.plot(lengths, [r["backward_s"] if r["backward_s"] is not None else r["forward_s"] for r in mine],
                  marker="o", label=name)
        m_ax.plot(lengths, [r["activation_mb"] for r in mine], marker="o", label=name)
    batch, width = results["speed_settings"]["batch"], results["speed_settings"]["d_model"]
    t_ax.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel="seconds (forward + backward)",
             title=f"one mixer, B = {batch}, D = {width}")
    m_ax.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel="MB saved for backward",
             title="activation memory of one forward")
    lengths = sorted({r["length"] for r in rows})
    for ax in (t_ax, m_ax):
        ax.set_xticks(lengths, [str(L) for L in lengths])
        ax.tick_params(axis="x", which="minor", labelbottom=False)  # log-axis minor labels collide
        ax.legend(fontsize="small")
    fig.savefig(path, format="png", dpi=120)


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
