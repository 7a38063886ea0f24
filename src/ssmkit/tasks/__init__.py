"""Tasks: data + encoder + head + loss + metrics, registered by name (``create_task``)."""
from . import forecast, graphs, images, irregular, listops, pathfinder, recall, synthetic, text, ucr  # noqa: F401  (registration side effect)
from .base import IGNORE, Batch, Task, TaskInfo, create_task, list_tasks, register_task

__all__ = ["IGNORE", "Batch", "Task", "TaskInfo", "create_task", "list_tasks", "register_task"]
