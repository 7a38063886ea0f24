"""The description of one run and building it: task, model and training in one ``RunConfig``.

- ``RunConfig`` (``to_json`` is the format of run.json), ``check_run``, ``check_carry_length``;
- ``apply_overrides(run, ["key=value", ...])``: command-line settings, typed;
- presets: published setups as Python functions (``get_preset``, ``list_presets``, ``register_preset``);
- ``resolve_run(task, mixer, preset, overrides)``: the one rule from a command's arguments to a run;
- ``build_task(run)``, ``build_model(task, run)``;
- ``find_checkpoint``, ``read_run``: the run behind a checkpoint that ``training.fit`` wrote.

Training a run: ``fit(task, model, run.train, run=run.to_json())`` stores the description in every
checkpoint, so ``ssmkit eval`` rebuilds the model (see docs/compare.md).
"""
from .build import build_model, build_task
from .checkpoints import find_checkpoint, read_run
from .config import RunConfig, check_carry_length, check_run
from .overrides import apply_overrides
from .presets import PRESETS, get_preset, list_presets, preset_summary, register_preset
from .resolve import TRAIN_PRESET, base_run, resolve_run

__all__ = [
    "PRESETS", "TRAIN_PRESET", "RunConfig", "apply_overrides", "base_run", "build_model", "build_task",
    "check_carry_length", "check_run", "find_checkpoint", "get_preset", "list_presets", "preset_summary", "read_run",
    "register_preset", "resolve_run",
]
