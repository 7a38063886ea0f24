"""One run = a task (name + config), a model (``BackboneConfig`` + architecture) and training (``TrainConfig``).

``RunConfig.to_json()`` is the format of ``run.json``, which ``training.fit`` writes beside every
checkpoint and ``ssmkit eval`` reads to rebuild the model (``runs.checkpoints``). ``check_run``
validates what the parts cannot check alone, before any data is built or trained.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..config import build_config, to_json
from ..layers import get_mixer_class
from ..models import BackboneConfig
from ..models.registry import arch_config, list_archs
from ..models.sequence_model import POOLS
from ..tasks import TASKS, task_config_class
from ..training import TrainConfig


@dataclasses.dataclass
class RunConfig:
    task: str  # a registered task name
    model: BackboneConfig
    train: TrainConfig
    task_cfg: dict[str, Any] = dataclasses.field(default_factory=dict)  # the task's config fields
    pool: str = "mean"  # classify heads: mean of the real tokens or the last one (models.SequenceModel)
    source: str = ""  # where the settings come from (a preset's paper and file), for the record
    arch: str = "sequence"  # the model architecture (ssmkit.models.list_archs())
    arch_cfg: dict[str, Any] = dataclasses.field(default_factory=dict)  # fields of the architecture's Config

    def to_json(self) -> dict[str, Any]:
        return to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunConfig":
        """Inverse of ``to_json`` (lists become tuples where a field is a tuple); also reads the
        run.json that ``training.fit`` writes from a task's and a model's recipes (no ``source``)."""
        missing = [k for k in ("task", "model", "train") if k not in data]
        if missing:
            raise ValueError(f"run config is missing the entries {missing} (expected task, model, train)")
        return build_config(cls, {**data, "model": build_config(BackboneConfig, data["model"]),
                                  "train": build_config(TrainConfig, data["train"])})


def check_run(run: RunConfig) -> None:
    """Validate what the configs cannot check alone: the task exists and takes ``task_cfg``, the pool
    and the architecture's settings. (BackboneConfig, with its mixers' settings, and TrainConfig
    validated themselves when built.) Reads config classes only: no data is built."""
    TASKS.get(run.task)  # KeyError: unknown task ...; registered tasks: [...]
    task_class = task_config_class(run.task)
    if task_class is not None:
        build_config(task_class, run.task_cfg)
    if run.pool not in POOLS:
        raise ValueError(f"invalid config value for 'pool': must be one of {POOLS}, got {run.pool!r}")
    if run.arch not in list_archs():
        raise ValueError(f"invalid config value for 'arch': {run.arch!r}; expected one of {list_archs()}")
    arch_config(run.arch, run.arch_cfg)


def check_carry_length(run: RunConfig, length: int) -> None:
    """Refuse a training sequence of ``length`` tokens that is no longer than a segment or block of a
    mixer of the stack (its ``carry_field``): no token of it would read the state carried from the
    previous segment, so the memory, the state vectors or the memory tokens would never be trained,
    and every longer evaluation would read an untrained state. Only ``arch=sequence``, whose mixers
    see the task's tokens one for one (other architectures patch or pool them first)."""
    if run.arch != "sequence":
        return
    for name in run.model.mixers():
        cls = get_mixer_class(name)
        field = cls.carry_field
        if field is None:
            continue
        span = build_config(cls.Config, run.model.mixer_settings(name)).__dict__[field]
        if length <= span:
            raise ValueError(
                f"invalid config value for 'mixer.{name}.{field}': {span} is not shorter than the task's training "
                f"sequences ({length} tokens), so no token would read the state that {name} carries from one "
                f"{field.split('_')[0]} to the next and it would never be trained; expected {field} < {length} "
                f"(e.g. --set mixer.{field}={max(1, length // 4)}) or a longer task.length")
