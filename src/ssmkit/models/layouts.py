"""How a task packs inputs that are neither a token sequence nor an image: ``DataSpec.layout``.

A task whose inputs need more than (B, L, C) to be read sets ``TaskInfo.layout`` to one of these;
the architecture made for that data checks it (``require_layout``), so pairing an architecture with
a task whose data it cannot read is one error naming both. Every other architecture ignores it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..config import check


@dataclasses.dataclass(frozen=True)
class EventStream:
    """Events of a ``height`` x ``width`` sensor: inputs (B, L, 4) = (x, y, t, polarity) in time
    order, x in 0..width-1, y in 0..height-1, t >= 0 increasing, polarity 1 (ON) or -1 (OFF); right
    padded with ``mask``; ``Batch.dt`` (B, L) the time since the previous event (> 0)."""

    height: int
    width: int
    duration: float  # the stream's time span, in the unit of t


@dataclasses.dataclass(frozen=True)
class PointSet:
    """``n_points`` points in 3-D: inputs (B, n_points, 3) float, in no particular order."""

    n_points: int


@dataclasses.dataclass(frozen=True)
class VideoFrames:
    """Frames of ``height`` x ``width`` grey pixels: inputs (B, T, H*W) float, each frame row-major."""

    height: int
    width: int


@dataclasses.dataclass(frozen=True)
class ImageCaption:
    """An image then its caption, packed in one tensor: inputs (B, H*W + T, 1) float, the H*W pixels
    row-major followed by the T = ``max_tokens`` caption token ids (BOS, characters, EOS, then PAD) as
    floats; targets (B, T) long, the next token at each caption position (IGNORE after EOS)."""

    image_shape: tuple[int, int, int]  # (H, W, C) with C = 1
    max_tokens: int  # T: caption positions, BOS and EOS included
    vocab_size: int
    bos: int
    eos: int
    pad: int


def require_layout(spec_layout: Any, cls: type, arch: str, tasks: str) -> Any:
    """``spec_layout`` when it is a ``cls``; else a ValueError naming the architecture and the tasks it reads."""
    check(isinstance(spec_layout, cls), "arch",
          f"'{arch}' reads {cls.__name__} data ({tasks}); this task's inputs are "
          f"{type(spec_layout).__name__ if spec_layout is not None else 'a plain sequence or image'}")
    return spec_layout
