"""Reversible instance normalization (RevIN, Kim et al., ICLR 2022) over the real positions only.

Each series of a batch is standardized with its own per-channel mean and standard deviation,
taken over its real (unmasked) positions: z = (x - mu) / sigma, then, when ``affine``, a learned
per-channel z <- gamma * z + beta. A forecaster works in these units and its outputs are mapped
back by the exact inverse, y <- ((y - beta) / gamma) * sigma + mu. Shifts of level and scale
between windows (trends, non-stationarity) thus never reach the mixers. The derivation and why
the inverse is exact (no epsilon in the denominator, unlike the reference code) are in
docs/timeseries.md.

Shapes: x (B, L, C), mask (B, L) bool (True = real), statistics (B, 1, C).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

NORMS = ("affine", "plain", "none")  # RevIN with learned gamma/beta, RevIN statistics only, no normalization


def masked_mean_std(x: Tensor, mask: Tensor | None, eps: float) -> tuple[Tensor, Tensor]:
    """Per-row, per-channel mean and sqrt(biased variance + eps) over real positions: (B, 1, C) each.

    Padded entries are replaced by zeros before any arithmetic, so even NaN padding cannot leak.
    """
    if mask is None:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
    else:
        w = mask[..., None]
        n = w.sum(1, keepdim=True).clamp_min(1).to(x.dtype)
        xr = torch.where(w, x, torch.zeros((), dtype=x.dtype, device=x.device))
        mean = xr.sum(1, keepdim=True) / n
        var = torch.where(w, xr - mean, torch.zeros((), dtype=x.dtype, device=x.device)).pow(2).sum(1, keepdim=True) / n
    return mean, (var + eps).sqrt()


class RevIN(nn.Module):
    """``normalize`` (B, L, C) -> (z, stats); ``denormalize`` (B, *, C) outputs with those stats."""

    def __init__(self, n_channels: int, affine: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        if n_channels <= 0:
            raise ValueError(f"RevIN needs n_channels > 0, got {n_channels}")
        if eps <= 0:
            raise ValueError(f"RevIN needs eps > 0, got {eps}")
        self.n_channels, self.eps = n_channels, eps
        self.weight = nn.Parameter(torch.ones(n_channels)) if affine else None  # gamma (C,)
        self.bias = nn.Parameter(torch.zeros(n_channels)) if affine else None  # beta (C,)

    def normalize(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x: (B, L, C) -> z (B, L, C), zero at padded positions, and (mean, std) each (B, 1, C)."""
        if x.ndim != 3 or x.shape[-1] != self.n_channels:
            raise ValueError(f"RevIN expects (B, L, C={self.n_channels}) inputs, got {tuple(x.shape)}")
        mean, std = masked_mean_std(x, mask, self.eps)
        z = (x - mean) / std
        if self.weight is not None:
            z = z * self.weight + self.bias
        if mask is not None:
            z = torch.where(mask[..., None], z, torch.zeros((), dtype=z.dtype, device=z.device))
        return z, (mean, std)

    def denormalize(self, y: Tensor, stats: tuple[Tensor, Tensor]) -> Tensor:
        """y: (B, T, C) in normalized units -> the original units (the exact inverse of ``normalize``)."""
        mean, std = stats
        if self.weight is not None:
            y = (y - self.bias) / self.weight
        return y * std + mean
