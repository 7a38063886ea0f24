"""mnist_events: event-camera streams made from MNIST digits by the N-MNIST recipe; classify the digit.

N-MNIST (Orchard et al. 2015) showed each MNIST digit to an ATIS event camera (34 x 34 pixels) moved
by a pan-tilt unit along three saccades of about 100 ms, a triangle; the sensor emits an event
(x, y, t, polarity) whenever a pixel's log intensity has changed by a threshold since its last
event: ON (+1) for an increase, OFF (-1) for a decrease. Here the sensor is simulated:

- the digit (side s = ``digit_size``, 28 or 14) sits on a dark (s + 2 ``shift``)-pixel square frame
  and moves along the triangle (0, 0) -> (``shift``, 2 ``shift``) -> (2 ``shift``, 0) -> (0, 0)
  (x, y in pixels), one saccade per edge, each ``saccade_ms`` long and rendered as
  ``steps_per_saccade`` frames by bilinear interpolation (sub-pixel positions);
- per pixel, L = log(I + ``eps``) is compared with the level of its last event: each crossing of
  a multiple of ``threshold`` between two frames is one event, timed by linear interpolation of L
  between the frames (the ESIM / v2e event simulators' rule), polarity the sign of the change;
- events are sorted by time (ties by pixel index). ``max_events`` > 0 keeps a uniform random
  subset of that size, in time order, of a longer stream (0: keep all).

Inputs (B, L, 4) float: x, y (pixel column and row), t (ms since the stream began), polarity
(+1 / -1); right-padded to the longest stream of the batch with ``mask``; ``Batch.dt`` (B, L) is the
time since the previous event in ms (the first event: since the stream began), floored at
``min_gap_ms`` (a sensor's timestamp resolution), since simultaneous events have no gap and the
irregular-sampling path needs dt > 0. ``TaskInfo.layout`` is an ``EventStream``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import build_config, check
from ..models.layouts import EventStream
from .base import Batch, TaskInfo, register_task
from .mnist_digits import SOURCE, DigitPool, DigitTask


@dataclasses.dataclass
class EventsConfig:
    digit_size: int = 28  # s: the digit's side in pixels (N-MNIST: 28 on a 34 x 34 sensor)
    shift: int = 3  # the saccades' extent in pixels; the sensor is s + 2 * shift square
    saccade_ms: float = 100.0  # duration of each of the three saccades
    steps_per_saccade: int = 20  # rendered frames per saccade
    threshold: float = 0.3  # contrast threshold on log intensity
    eps: float = 0.1  # L = log(I + eps): the dark level
    min_gap_ms: float = 1e-3  # dt floor (1 us, the ATIS timestamp resolution)
    max_events: int = 0  # > 0: a uniform random subset of longer streams, kept in time order
    n_train: int = 10_000  # streams per training epoch (generated afresh per epoch and seed)
    n_eval: int = 1_000  # streams in each of val and test (fixed)

    FIXED_LENGTH: ClassVar[str] = "the events of one stream (their number follows from the digit and the threshold)"

    def __post_init__(self) -> None:
        check(self.digit_size in (14, 28), "digit_size", f"must be 14 or 28, got {self.digit_size}")
        check(self.shift >= 1, "shift", f"must be >= 1, got {self.shift}")
        check(self.saccade_ms > 0, "saccade_ms", f"must be > 0, got {self.saccade_ms}")
        check(self.steps_per_saccade >= 1, "steps_per_saccade", f"must be >= 1, got {self.steps_per_saccade}")
        check(self.threshold > 0, "threshold", f"must be > 0, got {self.threshold}")
        check(self.eps > 0, "eps", f"must be > 0, got {self.eps}")
        check(self.min_gap_ms > 0, "min_gap_ms", f"must be > 0, got {self.min_gap_ms}")
        check(self.max_events >= 0, "max_events", f"must be >= 0 (0: no limit), got {self.max_events}")
        check(self.n_train >= 1 and self.n_eval >= 1, "n_train", "n_train and n_eval must be >= 1")

    @property
    def sensor(self) -> int:
        return self.digit_size + 2 * self.shift

    @property
    def duration_ms(self) -> float:
        return 3 * self.saccade_ms


def saccade_offsets(cfg: EventsConfig) -> tuple[Tensor, Tensor]:
    """The digit's (x, y) offset in pixels (F, 2) at each rendered frame (F = 3 * steps + 1) and the
    frames' times (F,) in ms, along the triangle of the three saccades."""
    d = float(cfg.shift)
    corners = torch.tensor([[0.0, 0.0], [d, 2 * d], [2 * d, 0.0], [0.0, 0.0]], dtype=torch.float64)
    n = cfg.steps_per_saccade
    f = torch.arange(n, dtype=torch.float64)[:, None] / n
    path = [corners[k] + f * (corners[k + 1] - corners[k]) for k in range(3)]
    offsets = torch.cat(path + [corners[3:]])
    times = torch.arange(3 * n + 1, dtype=torch.float64) * (cfg.saccade_ms / n)
    return offsets, times


def render(images: Tensor, offsets: Tensor, sensor: int) -> Tensor:
    """Digits (B, s, s) at each offset (F, 2) on a dark sensor x sensor frame, bilinear: (B, F, S, S)."""
    B, s, _ = images.shape
    frames = []
    for dx, dy in offsets.tolist():
        ix, iy = int(dx), int(dy)
        fx, fy = dx - ix, dy - iy
        canvas = torch.zeros(B, sensor + 1, sensor + 1, dtype=torch.float64)
        img = images.double()
        for ox, oy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            if w:
                canvas[:, iy + oy : iy + oy + s, ix + ox : ix + ox + s] += w * img
        frames.append(canvas[:, :sensor, :sensor])
    return torch.stack(frames, 1)


def simulate_events(frames: Tensor, times: Tensor, threshold: float, eps: float) -> list[Tensor]:
    """Frames (B, F, H, W) of intensity -> per stream the events (n, 4) float64 (x, y, t, polarity)
    sorted by time then pixel index, by the contrast-threshold rule of the module docstring."""
    B, F_, H, W = frames.shape
    log_i = torch.log(frames + eps)
    ref = log_i[:, 0].clone()  # the level of each pixel's last event
    found: list[list[Tensor]] = [[] for _ in range(B)]
    for k in range(1, F_):
        prev, now = log_i[:, k - 1], log_i[:, k]
        change = now - ref
        n = torch.floor(change.abs() / threshold)
        sign = torch.sign(change)
        for j in range(1, int(n.max()) + 1):
            b, y, x = (n >= j).nonzero(as_tuple=True)
            level = ref[b, y, x] + sign[b, y, x] * j * threshold
            step = now[b, y, x] - prev[b, y, x]
            # where L, linear from prev to now, crosses `level`: in (0, 1], since |prev - ref| < threshold
            # (clamped against rounding)
            frac = ((level - prev[b, y, x]) / step).clamp(0, 1)
            t = times[k - 1] + frac * (times[k] - times[k - 1])
            ev = torch.stack([x.double(), y.double(), t, sign[b, y, x]], 1)
            for i in range(B):
                found[i].append(ev[b == i])
        ref = ref + sign * n * threshold
    out = []
    for i in range(B):
        ev = torch.cat(found[i]) if found[i] else torch.zeros(0, 4, dtype=torch.float64)
        ev = ev[torch.sort(ev[:, 1] * W + ev[:, 0], stable=True).indices]  # pixel index, then (stable) time
        out.append(ev[torch.sort(ev[:, 2], stable=True).indices])
    return out


def pack_streams(streams: list[Tensor], min_gap: float) -> tuple[Tensor, Tensor, Tensor]:
    """Streams (n_b, 4) -> inputs (B, L, 4) float32 right-padded, mask (B, L), dt (B, L) (1 at pads)."""
    B = len(streams)
    L = max(1, max(len(s) for s in streams))
    inputs = torch.zeros(B, L, 4)
    mask = torch.zeros(B, L, dtype=torch.bool)
    dt = torch.ones(B, L)
    for i, ev in enumerate(streams):
        n = len(ev)
        if n:
            inputs[i, :n] = ev.float()
            mask[i, :n] = True
            gaps = torch.diff(ev[:, 2], prepend=ev[:1, 2].new_zeros(1))
            dt[i, :n] = gaps.clamp_min(min_gap).float()
    return inputs, mask, dt


@register_task("mnist_events", EventsConfig)
class MnistEvents(DigitTask):
    def __init__(self, **cfg: Any) -> None:
        self.cfg = c = build_config(EventsConfig, cfg)
        self.pool = DigitPool(c.digit_size)
        self.offsets, self.times = saccade_offsets(c)
        S = c.sensor
        self.info = TaskInfo(
            name="mnist_events", kind="classify", length=c.max_events or 3 * c.steps_per_saccade * S * S,
            source=f"generated by the N-MNIST recipe (Orchard et al. 2015) from {SOURCE}",
            sizes={"train": c.n_train, "val": c.n_eval, "test": c.n_eval}, n_classes=10, d_input=4,
            layout=EventStream(S, S, c.duration_ms),
            notes=(f"events (x, y, t ms, polarity) of a {S}x{S} sensor over 3 saccades of {c.saccade_ms:g} ms, "
                   f"threshold {c.threshold:g} on log(I + {c.eps:g})"
                   + (f", at most {c.max_events} events" if c.max_events else "") + "; Batch.dt = gaps in ms"),
        )

    def streams(self, split: str, batch_size: int, generator: torch.Generator) -> tuple[list[Tensor], Tensor, Tensor]:
        """(events per stream (n, 4) float64, labels (B,), digits (B, s, s)) of one batch."""
        images, labels = self.pool.draw(split, batch_size, generator)
        frames = render(images, self.offsets, self.cfg.sensor)
        streams = simulate_events(frames, self.times, self.cfg.threshold, self.cfg.eps)
        if self.cfg.max_events:
            keep = self.cfg.max_events
            streams = [ev if len(ev) <= keep else
                       ev[torch.randperm(len(ev), generator=generator)[:keep].sort().values] for ev in streams]
        return streams, labels, images

    def make_batch(self, split: str, batch_size: int, generator: torch.Generator) -> Batch:
        streams, labels, _ = self.streams(split, batch_size, generator)
        inputs, mask, dt = pack_streams(streams, self.cfg.min_gap_ms)
        return Batch(inputs, labels, mask, dt)
