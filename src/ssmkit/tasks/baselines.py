"""Yardsticks measured on a task's own test split: the chance level, the seasonal naive forecast and persistence.

Both are properties of the test data, not of any model: ``ssmkit eval`` prints them beside a
checkpoint's metrics and ``ssmkit compare`` beside every mixer's.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

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


def naive_baseline(task: Task, batch_size: int = 256) -> dict[str, Any] | None:
    """The seasonal naive forecast on the test split of a forecasting task, or persistence (the next
    position's values = the current ones: copy the last frame) on a predict task; None for other tasks.

    Scored exactly as ``training.evaluate`` scores a model: ``task.metrics`` summed over
    ``task.batches("test")`` (then ``task.derived_metrics``), so the windows, the units and the
    averaging are the models' own.
    """
    season = getattr(task, "season", None)
    if task.info.kind == TaskKind.PREDICT:
        name, extra = "persistence (next = current)", {}

        def predict(inputs: Tensor) -> Tensor:
            return inputs
    elif task.info.kind == TaskKind.FORECAST and season is not None:
        name, extra = f"seasonal naive (m={season})", {"season": season}

        def predict(inputs: Tensor) -> Tensor:
            return seasonal_naive(inputs, task.info.horizon, season)
    else:
        return None
    totals: dict[str, list[float]] = {}
    for batch in task.batches("test", batch_size):
        for metric, (total, count) in task.metrics(predict(batch.inputs), batch).items():
            acc = totals.setdefault(metric, [0.0, 0])
            acc[0] += total
            acc[1] += count
    averages = {n: t / max(c, 1) for n, (t, c) in sorted(totals.items())}
    averages.update(task.derived_metrics(averages))
    return {"name": name, **extra, "metrics": {f"test_{n}": v for n, v in averages.items()}}
