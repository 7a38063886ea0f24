"""Convolution mode of the short convolution: one grouped convolution (groups = D).

A convolution is a cross-correlation, out[t] = sum_j w[j] in[t+j], which is the reference formula
on the state-extended input [state, x] with no padding. It runs in the input's own (B, L, D)
layout: seen as (B, D, 1, L) that layout is ``channels_last`` for a 2-d convolution, which oneDNN
runs in place and returns in the same layout. The 1-d convolution wanted (B, D, L) contiguous:
two transposed copies of (B, L, D) around it made it ~25x slower than this (mamba at L = 4k,
E = 512, one thread: 18 ms vs 0.7 ms forward; issue 19).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def short_conv_conv1d(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Same signature and result as ``short_conv_reference``."""
    batch, L, D = x.shape
    K = weight.shape[1]
    if initial_state is None:
        initial_state = x.new_zeros(batch, K - 1, D)
    ext = torch.cat([initial_state, x], dim=1)  # (B, K-1+L, D)
    # (B, D, 1, K-1+L) with channels_last strides: no copy; the result is (B, L, D) in memory.
    y = F.conv2d(ext.transpose(1, 2).unsqueeze(2), weight[:, None, None, :], bias, groups=D)
    return y.squeeze(2).transpose(1, 2).contiguous(), ext[:, L:]  # contiguous: a no-op where oneDNN ran
