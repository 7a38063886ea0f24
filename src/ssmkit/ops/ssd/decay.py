"""The within-chunk decay matrix exp(segsum(a)) of chunked SSD, with a lean backward.

Autograd through ``exp(segsum(a))`` keeps and revisits several (..., T, T) tensors: the masked
copy of ``a`` that segsum sums down the rows, its cumulative sum (whose backward flips the full
T x T gradient twice), the -inf mask and the exponential. At long L with H heads these are
L·H·T floats each (512 MB at B=2, L=16k, H=64, T=64), so they dominated the layer's time and peak.

Since segsum(a)[t, s] = cum_t - cum_s (cum = cumsum(a), for t >= s), its gradient needs no
T x T cumulative sum: with W = grad ∘ exp(segsum),
    d cum_t = sum_s W[t, s] - sum_t' W[t', t]        (row sum minus column sum)
    d a_k   = sum_{t >= k} d cum_t                   (a reverse cumsum over T, not T x T).
The forward still sums each entry directly (no cumsum difference, so no cancellation); only the
gradient uses the identity, and it is the exact derivative of the same function.

Exponents below log(finfo.tiny) give subnormal floats, which CPUs multiply an order of
magnitude slower (the mamba2 layer at L = 16k had most of its decay entries there). They are set
to exactly 0: a change below the smallest normal number of the dtype.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


class _ChunkDecay(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor) -> Tensor:
        T = a.shape[-1]
        below = torch.ones(T, T, dtype=torch.bool, device=a.device).tril(-1)  # i > s
        seg = torch.where(below, a[..., :, None], 0.0).cumsum(dim=-2)  # [t, s] = a_{s+1} + ... + a_t
        floor = math.log(torch.finfo(a.dtype).tiny)
        seg.masked_fill_(~below.diagonal_scatter(torch.ones(T, dtype=torch.bool, device=a.device))
                         | (seg < floor), -torch.inf)
        decay = seg.exp_()
        ctx.save_for_backward(decay)
        return decay

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (decay,) = ctx.saved_tensors
        W = grad * decay
        W.diagonal(dim1=-2, dim2=-1).zero_()  # segsum's diagonal is the constant 0
        d_cum = W.sum(-1) - W.sum(-2)
        return d_cum.flip(-1).cumsum(-1).flip(-1)


def chunk_decay(a: Tensor) -> Tensor:
    """a (..., T) log-decays <= 0 -> (..., T, T) lower-triangular exp(segsum(a)), entries in [0, 1].

    Equal to ``exp(segsum(a))`` except that entries below the dtype's smallest normal number are 0.
    """
    return _ChunkDecay.apply(a)
