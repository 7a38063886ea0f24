"""Segment sums of log-decays, the mask of SSD's attention form, without cancellation."""
from __future__ import annotations

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
