"""Chunked gated linear attention: quadratic inside chunks, a recurrence over chunk states.

With T = min(chunk_size, next power of two ≥ L) and the sequence padded to a multiple of T by
identity steps (k = 0, log-decay 0), for every chunk (local time τ, local prefix sums
b_τ = a_0 + … + a_τ of the log-decays):

1. intra-chunk scores   A_τσ = Σ_k q_τk k_σk exp(b_τk − b_σk)   (σ ≤ τ)        (T, T)
2. chunk state          Z = Σ_σ (k_σ ∘ exp(b_{T-1} − b_σ)) v_σᵀ                (K, V)
3. across chunks        S_in[c+1] = exp(b_{T-1}) ∘ S_in[c] + Z_c           (a loop over L/T)
4. output               o = A v + (q ∘ exp(b)) S_in

Long inputs run in segments of whole chunks, the state carried (``SEGMENT_ELEMENTS``).
No decay: A is the causal mask of q kᵀ and step 3 a running sum. A scalar decay per head:
A = (q kᵀ) ∘ exp(segsum(a)). A decay per key channel: A and the decayed q, k come from the dyadic
decomposition of ``dyadic_scores``, which only multiplies decays ≤ 1. Every exponential here is
of a number ≤ 0 when log_decay ≤ 0. Derivation: docs/math/linear_attention.md.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.segsum import segsum


def dyadic_scores(q: Tensor, k: Tensor, decay: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """q, k (..., T, K), decay = exp(a) (..., T, K) in (0, 1], T a power of two. Returns

        A (..., T, T)   A_τσ = Σ_k q_τk k_σk Π_{σ<i≤τ} decay_ik   (σ ≤ τ), 0 above the diagonal
        q ∘ Π_{i≤τ} decay_i        queries decayed from the block start (..., T, K)
        k ∘ Π_{σ<i<T} decay_i      keys decayed to the block end        (..., T, K)
        Π_i decay_i                the decay of the whole block         (..., 1, K)

    The causal T×T matrix splits into its diagonal and, for h = 1, 2, …, T/2, the blocks that pair
    the right half (queries) with the left half (keys) of each aligned block of size 2h. Through
    the midpoint m of such a block the decay factors exactly into two products of decays ≤ 1:

        Π_{σ<i≤τ} = Π_{m<i≤τ} · Π_{σ<i≤m}          σ ≤ m < τ

    Level by level the queries carry the first factor and the keys the second; going from h to 2h
    multiplies the right half's queries by the left half's total decay and the left half's keys by
    the right half's. Each level is one matmul and two broadcast products: O(T K log T) element
    work instead of the O(T² K) of the direct form; no exponential at all (an underflow to 0 is
    the correct limit of a tiny decay). A custom autograd Function: it works on slabs of rows
    with in-place level updates, and its backward recomputes the levels of a slab and walks them
    down with gradient buffers of its own (autograd's would allocate full-size tensors for every
    half it selects, the slowest part on a CPU).
    """
    return _DyadicScores.apply(q, k, decay)


def _run_levels(q_dec: Tensor, k_dec: Tensor, decay: Tensor, visit) -> Tensor:
    """Walk h = 1, 2, …, T/2 over (N, T, K) buffers q_dec = q ∘ decay and k_dec = k (the level
    h = 1 values, updated in place to the final ones), calling visit(h, q_right, k_left, total)
    with the right halves' queries, the left halves' keys and the decays of the blocks of size h
    before moving on to blocks of size 2h. Returns the decay of the whole block (N, 1, K)."""
    N, T, K = q_dec.shape
    total = decay
    h = 1
    while h < T:
        halves = (N, T // (2 * h), 2, h, K)
        q_right, k_left = q_dec.view(halves)[..., 1, :, :], k_dec.view(halves)[..., 0, :, :]
        visit(h, q_right, k_left, total)
        pairs = total.view(N, T // (2 * h), 2, 1, K)
        q_right *= pairs[..., 0, :, :]  # right half: also decays over the left half
        k_left *= pairs[..., 1, :, :]  # left half: also decays over the right half
        total = pairs[..., 0, 0, :] * pairs[..., 1, 0, :]
        h *= 2
    return total.view(N, 1, K)


SLAB_ELEMENTS = 1 << 18


def _slabs(n_rows: int, T: int, K: int) -> list[slice]:
    """Row ranges of ~SLAB_ELEMENTS elements (1 MB in float32): every temporary of a level walk
    stays cache-sized, and no large block is allocated (and page-faulted) per level."""
    rows = max(1, SLAB_ELEMENTS // (T * K))
    return [slice(i, min(i + rows, n_rows)) for i in range(0, n_rows, rows)]


def _matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b; the level h = 1 products (dot and outer products of vectors) by broadcasting, as
    batched matmuls of 1-row matrices are slow."""
    if a.shape[-1] == 1:  # outer product (..., m, 1) @ (..., 1, p)
        return a * b
    if a.shape[-2] == 1 and b.shape[-1] == 1:  # dot product (..., 1, n) @ (..., n, 1)
        return (a * b.transpose(-1, -2)).sum(-1, keepdim=True)
    return a @ b


def _cross_blocks(A: Tensor, h: int) -> Tensor:
    """The level-h blocks of A (..., T, T) as a view (..., T/2h, h, h): rows of the right half,
    columns of the left half of each aligned block of size 2h."""
    T = A.shape[-1]
    n = T // (2 * h)
    six = A.view(*A.shape[:-2], n, 2, h, n, 2, h)
    return torch.diagonal(six, dim1=-6, dim2=-3)[..., 1, :, 0, :, :].movedim(-1, -3)


class _DyadicScores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, decay: Tensor):
        lead, (T, K) = q.shape[:-2], q.shape[-2:]
        qf, kf, df = (x.reshape(-1, T, K) for x in (q, k, decay))
        A = qf.new_zeros(qf.shape[0], T, T)
        q_dec, k_dec, total = torch.mul(qf, df), kf.clone(), qf.new_empty(qf.shape[0], 1, K)
        for rows in _slabs(qf.shape[0], T, K):
            A_rows = A[rows]
            A_rows.diagonal(dim1=-2, dim2=-1).copy_((qf[rows] * kf[rows]).sum(-1))

            def fill(h, q_right, k_left, block_decay):
                _cross_blocks(A_rows, h).copy_(_matmul(q_right, k_left.transpose(-1, -2)))

            total[rows] = _run_levels(q_dec[rows], k_dec[rows], df[rows], fill)
        ctx.save_for_backward(q, k, decay)
        return A.view(*lead, T, T), q_dec.view(q.shape), k_dec.view(k.shape), total.view(*lead, 1, K)

    @staticmethod
    def backward(ctx, dA, dq_dec, dk_dec, dtotal):
        q, k, decay = ctx.saved_tensors
        T, K = q.shape[-2:]
        qf, kf, df = (x.reshape(-1, T, K) for x in (q, k, decay))
        N = qf.shape[0]
        grads_in = [None if g is None else g.reshape(N, *g.shape[-2:]) for g in (dA, dq_dec, dk_dec, dtotal)]
        dq, dk, ddecay = torch.empty_like(qf), torch.empty_like(kf), torch.empty_like(df)
        for rows in _slabs(N, T, K):
            q_r, k_r, d_r = qf[rows], kf[rows], df[rows]
            n_rows = q_r.shape[0]
            levels = []
            _run_levels(q_r * d_r, k_r.clone(), d_r,
                        lambda h, qr, kl, total: levels.append((h, qr.clone(), kl.clone(), total)))
            # gradient buffers of this function's own, updated in place level by level
            dA_r, g_q, g_k, g_total = (None if g is None else g[rows] for g in grads_in)
            g_q = torch.zeros_like(q_r) if g_q is None else g_q.clone()
            g_k = torch.zeros_like(k_r) if g_k is None else g_k.clone()
            g_total = q_r.new_zeros(n_rows, 1, K) if g_total is None else g_total
            dA_r = q_r.new_zeros(n_rows, T, T) if dA_r is None else dA_r
            for h, q_right, k_left, total in reversed(levels):
                n = T // (2 * h)
                halves = (n_rows, n, 2, h, K)
                pairs = total.view(n_rows, n, 2, 1, K)
                dq_right = g_q.view(halves)[..., 1, :, :]
                dk_left = g_k.view(halves)[..., 0, :, :]
                # through the step to blocks of size 2h: q_right *= left total, k_left *= right total
                g_total = g_total.view(n_rows, n, 1, K)
                d_left_total = (dq_right * q_right).sum(-2, keepdim=True) + g_total * pairs[..., 1, :, :]
                d_right_total = (dk_left * k_left).sum(-2, keepdim=True) + g_total * pairs[..., 0, :, :]
                g_total = torch.stack([d_left_total, d_right_total], dim=-3).view(n_rows, 2 * n, K)
                dq_right *= pairs[..., 0, :, :]
                dk_left *= pairs[..., 1, :, :]
                # through this level's cross blocks
                d_cross = _cross_blocks(dA_r, h)
                dq_right += _matmul(d_cross, k_left)
                dk_left += _matmul(d_cross.transpose(-1, -2), q_right)
            d_diag = dA_r.diagonal(dim1=-2, dim2=-1)[..., None]
            torch.addcmul(g_total, g_q, q_r, out=ddecay[rows])  # q_dec = q ∘ decay at h = 1
            torch.addcmul(g_q.mul_(d_r), d_diag, k_r, out=dq[rows])
            torch.addcmul(g_k, d_diag, q_r, out=dk[rows])
        return dq.view(q.shape), dk.view(k.shape), ddecay.view(decay.shape)


# The sequence is processed in segments of whole chunks, the state carried from one to the next,
# so that no temporary exceeds about this many elements (8 MiB in float32): at L = 16k, tensors of
# hundreds of MiB cost more in fresh page mappings and cache misses than in arithmetic.
SEGMENT_ELEMENTS = 1 << 21


def linear_attention_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor | None = None,
    initial_state: Tensor | None = None,
    scale: float = 1.0,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor]:
    """Same signature and result as ``linear_attention_reference``, plus ``chunk_size`` (a power
    of two, the chunk length T; shorter sequences use the next power of two ≥ L)."""
    batch, L, H, K = q.shape
    T = min(chunk_size, 1 << (L - 1).bit_length())
    seg = T * max(1, SEGMENT_ELEMENTS // (batch * H * T * max(T, K + v.shape[-1])))
    if L <= seg:
        return _chunked(q, k, v, log_decay, initial_state, scale, T)
    # split rather than slices: the backward of each slice would zero-fill a full-size grad
    parts = [t.split(seg, dim=1) for t in (q, k, v)]
    n = len(parts[0])
    decays = [log_decay] * n if log_decay is None or log_decay.ndim == 1 else log_decay.split(seg, dim=1)
    outs, state = [], initial_state
    for q_s, k_s, v_s, a_s in zip(*parts, decays):
        o, state = _chunked(q_s, k_s, v_s, a_s, state, scale, T)
        outs.append(o)
    return torch.cat(outs, dim=1), state


def _chunked(
    q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None, initial_state: Tensor | None,
    scale: float, T: int,
) -> tuple[Tensor, Tensor]:
    """One segment in chunks of T (the last one padded with identity steps)."""
    batch, L, H, K = q.shape
    T = min(T, 1 << (L - 1).bit_length())  # a short last segment
    pad = -L % T
    nc = (L + pad) // T

    def chunks(x: Tensor) -> Tensor:  # (B, L, H, X) -> (B, H, nc, T, X); padded steps are zeros
        x = F.pad(x, (0, 0, 0, 0, 0, pad)) if pad else x
        return x.reshape(x.shape[0], nc, T, H, x.shape[-1]).permute(0, 3, 1, 2, 4).contiguous()

    qc, kc, vc = chunks(q), chunks(k), chunks(v)  # scale goes into the output matmul
    h0 = initial_state if initial_state is not None else q.new_zeros(batch, H, K, v.shape[-1])
    if log_decay is None:
        scores = (qc @ kc.transpose(-1, -2)).tril_()  # in place on a fresh product: causal mask
        entering, state = _pass_states(kc.transpose(-1, -2) @ vc, None, h0)
        return _output(scores, vc, qc, entering, L, scale), state

    if log_decay.ndim == 1:  # fixed per-head decay; padded steps still need log-decay 0
        a = chunks(log_decay[None, None, :, None].expand(1, L, H, 1))  # (1, H, nc, T, 1)
    elif log_decay.ndim == 3:
        a = chunks(log_decay[..., None])  # (B, H, nc, T, 1)
    else:
        a = chunks(log_decay)  # (B, H, nc, T, K)
    if a.shape[-1] == 1:
        scores = (qc @ kc.transpose(-1, -2)) * torch.exp(segsum(a[..., 0]))
        cum = a.cumsum(-2)  # (B|1, H, nc, T, 1): log-decay from the chunk start through τ
        q_dec = qc * torch.exp(cum)
        k_dec = kc * torch.exp(cum[..., -1:, :] - cum)  # keys decayed to the chunk end
        chunk_decay = torch.exp(cum[..., -1, :, None])  # (B|1, H, nc, 1, 1)
    else:
        scores, q_dec, k_dec, total = dyadic_scores(qc, kc, torch.exp(a))
        chunk_decay = total.transpose(-1, -2)  # (B, H, nc, K, 1)
    Z = k_dec.transpose(-1, -2) @ vc  # (B, H, nc, K, V): each chunk's state from a zero start
    entering, state = _pass_states(Z, chunk_decay.expand(batch, -1, -1, -1, -1), h0)
    return _output(scores, vc, q_dec, entering, L, scale), state


def _pass_states(Z: Tensor, chunk_decay: Tensor | None, h0: Tensor) -> tuple[list[Tensor], Tensor]:
    """S_in[c+1] = chunk_decay[c] ∘ S_in[c] + Z[c] over the nc chunks, a Python loop.

    Z (B, H, nc, K, V), chunk_decay (B, H, nc, K|1, 1) or None (no decay), h0 (B, H, K, V).
    Returns the states entering each chunk and the final state."""
    state, entering = h0, []
    # unbind rather than Z[:, :, c]: the backward of each index would zero-fill a full-size grad
    decays = [None] * Z.shape[2] if chunk_decay is None else chunk_decay.unbind(2)
    for Z_c, decay_c in zip(Z.unbind(2), decays):
        entering.append(state)
        state = state + Z_c if decay_c is None else torch.addcmul(Z_c, decay_c, state)
    return entering, state


def _output(
    scores: Tensor, v: Tensor, q_dec: Tensor, entering: list[Tensor], L: int, scale: float
) -> Tensor:
    """o = scale (scores v + q_dec S_in) per chunk (one fused baddbmm), as (B, L, H, V) without
    padding.

    scores (B, H, nc, T, T), v (B, H, nc, T, V), q_dec (B, H, nc, T, K), entering: nc states
    (B, H, K, V)."""
    batch, H, nc, T, V = v.shape
    S_in = torch.stack(entering, dim=2)  # (B, H, nc, K, V)
    flat = (batch * H * nc, T)
    o = torch.baddbmm(scores.reshape(*flat, T) @ v.reshape(*flat, V), q_dec.reshape(*flat, -1),
                      S_in.reshape(batch * H * nc, -1, V), beta=scale, alpha=scale)
    return o.view(batch, H, nc, T, V).permute(0, 2, 3, 1, 4).reshape(batch, nc * T, H, V)[:, :L]
