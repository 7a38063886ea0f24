"""One token of the Mamba-2 SSD recurrence: written once (the reference loop and the Mamba-2
layer's ``step`` call it). Per head h with group g = h // (H / G), state h (P, N):

    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T        y_t = h_t C_t + D x_t

A step with dt_t = 0 is the identity on the state (decay exp(0) = 1, input 0).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...core.precision import float32_core


@float32_core
def ssd_step(
    x_t: Tensor,
    dt_t: Tensor,
    A: Tensor,
    B_t: Tensor,
    C_t: Tensor,
    D: Tensor | None = None,
    state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """x_t (B, H, P), dt_t (B, H), A (H,), B_t and C_t (B, G, N), D (H,) | (H, P) | None,
    state (B, H, P, N) | None (zeros) -> (y_t (B, H, P), new_state (B, H, P, N))."""
    batch, H, P = x_t.shape
    G, N = B_t.shape[1], B_t.shape[2]
    Bh = B_t.repeat_interleave(H // G, dim=1)[:, :, None, :]  # (B, H, 1, N): head h reads group h // (H/G)
    Ch = C_t.repeat_interleave(H // G, dim=1)[:, :, None, :]
    h = x_t.new_zeros(batch, H, P, N) if state is None else state
    h = torch.exp(dt_t * A)[..., None, None] * h + (dt_t[..., None] * x_t)[..., None] * Bh
    y = (h * Ch).sum(-1)
    if D is not None:
        y = y + x_t * (D[:, None] if D.ndim == 1 else D)
    return y, h
