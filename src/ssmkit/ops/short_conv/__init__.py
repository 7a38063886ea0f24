"""Causal depthwise short convolution (the local mixing of Mamba, H3 and Hyena).

    y_t[d] = bias[d] + sum_{j<K} weight[d, j] x_{t-(K-1)+j}[d]     (last tap = current token)

Modes: ``reference`` (loop over taps) and ``conv1d`` (grouped F.conv1d); ``auto`` is ``conv1d``.
``short_conv_step`` advances one token; ``conv_state_at`` is the state after each row's length
(padded batches). See README.md.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...core.precision import float32_core
from ..dispatch import Modes
from .conv1d import short_conv_conv1d
from .reference import short_conv_reference
from .starts import drop_cross_taps
from .state import conv_state_at
from .step import short_conv_step

MODES = Modes("short_conv", {"conv1d": short_conv_conv1d, "reference": short_conv_reference})


@float32_core
def short_conv(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    initial_state: Tensor | None = None,
    mode: str = "auto",
    starts: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """x (B, L, D), weight (D, K) in PyTorch Conv1d orientation (weight[:, K-1] multiplies the
    current token), bias (D,) | None, initial_state (B, K-1, D) the last K-1 inputs, oldest first
    (None: zeros) -> (y (B, L, D), final_state (B, K-1, D) the last K-1 inputs of [state, x]).
    ``starts`` (B, L) bool: tokens that begin a new document of a packed row; no tap reaches
    before them (starts.py), in every mode.
    """
    _validate(x, weight, bias, initial_state)
    y, final = MODES.run(mode, x, x, weight, bias, initial_state)
    if starts is None:
        return y, final
    if starts.shape != x.shape[:2] or starts.dtype != torch.bool:
        raise ValueError(f"short_conv: starts must be a bool tensor of shape (B, L) = {tuple(x.shape[:2])}, "
                         f"got {starts.dtype} {tuple(starts.shape)}")
    return drop_cross_taps(y, final, x, weight, initial_state, starts)


def _validate(x: Tensor, weight: Tensor, bias: Tensor | None, initial_state: Tensor | None) -> None:
    named = {"x": x, "weight": weight, "bias": bias, "initial_state": initial_state}
    for name, t in named.items():
        if t is None and name in ("bias", "initial_state"):
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"short_conv: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(
                f"short_conv: {name} must be a real floating-point tensor, got {t.dtype}"
            )
        if t.dtype != x.dtype or t.device != x.device:
            raise TypeError(
                f"short_conv: {name} is {t.dtype} on {t.device}, "
                f"expected x's {x.dtype} on {x.device}"
            )
    if x.ndim != 3:
        raise ValueError(f"short_conv: x must have shape (B, L, D), got {tuple(x.shape)}")
    batch, L, D = x.shape
    if L == 0:
        raise ValueError(
            "short_conv: x is an empty sequence (L = 0); expected at least one time step"
        )
    if weight.ndim != 2 or weight.shape[0] != D or weight.shape[1] < 1:
        raise ValueError(
            f"short_conv: weight must have shape (D, K) with D={D} and K >= 1, "
            f"got {tuple(weight.shape)}"
        )
    K = weight.shape[1]
    if bias is not None and tuple(bias.shape) != (D,):
        raise ValueError(f"short_conv: bias must have shape (D,) = {(D,)}, got {tuple(bias.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (batch, K - 1, D):
        raise ValueError(
            f"short_conv: initial_state must have shape (B, K-1, D) = {(batch, K - 1, D)}, "
            f"got {tuple(initial_state.shape)}"
        )


__all__ = ["short_conv", "short_conv_reference", "short_conv_conv1d", "short_conv_step", "conv_state_at", "MODES"]
