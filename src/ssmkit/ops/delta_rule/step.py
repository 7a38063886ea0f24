"""One token of the (gated) delta rule: the recurrence, written once (the reference loop and the
DeltaNet layer's ``step`` call it). Per head, with the state kept transposed, M = Sᵀ (K, V):

    M_t = α_t (I - β_t k_t k_tᵀ) M_{t-1} + β_t k_t v_tᵀ        o_t = M_tᵀ (scale q_t)

which is S_t = α_t S_{t-1} (I - β_t k_t k_tᵀ) + β_t v_t k_tᵀ, o_t = S_t q_t of the papers.
α_t = exp(log_alpha_t) (1 without gating). A step with β_t = 0 and log_alpha_t = 0 is the
identity on the state.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...core.precision import float32_core


@float32_core
def delta_rule_step(
    q_t: Tensor,
    k_t: Tensor,
    v_t: Tensor,
    beta_t: Tensor,
    log_alpha_t: Tensor | None = None,
    state: Tensor | None = None,
    scale: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """q_t, k_t (B, H, K), v_t (B, H, V), beta_t (B, H), log_alpha_t (B, H) | None,
    state (B, H, K, V) | None (zeros) -> (o_t (B, H, V), new_state (B, H, K, V))."""
    M = v_t.new_zeros(*k_t.shape, v_t.shape[-1]) if state is None else state
    if log_alpha_t is not None:
        M = torch.exp(log_alpha_t)[..., None, None] * M
    # (I - β k kᵀ) M + β k vᵀ = M + β k (v - Mᵀ k)ᵀ: the error-correcting write
    err = v_t - torch.einsum("bhk,bhkv->bhv", k_t, M)
    M = M + beta_t[..., None, None] * k_t[..., None] * err[..., None, :]
    return torch.einsum("bhk,bhkv->bhv", q_t * scale, M), M
