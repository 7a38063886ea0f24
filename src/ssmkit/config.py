"""Typed configuration dataclasses: the one home for validation, building and ``key=value`` parsing.

Every config in ssmkit (mixers, architectures, tasks, the backbone, training, runs) is a dataclass
that validates itself in ``__post_init__``; the helpers here are what they share:

- ``check(cond, field, message)``: raise ``ValueError`` naming the field when a rule is broken;
- ``check_types(config)``: every field has its annotated type (an int field refuses ``2.5``,
  ``"8"`` and ``True``), ints in float fields become floats;
- ``build_config(cls, values)``: build from a dict (e.g. JSON), unknown keys rejected with the list
  of valid ones, JSON lists turned back into tuples where the field is a tuple;
- ``parse_value(text, type, field)`` and ``config_from_overrides(cls, ["k=v", ...], base)``: the
  command line's strings parsed to each field's annotated type.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Union


def check(condition: bool, field: str, message: str) -> None:
    """Raise ``ValueError`` naming the config field when a validation rule is broken."""
    if not condition:
        raise ValueError(f"invalid config value for '{field}': {message}")


def field_names(config_class: type) -> list[str]:
    return [f.name for f in dataclasses.fields(config_class)]


# ---------------------------------------------------------------- types


def _is_optional(tp: Any) -> tuple[bool, Any]:
    """(True, X) for ``X | None``; (False, tp) otherwise."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def matches(value: Any, tp: Any) -> bool:
    """Whether ``value`` has the annotated type ``tp`` (bools are not ints, ints are floats)."""
    optional, tp = _is_optional(tp)
    if value is None:
        return optional or tp is Any
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in typing.get_args(tp))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
    if origin in (list, dict):
        return isinstance(value, origin)
    return isinstance(value, tp)


def type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def check_types(config: Any) -> None:
    """Reject a field whose value does not have the annotated type; ints given to float fields
    become floats (so a config written as ``lr=1`` saves and compares as 1.0)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, tp = getattr(config, f.name), hints[f.name]
        if not matches(value, tp):
            raise TypeError(f"invalid config value for '{f.name}': expected {type_name(tp)}, "
                            f"got {value!r} ({type(value).__name__})")
        object.__setattr__(config, f.name, _coerce(value, tp))


def _coerce(value: Any, tp: Any) -> Any:
    """ints in float positions become floats."""
    tp = _is_optional(tp)[1]
    if tp is float and isinstance(value, int):
        return float(value)
    if typing.get_origin(tp) is tuple and isinstance(value, tuple):
        args = typing.get_args(tp)
        kinds = [args[0]] * len(value) if args[1:] == (Ellipsis,) else args
        return tuple(_coerce(v, k) for v, k in zip(value, kinds))
    return value


def _wants_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple or any(typing.get_origin(a) is tuple for a in typing.get_args(tp))


def build_config(config_class: type, values: dict[str, Any] | None = None) -> Any:
    """Build a config dataclass from a dict, rejecting unknown keys with the list of valid ones;
    JSON lists become tuples where the field is a tuple (so ``to_json`` round-trips)."""
    values = dict(values or {})
    valid = field_names(config_class)
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise TypeError(f"unknown config key(s) {unknown} for {config_class.__name__}; valid keys: {valid}")
    hints = typing.get_type_hints(config_class)
    for k, v in values.items():
        if isinstance(v, list) and _wants_tuple(hints[k]):
            values[k] = tuple(v)
    return config_class(**values)


def to_json(config: Any) -> Any:
    """A config (dataclasses nested in dicts, tuples, ...) as plain JSON values."""
    return json.loads(json.dumps(dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config))


# ---------------------------------------------------------------- key=value strings

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_value(text: str, tp: Any, field: str) -> Any:
    """Parse one command-line string to the annotated type ``tp`` of ``field``."""
    optional, inner = _is_optional(tp)
    if optional and text.strip().lower() in ("none", "null"):
        return None

    def bad(expected: str) -> ValueError:
        return ValueError(f"invalid value for '{field}': {text!r} is not {expected}")

    origin = typing.get_origin(inner)
    if inner is bool:
        low = text.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise bad(f"a bool (one of {_TRUE + _FALSE})")
    if inner is int:
        try:
            return int(text)
        except ValueError:
            raise bad("an int") from None
    if inner is float:
        try:
            return float(text)
        except ValueError:
            raise bad("a float") from None
    if inner is str:
        return text
    if origin in (tuple, list):
        args = typing.get_args(inner)
        items = [t.strip() for t in text.strip().strip("()[]").split(",") if t.strip()]
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis) and len(items) != len(args):
            raise bad(f"{len(args)} comma-separated values")
        kinds = [args[0]] * len(items) if len(args) == 1 or args[1:] == (Ellipsis,) else list(args)
        return origin(parse_value(t, k, field) for t, k in zip(items, kinds))
    if origin in (Union, types.UnionType):  # e.g. str | tuple[str, ...]: the first member that parses
        members = typing.get_args(inner)
        for member in members:
            try:
                return parse_value(text, member, field)
            except ValueError:
                continue
        raise bad(" or ".join(type_name(m) for m in members))
    if origin is dict or inner is Any:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            if inner is Any:
                return text
            raise bad('a JSON object such as {"d_state": 16}') from None
        if origin is dict and not isinstance(value, dict):
            raise bad("a JSON object")
        return value
    raise TypeError(f"field '{field}' has type {type_name(tp)}, which key=value overrides cannot set")


def split_override(item: str) -> tuple[str, str]:
    """``"key=value"`` -> (key, value); anything else is a ``ValueError`` saying the expected form."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {item!r} is not of the form key=value")
    return key.strip(), value


def config_from_overrides(config_class: type, overrides: list[str], base: Any = None) -> Any:
    """Build ``config_class`` from ``["key=value", ...]`` on top of ``base`` (default: its defaults).

    Values are parsed to each field's annotated type; an unknown key raises ``TypeError`` listing
    the valid keys, an ill-typed value raises ``ValueError`` naming the field and the type.
    """
    hints = typing.get_type_hints(config_class)
    valid = field_names(config_class)
    values = {} if base is None else {k: getattr(base, k) for k in valid}
    for item in overrides:
        key, text = split_override(item)
        if key not in valid:
            raise TypeError(f"unknown config key {key!r} for {config_class.__name__}; valid keys: {valid}")
        values[key] = parse_value(text, hints[key], key)
    return config_class(**values)


def field_value(config_class: type, prefix: str, field: str, text: str) -> Any:
    """Parse ``text`` to the type of ``config_class.field`` and check it (builds an instance with it);
    errors name ``prefix.field``."""
    try:
        return getattr(config_from_overrides(config_class, [f"{field}={text}"]), field)
    except (ValueError, TypeError) as e:
        raise type(e)(f"{prefix}.{field}: {e}") from None
