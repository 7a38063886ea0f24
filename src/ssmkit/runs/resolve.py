"""The one rule that turns a command's task, mixer, preset and overrides into a ``RunConfig``.

- a named preset, with the mixer in place of the paper's (``--task``, if also given, must be the
  preset's task);
- neither task nor preset: the command's default preset (``ssmkit train`` / ``eval``: the
  copy-memory demo; ``ssmkit compare``: its embedded comparison);
- a task without a preset: the plain defaults (``BackboneConfig()``, ``TrainConfig()``) on it;

then the ``key=value`` overrides. The preset is built for the mixer that will run (``mixer``, or
the last ``mixer=`` override), so its mixer settings follow that mixer.
"""
from __future__ import annotations

from collections.abc import Sequence

from ..config import split_override
from ..models.mixer_stack import Mixer
from ..training import TrainConfig
from .config import RunConfig, check_run
from .overrides import apply_overrides
from .presets import backbone, get_preset

TRAIN_PRESET = "copy_memory_demo"  # what `ssmkit train` runs without --task and --preset
DEFAULT_MIXER = "s4d"  # a task without a preset or a mixer


def base_run(task: str | None, mixer: Mixer | None, preset: str | None,
             default_preset: str = TRAIN_PRESET) -> RunConfig:
    """The run before overrides (see the module docstring)."""
    if preset is None and task is None:
        preset = default_preset
    if preset is not None:
        run = get_preset(preset, mixer)
        if task is not None and task != run.task:
            raise ValueError(f"preset {preset!r} runs task {run.task!r}, not {task!r}; drop --task or the preset")
        return run
    run = RunConfig(task=task, model=backbone(mixer or DEFAULT_MIXER), train=TrainConfig())
    check_run(run)
    return run


def resolve_run(task: str | None = None, mixer: Mixer | None = None, preset: str | None = None,
                overrides: Sequence[str] = (), default_preset: str = TRAIN_PRESET) -> RunConfig:
    """The run a command describes: ``base_run``, then ``overrides`` (see the module docstring)."""
    for item in overrides:
        key, value = split_override(item)
        if key == "mixer":
            mixer = value.strip()
    return apply_overrides(base_run(task, mixer, preset, default_preset), list(overrides))
