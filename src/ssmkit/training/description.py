"""What ``fit`` writes as run.json: the run's description, so that every checkpoint can be rebuilt.

The format is ``ssmkit.runs.RunConfig.to_json()``. A caller that holds the description passes it
(``fit(..., run=run.to_json())``, as ``ssmkit train`` does); otherwise fit puts it together from
what built the task and the model: ``Task.recipe`` (set by ``tasks.create_task``: name and
config) and ``model.recipe`` (set by ``models.create_model`` and so ``Task.build_model``:
backbone, pool, architecture), plus the ``TrainConfig``. A task or model built another way is
not described, and fit writes no run.json.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ..config import to_json
from ..tasks.base import Task
from .config import TrainConfig


def describe_run(task: Task, model: nn.Module, cfg: TrainConfig) -> dict[str, Any] | None:
    """The run.json of training ``model`` on ``task`` with ``cfg``, or None when either lacks a recipe."""
    task_recipe, model_recipe = task.recipe, getattr(model, "recipe", None)
    if not isinstance(task_recipe, dict) or not isinstance(model_recipe, dict):
        return None
    return {"task": task_recipe["task"], "task_cfg": to_json(task_recipe["task_cfg"]), **model_recipe,
            "train": to_json(cfg)}
