"""Speed and memory of the selective scan's modes and peers, side by side in one process.

``bench_selective_scan`` times every mode of ``ssmkit.ops.selective_scan`` (the reference loop
only up to ``reference_max_length``: it is slow) and, when it is installed, the peer mambapy
(``pscan``, the parallel scan of its pure-PyTorch Mamba), on the same inputs: forward alone (no
autograd), and forward + backward of a loss using the output and the final state. Each time is
the best of ``repeats`` after a warm-up call; peak memory is the resident set's high-water mark
above its level before one call, measured in a fresh interpreter (untimed) whose allocator returns
freed memory at once (``MALLOC_MMAP_THRESHOLD_``), so the mark is the live tensors' peak. Before
each row its memory (and, after the first length, its time) is predicted (``measure.CellPredictor``);
a row that would not fit ``speed.Limits`` is recorded as skipped with the reason. Read the ratios
between rows of one run, not absolute seconds: other processes on the machine move them.

Run: ``python -m ssmkit.benchmarks.selective_scan [L ...]``.
"""
from __future__ import annotations

import dataclasses
import functools
import gc
import os
import pathlib
import subprocess
import sys
from typing import Callable

import torch
from torch import Tensor

from ..ops.selective_scan import MODES, selective_scan
from .measure import CellPredictor, mb
from .speed import Limits
from .timing import best_time


@dataclasses.dataclass
class ScanRow:
    impl: str
    length: int
    forward_s: float | None  # None: skipped
    forward_backward_s: float | None
    peak_forward_mb: float | None
    peak_forward_backward_mb: float | None
    predicted_mb: float | None = None  # predicted before measuring (forward + backward when measured)
    skipped: str | None = None


def _status_mb(field: str) -> float:
    """VmRSS / VmHWM of this process from /proc (Linux), in MB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _peak_in_child(name: str, L: int, B: int, D: int, N: int, backward: bool, threads: int) -> float:
    """Run in a fresh process: peak resident memory of one call above the level before it, MB.

    A fresh process, because a warm allocator keeps freed pages resident and hides the peak; a
    tiny warm-up call first, so lazy imports do not count; the high-water mark is reset (Linux
    clear_refs) just before the measured call."""
    torch.set_num_threads(threads)
    fn = _impls((name,))[name]
    for length in (2, L):
        args = [v.requires_grad_(backward) for v in _inputs(length, B, D, N).values()]
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        start = _status_mb("VmRSS")
        with torch.set_grad_enabled(backward):
            y, h = fn(*args)
            if backward:
                (y.sum() + h.sum()).backward()
    return _status_mb("VmHWM") - start


def _peak_mb(name: str, L: int, B: int, D: int, N: int, backward: bool) -> float | None:
    """Peak MB of one call, measured in a fresh interpreter (Linux /proc), None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    args = (name, L, B, D, N, backward, torch.get_num_threads())
    code = f"from ssmkit.benchmarks.selective_scan import _peak_in_child; print(_peak_in_child{args!r})"
    package_root = str(pathlib.Path(__file__).resolve().parents[2])
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return float(out.stdout.split()[-1]) if out.returncode == 0 and out.stdout.split() else None


def _mambapy_scan() -> Callable | None:
    """mambapy's selective scan (its MambaBlock.selective_scan, batch-first), or None."""
    try:
        from mambapy.pscan import pscan
    except ImportError:
        return None

    def scan(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor) -> tuple[Tensor, Tensor]:
        hs = pscan(torch.exp(dt.unsqueeze(-1) * A), dt.unsqueeze(-1) * B.unsqueeze(2) * u.unsqueeze(-1))
        return (hs @ C.unsqueeze(-1)).squeeze(3) + D * u, hs[:, -1]

    return scan


def _impls(only: tuple[str, ...] | None = None) -> dict[str, Callable]:
    """Every mode that can run on the CPU and that auto would consider there (not an interpreted
    Triton kernel), and the peers that are installed (or those named in ``only``)."""
    impls: dict[str, Callable] = {}
    cpu = torch.empty(0)
    for mode in MODES:
        runs = MODES.unavailable_reason(mode, cpu) is None and MODES.auto_skip_reason(mode, cpu) is None
        if (only is None or mode in only) and runs:
            impls[mode] = functools.partial(_mode, mode)
    peer = _mambapy_scan()
    if peer is not None and (only is None or "mambapy.pscan" in only):
        impls["mambapy.pscan"] = peer
    return impls


def _mode(mode: str, *args: Tensor) -> tuple[Tensor, Tensor]:
    return selective_scan(*args, mode=mode)


def _inputs(L: int, B: int, D: int, N: int, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "u": torch.randn(B, L, D, generator=g),
        "delta": torch.rand(B, L, D, generator=g) * 0.1,  # post-softplus-like steps
        "A": -torch.arange(1, N + 1, dtype=torch.float32).repeat(D, 1),  # S4D-real init
        "B": torch.randn(B, L, N, generator=g),
        "C": torch.randn(B, L, N, generator=g),
        "D": torch.ones(D),
    }


def bench_selective_scan(
    lengths: tuple[int, ...] = (1024, 4096, 16384),
    B: int = 2,
    D: int = 512,
    N: int = 16,
    backward: bool = True,
    repeats: int = 3,
    reference_max_length: int = 1024,
    only: tuple[str, ...] | None = None,
    on_row: Callable[[ScanRow], object] | None = None,
    limits: Limits | None = None,
) -> list[ScanRow]:
    """Rows (impl, L, forward s, forward+backward s, peak MB of each) for every mode and peer
    that can run (or those named in ``only``); ``on_row`` sees each row as soon as it is measured.
    A row predicted not to fit ``limits`` is skipped with the reason (module doc)."""
    limits = limits or Limits()
    impls = _impls(only)
    predictors = {}
    for name, fn in impls.items():
        def build(L: int, fn: Callable = fn) -> Callable[[], object]:
            grad_args = [a.requires_grad_(True) for a in _inputs(L, B, D, N).values()]
            return lambda: fn(*grad_args)

        predictors[name] = CellPredictor(build, grows=False)
    rows = []
    for L in lengths:
        x = _inputs(L, B, D, N)
        args = [x[k] for k in ("u", "delta", "A", "B", "C", "D")]
        for name, fn in impls.items():
            if name == "reference" and L > reference_max_length:
                continue
            predict = predictors[name]
            predicted = predict.bytes(L, backward) / 2**20
            reason = predict.skip(f"{name} at L = {L}", L, backward, limits.seconds, limits.memory_bytes)
            if reason is not None:
                rows.append(ScanRow(name, L, None, None, None, None, predicted, reason))
                if on_row is not None:
                    on_row(rows[-1])
                continue
            gc.collect()

            def forward() -> None:
                with torch.no_grad():
                    fn(*args)

            def forward_backward() -> None:
                grad_args = [a.detach().requires_grad_(True) for a in args]
                y, h = fn(*grad_args)
                (y.sum() + h.sum()).backward()

            fwd = best_time(forward, repeats)
            peak_f = _peak_mb(name, L, B, D, N, backward=False)
            fb = best_time(forward_backward, repeats) if backward else None
            peak_fb = _peak_mb(name, L, B, D, N, backward=True) if backward else None
            predict.measured(L, fb if backward else fwd)
            rows.append(ScanRow(name, L, fwd, fb, peak_f, peak_fb, predicted))
            if on_row is not None:
                on_row(rows[-1])
    return rows


def format_rows(rows: list[ScanRow]) -> str:
    """Markdown table; ``/ cpp`` is each time over the cpp mode's at the same length."""
    cpp = {r.length: r for r in rows if r.impl == "cpp" and r.skipped is None}
    lines = [
        "| impl | L | fwd s | fwd / cpp | fwd+bwd s | fwd+bwd / cpp | fwd+bwd / fwd "
        "| peak MB fwd | peak MB fwd+bwd | predicted MB | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    for r in rows:
        c = cpp.get(r.length)
        lines.append(
            f"| {r.impl} | {r.length} | {num(r.forward_s, '.4f')} | "
            f"{num(ratio(r.forward_s, c and c.forward_s), '.2f')} | {num(r.forward_backward_s, '.4f')} | "
            f"{num(ratio(r.forward_backward_s, c and c.forward_backward_s), '.2f')} | "
            f"{num(ratio(r.forward_backward_s, r.forward_s), '.2f')} | "
            f"{num(r.peak_forward_mb, '.0f')} | {num(r.peak_forward_backward_mb, '.0f')} | "
            f"{'-' if r.predicted_mb is None else mb(r.predicted_mb * 2**20)} | "
            f"{'skipped: ' + r.skipped if r.skipped else ''} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    lengths = tuple(int(a) for a in sys.argv[1:]) or (1024, 4096, 16384)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    rows = bench_selective_scan(lengths, on_row=lambda r: print(r, flush=True))
    print(format_rows(rows))
