"""``apply_overrides(run, ["key=value", ...])``: a run's settings from command-line strings.

Each value is parsed to its field's annotated type:

- a ``BackboneConfig`` field (``d_model``, ``n_layers``, ``mixer``, ``ffn_mult``, ``dropout``, ...);
  ``mixer=s4d,mamba,attention`` is a hybrid, one mixer per layer;
- ``mixer.<field>``: a field of the mixers' ``Config``, given to every mixer of the stack that has
  it (an error if none has it); ``mixer.mode``: a computation mode, given to every mixer that has it;
- ``mixer.<name>.<field>`` and ``mixer.<name>.mode``: one mixer of the stack only (over ``mixer.<field>``);
- a ``TrainConfig`` field (``steps``, ``lr``, ``batch_size``, ``weight_decay``, ...);
- ``task.<field>``: a field of the task's config class (read from the task registry: no data is built);
- ``pool``: how a classify head reads the sequence (``mean`` or ``last``);
- ``arch``: the model architecture around the mixer stack (``ssmkit.models.list_archs()``), and
  ``arch.<field>`` a field of that architecture's Config (``arch=vision arch.scan=cross``).

An unknown key is a ``TypeError`` that lists every valid key; an ill-typed or out-of-range value
is a ``ValueError`` naming the field. Everything is checked before any data is built or trained.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from ..config import field_names, field_value, parse_value, split_override
from ..layers.registry import MIXERS, get_mixer_class
from ..models import BackboneConfig
from ..models.mixer_stack import MODE, check_mixer_cfg, config_fields, distinct, normalize_mixer
from ..models.registry import arch_config_class, list_archs
from ..tasks import list_tasks, task_config_class
from ..training import TrainConfig
from .config import RunConfig, check_run

MODEL_KEYS = tuple(field_names(BackboneConfig))
TRAIN_KEYS = tuple(field_names(TrainConfig))
PREFIXES = ("task", "mixer", "arch")


def valid_keys(run: RunConfig) -> str:
    """Every key ``apply_overrides`` takes for ``run``, for error messages."""
    mixers = distinct(run.model.mixer)
    mixer_fields = sorted({f for m in mixers for f in config_fields(m)} | {MODE})
    task_class = task_config_class(run.task) if run.task in list_tasks() else None
    task_fields = field_names(task_class) if task_class else ["(see the task's config)"]
    arch_fields = field_names(arch_config_class(run.arch)) if run.arch in list_archs() else []
    return (f"model: {list(MODEL_KEYS) + ['pool', 'arch']}; arch.<field> for {run.arch}: {arch_fields}; "
            f"training: {list(TRAIN_KEYS)}; task.<field> for {run.task}: {task_fields}; "
            f"mixer.<field> for {','.join(mixers)}: {mixer_fields}"
            + ("; mixer.<name>.<field> for one of them" if len(mixers) > 1 else ""))


def apply_overrides(run: RunConfig, overrides: list[str]) -> RunConfig:
    """A new ``RunConfig`` with ``key=value`` overrides applied (see the module docstring)."""
    groups: dict[str, list[tuple[str, str]]] = {"model": [], "train": [], **{p: [] for p in PREFIXES}}
    pool, arch = run.pool, run.arch
    for item in overrides:
        key, value = split_override(item)
        prefix, dot, field = key.partition(".")
        if key == "pool":
            pool = value.strip()
        elif key == "arch":
            arch = value.strip()
        elif dot and prefix in PREFIXES and field:
            groups[prefix].append((field, value))
        elif key in MODEL_KEYS:
            groups["model"].append((key, value))
        elif key in TRAIN_KEYS:
            groups["train"].append((key, value))
        else:
            raise TypeError(f"unknown config key {key!r}; valid keys: {valid_keys(run)}")
    model = _model(run.model, groups["model"], groups["mixer"])
    train = _train(run.train, groups["train"])
    if arch not in list_archs():
        raise ValueError(f"invalid config value for 'arch': {arch!r}; expected one of {list_archs()}")
    arch_cfg = {} if arch != run.arch else dict(run.arch_cfg)  # another architecture starts from its defaults
    arch_cfg.update(_prefixed_values(arch_config_class(arch), "arch", f"architecture {arch!r}", groups["arch"]))
    run = dataclasses.replace(run, model=model, train=train, pool=pool, arch=arch, arch_cfg=arch_cfg,
                              task_cfg={**run.task_cfg, **_task_values(run.task, groups["task"])})
    check_run(run)
    return run


def _parsed(config_class: type, items: list[tuple[str, str]]) -> dict[str, Any]:
    """``field=text`` items parsed to the annotated types of ``config_class`` (nothing built yet)."""
    hints = typing.get_type_hints(config_class)
    return {field: parse_value(text, hints[field], field) for field, text in items}


def _train(base: TrainConfig, items: list[tuple[str, str]]) -> TrainConfig:
    return dataclasses.replace(base, **_parsed(TrainConfig, items))


def _model(base: BackboneConfig, items: list[tuple[str, str]], mixer_items: list[tuple[str, str]]) -> BackboneConfig:
    """The backbone with its field overrides and its mixers' settings, built (and validated) once,
    so that ``mixer=a,b,c`` and ``n_layers=3`` may come in any order."""
    values = _parsed(BackboneConfig, items)
    mixers = distinct(normalize_mixer(values.get("mixer", base.mixer)))
    mixer_cfg = dict(values.get("mixer_cfg", base.mixer_cfg))
    for field, text in mixer_items:
        name, dot, own_field = field.partition(".")
        if dot and name in MIXERS:
            mixer_cfg[name] = {**mixer_cfg.get(name, {}), own_field: _mixer_value(mixers, name, own_field, text)}
        else:
            mixer_cfg[field] = _mixer_value(mixers, None, field, text)
    return dataclasses.replace(base, **{**values, "mixer_cfg": mixer_cfg})


def _mixer_value(mixers: tuple[str, ...], name: str | None, field: str, text: str) -> Any:
    """``mixer.<field>=text`` (``name`` None: shared by the stack's mixers) or ``mixer.<name>.<field>=text``,
    parsed to the type the field has in the first mixer whose Config has it."""
    if field == MODE:
        return text.strip()
    having = [m for m in ((name,) if name else mixers) if field in config_fields(m)]
    if not having:  # the stack's own check names the key and lists the valid ones
        check_mixer_cfg(mixers, {name: {field: text}} if name else {field: text})
    return field_value(get_mixer_class(having[0]).Config, f"mixer.{name}" if name else "mixer", field, text)


def _prefixed_values(config_class: type, prefix: str, owner: str, items: list[tuple[str, str]]) -> dict[str, Any]:
    """``prefix.<field>=text`` items parsed to the fields of ``config_class`` (of ``owner``, for messages)."""
    names = field_names(config_class)
    out = {}
    for field, text in items:
        if field not in names:
            raise TypeError(f"unknown config key '{prefix}.{field}': {owner} has no field {field!r}; "
                            f"valid {prefix} keys: {names}")
        out[field] = field_value(config_class, prefix, field, text)
    return out


def _literal(text: str) -> Any:
    """A value for a task whose config class is not known: JSON (numbers, true/false), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _task_values(task: str, items: list[tuple[str, str]]) -> dict[str, Any]:
    if not items:
        return {}
    task_class = task_config_class(task)
    if task_class is None:
        return {field: _literal(text) for field, text in items}
    return _prefixed_values(task_class, "task", f"task {task!r}", items)
