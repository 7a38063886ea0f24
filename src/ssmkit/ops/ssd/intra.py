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

from ...core.segsum import decay_forward, segsum_backward


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
