"""Ground truth for gated linear attention: the recurrence, one ``linear_attention_step`` at a time
(its equations are in step.py). A step with log_decay = 0 and k = 0 is the identity on the state.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .step import linear_attention_step


def linear_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor | None = None,
    initial_state: Tensor | None = None,
    scale: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """q, k (B, L, H, K), v (B, L, H, V), log_decay None | (H,) | (B, L, H) | (B, L, H, K),
    initial_state (B, H, K, V) | None (zeros) -> (o (B, L, H, V), final_state (B, H, K, V)).

    Runs in the dtype of its inputs (float64 for the ground truth).
    """
    batch, L, H, K = q.shape
    S = q.new_zeros(batch, H, K, v.shape[-1]) if initial_state is None else initial_state
    outputs = []
    for t in range(L):
        a_t = log_decay if log_decay is None or log_decay.ndim == 1 else log_decay[:, t]
        o_t, S = linear_attention_step(q[:, t], k[:, t], v[:, t], a_t, S, scale)
        outputs.append(o_t)
    return torch.stack(outputs, dim=1), S
