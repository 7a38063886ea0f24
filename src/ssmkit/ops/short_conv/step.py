"""One token of the short convolution, for streaming and generation."""
from __future__ import annotations

import torch
from torch import Tensor

from ...core.precision import float32_core


@float32_core
def short_conv_step(
    x_t: Tensor, weight: Tensor, bias: Tensor | None = None, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """x_t (B, D), weight (D, K), bias (D,) | None, state (B, K-1, D) | None (zeros)
    -> (y_t (B, D), new_state (B, K-1, D)). Pure: ``state`` is read, never written.
    """
    if x_t.ndim != 2:
        raise ValueError(f"short_conv_step: x_t must have shape (B, D), got {tuple(x_t.shape)}")
    batch, D = x_t.shape
    if weight.ndim != 2 or weight.shape[0] != D or weight.shape[1] < 1:
        raise ValueError(
            f"short_conv_step: weight must have shape (D, K) with D={D} and K >= 1, "
            f"got {tuple(weight.shape)}"
        )
    K = weight.shape[1]
    if bias is not None and tuple(bias.shape) != (D,):
        raise ValueError(
            f"short_conv_step: bias must have shape (D,) = {(D,)}, got {tuple(bias.shape)}"
        )
    if state is not None and tuple(state.shape) != (batch, K - 1, D):
        raise ValueError(
            f"short_conv_step: state must have shape (B, K-1, D) = {(batch, K - 1, D)}, "
            f"got {tuple(state.shape)}"
        )
    if state is None:
        state = x_t.new_zeros(batch, K - 1, D)
    window = torch.cat([state, x_t[:, None]], dim=1)  # (B, K, D), oldest first, x_t last
    y_t = (window * weight.T).sum(dim=1)
    if bias is not None:
        y_t = y_t + bias
    return y_t, window[:, 1:]
