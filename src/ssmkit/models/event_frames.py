"""``arch=event_frames``: the non-sequence baseline of the event tasks, events binned into frames + a CNN.

The usual way to feed events to a frame-based network (e.g. the event-frame / voxel-grid inputs of
Gehrig et al. 2019): the stream's duration is cut into ``bins`` equal time bins, each event adds 1
to its pixel in the frame of its bin and polarity, giving (B, 2 * bins, H, W) counts, scaled by
log(1 + count); a small CNN (two 3 x 3 conv + GELU stages of width D, each followed by 2 x 2 max
pooling, then global average pooling) and a Linear give the logits. It reads the same
``EventStream`` inputs as ``arch=event_stream`` and uses no mixer (the run's mixer is ignored).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..config import check
from .backbone import BackboneConfig
from .conv import small_cnn
from .events import check_events
from .kinds import TaskKind
from .layouts import EventStream, require_layout
from .registry import DataSpec, register_arch


@dataclasses.dataclass
class EventFramesConfig:
    bins: int = 3  # time bins over the stream's duration (3: one per N-MNIST saccade)

    def __post_init__(self) -> None:
        check(self.bins >= 1, "bins", f"must be >= 1, got {self.bins}")


def bin_events(inputs: Tensor, mask: Tensor, layout: EventStream, bins: int) -> Tensor:
    """Events (B, L, 4) -> counts (B, 2 * bins, H, W): channel 2 * bin + (polarity > 0)."""
    B = inputs.shape[0]
    H, W = layout.height, layout.width
    x, y, t, p = inputs.masked_fill(~mask[..., None], 0).unbind(-1)
    b = (t / layout.duration * bins).long().clamp(0, bins - 1)
    channel = 2 * b + (p > 0).long()
    index = ((channel * H + y.long()) * W + x.long()).masked_fill(~mask, 0)
    counts = torch.zeros(B, 2 * bins * H * W, dtype=inputs.dtype, device=inputs.device)
    counts.scatter_add_(1, index, mask.to(inputs.dtype))
    return counts.view(B, 2 * bins, H, W)


class EventFrames(nn.Module):
    """``model(events (B, L, 4), mask (B, L), dt=None) -> logits (B, classes)`` through binned frames."""

    def __init__(self, backbone: BackboneConfig, spec: DataSpec, cfg: EventFramesConfig) -> None:
        super().__init__()
        self.layout = require_layout(spec.layout, EventStream, "event_frames", "mnist_events")
        check(spec.kind == TaskKind.CLASSIFY, "arch", f"'event_frames' classifies streams, the task's kind is '{spec.kind}'")
        self.bins = cfg.bins
        self.cnn = small_cnn(2 * cfg.bins, backbone.d_model)
        self.head = nn.Linear(backbone.d_model, spec.n_out)

    def forward(self, inputs: Tensor, mask: Tensor | None = None, dt: Tensor | None = None) -> Tensor:
        mask = check_events("event_frames", inputs, mask, self.layout)
        frames = torch.log1p(bin_events(inputs, mask, self.layout, self.bins))
        return self.head(self.cnn(frames))


@register_arch("event_frames", EventFramesConfig)
def build_event_frames(backbone: BackboneConfig, spec: DataSpec, pool: str, cfg: EventFramesConfig) -> EventFrames:
    """Events binned into frames and read by a small CNN: the non-sequence baseline (docs/events.md)."""
    return EventFrames(backbone, spec, cfg)
