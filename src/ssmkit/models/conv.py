"""The small CNN of the non-sequence baselines (``event_frames``, ``caption_slots``)."""
from __future__ import annotations

from torch import nn


def small_cnn(in_channels: int, width: int, pooled: tuple[int, int] = (1, 1)) -> nn.Sequential:
    """(B, in_channels, H, W) -> (B, width * ph * pw): two stages of 3 x 3 conv + GELU + 2 x 2 max
    pooling at ``width`` channels, then adaptive average pooling to ``pooled`` = (ph, pw) cells
    (1 x 1: global; more cells keep where things are) and flattening."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
        nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(pooled), nn.Flatten())
