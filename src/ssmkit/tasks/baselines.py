"""Yardsticks measured on a task's own test split: the chance level and the seasonal naive forecast.

Both are properties of the test data, not of any model: ``ssmkit eval`` prints them beside a
checkpoint's metrics and ``ssmkit compare`` beside every mixer's.
"""
from __future__ import annotations

from typing import Any

import torch

from .base import IGNORE, Task
from .forecast import seasonal_naive
from ..models import TaskKind


def chance_accuracy(task: Task) -> float | None:
    """Accuracy of always answering the most frequent test answer (None for real-valued outputs)."""
    if task.info.kind.real_valued:
        return None
    counts = torch.zeros(task.info.n_classes, dtype=torch.long)
    for batch in task.batches("test", 1024):
        t = batch.targets[batch.targets != IGNORE]
        counts += torch.bincount(t.flatten(), minlength=task.info.n_classes)[: task.info.n_classes]
    total = int(counts.sum())
    return float(counts.max()) / total if total else None


def naive_baseline(task: Task, batch_size: int = 1024) -> dict[str, Any] | None:
    """The seasonal naive forecast on the test split of a forecasting task (None for other tasks).

    Scored exactly as ``training.evaluate`` scores a model: ``task.metrics`` summed over
    ``task.batches("test")``, so the windows, the standardized units and the averaging are the
    models' own.
    """
    season = getattr(task, "season", None)
    if task.info.kind != TaskKind.FORECAST or season is None:
        return None
    totals: dict[str, list[float]] = {}
    for batch in task.batches("test", batch_size):
        pred = seasonal_naive(batch.inputs, task.info.horizon, season)
        for name, (total, count) in task.metrics(pred, batch).items():
            acc = totals.setdefault(name, [0.0, 0])
            acc[0] += total
            acc[1] += count
    return {"name": f"seasonal naive (m={season})", "season": season,
            "metrics": {f"test_{n}": t / max(c, 1) for n, (t, c) in sorted(totals.items())}}
