"""SSD (Mamba-2) chunked mode beside Hugging Face transformers' pure-PyTorch Mamba-2 chunk scan.

Both run the same inputs (B, L, H, P) with G=1 groups and return the output and the final state;
transformers is a peer only when installed (the ``test`` extra). Forward without autograd, and
forward + backward of the summed output. Rows are predicted and skipped as in ``speed``.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..ops.ssd import ssd
from .measure import CellPredictor
from .speed import BenchRow, Limits
from .timing import best_time, peak_rss_mb


def _hf_chunk_scan() -> Callable | None:
    try:
        from transformers.models.mamba2.modeling_mamba2 import mamba2_chunk_scan
    except ImportError:
        return None
    return mamba2_chunk_scan


def _inputs(L: int, batch: int, heads: int, head_dim: int, d_state: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(batch, L, heads, head_dim, generator=g),
            torch.rand(batch, L, heads, generator=g) * 0.1,
            -torch.rand(heads, generator=g) - 0.5,
            torch.randn(batch, L, 1, d_state, generator=g),
            torch.randn(batch, L, 1, d_state, generator=g))


def bench_ssd(lengths: list[int], batch: int = 2, heads: int = 8, head_dim: int = 64, d_state: int = 64,
              chunk_size: int = 64, repeats: int = 3, limits: Limits | None = None) -> list[BenchRow]:
    """Forward and forward + backward seconds of each implementation at each length; a row predicted
    not to fit ``limits`` (``measure.CellPredictor``) is recorded as skipped with the reason."""
    limits = limits or Limits()
    hf = _hf_chunk_scan()
    impls: dict[str, Callable] = {
        "ssmkit ssd chunked": lambda *a: ssd(*a, mode="chunked", chunk_size=chunk_size)[0],
    }
    if hf is not None:
        impls["transformers mamba2_chunk_scan"] = lambda x, dt, A, B, C: hf(
            x, dt, A, B, C, chunk_size, return_final_states=True)[0]
    predictors = {}
    for name, fn in impls.items():
        def build(L: int, fn: Callable = fn) -> Callable[[], object]:
            args = [t.requires_grad_(True) for t in _inputs(L, batch, heads, head_dim, d_state)]
            return lambda: fn(*args)

        predictors[name] = CellPredictor(build, grows=False)
    rows = []
    for L in lengths:
        x, dt, A, B, C = _inputs(L, batch, heads, head_dim, d_state)
        for name, fn in impls.items():
            predict = predictors[name]
            predicted = predict.bytes(L, backward=True) / 2**20
            reason = predict.skip(f"{name} at L = {L}", L, True, limits.seconds, limits.memory_bytes)
            if reason is not None:
                rows.append(BenchRow(name, L, None, None, None, None, predicted, reason))
                continue
            with torch.no_grad():
                fwd = best_time(lambda: fn(x, dt, A, B, C), repeats)
                peak = peak_rss_mb(lambda: fn(x, dt, A, B, C))
            args = [t.clone().requires_grad_(True) for t in (x, dt, A, B, C)]
            bwd = best_time(lambda: fn(*args).sum().backward(), repeats)
            predict.measured(L, bwd)
            rows.append(BenchRow(name, L, fwd, bwd, None, peak, predicted))
    return rows
