"""The ``triton`` mode of SSD: the chunked gated-linear-attention kernels with one decay per head.

SSD is scalar-decay linear attention (docs/math/ssd.md): per head h of group g,

    h_t = exp(dt_t A) h_{t-1} + (dt_t x_t) B_tᵀ        y_t = h_t C_t + D x_t

is ``S_t = α_t S_{t-1} + k_t v_tᵀ, o_t = S_tᵀ q_t`` with q = C, k = B (read by the H/G heads of
their group, never copied per head), v = dt·x, log α = dt·A and S = hᵀ (N, P). The kernels
(linear_attention/triton.py) compute the intra-chunk scores as the matmul C Bᵀ times the segment
decays exp(b_τ − b_σ) (σ ≤ τ), pass the states between chunks in registers, and recompute them in
the backward; autograd carries the gradients through dt·x, dt·A and the transposes. Imported on
the first call of the mode, never by ``import ssmkit``.
"""
from __future__ import annotations

from torch import Tensor

from ..linear_attention.triton import chunked_gla_triton


def ssd_triton(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
               initial_state: Tensor | None = None, chunk_size: int = 64) -> tuple[Tensor, Tensor]:
    """Same signature and result as ``ssd_reference``, plus ``chunk_size`` (clamped to 16..64)."""
    h0 = None if initial_state is None else initial_state.transpose(-1, -2)  # (B, H, N, P)
    y, S = chunked_gla_triton(C, B, x * dt[..., None], dt * A, h0, 1.0, chunk_size)
    if D is not None:
        y = y + x * (D[:, None] if D.ndim == 1 else D)
    return y, S.transpose(-1, -2)
