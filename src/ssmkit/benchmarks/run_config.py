"""One run = a task (name + config), a model (``BackboneConfig``) and training (``TrainConfig``).

``apply_overrides(run, ["key=value", ...])`` sets any of them from command-line strings, each
value parsed to its field's annotated type:

- ``task.<field>``: a field of the task's config (``task.n_noise=64``);
- ``mixer.<field>``: a field of the mixer's ``Config`` (every mixer the model names must have
  it), or ``mixer.mode`` (a computation mode such as ``chunked``);
- a ``BackboneConfig`` field (``d_model``, ``n_layers``, ``mixer``, ``ffn_mult``, ``dropout``, ...);
- a ``TrainConfig`` field (``steps``, ``lr``, ``batch_size``, ``weight_decay``, ...);
- ``pool``: how a classify head reads the sequence (``mean`` or ``last``);
- ``arch``: the model architecture around the mixer stack (``ssmkit.models.list_archs()``:
  ``sequence`` by default), and ``arch.<field>`` a field of that architecture's Config
  (``arch=vision arch.scan=cross arch.patch=4``).

An unknown key is a ``TypeError`` that lists every valid key; an ill-typed or out-of-range value
is a ``ValueError`` naming the field. Everything is checked before any data is built or trained.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from ..layers.registry import get_mixer_class
from ..models import BackboneConfig
from ..models.registry import arch_config, arch_config_class, list_archs
from ..models.sequence_model import POOLS
from ..tasks import create_task, list_tasks
from ..config import config_from_overrides
from ..training import TrainConfig

MODEL_KEYS = tuple(f.name for f in dataclasses.fields(BackboneConfig))
TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))


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
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunConfig":
        """Inverse of ``to_json`` (lists become tuples where a field is a tuple)."""
        try:
            return cls(task=data["task"], model=_from_dict(BackboneConfig, data["model"]),
                       train=_from_dict(TrainConfig, data["train"]), task_cfg=dict(data.get("task_cfg", {})),
                       pool=data.get("pool", "mean"), source=data.get("source", ""),
                       arch=data.get("arch", "sequence"), arch_cfg=dict(data.get("arch_cfg", {})))
        except KeyError as e:
            raise ValueError(f"run config is missing the entry {e} (expected task, model, train)") from None


def _from_dict(config_class: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(config_class)
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise TypeError(f"unknown config key(s) {unknown} for {config_class.__name__}; valid keys: {sorted(fields)}")
    out = {}
    for k, v in values.items():
        is_tuple = typing.get_origin(hints[k]) is tuple or any(
            typing.get_origin(a) is tuple for a in typing.get_args(hints[k]))
        out[k] = tuple(v) if is_tuple and isinstance(v, list) else v
    return config_class(**out)


def split_override(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {item!r} is not of the form key=value")
    return key.strip(), value


def _field_value(config_class: type, prefix: str, field: str, text: str) -> Any:
    """Parse ``text`` to the type of ``config_class.field`` and check it (builds an instance with it)."""
    try:
        return getattr(config_from_overrides(config_class, [f"{field}={text}"]), field)
    except (ValueError, TypeError) as e:
        raise type(e)(f"{prefix}.{field}: {e}") from None


def task_config_class(name: str) -> type | None:
    """The config dataclass of a registered task (from a task built with its defaults), or None."""
    if name not in list_tasks():
        raise KeyError(f"unknown task {name!r}; registered tasks: {list_tasks()}")
    cfg = getattr(create_task(name), "cfg", None)
    return type(cfg) if dataclasses.is_dataclass(cfg) else None


def _literal(text: str) -> Any:
    """A value for a task whose config class is not known: JSON (numbers, true/false), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def valid_keys(run: RunConfig, task_class: type | None = None) -> str:
    mixers = sorted(set(run.model.layer_names()))
    mixer_fields = sorted({f.name for m in mixers for f in dataclasses.fields(get_mixer_class(m).Config)} | {"mode"})
    task_fields = [f.name for f in dataclasses.fields(task_class)] if task_class else ["(see the task's config)"]
    arch_fields = [f.name for f in dataclasses.fields(arch_config_class(run.arch))] if run.arch in list_archs() else []
    return (f"model: {list(MODEL_KEYS) + ['pool', 'arch']}; arch.<field> for {run.arch}: {arch_fields}; "
            f"training: {list(TRAIN_KEYS)}; "
            f"task.<field> for {run.task}: {task_fields}; mixer.<field> for {','.join(mixers)}: {mixer_fields}")


def apply_overrides(run: RunConfig, overrides: list[str]) -> RunConfig:
    """A new ``RunConfig`` with ``key=value`` overrides applied (see the module docstring)."""
    groups: dict[str, list[tuple[str, str]]] = {"model": [], "train": [], "task": [], "mixer": [], "arch": []}
    pool, arch = run.pool, run.arch
    for item in overrides:
        key, value = split_override(item)
        prefix, dot, field = key.partition(".")
        if key == "pool":
            pool = value.strip()
        elif key == "arch":
            arch = value.strip()
        elif dot and prefix in ("task", "mixer", "arch") and field:
            groups[prefix].append((field, value))
        elif key in MODEL_KEYS:
            groups["model"].append((key, value))
        elif key in TRAIN_KEYS:
            groups["train"].append((key, value))
        else:
            task_class = task_config_class(run.task) if run.task in list_tasks() else None
            raise TypeError(f"unknown config key {key!r}; valid keys: {valid_keys(run, task_class)}")
    model = config_from_overrides(BackboneConfig, [f"{k}={v}" for k, v in groups["model"]], base=run.model)
    train = config_from_overrides(TrainConfig, [f"{k}={v}" for k, v in groups["train"]], base=run.train)
    model = dataclasses.replace(model, mixer_cfg={**model.mixer_cfg, **_mixer_values(model, groups["mixer"])})
    if arch not in list_archs():
        raise ValueError(f"invalid config value for 'arch': {arch!r}; expected one of {list_archs()}")
    arch_cfg = {} if arch != run.arch else dict(run.arch_cfg)  # another architecture starts from its defaults
    arch_cfg.update(_arch_values(arch, groups["arch"]))
    run = dataclasses.replace(run, model=model, train=train, pool=pool, arch=arch, arch_cfg=arch_cfg,
                              task_cfg={**run.task_cfg, **_task_values(run, groups["task"])})
    check_run(run)
    return run


def _mixer_values(model: BackboneConfig, items: list[tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    classes = [get_mixer_class(m) for m in sorted(set(model.layer_names()))]
    for field, text in items:
        if field == "mode":
            out["mode"] = text
            continue
        for cls in classes:
            names = [f.name for f in dataclasses.fields(cls.Config)]
            if field not in names:
                raise TypeError(f"unknown config key 'mixer.{field}': mixer {cls.mixer_name!r} has no field "
                                f"{field!r}; valid mixer keys: {names + ['mode']}")
        out[field] = _field_value(classes[0].Config, "mixer", field, text)
    return out


def _prefixed_values(config_class: type, prefix: str, owner: str, items: list[tuple[str, str]]) -> dict[str, Any]:
    """``prefix.<field>=text`` items parsed to the fields of ``config_class`` (of ``owner``, for messages)."""
    names = [f.name for f in dataclasses.fields(config_class)]
    out = {}
    for field, text in items:
        if field not in names:
            raise TypeError(f"unknown config key '{prefix}.{field}': {owner} has no field {field!r}; "
                            f"valid {prefix} keys: {names}")
        out[field] = _field_value(config_class, prefix, field, text)
    return out


def _arch_values(arch: str, items: list[tuple[str, str]]) -> dict[str, Any]:
    return _prefixed_values(arch_config_class(arch), "arch", f"architecture {arch!r}", items)


def _task_values(run: RunConfig, items: list[tuple[str, str]]) -> dict[str, Any]:
    if not items:
        return {}
    task_class = task_config_class(run.task)
    if task_class is None:
        return {field: _literal(text) for field, text in items}
    return _prefixed_values(task_class, "task", f"task {run.task!r}", items)


def check_run(run: RunConfig) -> None:
    """Validate what the configs cannot check alone: the task exists, every mixer accepts mixer_cfg
    and its mode. (BackboneConfig and TrainConfig validated themselves when built.)"""
    if run.task not in list_tasks():
        raise KeyError(f"unknown task {run.task!r}; registered tasks: {list_tasks()}")
    if run.pool not in POOLS:
        raise ValueError(f"invalid config value for 'pool': must be one of {POOLS}, got {run.pool!r}")
    if run.arch not in list_archs():
        raise ValueError(f"invalid config value for 'arch': {run.arch!r}; expected one of {list_archs()}")
    arch_config(run.arch, run.arch_cfg)
    cfg = dict(run.model.mixer_cfg)
    mode = cfg.pop("mode", "auto")
    for name in sorted(set(run.model.layer_names())):
        cls = get_mixer_class(name)
        fields = [f.name for f in dataclasses.fields(cls.Config)]
        unknown = sorted(set(cfg) - set(fields))
        if unknown:
            raise TypeError(f"unknown config key(s) {['mixer.' + k for k in unknown]} for mixer {name!r}; "
                            f"valid mixer keys: {fields + ['mode']}")
        cls.Config(**cfg)
        if mode != "auto" and mode not in cls.modes:
            raise ValueError(f"invalid config value for 'mixer.mode': {mode!r} is not a mode of {name!r}; "
                             f"expected auto or one of {list(cls.modes)}")


def build_run_model(task: Any, run: RunConfig) -> Any:
    """The model of ``run`` for ``task``: its architecture around its backbone (Task.build_model)."""
    return task.build_model(run.model, pool=run.pool, arch=run.arch, **run.arch_cfg)
