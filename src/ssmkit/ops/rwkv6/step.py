"""One token of the RWKV-6 WKV operator: the recurrence, written once (the reference loop and the
RWKV6 layer's ``step`` call it). Per head, with state S (K, V), decay w = exp(log_w) per key
channel and bonus u (K,):

    o_t = r_tᵀ (S_{t-1} + diag(u) k_t v_tᵀ)        S_t = diag(w_t) S_{t-1} + k_t v_tᵀ

The output reads the state BEFORE step t; the current token enters only through the bonus u.
A step with log_w_t = 0 and k_t = 0 is the identity on the state.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...core.precision import float32_core


@float32_core
def rwkv6_step(
    r_t: Tensor, k_t: Tensor, v_t: Tensor, log_w_t: Tensor, u: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """r_t, k_t, log_w_t (B, H, K), v_t (B, H, V), u (H, K), state (B, H, K, V) | None (zeros)
    -> (o_t (B, H, V), new_state (B, H, K, V))."""
    S = v_t.new_zeros(*k_t.shape, v_t.shape[-1]) if state is None else state
    kv = k_t[..., :, None] * v_t[..., None, :]  # (B, H, K, V)
    o = torch.einsum("bhk,bhkv->bhv", r_t, S + u[..., None] * kv)
    return o, torch.exp(log_w_t)[..., None] * S + kv
