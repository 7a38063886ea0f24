"""Chunkwise-parallel mLSTM: quadratic (masked, stabilized) inside chunks, a recurrence across.

With T = min(chunk_size, L) (the sequence padded to a multiple of T by identity steps, log f = 0
and log i = -inf, so the final state is exact), per head and chunk, with b_t = sum of log f from
the chunk start through t and m_prev the stabilizer entering the chunk:

1. D[t, s] = log i_s + sum_{s<r<=t} log f_r  (s <= t, else -inf), summed directly (``segsum``);
   local end state from zero, stabilized by its own max m_loc = max_s D[T-1, s]:
   C_loc = sum_s exp(D[T-1, s] - m_loc) k_s v_s^T,  n_loc likewise;
2. across chunks (a loop over L/T chunks, the exact recurrence of the stabilized state):
   m' = max(b_{T-1} + m, m_loc),  C' = exp(b_{T-1} + m - m') C + exp(m_loc - m') C_loc;
3. outputs, all chunks at once: m_t = max(b_t + m_prev, max_s D[t, s]) is the reference's
   stabilizer at t, and with w_t = exp(b_t + m_prev - m_t), W[t, s] = exp(D[t, s] - m_t):
   num_t = w_t C_prev^T q_t + sum_s W[t, s] (q_t . k_s) v_s,  den_t = w_t n_prev.q_t + sum_s W[t, s] q_t.k_s
   h_t = num_t / max(|den_t|, exp(-m_t)).
Every exponent is <= 0, so nothing overflows. A chunk whose inputs are all padding has
m_loc = -inf; its C_loc is formed with the offset 0 instead (it is 0 either way) so that no
-inf - (-inf) appears. Derivation: docs/math/mlstm.md.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.segsum import segsum


def _heads_first(t: Tensor, nc: int, T: int) -> Tensor:
    """(B, nc*T, H, ...) -> (B, H, nc, T, ...)."""
    return t.unflatten(1, (nc, T)).movedim(3, 1)


def mlstm_chunked(
    q: Tensor, k: Tensor, v: Tensor, log_i: Tensor, log_f: Tensor,
    initial_state: tuple[Tensor, Tensor, Tensor] | None = None, chunk_size: int = 128,
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """Same signature and result as ``mlstm_reference``, plus the chunk length ``chunk_size``."""
    batch, L, H, K = q.shape
    V = v.shape[-1]
    T = min(chunk_size, L)
    pad = -L % T
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
        log_f = F.pad(log_f, (0, 0, 0, pad))
        log_i = F.pad(log_i, (0, 0, 0, pad), value=-torch.inf)
    nc = (L + pad) // T
    # Contiguous once: each is read by two or three batched GEMMs, which would copy a strided view.
    qc, kc, vc = (_heads_first(t, nc, T).contiguous() for t in (q, k, v))  # (B, H, nc, T, K | V)
    li, lf = _heads_first(log_i, nc, T), _heads_first(log_f, nc, T)  # (B, H, nc, T)

    b = lf.cumsum(-1)
    Dlog = segsum(lf) + li[..., None, :]  # (B, H, nc, T, T)
    m_intra = Dlog.amax(-1)  # (B, H, nc, T)
    m_loc = m_intra[..., -1]
    w_end = torch.exp(Dlog[..., -1, :] - torch.where(torch.isfinite(m_loc), m_loc, 0.0)[..., None])
    kw = kc * w_end[..., None]  # (B, H, nc, T, K)
    C_loc = kw.transpose(-1, -2) @ vc  # 1. (B, H, nc, K, V)
    n_loc = kw.sum(-2)  # (B, H, nc, K)

    if initial_state is None:
        C, n, m = q.new_zeros(batch, H, K, V), q.new_zeros(batch, H, K), q.new_zeros(batch, H)
    else:
        C, n, m = initial_state
    entering = []
    # 2. unbind rather than indexing: the backward of each index would zero-fill a full-size grad
    for b_c, m_c, C_c, n_c in zip(b[..., -1].unbind(2), m_loc.unbind(2), C_loc.unbind(2), n_loc.unbind(2)):
        entering.append((C, n, m))
        m_new = torch.maximum(b_c + m, m_c)
        decay, scale = torch.exp(b_c + m - m_new), torch.exp(m_c - m_new)  # (B, H)
        C = decay[..., None, None] * C + scale[..., None, None] * C_c
        n = decay[..., None] * n + scale[..., None] * n_c
        m = m_new
    C_in, n_in, m_in = (torch.stack(s, dim=2) for s in zip(*entering))  # (B, H, nc, ...)

    g = b + m_in[..., None]  # 3. (B, H, nc, T)
    m_t = torch.maximum(g, m_intra)
    w_inter = torch.exp(g - m_t)
    S = (qc @ kc.transpose(-1, -2)) * torch.exp(Dlog - m_t[..., None])  # (B, H, nc, T, T)
    qw = qc * w_inter[..., None]  # the state's weight on the (T, K) side, not the (T, V) product
    # Batched GEMMs over (B H nc): S v, then qw C_in accumulated into it by the same call.
    num = torch.baddbmm((S @ vc).reshape(-1, T, V), qw.reshape(-1, T, K), C_in.reshape(-1, K, V))
    num = num.view(*S.shape[:-1], V)  # (B, H, nc, T, V)
    dot = S.sum(-1) + (qw @ n_in[..., None]).squeeze(-1)
    h = num / torch.maximum(dot.abs(), torch.exp(-m_t))[..., None]
    return h.movedim(1, 3).flatten(1, 2)[:, :L], (C, n, m)
