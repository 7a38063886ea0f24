"""Causal long convolution per channel (the convolution view of an LTI SSM, Hyena filters).

Modes (same signature, same result up to rounding; see README.md):
- ``reference``: the sum over the K taps, the ground truth.
- ``fft``: O(L log L) FFT convolution.
- ``auto``: always ``fft``.
The state is the input history (the last K-1 inputs), so a split sequence continues exactly;
``long_conv_step`` advances one token.
"""
from __future__ import annotations

from torch import Tensor

from ...core.precision import float32_core
from .._validate import check_real_or_complex
from ..dispatch import Modes
from .fft import long_conv_fft
from .reference import long_conv_reference
from .step import long_conv_step

MODES = Modes("long_conv", {"fft": long_conv_fft, "reference": long_conv_reference})


def _check_inputs(u: Tensor, k: Tensor, initial_state: Tensor | None) -> None:
    if u.ndim != 3:
        raise ValueError(f"u must be (B, L, H), got shape {tuple(u.shape)}")
    B, L, H = u.shape
    if L == 0:
        raise ValueError(f"empty sequence: u has length 0 (shape {tuple(u.shape)}), expected L >= 1")
    if k.ndim != 2 or k.shape[0] != H or k.shape[1] == 0:
        raise ValueError(f"k must be (H, K) with H = {H} and K >= 1, got shape {tuple(k.shape)}")
    check_real_or_complex({"u": u, "k": k, "initial_state": initial_state})
    expected = (B, k.shape[1] - 1, H)
    if initial_state is not None and tuple(initial_state.shape) != expected:
        raise ValueError(
            f"initial_state has shape {tuple(initial_state.shape)}, expected (B, K-1, H) = {expected}"
        )


@float32_core
def long_conv(
    u: Tensor, k: Tensor, initial_state: Tensor | None = None, mode: str = "auto"
) -> tuple[Tensor, Tensor]:
    """u: (B, L, H), k: (H, K), initial_state: (B, K-1, H) -> (y (B, L, H), final_state (B, K-1, H))."""
    _check_inputs(u, k, initial_state)
    return MODES.run(mode, u, u, k, initial_state)


__all__ = ["long_conv", "long_conv_reference", "long_conv_fft", "long_conv_step", "MODES"]
