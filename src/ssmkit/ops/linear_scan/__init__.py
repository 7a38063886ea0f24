"""First-order element-wise linear recurrence h_t = a_t * h_{t-1} + b_t (diagonal SSMs, LRU, S5).

Modes (same signature, same result up to rounding; see README.md):
- ``reference``: the sequential loop over L, the ground truth.
- ``chunked``: plain PyTorch, 2C + L/C Python steps on (B, L/C, *S) slabs, custom backward.
- ``auto``: always ``chunked``, on every device and length (it is exact arithmetic reordered, so
  there is nothing to gain from switching on the input and a switch would change rounding).

``linear_scan_step`` advances one step (streaming; the reference loop is made of it).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...core.precision import float32_core
from .._validate import check_real_or_complex
from ..dispatch import Modes
from .chunked import linear_scan_chunked
from .reference import linear_scan_reference
from .step import linear_scan_step

MODES = Modes("linear_scan", {"chunked": linear_scan_chunked, "reference": linear_scan_reference})


def _check_inputs(a: Tensor, b: Tensor, initial_state: Tensor | None) -> None:
    if b.ndim < 2:
        raise ValueError(f"b must be (B, L, *S) with at least 2 dims, got shape {tuple(b.shape)}")
    if b.shape[1] == 0:
        raise ValueError(f"empty sequence: b has length 0 (shape {tuple(b.shape)}), expected L >= 1")
    check_real_or_complex({"a": a, "b": b, "initial_state": initial_state})
    try:
        broadcast = torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != b.shape:
        raise ValueError(
            f"a of shape {tuple(a.shape)} does not broadcast to b's shape {tuple(b.shape)}; "
            "expected (*S), (L, *S), (B, L, *S) or another shape broadcastable to (B, L, *S)"
        )
    expected = (b.shape[0], *b.shape[2:])
    if initial_state is not None and tuple(initial_state.shape) != expected:
        raise ValueError(
            f"initial_state has shape {tuple(initial_state.shape)}, expected (B, *S) = {expected}"
        )


@float32_core
def linear_scan(
    a: Tensor, b: Tensor, initial_state: Tensor | None = None, mode: str = "auto"
) -> tuple[Tensor, Tensor]:
    """b: (B, L, *S), a broadcastable to b, initial_state (B, *S) -> (h (B, L, *S), h_L (B, *S)).

    ``a`` may be constant (*S), batch-shared (L, *S) or time-varying (B, L, *S); real or complex.
    """
    _check_inputs(a, b, initial_state)
    return MODES.run(mode, b, a, b, initial_state)


__all__ = ["linear_scan", "linear_scan_reference", "linear_scan_chunked", "linear_scan_step", "MODES"]
