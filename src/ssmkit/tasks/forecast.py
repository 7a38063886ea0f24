"""Windowed multi-step forecasting on series bundled with statsmodels and pmdarima.

A window is ``lookback`` observed steps (inputs (B, lookback, C)) and the next ``horizon`` steps
(targets (B, horizon, C)). The series is cut in time: the last ``test_fraction`` of the steps is
the test tail, the ``val_fraction`` before it val, the rest train. A window belongs to the split
that holds all of its target steps (its inputs may reach back into earlier splits: the observed
past); windows start at every step (stride 1). Each channel is standardized with the mean and
standard deviation of the training segment; MSE and MAE are in those standardized units, as in
the Informer / S4 forecasting tables.

``naive_baseline(split)`` scores the seasonal naive forecast on the same windows: the last
season of the inputs repeated, ``y[e + h] = y[e - m + (h mod m)]`` for the window ending at
``e`` (exclusive), season length ``m`` per series below (``m = 1``: the last value).

| series | package | steps | season m | default lookback / horizon | notes |
|---|---|---|---|---|---|
| sunspots | statsmodels | 309 yearly | 11 (solar cycle) | 44 / 11 | yearly sunspot activity 1700-2008 |
| co2 | statsmodels | 2,284 weekly | 52 | 208 / 52 | Mauna Loa CO2; 59 missing weeks linearly interpolated |
| elnino | statsmodels | 732 monthly | 12 | 48 / 12 | sea surface temperature, the 61 x 12 table read row by row |
| nile | statsmodels | 100 yearly | 1 | 20 / 5 | Nile flow volume at Aswan 1871-1970 |
| taylor | pmdarima | 4,032 half-hourly | 336 (one week) | 336 / 48 | England and Wales electricity demand |
| sunspots_monthly | pmdarima | 2,820 monthly | 132 (11 years) | 264 / 24 | monthly sunspot numbers |
| msft | pmdarima | 7,983 daily | 1 | 64 / 5 | log of Microsoft's daily close (prices grow ~1000x) |

Series are decoded once through the package's own loader and cached (keyed by its version).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from ..config import build_config, check
from . import sources
from .base import Batch, Task, TaskInfo, register_task, split_generator
from .cache import cached_arrays


def _statsmodels(name: str, column: str | None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        module = sources.import_module(f"statsmodels.datasets.{name}", "statsmodels", f"the forecast series {name!r}")
        data = module.load_pandas().data
        table = data.iloc[:, 1:].to_numpy() if column is None else data[column].to_numpy()
        return table.reshape(-1, 1).astype(np.float64)  # elnino: rows are years, columns months

    return load


def _pmdarima(loader: str, transform: Callable[[object], np.ndarray]) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        datasets = sources.import_module("pmdarima.datasets", "pmdarima", f"the forecast series from {loader}")
        return np.asarray(transform(getattr(datasets, loader)()), dtype=np.float64).reshape(-1, 1)

    return load


@dataclasses.dataclass(frozen=True)
class SeriesSpec:
    dist: str
    season: int  # m of the seasonal naive baseline
    lookback: int  # defaults
    horizon: int
    load: Callable[[], np.ndarray]  # -> (T, C) float64, NaN where missing


SERIES: dict[str, SeriesSpec] = {
    "sunspots": SeriesSpec("statsmodels", 11, 44, 11, _statsmodels("sunspots", "SUNACTIVITY")),
    "co2": SeriesSpec("statsmodels", 52, 208, 52, _statsmodels("co2", "co2")),
    "elnino": SeriesSpec("statsmodels", 12, 48, 12, _statsmodels("elnino", None)),
    "nile": SeriesSpec("statsmodels", 1, 20, 5, _statsmodels("nile", "volume")),
    "taylor": SeriesSpec("pmdarima", 336, 336, 48, _pmdarima("load_taylor", lambda a: a)),
    "sunspots_monthly": SeriesSpec("pmdarima", 132, 264, 24, _pmdarima("load_sunspots", lambda a: a)),
    "msft": SeriesSpec("pmdarima", 1, 64, 5, _pmdarima("load_msft", lambda df: np.log(df["Close"].to_numpy()))),
}


def load_series(name: str) -> np.ndarray:
    """The raw (T, C) series (NaN where missing), cached after the first load."""
    spec = SERIES[name]
    version = sources.version(spec.dist, f"the forecast series {name!r}")
    return cached_arrays(f"series-{name}", {"dist": spec.dist, "version": version},
                         lambda: {"values": spec.load()})["values"]


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """Linear interpolation over missing (NaN) steps per channel; leading/trailing gaps take the
    nearest observed value."""
    out = values.astype(np.float64).copy()
    t = np.arange(len(out))
    for c in range(out.shape[1]):
        seen = ~np.isnan(out[:, c])
        if not seen.any():
            raise ValueError(f"channel {c} of the series has no observed value")
        out[~seen, c] = np.interp(t[~seen], t[seen], out[seen, c])
    return out


def seasonal_naive(inputs: Tensor, horizon: int, season: int) -> Tensor:
    """(B, lookback, C) -> (B, horizon, C): the last ``season`` steps repeated."""
    lookback = inputs.shape[1]
    if season > lookback:
        raise ValueError(f"season {season} is longer than the {lookback} input steps")
    return inputs[:, lookback - season + torch.arange(horizon) % season]


class ForecastTask(Task):
    """Windows over one standardized (T, C) series (see the module docstring)."""

    def __init__(self, values: np.ndarray, lookback: int, horizon: int, season: int, val_fraction: float,
                 test_fraction: float, name: str = "forecast", source: str = "", notes: str = "") -> None:
        if values.ndim != 2 or np.isnan(values).any():
            raise ValueError(f"the series must be (T, C) without NaN, got shape {values.shape}")
        T = len(values)
        n_test, n_val = round(test_fraction * T), round(val_fraction * T)
        self.t_val, self.t_test = T - n_test - n_val, T - n_test  # first step of val and of test
        for field, steps in (("val_fraction", n_val), ("test_fraction", n_test)):
            check(steps >= horizon, field, f"gives {steps} of {T} steps, fewer than horizon {horizon}")
        check(self.t_val >= lookback + horizon, "lookback",
              f"{lookback} + horizon {horizon} exceeds the {self.t_val} training steps")
        check(season <= lookback, "lookback", f"must be >= the season length {season} (the naive baseline repeats it)")
        self.lookback, self.horizon, self.season = lookback, horizon, season
        train = values[: self.t_val]
        self.mean, self.std = train.mean(0), train.std(0)
        self.std[self.std == 0] = 1.0
        self.z = torch.from_numpy(((values - self.mean) / self.std).astype(np.float32))  # (T, C)
        # the first and last input end e (exclusive) of each split's windows; targets are z[e : e + H]
        ends = {"train": (lookback, self.t_val - horizon), "val": (self.t_val, self.t_test - horizon),
                "test": (self.t_test, T - horizon)}
        self.ends = {s: torch.arange(a, b + 1) for s, (a, b) in ends.items()}
        self.info = TaskInfo(
            name=name, kind="forecast", length=lookback, source=source,
            sizes={s: len(e) for s, e in self.ends.items()}, d_input=values.shape[1], horizon=horizon,
            notes=f"{notes}{'; ' if notes else ''}{T} steps: train {self.t_val}, val {n_val}, test {n_test}; "
                  f"season {season}; standardized by train mean/std",
        )

    def batches(self, split: str, batch_size: int, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
        self._check_split(split)
        ends = self.ends[split]
        if split == "train":
            ends = ends[torch.randperm(len(ends), generator=split_generator(split, seed, epoch, 0))]
        for i in range(0, len(ends), batch_size):
            yield self.window_batch(ends[i : i + batch_size])

    def window_batch(self, ends: Tensor) -> Batch:
        """Windows whose inputs end at ``ends`` (exclusive): inputs z[e-Lb : e], targets z[e : e+H]."""
        back = ends[:, None] + torch.arange(-self.lookback, 0)
        ahead = ends[:, None] + torch.arange(self.horizon)
        return Batch(self.z[back], self.z[ahead])

    def naive_baseline(self, split: str) -> dict[str, float]:
        """MSE and MAE of the seasonal naive forecast over every window of ``split``."""
        self._check_split(split)
        b = self.window_batch(self.ends[split])
        err = seasonal_naive(b.inputs, self.horizon, self.season) - b.targets
        return {"mse": float(err.pow(2).mean()), "mae": float(err.abs().mean())}


@dataclasses.dataclass
class ForecastConfig:
    series: str = "sunspots"  # one of forecast.SERIES
    lookback: int | None = None  # None: the series' default (table in the module docstring)
    horizon: int | None = None
    val_fraction: float = 0.1  # of the steps, just before the test tail
    test_fraction: float = 0.2  # the held-out tail

    def __post_init__(self) -> None:
        check(self.series in SERIES, "series", f"must be one of {sorted(SERIES)}, got {self.series!r}")
        check(self.lookback is None or self.lookback >= 1, "lookback", f"must be >= 1, got {self.lookback}")
        check(self.horizon is None or self.horizon >= 1, "horizon", f"must be >= 1, got {self.horizon}")
        check(0 < self.val_fraction < 1, "val_fraction", f"must be in (0, 1), got {self.val_fraction}")
        check(0 < self.test_fraction < 1 - self.val_fraction, "test_fraction",
              f"must be in (0, 1 - val_fraction), got {self.test_fraction}")


@register_task("forecast", ForecastConfig)
def forecast(**cfg) -> ForecastTask:
    c = build_config(ForecastConfig, cfg)
    spec = SERIES[c.series]
    raw = load_series(c.series)
    n_missing = int(np.isnan(raw).sum())
    return ForecastTask(
        fill_gaps(raw), c.lookback or spec.lookback, c.horizon or spec.horizon, spec.season, c.val_fraction,
        c.test_fraction, name="forecast", source=f"{spec.dist} bundled series {c.series!r}",
        notes=f"{c.series}" + (f", {n_missing} missing steps interpolated" if n_missing else ""),
    )

