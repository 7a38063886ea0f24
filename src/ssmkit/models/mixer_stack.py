"""Which mixer each layer of a stack runs, and with which settings (``BackboneConfig.mixer``, ``mixer_cfg``).

``mixer`` is one registered name, run by every layer (``"s4d"``), or a hybrid: a tuple with one
name per layer (``("mamba", "mamba", "attention")``). A comma-separated string (the command
line's ``--mixer s4d,mamba,attention``) and a JSON list are read as that tuple.

``mixer_cfg`` holds the mixers' settings in two scopes:

- a plain key (``{"d_state": 32}``, ``--set mixer.d_state=32``) is shared: every mixer of the
  stack whose ``Config`` has that field gets it, the others are built without it; a key that no
  mixer of the stack has is an error. ``mode`` is shared the same way: it goes to every mixer
  that has that computation mode (``auto`` to all);
- a mixer's name holding a dict (``{"mamba": {"d_state": 16}}``, ``--set mixer.mamba.d_state=16``)
  sets that mixer alone, over the shared settings; it must name a mixer of the stack and fields
  (or ``mode``) that mixer has.

So a hybrid no longer needs settings that every one of its mixers accepts, and run.json files
written before hybrids had per-name settings (a flat ``mixer_cfg``) read unchanged.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..layers.registry import MIXERS, get_mixer_class

Mixer = str | tuple[str, ...]
MODE = "mode"  # not a Config field: the computation mode given to create_mixer


def normalize_mixer(mixer: Any) -> Mixer:
    """One name as a str; several as a tuple (from a tuple, a list or ``"a,b,c"``); a single-name
    tuple is that name. Every name must be a registered mixer (``KeyError`` listing them)."""
    if isinstance(mixer, str):
        names = tuple(m.strip() for m in mixer.split(","))
    elif isinstance(mixer, (tuple, list)) and all(isinstance(m, str) for m in mixer):
        names = tuple(m.strip() for m in mixer)
    else:
        raise TypeError(f"invalid config value for 'mixer': expected a mixer name or a tuple of names, got {mixer!r}")
    if not names or not all(names):
        raise ValueError(f"invalid config value for 'mixer': an empty mixer name in {mixer!r}")
    for name in names:
        MIXERS.get(name)  # raises KeyError: unknown mixer ...; registered mixers: [...]
    return names[0] if len(names) == 1 else names


def distinct(mixer: Mixer) -> tuple[str, ...]:
    """The mixers of a stack, each once, in layer order."""
    names = (mixer,) if isinstance(mixer, str) else mixer
    return tuple(dict.fromkeys(names))


def mixer_label(mixer: Mixer) -> str:
    """``"s4d"`` or ``"s4d,mamba,attention"``: how the command line and the logs write it."""
    return mixer if isinstance(mixer, str) else ",".join(mixer)


def config_fields(name: str) -> list[str]:
    """The ``Config`` fields of mixer ``name``."""
    return [f.name for f in dataclasses.fields(get_mixer_class(name).Config)]


def _takes(name: str, key: str, value: Any) -> bool:
    """Whether a shared setting goes to mixer ``name``."""
    if key == MODE:
        return value == "auto" or value in get_mixer_class(name).modes
    return key in config_fields(name)


def is_per_mixer(key: str, value: Any) -> bool:
    """Whether a ``mixer_cfg`` entry is the settings of one mixer (``{"mamba": {...}}``)."""
    return key in MIXERS and isinstance(value, dict)


def settings_for(name: str, mixer_cfg: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``create_mixer(name, d_model, **kw)`` in a stack with ``mixer_cfg``."""
    shared = {k: v for k, v in mixer_cfg.items() if not is_per_mixer(k, v) and _takes(name, k, v)}
    own = mixer_cfg.get(name)
    return {**shared, **own} if isinstance(own, dict) else shared


def _valid_keys(name: str) -> list[str]:
    return config_fields(name) + [MODE]


def _check_mode(name: str, value: Any, key: str) -> None:
    modes = list(get_mixer_class(name).modes)
    if value != "auto" and value not in modes:
        raise ValueError(f"invalid config value for '{key}': {value!r} is not a mode of {name!r}; "
                         f"expected auto or one of {modes}")


def _check_shared(names: tuple[str, ...], key: str, value: Any) -> None:
    if any(_takes(n, key, value) for n in names):
        return
    if len(names) == 1:
        if key == MODE:
            _check_mode(names[0], value, "mixer.mode")
        raise TypeError(f"unknown config key 'mixer.{key}': mixer {names[0]!r} has no field {key!r}; "
                        f"valid mixer keys: {_valid_keys(names[0])}")
    if key == MODE:
        modes = {n: list(get_mixer_class(n).modes) for n in names}
        raise ValueError(f"invalid config value for 'mixer.mode': {value!r} is not a mode of any mixer of the "
                         f"stack; expected auto or one of {modes}")
    valid = {n: _valid_keys(n) for n in names}
    raise TypeError(f"unknown config key 'mixer.{key}': no mixer of the stack {list(names)} has a field {key!r}; "
                    f"valid mixer keys: {valid} (mixer.<name>.<field> sets one mixer)")


def _check_own(names: tuple[str, ...], name: str, values: dict[str, Any]) -> None:
    if name not in names:
        raise TypeError(f"unknown config key 'mixer.{name}': no layer of the stack runs mixer {name!r} "
                        f"(the stack's mixers: {list(names)})")
    for key, value in values.items():
        if key == MODE:
            _check_mode(name, value, f"mixer.{name}.mode")
        elif key not in config_fields(name):
            raise TypeError(f"unknown config key 'mixer.{name}.{key}': mixer {name!r} has no field {key!r}; "
                            f"valid mixer.{name} keys: {_valid_keys(name)}")


def check_mixer_cfg(mixer: Mixer, mixer_cfg: dict[str, Any]) -> None:
    """Every setting reaches a mixer of the stack, and every mixer's ``Config`` accepts its settings
    (an error names the key and lists the valid ones)."""
    names = distinct(mixer)
    for key, value in mixer_cfg.items():
        if is_per_mixer(key, value):
            _check_own(names, key, value)
        else:
            _check_shared(names, key, value)
    for name in names:
        get_mixer_class(name).Config(**{k: v for k, v in settings_for(name, mixer_cfg).items() if k != MODE})
