"""``arch=event_stream``: raw camera events read as a sequence by any mixer stack; one label per stream.

Each event (x, y, t, polarity) of an ``EventStream`` task (``mnist_events``) is one token, in time
order, as event-camera SSMs read them (Zubic et al. 2024; Schoene et al. 2023, EventSSM):

    token = E_pos[y * W + x] + E_pol[polarity]   [+ Linear(t / duration, log gap)   (time=features)]
    -> Backbone (causal mixers; time=dt: Batch.dt * dt_scale as every mixer's per-token step)
    -> mean over the real events -> Linear -> logits (B, classes)

``time`` says how the timestamps reach the model: ``dt`` through the irregular-sampling path that the
SSM families have (docs/irregular.md: the time since the previous event scales the discretization
step, so a long silence decays the state more than a burst; a call without dt, as compare's speed
measurement makes, runs unit steps); ``features`` as two input features
(for mixers without ``dt``, e.g. attention); ``both`` both ways; ``none`` not at all (only the events' order). The
baseline that bins events into frames is ``arch=event_frames`` (``models.event_frames``).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..config import check
from ..layers import get_mixer_class, list_mixers
from .backbone import Backbone, BackboneConfig
from .kinds import TaskKind
from .layouts import EventStream, require_layout
from .registry import DataSpec, register_arch
from .timeseries import masked_pool

TIMES = ("dt", "features", "both", "none")
USES_DT = ("dt", "both")
USES_FEATURES = ("features", "both")
_TASKS = "mnist_events"


@dataclasses.dataclass
class EventStreamConfig:
    time: str = "dt"  # dt | features | both | none (see the module docstring)
    dt_scale: float = 1.0  # time=dt: the mixers' dt = dt_scale * Batch.dt (the task's unit: ms)

    def __post_init__(self) -> None:
        check(self.time in TIMES, "time", f"must be one of {TIMES}, got {self.time!r}")
        check(self.dt_scale > 0, "dt_scale", f"must be > 0, got {self.dt_scale}")


def check_events(arch: str, inputs: Tensor, mask: Tensor | None, layout: EventStream) -> Tensor:
    """Validate events (B, L, 4) against the sensor; returns the mask (all True when None). Timestamps
    must not decrease along the real events of a stream."""
    if inputs.dim() != 3 or inputs.shape[-1] != 4 or not inputs.is_floating_point():
        raise ValueError(f"arch '{arch}' expects float events (B, L, 4) = (x, y, t, polarity), got "
                         f"{inputs.dtype} {tuple(inputs.shape)}")
    if mask is None:
        mask = torch.ones(inputs.shape[:2], dtype=torch.bool, device=inputs.device)
    real = inputs[mask]
    x, y, t, p = real.unbind(-1)
    if bool(((x < 0) | (x >= layout.width) | (y < 0) | (y >= layout.height) | (x != x.round()) | (y != y.round())).any()):
        raise ValueError(f"arch '{arch}': event coordinates must be integer pixels of the {layout.height} x "
                         f"{layout.width} sensor")
    if bool((p.abs() != 1).any()):
        raise ValueError(f"arch '{arch}': event polarity must be +1 (ON) or -1 (OFF)")
    t = inputs[..., 2]
    latest = torch.cummax(t.masked_fill(~mask, float("-inf")), dim=1).values  # the latest real t so far
    if bool((mask[:, 1:] & (t[:, 1:] < latest[:, :-1])).any()) or bool((t[mask] < 0).any()):
        raise ValueError(f"arch '{arch}': event timestamps must be >= 0 and in time order (a later event has an "
                         "earlier t, i.e. a negative gap)")
    return mask


class EventStreamModel(nn.Module):
    """``model(events (B, L, 4), mask (B, L), dt (B, L)) -> logits (B, classes)``."""

    def __init__(self, backbone: BackboneConfig, spec: DataSpec, cfg: EventStreamConfig) -> None:
        super().__init__()
        self.layout = require_layout(spec.layout, EventStream, "event_stream", _TASKS)
        check(spec.kind == TaskKind.CLASSIFY, "arch", f"'event_stream' classifies streams, the task's kind is '{spec.kind}'")
        if cfg.time in USES_DT:
            bad = [n for n in backbone.mixers() if not get_mixer_class(n).accepts_dt]
            takers = [n for n in list_mixers() if get_mixer_class(n).accepts_dt]
            check(not bad, "time", f"'{cfg.time}' gives the event gaps to every mixer, but {bad} cannot take dt; use "
                  f"arch.time=features, or a mixer that takes dt: {takers}")
        self.cfg = cfg
        D = backbone.d_model
        self.pos = nn.Embedding(self.layout.height * self.layout.width, D)
        self.pol = nn.Embedding(2, D)
        self.time_proj = nn.Linear(2, D) if cfg.time in USES_FEATURES else None
        self.backbone = Backbone(backbone)
        self.head = nn.Linear(D, spec.n_out)

    def forward(self, inputs: Tensor, mask: Tensor | None = None, dt: Tensor | None = None) -> Tensor:
        full = check_events("event_stream", inputs, mask, self.layout)
        x, y, t, p = inputs.masked_fill(~full[..., None], 0).unbind(-1)  # pads: pixel 0, never read
        h = self.pos((y * self.layout.width + x).long()) + self.pol((p > 0).long())
        if self.time_proj is not None:
            gap = torch.diff(t, dim=1, prepend=torch.zeros_like(t[:, :1])).clamp_min(1e-3)
            h = h + self.time_proj(torch.stack([t / self.layout.duration, torch.log(gap)], -1))
        if self.cfg.time in USES_DT:
            if dt is None:
                raise ValueError(f"arch 'event_stream' with time='{self.cfg.time}' reads the event gaps as the mixers' dt: call "
                                 "model(events, mask=mask, dt=gaps) (a task's Batch.dt), or build it with time='features'")
            h = self.backbone(h, mask=mask, dt=dt * self.cfg.dt_scale)
        else:
            h = self.backbone(h, mask=mask)
        return self.head(masked_pool(h, mask, "mean"))


@register_arch("event_stream", EventStreamConfig)
def build_event_stream(backbone: BackboneConfig, spec: DataSpec, pool: str, cfg: EventStreamConfig) -> EventStreamModel:
    """Any mixer stack over raw events, with their time gaps as dt (docs/events.md)."""
    return EventStreamModel(backbone, spec, cfg)
