"""How a task's length maps to its settings: the knob of ``ssmkit compare --train-lengths``.

A task config with a length knob has ``at_length(L) -> config`` (the same task at sequence length
L, everything else held) and ``LENGTH_KNOB``, a line saying what changes (``n_noise = L - 2 n_copy``).
A task whose length is fixed by its data (an image's pixels, a data set's series) has
``FIXED_LENGTH`` instead, which the error names. Every other task has no knob, and asking for one
is an error that names the task and the tasks that have one.
"""
from __future__ import annotations

from typing import Any

from ..config import build_config, check, to_json
from .base import list_tasks, task_config_class


def length_knob(name: str) -> str | None:
    """What ``at_length`` changes for task ``name`` (None: the task has no knob)."""
    cls = task_config_class(name)
    return getattr(cls, "LENGTH_KNOB", None) if cls is not None else None


def tasks_with_length_knob() -> list[str]:
    return [n for n in list_tasks() if length_knob(n) is not None]


def at_length(name: str, task_cfg: dict[str, Any], length: int) -> dict[str, Any]:
    """The settings of task ``name`` (``task_cfg``) changed so that its sequences have ``length`` tokens."""
    check(isinstance(length, int) and not isinstance(length, bool) and length >= 1, "length",
          f"must be an int >= 1, got {length!r}")
    cls = task_config_class(name)
    fixed = getattr(cls, "FIXED_LENGTH", None) if cls is not None else None
    if fixed is not None:
        raise ValueError(f"task {name!r} has a fixed length ({fixed}); it cannot be trained or evaluated at "
                         f"{length} tokens; tasks with a length knob: {tasks_with_length_knob()}")
    if length_knob(name) is None:
        raise ValueError(f"task {name!r} has no length knob (nothing maps a sequence length to its settings); "
                         f"tasks with one: {tasks_with_length_knob()}")
    cfg = build_config(cls, task_cfg)
    try:
        return to_json(cfg.at_length(length))
    except ValueError as e:
        raise ValueError(f"task {name!r} at length {length}: {e}") from None
