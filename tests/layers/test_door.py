"""Validation at the door, the same for every registered mixer (issue 12, item 5): config values of
the wrong type are refused naming the field and the expected type."""
from __future__ import annotations

import dataclasses
import typing

import pytest

import ssmkit
from ssmkit.layers import get_mixer_class

MIXERS = ssmkit.list_mixers()
D = 8


def _wrong_values(tp) -> list:
    """Values that do not have the annotated type ``tp`` (None is allowed where tp is optional)."""
    args = set(typing.get_args(tp)) or {tp}
    if int in args:
        return [8.5, "8", True]
    if float in args:
        return ["0.1", True]
    if bool in args:
        return [1, "yes"]
    if str in args:
        return [3]
    return [object()]


@pytest.mark.parametrize("name", MIXERS)
def test_config_values_of_the_wrong_type_are_named(name):
    cls = get_mixer_class(name).Config
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        for bad in _wrong_values(hints[field.name]):
            with pytest.raises(TypeError, match=rf"'{field.name}': expected .*, got {bad!r}"):
                ssmkit.create_mixer(name, D, **{field.name: bad})
