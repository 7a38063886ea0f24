"""Ground truth for the Mamba-2 SSD recurrence (Dao & Gu 2024): a sequential loop over time of
``ssd_step`` (its equations are in step.py). A step with dt_t = 0 is the identity on the state.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .step import ssd_step


def ssd_reference(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """x (B, L, H, P), dt (B, L, H), A (H,), B and C (B, L, G, N), D (H,) | (H, P) | None,
    initial_state (B, H, P, N) | None (zeros) -> (y (B, L, H, P), final_state (B, H, P, N)); L >= 1.

    Runs in the dtype of its inputs (float64 for the ground truth).
    """
    h, ys = initial_state, []
    for t in range(x.shape[1]):
        y_t, h = ssd_step(x[:, t], dt[:, t], A, B[:, t], C[:, t], D, h)
        ys.append(y_t)
    return torch.stack(ys, dim=1), h
