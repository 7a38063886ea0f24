"""Model architectures by name: what sits around the mixer stack for a kind of data.

``sequence`` (``SequenceModel``) is the default: encoder -> Backbone -> head, for every task.
Others (``vision``, ``forecaster``, ``ts_classifier``, ``graph``, ...) register themselves with a
typed ``Config`` whose fields the command line sets as ``arch.<field>=value``. A builder receives
the backbone config, the task's ``DataSpec`` (what the data looks like), the classify pool and its
validated Config, and returns an ``nn.Module`` called as ``model(inputs, mask=mask)``.
``create_model`` records how it built a model on it (``model.recipe``: backbone, pool,
architecture and its settings as JSON), so that a run that trains it can describe it (run.json).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from torch import nn

from ..config import build_config, to_json
from ..registry import Registry
from .backbone import BackboneConfig
from .kinds import TaskKind


@dataclasses.dataclass
class DataSpec:
    """What a model needs to know of its task's data (``TaskInfo.data_spec()``)."""

    kind: TaskKind  # a str is accepted and turned into the TaskKind
    n_out: int  # classes (classify/tag/lm) or values (regress)
    vocab_size: int | None = None  # token inputs (B, L) when set
    d_input: int = 1  # C: features per position otherwise (B, L, C)
    horizon: int = 0  # forecast steps
    image_shape: tuple[int, int, int] | None = None  # (H, W, C) when inputs are images flattened row-major to (B, H*W, C)
    graph: Any = None  # models.graph_structure.GraphSpec (fixed graph, snapshots per input) of a graph task's build_model
    layout: Any = None  # a models.layouts dataclass: how events, point sets, video frames or image + caption are packed

    def __post_init__(self) -> None:
        self.kind = TaskKind.parse(self.kind)


@dataclasses.dataclass
class NoConfig:
    """An architecture without settings of its own."""


Builder = Callable[[BackboneConfig, DataSpec, str, Any], nn.Module]
ARCHS: Registry[Builder] = Registry("architecture")


def register_arch(name: str, config_class: type = NoConfig) -> Callable[[Builder], Builder]:
    """``@register_arch("vision", VisionConfig)`` on ``build(backbone, spec, pool, cfg) -> nn.Module``."""
    return ARCHS.register(name, config_class)


def list_archs() -> list[str]:
    return ARCHS.names()


def arch_config_class(name: str) -> type:
    return ARCHS.config_class(name)


def arch_config(name: str, cfg: dict[str, Any]) -> Any:
    """The validated Config of architecture ``name`` (unknown keys rejected with the valid ones)."""
    return build_config(arch_config_class(name), cfg)


def create_model(arch: str, backbone: BackboneConfig, spec: DataSpec, pool: str = "mean", **cfg: Any) -> nn.Module:
    """Build architecture ``arch`` around a ``backbone`` stack for data described by ``spec``."""
    config = arch_config(arch, cfg)
    model = ARCHS.get(arch)(backbone, spec, pool, config)
    model.recipe = {"model": to_json(backbone), "pool": pool, "arch": arch, "arch_cfg": to_json(cfg)}
    return model
