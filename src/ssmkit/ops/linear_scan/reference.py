"""Ground truth for the first-order linear recurrence  h_t = a_t * h_{t-1} + b_t  (element-wise)."""
from __future__ import annotations

import torch
from torch import Tensor

from .step import linear_scan_step


def linear_scan_reference(
    a: Tensor, b: Tensor, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """b: (B, L, *S); a broadcastable to b (e.g. (*S) for a constant decay); initial_state (B, *S).

    Returns (h (B, L, *S) every state, h_L (B, *S) the final state). Real or complex, any float dtype.
    """
    a = a.expand(b.shape)
    h = torch.zeros_like(b[:, 0]) if initial_state is None else initial_state
    hs = []
    # unbind, not a[:, t]: its backward stacks the L gradients once instead of L full-size scatters.
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):
        _, h = linear_scan_step(a_t, b_t, h)
        hs.append(h)
    return torch.stack(hs, dim=1), h
