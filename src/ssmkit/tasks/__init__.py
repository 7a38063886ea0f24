"""Tasks: data + encoder + head + loss + metrics, registered by name (``create_task``)."""
from . import documents, dynamics, forecast, graphs, images, irregular, listops, pathfinder, recall, synthetic, text, ucr  # noqa: F401  (registration side effect)
from . import captions, events, moving_mnist, segmentation, shapes3d  # noqa: F401  (registration side effect)
from .base import (
    IGNORE, TASKS, Batch, Task, TaskInfo, create_task, list_tasks, register_task, task_config_class,
)
from .baselines import chance_accuracy, naive_baseline
from .metrics import higher_is_better, is_fraction, primary_metric, task_metric
from ..models import TaskKind

__all__ = [
    "IGNORE", "TASKS", "Batch", "Task", "TaskInfo", "TaskKind", "chance_accuracy", "create_task",
    "higher_is_better", "is_fraction", "list_tasks", "naive_baseline", "primary_metric", "register_task", "task_config_class",
    "task_metric",
]
