"""Irregularly sampled series: the true time gaps travel in ``Batch.dt`` (docs/irregular.md).

irregular_sines: classify which of ``n_classes`` frequencies a noisy sinusoid has, from
``length`` samples taken at random times. The gaps between samples are log-uniform on
[gap_min, gap_max] (a wide spread: a sample's index says little about its time), the phase is
uniform, the amplitude uniform on [0.5, 1.5], plus Gaussian noise of std ``noise``. The
frequencies are geometric on [freq_min, freq_max] cycles per unit time, close enough that
telling them apart needs the elapsed time, not only the roughness of the sequence of values.

Each batch carries ``dt`` (B, L), the time since the previous sample (the first sample's gap is
drawn like the others). ``ignore_dt=True`` sets dt to ones: the same data seen as if it were
regularly sampled, the baseline that shows what the timestamps are worth.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar
import math

import torch

from ..config import build_config, check
from .base import Batch, TaskInfo, register_task
from .synthetic import GeneratedTask


@dataclasses.dataclass
class IrregularSinesConfig:
    length: int = 64  # L samples per series
    n_classes: int = 4  # frequencies to tell apart
    freq_min: float = 0.08  # cycles per unit time, the lowest class
    freq_max: float = 0.2  # the highest class (geometric spacing in between)
    gap_min: float = 0.1  # gaps between samples are log-uniform on [gap_min, gap_max]
    gap_max: float = 3.0
    noise: float = 0.1  # std of the additive Gaussian observation noise
    ignore_dt: bool = False  # True: Batch.dt = ones (the model is told nothing of the timestamps)
    n_train: int = 10_000  # examples per training epoch (generated afresh per epoch and seed)
    n_eval: int = 1_000  # examples in each of val and test (fixed)

    LENGTH_KNOB: ClassVar[str] = "length = L samples per series"

    def at_length(self, length: int) -> "IrregularSinesConfig":
        return dataclasses.replace(self, length=length)

    def __post_init__(self) -> None:
        check(isinstance(self.length, int) and self.length >= 2, "length", f"must be an int >= 2, got {self.length!r}")
        check(isinstance(self.n_classes, int) and self.n_classes >= 2, "n_classes",
              f"must be an int >= 2, got {self.n_classes!r}")
        check(0 < self.freq_min < self.freq_max, "freq_max",
              f"need 0 < freq_min < freq_max, got {self.freq_min}, {self.freq_max}")
        check(0 < self.gap_min <= self.gap_max, "gap_max",
              f"need 0 < gap_min <= gap_max, got {self.gap_min}, {self.gap_max}")
        check(self.noise >= 0, "noise", f"must be >= 0, got {self.noise}")
        check(isinstance(self.ignore_dt, bool), "ignore_dt", f"must be a bool, got {self.ignore_dt!r}")
        check(self.n_train >= 1 and self.n_eval >= 1, "n_train", "n_train and n_eval must be >= 1")

    def frequencies(self) -> torch.Tensor:
        """(n_classes,) cycles per unit time, geometric from freq_min to freq_max."""
        return torch.logspace(math.log10(self.freq_min), math.log10(self.freq_max), self.n_classes,
                              dtype=torch.float64)


def irregular_sines_batch(cfg: IrregularSinesConfig, batch_size: int, generator: torch.Generator) -> Batch:
    """-> Batch(inputs (B, L, 1) float, targets (B,) long, dt (B, L) float: the true gaps)."""
    B, L = batch_size, cfg.length
    labels = torch.randint(0, cfg.n_classes, (B,), generator=generator)
    gaps = torch.exp(torch.empty(B, L, dtype=torch.float64).uniform_(
        math.log(cfg.gap_min), math.log(cfg.gap_max), generator=generator))
    t = gaps.cumsum(1)  # (B, L) sample times
    phase = 2 * math.pi * torch.rand(B, 1, generator=generator, dtype=torch.float64)
    amp = 0.5 + torch.rand(B, 1, generator=generator, dtype=torch.float64)
    f = cfg.frequencies()[labels][:, None]
    x = amp * torch.sin(2 * math.pi * f * t + phase)
    x = x + cfg.noise * torch.randn(B, L, generator=generator, dtype=torch.float64)
    dt = torch.ones(B, L) if cfg.ignore_dt else gaps.float()
    return Batch(x.float()[..., None], labels, None, dt)


@register_task("irregular_sines", IrregularSinesConfig)
class IrregularSines(GeneratedTask):
    def __init__(self, **cfg) -> None:
        self.cfg = c = build_config(IrregularSinesConfig, cfg)
        freqs = ", ".join(f"{v:.3g}" for v in c.frequencies().tolist())
        self.info = TaskInfo(
            name="irregular_sines", kind="classify", length=c.length, source="generated (irregular sampling)",
            sizes=self._sizes(c.n_train, c.n_eval), n_classes=c.n_classes, d_input=1,
            notes=f"frequency ({freqs} cycles/unit) from {c.length} samples at log-uniform gaps in "
                  f"[{c.gap_min}, {c.gap_max}]; Batch.dt = {'ones (ignore_dt)' if c.ignore_dt else 'the true gaps'}",
        )

    def make_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        return irregular_sines_batch(self.cfg, batch_size, generator)
