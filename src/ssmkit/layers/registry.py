"""Mixer registry: ``@register_mixer("name")`` on the class, ``create_mixer``, ``list_mixers``.

Mixers are one ``ssmkit.registry.Registry`` (``MIXERS``) with each class's ``Config`` beside it.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from ..registry import Registry
from .base import SequenceMixer

MIXERS: Registry[type[SequenceMixer]] = Registry("mixer")
M = TypeVar("M", bound=type[SequenceMixer])


def _check_mixer_class(name: str, cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, SequenceMixer)):
        raise TypeError(f"@register_mixer('{name}') must decorate a SequenceMixer subclass")
    if not cls.modes:
        raise ValueError(f"{cls.__name__} declares no computation modes")


def register_mixer(name: str) -> Callable[[M], M]:
    """Class decorator: make ``cls`` available as ``create_mixer(name, ...)``."""

    def decorator(cls: M) -> M:
        _check_mixer_class(name, cls)
        MIXERS.register(name, cls.Config)(cls)
        cls.mixer_name = name
        return cls

    return decorator


def list_mixers() -> list[str]:
    """Names of all registered mixers, sorted."""
    return MIXERS.names()


def get_mixer_class(name: str) -> type[SequenceMixer]:
    return MIXERS.get(name)


def create_mixer(name: str, d_model: int, **cfg: Any) -> SequenceMixer:
    """Build the mixer registered as ``name``; ``cfg`` holds ``mode`` and its Config fields."""
    return MIXERS.create(name, d_model, **cfg)
