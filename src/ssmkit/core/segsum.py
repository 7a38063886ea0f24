"""Segment sums of log-decays, the mask of SSD's attention form, without cancellation; and the
decay matrix exp(segsum(a)) as a forward (``decay_forward``) and a lean backward
(``segsum_backward``) for autograd Functions that keep only the decay (ops/ssd/intra.py).

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
magnitude slower (the mamba2 layer at L = 16k had half of its decay entries there), and so do
products of small decays with small operands. Entries are clamped from below to sqrt(finfo.tiny)
(1e-19 in float32, 1e-154 in float64): far below the rounding error of any sum they enter.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def segsum(a: Tensor) -> Tensor:
    """a (..., T) -> (..., T, T): out[..., t, s] = a_{s+1} + ... + a_t for t >= s, -inf for t < s.

    Each entry is summed directly from the a_k it covers (a masked cumulative sum down the rows)
    rather than as cumsum_t - cumsum_s: the difference of two large prefix sums loses the small
    segment sum to cancellation over long sequences. With a <= 0 every finite entry is <= 0, so
    exp(segsum) never exponentiates a positive number; the -inf above the diagonal gives exp = 0
    with a zero (not NaN) gradient.
    """
    T = a.shape[-1]
    rows = a[..., :, None].expand(*a.shape, T)  # rows[..., i, s] = a_i
    below = torch.ones(T, T, dtype=torch.bool, device=a.device).tril(-1)  # i > s
    out = torch.where(below, rows, 0.0).cumsum(dim=-2)  # [t, s] = sum_{s < i <= t} a_i
    causal = torch.ones(T, T, dtype=torch.bool, device=a.device).tril()
    return torch.where(causal, out, -torch.inf)


def subnormal_floor(dtype: torch.dtype) -> float:
    """Exponents are clamped from below to this: exp(floor) = sqrt(finfo.tiny), so products of a
    decay with operands above sqrt(tiny) stay normal too (they fill the matmuls that follow)."""
    return 0.5 * math.log(torch.finfo(dtype).tiny)


def decay_forward(a: Tensor, upper: float = 0.0) -> Tensor:
    """exp(max(segsum(a), subnormal_floor)) on and below the diagonal, ``upper`` above it (1 lets
    a caller that multiplies by a lower-triangular factor anyway skip the mask); no autograd.

    For a chunk (T of at most a few hundred steps) each entry is cum_t - cum_s of one cumsum, an
    outer difference: three passes over the (T, T) matrix instead of a masked cumulative sum down
    its rows (~4x faster). Its rounding is eps |cum_t| in the exponent, i.e. a relative error of
    eps |cum_t| in the decay: 1e-5 in float32 only where a chunk's total log-decay reaches ~100,
    whose far entries are then below the floor anyway; ``segsum`` (whole sequences) sums directly."""
    T = a.shape[-1]
    cum = a.cumsum(-1)
    decay = (cum[..., :, None] - cum[..., None, :]).clamp_(min=subnormal_floor(a.dtype))
    decay = decay.masked_fill_(torch.ones(T, T, dtype=torch.bool, device=a.device).triu(1), 0.0).exp_()
    if upper != 1.0:
        decay.masked_fill_(torch.ones(T, T, dtype=torch.bool, device=a.device).triu(1), upper)
    return decay


def segsum_backward(W: Tensor) -> Tensor:
    """W (..., T, T) = grad ∘ exp(segsum(a)) -> grad of a (..., T); overwrites W's diagonal."""
    W.diagonal(dim1=-2, dim2=-1).zero_()  # segsum's diagonal is the constant 0
    d_cum = W.sum(-1) - W.sum(-2)
    return d_cum.flip(-1).cumsum(-1).flip(-1)
