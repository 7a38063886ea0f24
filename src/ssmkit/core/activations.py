"""Activations whose aten backward kernels break AOT-traced graphs, written so that they trace.

aten's ``softplus_backward`` and ``elu_backward`` return, for a transposed incoming gradient, strides
that their meta functions do not predict; a backward graph traced by AOTAutograd (torch.compile's
``aot_eager`` and ``inductor`` backends, torch.export) then fails at a ``view`` of that result. While
tracing, these functions are written with plain pointwise ops (same values; rounding may differ in
the last bit); in eager mode they call torch's fused kernels. docs/compile.md.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def softplus(x: Tensor) -> Tensor:
    """log(1 + e^x), = x above torch's threshold 20."""
    if torch.compiler.is_compiling():
        return torch.where(x > 20, x, torch.log1p(torch.exp(x.clamp(max=20))))
    return F.softplus(x)


def elu_plus_one(x: Tensor) -> Tensor:
    """elu(x) + 1: x + 1 for x > 0, e^x otherwise (positive everywhere)."""
    if torch.compiler.is_compiling():
        return torch.where(x > 0, x + 1.0, torch.exp(x.clamp(max=0)))
    return F.elu(x) + 1.0
