"""Ground truth for the Mamba-1 selective scan (Gu & Dao 2023): a plain loop over time of
``selective_scan_step`` (its equations are in step.py). A step with dt = 0 is the identity on the
state.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .step import selective_scan_step


def selective_scan_reference(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """u, delta, z: (B, L, D); A: (D, N); B, C: (B, L, N) or (B, L, G, N); D, delta_bias: (D,);
    initial_state: (B, D, N) | None (zeros). Returns (y (B, L, D), final_state (B, D, N)); L >= 1."""
    h, ys = initial_state, []
    for t in range(u.shape[1]):
        # Index the step before broadcasting to channels (inside the step): the backward of
        # indexing a broadcast (B, L, D, N) view would allocate that whole tensor at every step.
        y_t, h = selective_scan_step(u[:, t], delta[:, t], A, B[:, t], C[:, t], D,
                                     None if z is None else z[:, t], delta_bias, delta_softplus, h)
        ys.append(y_t)
    return torch.stack(ys, dim=1), h
