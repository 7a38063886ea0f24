"""Which metric ranks models on a task, and which way is better: the one table for every caller.

``Task.metrics`` reports ``accuracy`` (classify, tag, lm), ``bits_per_token`` (lm) and ``mse`` /
``mae`` (forecast, regress, predict, trajectory). The training loop keeps the best-val weights by the primary
metric of the task (``TrainConfig.val_metric="auto"``), and ``ssmkit compare`` ranks and tabulates
mixers by it; both read it here: the task's own ``TaskInfo.metric`` when it names one (``miou``,
``exact_match``), else its kind's.
"""
from __future__ import annotations

from ..models import TaskKind

PRIMARY_METRIC: dict[TaskKind, str] = {
    TaskKind.CLASSIFY: "accuracy",
    TaskKind.TAG: "accuracy",
    TaskKind.LM: "bits_per_token",
    TaskKind.FORECAST: "mse",
    TaskKind.REGRESS: "mse",
    TaskKind.PREDICT: "mse",
    TaskKind.TRAJECTORY: "mse",
}
# every other metric (mse, mae, bits_per_token) is minimized
HIGHER_IS_BETTER = frozenset({"accuracy", "pixel_accuracy", "miou", "ssim", "exact_match", "char_accuracy"})
FRACTIONS = HIGHER_IS_BETTER - {"ssim"}  # fractions of examples shown in percent
_SPLIT_PREFIXES = ("best_val_", "test_", "val_")  # how results name a metric of a split


def primary_metric(kind: TaskKind | str) -> str:
    """The metric that ranks models on a task of this kind."""
    return PRIMARY_METRIC[TaskKind.parse(kind)]


def task_metric(kind: TaskKind | str, metric: str = "") -> str:
    """The metric that ranks models on a task: its own (``TaskInfo.metric``) or its kind's."""
    return metric or primary_metric(kind)


def _bare(metric: str) -> str:
    for prefix in _SPLIT_PREFIXES:
        if metric.startswith(prefix):
            return metric[len(prefix):]
    return metric


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (a split prefix such as ``test_`` is ignored)."""
    return _bare(metric) in HIGHER_IS_BETTER


def is_fraction(metric: str) -> bool:
    """Whether ``metric`` is a fraction shown in percent (accuracy, mIoU, exact match; a split prefix is ignored)."""
    return _bare(metric) in FRACTIONS


def improves(value: float, best: float | None, metric: str) -> bool:
    """Whether ``value`` beats ``best`` (None: nothing yet) on ``metric``."""
    return best is None or (value > best if higher_is_better(metric) else value < best)
