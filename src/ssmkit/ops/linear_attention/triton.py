"""The ``triton`` mode of gated linear attention: chunked forward and backward kernels.

Imported on the first call of the mode, never by ``import ssmkit``. One program per (key block,
value block, batch·head) walks the chunks of T steps in order, its (BK, BV) block of the state in
registers; per chunk (local prefix sums b_τ of the log-decays, b_T the chunk's total):

    A_τσ = Σ_k q_τk k_σk exp(b_τk − b_σk)  (σ ≤ τ)          scores inside the chunk
    o    = scale (A v + (q ∘ exp(b)) S_in)                  this key block's share of the output
    S    = exp(b_T) ∘ S_in + (k ∘ exp(b_T − b))ᵀ v           the state leaving the chunk

The outputs of the key blocks are summed afterwards (o is linear in the sum over k). With no decay
A is the causal mask of q kᵀ; with one decay per head A = (q kᵀ) ∘ exp(b_τ − b_σ) (two matmuls, the
SSD form); with one decay per key channel the exponent depends on k, so A is summed over a
(T, T, BK) block (T = 16). The segment sums b_τ − b_σ = Σ_{σ<i≤τ} a_i are summed directly (a masked
cumsum down the rows) and the keys' decays to the chunk end as reverse cumsums: differences of
prefix sums would carry an error of eps·|b_T| into every exponent (measured: 10-20x the chunked
mode's float32 error on dq and dv at chunks of 64; docs/gpu.md). The mask is applied to the exponent (−inf above the
diagonal) before exp, so with log-decays ≤ 0 no exponential of a positive number is ever formed.

Backward: one kernel walks the chunks forward again (recomputing S_in) for dq; one walks them
backward carrying dS (the gradient of the state leaving a chunk) for dk, dv and d initial_state:

    dv = scale Aᵀ do + (k ∘ exp(b_T − b)) dS_out              dS_in = exp(b_T) ∘ dS_out + scale (q ∘ exp(b))ᵀ do
    dq = scale ((do vᵀ ∘ causal) ⊛ k + exp(b) ∘ (do S_inᵀ))   dk = scale (do vᵀ ∘ causal)ᵀ ⊛ q + exp(b_T − b) ∘ (v dS_outᵀ)

(⊛ the decayed product of the forward). The log-decay's gradient needs no kernel: with B_t the
prefix sum over the whole sequence, q enters only as q ∘ exp(B) and k as k ∘ exp(−B), and the final
state scales with exp(B_L), so dB_t = q_t ∘ dq_t − k_t ∘ dk_t (+ Σ_v dS_L ∘ S_L at t = L) and the
log-decay's gradient is its reverse cumulative sum (docs/math/linear_attention.md).

q and k may have fewer heads than v (G groups, head h reads group h // (H/G)): how SSD runs here.
Matmuls of float32 run in IEEE float32 (no TF32): the kernels referee the others first.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._triton import block

NO_DECAY, HEAD_DECAY, KEY_DECAY = 0, 1, 2


@triton.jit
def _chunk(q, k, g, b, h, hk, c, L, s_qb, s_qt, s_qh, s_kb, s_kt, s_kh, s_gb, s_gt, s_gh, ok, mk,
           BT: tl.constexpr, BK: tl.constexpr, DECAY: tl.constexpr, PREC: tl.constexpr):
    """Chunk c of q and k (BT, BK) with what every kernel derives from it: the decay factors of the
    queries from the chunk start (qf) and of the keys to its end (kf), both (BT, BK) and ≤ 1; the
    chunk's total decay (BK,); the masked decays E of the scores ((BT, BT, BK) for a decay per key
    channel, else (BT, BT)); and the scores A (BT, BT), zero above the diagonal."""
    ot = c * BT + tl.arange(0, BT)
    mt = ot < L
    m2 = mt[:, None] & mk[None, :]
    bq = tl.load(q + b * s_qb + ot[:, None] * s_qt + hk * s_qh + ok[None, :], mask=m2, other=0.0)
    bk = tl.load(k + b * s_kb + ot[:, None] * s_kt + hk * s_kh + ok[None, :], mask=m2, other=0.0)
    causal = ot[:, None] >= ot[None, :]
    if DECAY == 2:
        bg = tl.load(g + b * s_gb + ot[:, None] * s_gt + h * s_gh + ok[None, :], mask=m2, other=0.0)
        qf = tl.exp(tl.cumsum(bg, 0))
        kf = tl.exp(tl.cumsum(bg, 0, reverse=True) - bg)
        # segment sums Σ_{σ<i≤τ} g_i summed directly (a masked cumsum down the rows), not as
        # differences of prefix sums, whose error grows with the chunk's total log-decay
        seg = tl.cumsum(tl.where((ot[:, None] > ot[None, :])[:, :, None], bg[:, None, :], 0.0), 0)
        E = tl.exp(tl.where(causal[:, :, None], seg, float("-inf")))
        last = tl.sum(bg, 0)
        A = tl.sum(bq[:, None, :] * bk[None, :, :] * E, 2)
        total = tl.exp(last)
    elif DECAY == 1:
        bg = tl.load(g + b * s_gb + ot * s_gt + h * s_gh, mask=mt, other=0.0)
        qf = tl.broadcast_to(tl.exp(tl.cumsum(bg, 0))[:, None], (BT, BK))
        kf = tl.broadcast_to(tl.exp(tl.cumsum(bg, 0, reverse=True) - bg)[:, None], (BT, BK))
        seg = tl.cumsum(tl.where(ot[:, None] > ot[None, :], bg[:, None], 0.0), 0)
        E = tl.exp(tl.where(causal, seg, float("-inf")))
        last = tl.sum(bg, 0)
        A = tl.dot(bq, tl.trans(bk), input_precision=PREC) * E
        total = tl.exp(tl.broadcast_to(last, (BK,)))
    else:
        qf = tl.full((BT, BK), 1.0, bq.dtype)
        kf = qf
        E = tl.where(causal, 1.0, 0.0).to(bq.dtype)
        A = tl.dot(bq, tl.trans(bk), input_precision=PREC) * E
        total = tl.full((BK,), 1.0, bq.dtype)
    return bq, bk, qf, kf, A, E, total


@triton.jit
def _offset(nb, ot, h, oc, L, H, W):
    """Offsets (BT, BW) into a contiguous (N·B, L, H, W) buffer (row nb = i·B + b of a buffer of
    partial sums, or b of a (B, L, H, W) tensor), in int64."""
    row = (nb.to(tl.int64) * L + ot) * H + h
    return row[:, None] * W + oc[None, :]


@triton.jit
def _fwd_kernel(q, k, v, g, h0, o, hT, s_qb, s_qt, s_qh, s_kb, s_kt, s_kh, s_vb, s_vt, s_vh,
                s_gb, s_gt, s_gh, B, L, H, HPG, scale,
                K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                DECAY: tl.constexpr, HAS_H0: tl.constexpr, PREC: tl.constexpr):
    """o's share of one key block (o: (NK, B, L, H, V)) and the final state's block (hT: (B, H, K, V))."""
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = i_bh // H, i_bh % H
    hk = h // HPG
    ok = i_k * BK + tl.arange(0, BK)
    ov = i_v * BV + tl.arange(0, BV)
    mk, mv = ok < K, ov < V
    ms = mk[:, None] & mv[None, :]
    state_off = i_bh.to(tl.int64) * K * V + ok[:, None] * V + ov[None, :]
    S = tl.zeros((BK, BV), dtype=o.dtype.element_ty)
    if HAS_H0:
        S += tl.load(h0 + state_off, mask=ms, other=0.0)
    for c in range(0, tl.cdiv(L, BT)):
        bq, bk, qf, kf, A, E, total = _chunk(q, k, g, b, h, hk, c, L, s_qb, s_qt, s_qh, s_kb, s_kt, s_kh,
                                             s_gb, s_gt, s_gh, ok, mk, BT, BK, DECAY, PREC)
        ot = c * BT + tl.arange(0, BT)
        mtv = (ot < L)[:, None] & mv[None, :]
        bv = tl.load(v + b * s_vb + ot[:, None] * s_vt + h * s_vh + ov[None, :], mask=mtv, other=0.0)
        bo = scale * (tl.dot(A, bv, input_precision=PREC) + tl.dot(bq * qf, S, input_precision=PREC))
        tl.store(o + _offset(i_k * B + b, ot, h, ov, L, H, V), bo.to(o.dtype.element_ty), mask=mtv)
        S = S * total[:, None] + tl.dot(tl.trans(bk * kf), bv, input_precision=PREC)
    tl.store(hT + state_off, S.to(hT.dtype.element_ty), mask=ms)


@triton.jit
def _dq_kernel(q, k, v, g, h0, do, dq, s_qb, s_qt, s_qh, s_kb, s_kt, s_kh, s_vb, s_vt, s_vh,
               s_gb, s_gt, s_gh, B, L, H, HPG, scale,
               K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
               DECAY: tl.constexpr, HAS_H0: tl.constexpr, PREC: tl.constexpr):
    """dq's share of one value block (dq: (NV, B, L, H, K)), the chunks in order, S_in recomputed;
    do: (B, L, H, V) contiguous."""
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = i_bh // H, i_bh % H
    hk = h // HPG
    ok = i_k * BK + tl.arange(0, BK)
    ov = i_v * BV + tl.arange(0, BV)
    mk, mv = ok < K, ov < V
    ms = mk[:, None] & mv[None, :]
    S = tl.zeros((BK, BV), dtype=dq.dtype.element_ty)
    if HAS_H0:
        S += tl.load(h0 + i_bh.to(tl.int64) * K * V + ok[:, None] * V + ov[None, :], mask=ms, other=0.0)
    for c in range(0, tl.cdiv(L, BT)):
        bq, bk, qf, kf, A, E, total = _chunk(q, k, g, b, h, hk, c, L, s_qb, s_qt, s_qh, s_kb, s_kt, s_kh,
                                             s_gb, s_gt, s_gh, ok, mk, BT, BK, DECAY, PREC)
        ot = c * BT + tl.arange(0, BT)
        mt = ot < L
        mtv = mt[:, None] & mv[None, :]
        bv = tl.load(v + b * s_vb + ot[:, None] * s_vt + h * s_vh + ov[None, :], mask=mtv, other=0.0)
        bdo = tl.load(do + _offset(b, ot, h, ov, L, H, V), mask=mtv, other=0.0)
        dA = tl.dot(bdo, tl.trans(bv), input_precision=PREC)  # (BT, BT): do_τ · v_σ over this value block
        if DECAY == 2:
            intra = tl.sum(dA[:, :, None] * bk[None, :, :] * E, 1)
        else:
            intra = tl.dot(dA * E, bk, input_precision=PREC)
        bdq = scale * (intra + qf * tl.dot(bdo, tl.trans(S), input_precision=PREC))
        tl.store(dq + _offset(i_v * B + b, ot, h, ok, L, H, K), bdq.to(dq.dtype.element_ty),
                 mask=mt[:, None] & mk[None, :])
        S = S * total[:, None] + tl.dot(tl.trans(bk * kf), bv, input_precision=PREC)


@triton.jit
def _dkv_kernel(q, k, v, g, dhT, do, dk, dv, dh0, s_qb, s_qt, s_qh, s_kb, s_kt, s_kh, s_vb, s_vt, s_vh,
                s_gb, s_gt, s_gh, B, L, H, HPG, scale,
                K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                DECAY: tl.constexpr, HAS_DHT: tl.constexpr, PREC: tl.constexpr):
    """dk's share of one value block (dk: (NV, B, L, H, K)), dv's of one key block (dv: (NK, B, L,
    H, V)) and the initial state's gradient block (dh0: (B, H, K, V)): the chunks in reverse order,
    dS (the gradient of the state leaving the chunk) carried."""
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = i_bh // H, i_bh % H
    hk = h // HPG
    ok = i_k * BK + tl.arange(0, BK)
    ov = i_v * BV + tl.arange(0, BV)
    mk, mv = ok < K, ov < V
    ms = mk[:, None] & mv[None, :]
    state_off = i_bh.to(tl.int64) * K * V + ok[:, None] * V + ov[None, :]
    dS = tl.zeros((BK, BV), dtype=dk.dtype.element_ty)
    if HAS_DHT:
        dS += tl.load(dhT + state_off, mask=ms, other=0.0)
    NC = tl.cdiv(L, BT)
    for i in range(0, NC):
        c = NC - 1 - i
        bq, bk, qf, kf, A, E, total = _chunk(q, k, g, b, h, hk, c, L, s_qb, s_qt, s_qh, s_kb, s_kt, s_kh,
                                             s_gb, s_gt, s_gh, ok, mk, BT, BK, DECAY, PREC)
        ot = c * BT + tl.arange(0, BT)
        mt = ot < L
        mtv = mt[:, None] & mv[None, :]
        bv = tl.load(v + b * s_vb + ot[:, None] * s_vt + h * s_vh + ov[None, :], mask=mtv, other=0.0)
        bdo = tl.load(do + _offset(b, ot, h, ov, L, H, V), mask=mtv, other=0.0)
        dA = tl.dot(bdo, tl.trans(bv), input_precision=PREC)
        bdv = scale * tl.dot(tl.trans(A), bdo, input_precision=PREC) + tl.dot(bk * kf, dS, input_precision=PREC)
        if DECAY == 2:
            intra = tl.sum(dA[:, :, None] * bq[:, None, :] * E, 0)
        else:
            intra = tl.dot(tl.trans(dA * E), bq, input_precision=PREC)
        bdk = scale * intra + kf * tl.dot(bv, tl.trans(dS), input_precision=PREC)
        tl.store(dv + _offset(i_k * B + b, ot, h, ov, L, H, V), bdv.to(dv.dtype.element_ty), mask=mtv)
        tl.store(dk + _offset(i_v * B + b, ot, h, ok, L, H, K), bdk.to(dk.dtype.element_ty),
                 mask=mt[:, None] & mk[None, :])
        dS = dS * total[:, None] + scale * tl.dot(tl.trans(bq * qf), bdo, input_precision=PREC)
    tl.store(dh0 + state_off, dS.to(dh0.dtype.element_ty), mask=ms)


# tl.dot's precision for float32 inputs: IEEE float32 (TF32 would lose ~1e-3 relative; the kernels
# referee the others first). float64 dots are float64 whatever this says.
PRECISION = "ieee"


def _launch(kernel, q, k, v, g, decay, extra, out, B, L, H, K, V, HPG, scale, BT, BK, BV, flag):
    grid = (triton.cdiv(K, BK), triton.cdiv(V, BV), B * H)
    gs = (0, 0, 0) if g is None else g.stride()[:3]
    kernel[grid](q, k, v, q if g is None else g, *extra, *out,
                 *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *gs, B, L, H, HPG, float(scale),
                 K=K, V=V, BT=BT, BK=BK, BV=BV, DECAY=decay, PREC=PRECISION, **flag)


class _ChunkedGLA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, h0, scale, decay, BT):
        B, L, H, V = v.shape
        K, HPG = q.shape[-1], H // q.shape[2]
        BK, BV = block(K, most=64 if decay != KEY_DECAY else 32), block(V, most=64)
        NK = triton.cdiv(K, BK)
        o = v.new_empty(NK, B, L, H, V)
        hT = v.new_empty(B, H, K, V)
        _launch(_fwd_kernel, q, k, v, g, decay, (h0 if h0 is not None else v,), (o, hT), B, L, H, K, V, HPG,
                scale, BT, BK, BV, dict(HAS_H0=h0 is not None))
        ctx.save_for_backward(q, k, v, g, h0, hT)
        ctx.config = (scale, decay, BT, BK, BV, HPG)
        return o.sum(0) if NK > 1 else o[0], hT

    @staticmethod
    def backward(ctx, do, dhT):
        q, k, v, g, h0, hT = ctx.saved_tensors
        scale, decay, BT, BK, BV, HPG = ctx.config
        B, L, H, V = v.shape
        K = q.shape[-1]
        NK, NV = triton.cdiv(K, BK), triton.cdiv(V, BV)
        do = do.contiguous()
        dq = q.new_empty(NV, B, L, H, K)
        dk = q.new_empty(NV, B, L, H, K)
        dv = v.new_empty(NK, B, L, H, V)
        dh0 = v.new_empty(B, H, K, V)
        _launch(_dq_kernel, q, k, v, g, decay, (h0 if h0 is not None else v, do), (dq,), B, L, H, K, V, HPG,
                scale, BT, BK, BV, dict(HAS_H0=h0 is not None))
        has_dhT = dhT is not None
        _launch(_dkv_kernel, q, k, v, g, decay, (dhT.contiguous() if has_dhT else v, do), (dk, dv, dh0),
                B, L, H, K, V, HPG, scale, BT, BK, BV, dict(HAS_DHT=has_dhT))
        dq, dk, dv = dq.sum(0), dk.sum(0), dv.sum(0)  # (B, L, H, ·), dq and dk per head
        dg = None
        if decay != NO_DECAY and ctx.needs_input_grad[3]:
            # dB_t = q_t ∘ dq_t − k_t ∘ dk_t, plus Σ_v dS_L ∘ S_L at the end; dg = reverse cumsum
            per_head = lambda x: x.repeat_interleave(HPG, dim=2) if HPG > 1 else x  # noqa: E731
            # The identity cancels large terms: in float32 its error follows dq's and dk's times
            # the cancellation (measured at L = 389, a fixed decay per head: 1.9e-5 relative, the
            # chunked mode 1.6e-7; accumulating in float64 did not help: docs/gpu.md).
            dB = per_head(q) * dq - per_head(k) * dk  # (B, L, H, K)
            if has_dhT:
                dB[:, -1] += (dhT * hT).sum(-1)
            dg = dB.flip(1).cumsum(1).flip(1)
            if decay == HEAD_DECAY:
                dg = dg.sum(-1)
        if HPG > 1:  # a group's q and k serve HPG heads: their gradients add up
            dq = dq.view(B, L, H // HPG, HPG, K).sum(3)
            dk = dk.view(B, L, H // HPG, HPG, K).sum(3)
        return dq, dk, dv, dg, (dh0 if h0 is not None else None), None, None, None


def chunked_gla_triton(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None, initial_state: Tensor | None,
                       scale: float, chunk_size: int = 64) -> tuple[Tensor, Tensor]:
    """q, k (B, L, G, K) with G dividing H; v (B, L, H, V); log_decay None, (B, L, H) (per head and
    step; a stride-0 view of a fixed (H,) decay is fine) or (B, L, H, K); initial_state (B, H, K, V)
    | None -> (o (B, L, H, V), final_state (B, H, K, V)). Chunks of min(chunk_size, 64) steps (at least
    16: tl.dot's least size), 16 with a decay per key channel."""
    if log_decay is None:
        decay, g = NO_DECAY, None
    elif log_decay.ndim == 3:
        decay, g = HEAD_DECAY, log_decay
    else:
        decay, g = KEY_DECAY, log_decay.contiguous()
    BT = 16 if decay == KEY_DECAY else block(chunk_size, most=64)
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    h0 = None if initial_state is None else initial_state.contiguous()
    return _ChunkedGLA.apply(q, k, v, g, h0, scale, decay, BT)


def linear_attention_triton(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None = None,
                            initial_state: Tensor | None = None, scale: float = 1.0,
                            chunk_size: int = 64) -> tuple[Tensor, Tensor]:
    """Same signature and result as ``linear_attention_reference``, plus ``chunk_size``."""
    if log_decay is not None and log_decay.ndim == 1:  # fixed per head: a stride-0 view per step
        log_decay = log_decay.expand(v.shape[0], v.shape[1], -1)
    return chunked_gla_triton(q, k, v, log_decay, initial_state, scale, chunk_size)
