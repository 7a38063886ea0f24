"""Ground truth for the RWKV-6 ("Finch", Peng et al. 2024) WKV operator: a loop over time of
``rwkv6_step`` (its equations are in step.py). A step with log_w_t = 0 and k_t = 0 is the
identity on the state.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .step import rwkv6_step


def rwkv6_reference(
    r: Tensor,
    k: Tensor,
    v: Tensor,
    log_w: Tensor,
    u: Tensor,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """r, k, log_w (B, L, H, K), v (B, L, H, V), u (H, K), initial_state (B, H, K, V) | None
    -> (o (B, L, H, V), final_state (B, H, K, V)); L >= 1. Runs in the dtype of its inputs.
    """
    S, outs = initial_state, []
    for t in range(k.shape[1]):
        o_t, S = rwkv6_step(r[:, t], k[:, t], v[:, t], log_w[:, t], u, S)
        outs.append(o_t)
    return torch.stack(outs, dim=1), S
