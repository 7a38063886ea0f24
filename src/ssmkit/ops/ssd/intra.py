"""Chunked SSD's intra-chunk output y = (C B^T ∘ exp(segsum(a))) (dt x) as one autograd node.

At long L the (..., R, T, T) matrices are the largest tensors of the op (L·H·T floats: 512 MB at
B=2, L=16k, H=64, T=64), and every one that autograd keeps or re-creates costs memory and, for
allocations this large, fresh pages from the OS. Composed from torch ops, the forward kept both
the decay matrix and the masked product M = C B^T ∘ decay (for the matmul's backward), and the
backward formed several more (grads of the product, of the decay, of the mask). Here only the
decay matrix is kept; the backward recomputes M once and reuses one buffer for the rest:

    gM = gy (dt x)^T             grad (dt x) = M^T gy
    grad C B^T = sum over the R heads of gM ∘ decay
    W = gM ∘ M                   the grad of segsum, folded into a as in core.segsum.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...core.segsum import decay_forward, segsum_backward, subnormal_floor


class _IntraChunk(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, cb: Tensor, xdt: Tensor) -> Tensor:
        cb = cb.tril()  # masks the decay's upper triangle, which decay_forward leaves at 1
        decay = decay_forward(a, upper=1.0)
        y = (decay * cb.unsqueeze(-3)) @ xdt
        ctx.save_for_backward(decay, cb, xdt)
        return y

    @staticmethod
    def backward(ctx, gy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        decay, cb, xdt = ctx.saved_tensors
        # gy arrives as a permuted view of the output's gradient: batched matmuls on it would
        # copy each (T, P) block separately (thousands of small copies at L = 16k).
        gy = gy.contiguous()
        cb_heads = cb.unsqueeze(-3)
        g_xdt = (decay * cb_heads).transpose(-1, -2) @ gy
        buf = gy @ xdt.transpose(-1, -2)  # gM
        buf.mul_(decay)
        g_cb = buf.sum(-3).tril_()
        buf.mul_(cb_heads)  # W = gM ∘ M
        return segsum_backward(buf), g_cb, g_xdt


def intra_chunk(a: Tensor, cb: Tensor, xdt: Tensor) -> Tensor:
    """a (..., R, T) log-decays <= 0, cb (..., T, T) = C B^T per group, xdt (..., R, T, P)
    -> (..., R, T, P) = (cb ∘ exp(segsum(a))) @ xdt, with ``core.segsum.decay_forward``'s floor."""
    return _IntraChunk.apply(a, cb, xdt)


class _IntraFactored(torch.autograd.Function):
    """The same output with the decay factored, exp(cum_t - cum_s) = e_t f_s (see ``intra_chunk_factored``)."""

    @staticmethod
    def forward(ctx, cum: Tensor, cb: Tensor, xdt: Tensor) -> Tensor:
        batch, nc, T, G, R = cum.shape
        cbl = cb.tril()  # per group: (T, T), not per head
        P = xdt.shape[-1]
        half = cum[:, :, -1:] * 0.5  # a constant offset: the output does not depend on it
        e = torch.exp(cum - half).transpose(2, 3)  # (B, nc, G, T, R)
        f = torch.exp(half - cum)  # (B, nc, T, G, R)
        u = (xdt * f[..., None]).view(batch, nc, T, G, R * P).transpose(2, 3)  # (B, nc, G, T, R*P), a view
        v = cbl @ u  # one (T, T) x (T, R*P) matmul per group: every head of the group at once
        y = v.view(batch, nc, G, T, R, P) * e[..., None]
        ctx.save_for_backward(e, cbl, u, v)
        return y

    @staticmethod
    def backward(ctx, gy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        e, cbl, u, v = ctx.saved_tensors
        batch, nc, G, T, R = e.shape
        P = gy.shape[-1]
        gv = (gy.contiguous() * e[..., None]).view(batch, nc, G, T, R * P)
        g_cbl = (gv @ u.transpose(-1, -2)).tril_()
        gu = cbl.transpose(-1, -2) @ gv  # (B, nc, G, T, R*P)
        # d e / d cum = e and d f / d cum = -f: the sums over P of g ∘ (the factor's own product).
        g_cum = (gv * v).view(batch, nc, G, T, R, P).sum(-1)
        g_cum -= (gu * u).reshape(batch, nc, G, T, R, P).sum(-1)  # u is a transposed view
        f = torch.reciprocal(e)  # e_t f_t = 1 for the same offset
        g_xdt = (gu.view(batch, nc, G, T, R, P) * f[..., None]).transpose(2, 3)  # (B, nc, T, G, R, P)
        return g_cum.transpose(2, 3), g_cbl, g_xdt


def factored_range(dtype: torch.dtype) -> float:
    """The least chunk log-decay ``intra_chunk_factored`` takes: its factors stay within
    [sqrt(tiny), 1 / sqrt(tiny)], so nothing overflows or is subnormal."""
    return 2 * subnormal_floor(dtype)


def intra_chunk_factored(cum: Tensor, cb: Tensor, xdt: Tensor) -> Tensor:
    """cum (B, nc, T, G, R) the cumulative log-decay within each chunk (<= 0, non-increasing, its last
    entry >= ``factored_range``), cb (B, nc, G, T, T) = C B^T per group (its upper triangle is not
    read), xdt (B, nc, T, G, R, P) in the input's layout
    -> y (B, nc, G, T, R, P) = (tril(cb) ∘ exp(cum_t - cum_s)) @ xdt per head.

    exp(cum_t - cum_s) = e_t f_s with e = exp(cum - h), f = exp(h - cum), h half the chunk's total, so
    y = e ∘ (tril(cb) @ (f ∘ xdt)): no (T, T) matrix per head (L·H·T floats built and exponentiated), one
    matmul per group with the group's heads as columns, read in the input's layout. Each product
    e_t f_s is the decay to a relative 2 eps (no cancellation: the sum over s is scaled by one e_t
    per row). A decay below exp(floor) (``core.segsum``), which ``intra_chunk`` raises to the floor,
    is kept here: both are far below any entry they are summed with."""
    return _IntraFactored.apply(cum, cb, xdt)
