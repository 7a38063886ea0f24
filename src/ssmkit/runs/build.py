"""A run's task and model, built from its description."""
from __future__ import annotations

from torch import nn

from ..tasks import Task, create_task
from .config import RunConfig


def build_task(run: RunConfig) -> Task:
    """The task of ``run`` (this is where data are generated or loaded)."""
    return create_task(run.task, **run.task_cfg)


def build_model(task: Task, run: RunConfig) -> nn.Module:
    """The model of ``run`` for ``task``: its architecture around its backbone (``Task.build_model``)."""
    return task.build_model(run.model, pool=run.pool, arch=run.arch, **run.arch_cfg)
