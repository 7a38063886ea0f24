"""Ground truth for the (gated) delta rule: a sequential loop over time of ``delta_rule_step``
(its equations are in step.py). A step with β_t = 0 and log_alpha_t = 0 is the identity on the state.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .step import delta_rule_step


def delta_rule_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    log_alpha: Tensor | None = None,
    initial_state: Tensor | None = None,
    scale: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """q, k (B, L, H, K), v (B, L, H, V), beta (B, L, H), log_alpha (B, L, H) | None,
    initial_state (B, H, K, V) | None (zeros) -> (o (B, L, H, V), final_state (B, H, K, V)); L >= 1.

    Runs in the dtype of its inputs (float64 for the ground truth).
    """
    M, outs = initial_state, []
    for t in range(k.shape[1]):
        a_t = None if log_alpha is None else log_alpha[:, t]
        o_t, M = delta_rule_step(q[:, t], k[:, t], v[:, t], beta[:, t], a_t, M, scale)
        outs.append(o_t)
    return torch.stack(outs, dim=1), M
