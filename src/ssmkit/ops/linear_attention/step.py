"""One token of gated linear attention: the recurrence, written once (the reference loop and the
layers' ``step`` call it). Per batch element and head, with S (K, V) and α = exp(log_decay):

    S_t = diag(α_t) S_{t-1} + k_t v_tᵀ          o_t = scale · S_tᵀ q_t

A step with log_decay = 0 and k = 0 is the identity on the state (how layers mask padding).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...core.precision import float32_core


@float32_core
def linear_attention_step(
    q_t: Tensor,
    k_t: Tensor,
    v_t: Tensor,
    log_decay_t: Tensor | None = None,
    state: Tensor | None = None,
    scale: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """q_t, k_t (B, H, K), v_t (B, H, V); log_decay_t None (no decay), (H,) per head, (B, H) per
    head or (B, H, K) per key channel; state (B, H, K, V) | None (zeros)
    -> (o_t (B, H, V), new_state (B, H, K, V))."""
    S = k_t[..., :, None] * v_t[..., None, :]
    if state is not None:
        if log_decay_t is not None:
            # (H,) -> (H, 1) and (B, H) -> (B, H, 1): one decay for every key channel of a head
            a = log_decay_t if log_decay_t.ndim == 3 else log_decay_t[..., None]
            state = torch.exp(a)[..., None] * state
        S = state + S
    return scale * (q_t[..., :, None] * S).sum(-2), S
