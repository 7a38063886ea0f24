"""Chunked (gated) delta rule: the WY / UT transform inside chunks, matmul state passing across.

Per chunk of T steps entering with state M_0 = Sᵀ (K, V), with γ_t = exp(sum of log α over the
chunk up to t) and Γ[t, i] = γ_t / γ_i for i <= t (0 above the diagonal), the recurrence unrolls to

    A   = strictly_lower(diag(β) (K Kᵀ ∘ Γ))                  (T, T)
    U   = (I + A)⁻¹ diag(β) V,   W = (I + A)⁻¹ diag(β γ) K       one unit-triangular solve
    Ū   = U - W M_0                                           pseudo-values given the state
    O   = (Q Kᵀ ∘ Γ) Ū + diag(γ) Q M_0                        lower triangle incl. the diagonal
    M_T = γ_T M_0 + (K ∘ γ_T / γ)ᵀ Ū

A, U, W, the two attention-like products and every output term are batched over all chunks; only
Ū and M_T depend on the entering state, so the loop over L/T chunks is two small matmuls each.
Every decay factor is exp of a sum of log α <= 0, never exp(-cumsum); Γ (and γ_T / γ, its last row)
sums each segment directly (``segsum``), so a huge decay early in a chunk does not cancel the small
ones after it.
Derivation: docs/math/deltanet.md.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.segsum import segsum


# The sequence is processed in segments of whole chunks, the state carried from one to the next,
# so that no temporary exceeds about this many elements (8 MiB in float32): at L = 16k, tensors of
# hundreds of MiB each cost more in fresh page mappings and cache misses than in arithmetic.
SEGMENT_ELEMENTS = 1 << 21


def delta_rule_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    log_alpha: Tensor | None = None,
    initial_state: Tensor | None = None,
    scale: float = 1.0,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor]:
    """Same signature and result as ``delta_rule_reference``, plus the chunk length ``chunk_size``."""
    batch, L, H, K = k.shape
    T = min(chunk_size, L)
    seg = T * max(1, SEGMENT_ELEMENTS // (batch * H * T * max(T, K + v.shape[-1])))
    if L <= seg:
        return _chunked(q, k, v, beta, log_alpha, initial_state, scale, T)
    # split rather than slices: the backward of each slice would zero-fill a full-size grad
    parts = [t.split(seg, dim=1) for t in (q, k, v, beta)]
    alphas = [None] * len(parts[0]) if log_alpha is None else log_alpha.split(seg, dim=1)
    outs, state = [], initial_state
    for q_s, k_s, v_s, b_s, a_s in zip(*parts, alphas):
        o, state = _chunked(q_s, k_s, v_s, b_s, a_s, state, scale, T)
        outs.append(o)
    return torch.cat(outs, dim=1), state


def _chunked(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, log_alpha: Tensor | None,
    initial_state: Tensor | None, scale: float, T: int,
) -> tuple[Tensor, Tensor]:
    """One segment, chunks of exactly T (the last one padded)."""
    batch, L, H, K = k.shape
    V = v.shape[-1]
    pad = -L % T
    if pad:  # β = 0 and log α = 0: identity steps, so the final state is exact
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
        beta = F.pad(beta, (0, 0, 0, pad))
        log_alpha = None if log_alpha is None else F.pad(log_alpha, (0, 0, 0, pad))
    nc = (L + pad) // T

    # Chunk-major layout (nc, B, H, T, X), contiguous: the loop below walks contiguous slices
    # and every batched matmul reads its operands without a copy.
    def blocks(x: Tensor) -> Tensor:  # (B, L, H, X) -> (nc, B, H, T, X)
        return x.reshape(batch, nc, T, H, -1).permute(1, 0, 3, 2, 4).contiguous()

    q, k, v = blocks(q * scale), blocks(k), blocks(v)
    b = blocks(beta[..., None])  # (nc, B, H, T, 1)
    bk = b * k
    kk = bk @ k.transpose(-1, -2)  # diag(β) K Kᵀ (nc, B, H, T, T)
    qk = q @ k.transpose(-1, -2)
    if log_alpha is None:
        qk = qk.tril()
        rhs = torch.cat([b * v, bk], dim=-1)
        k_end, q_in, chunk_decay = k, q, None
    else:
        a = blocks(log_alpha[..., None])[..., 0]  # (nc, B, H, T)
        decay = torch.exp(segsum(a))  # Γ, zero above the diagonal
        kk, qk = kk * decay, qk * decay
        g = a.cumsum(-1)
        gamma = torch.exp(g)[..., None]  # (nc, B, H, T, 1)
        rhs = torch.cat([b * v, gamma * bk], dim=-1)
        k_end = k * decay[..., -1, :, None]  # decay from step i to the chunk end: Γ's last row
        q_in = q * gamma
        chunk_decay = gamma[..., -1:, :]  # (nc, B, H, 1, 1)
    # unitriangular: the solver reads only the strictly lower part of kk, i.e. solves with I + A,
    # A = strictly_lower(kk); the diagonal and the upper part are never read (no tril needed)
    uw = torch.linalg.solve_triangular(kk, rhs, upper=False, unitriangular=True)
    u, w = uw.split([V, K], dim=-1)

    M = v.new_zeros(batch, H, K, V) if initial_state is None else initial_state
    entering, pseudo = [], []
    k_end_t = k_end.transpose(-1, -2)
    decays = [None] * nc if chunk_decay is None else chunk_decay.unbind(0)
    # unbind rather than x[c]: the backward of each index would zero-fill a full-size grad
    for u_c, w_c, ke_c, d_c in zip(u.unbind(0), w.unbind(0), k_end_t.unbind(0), decays):
        entering.append(M)
        ub = u_c - w_c @ M  # (B, H, T, V)
        pseudo.append(ub)
        M = ke_c @ ub + (M if d_c is None else d_c * M)
    u_bar = torch.stack(pseudo)
    M_in = torch.stack(entering)  # (nc, B, H, K, V)
    o = qk @ u_bar + q_in @ M_in  # (nc, B, H, T, V)
    o = o.permute(1, 0, 3, 2, 4).reshape(batch, nc * T, H, V)[:, :L]
    return o, M
