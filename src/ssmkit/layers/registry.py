"""Mixer registry: ``@register_mixer("name")`` on the class, ``create_mixer``, ``list_mixers``.

Mixers are one ``ssmkit.registry.Registry`` (``MIXERS``) with each class's ``Config`` beside it.
``create_mixer`` refuses sizes that cannot fit before allocating anything (``check_fits``).
"""
from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, TypeVar

import torch

from .. import runtime
from ..log import log_once
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
    """Build the mixer registered as ``name``; ``cfg`` holds ``mode`` and its Config fields.

    Wrong config types and sizes whose weights cannot fit in memory are refused before anything
    is allocated (``check_fits``)."""
    check_fits(name, d_model, **cfg)
    return MIXERS.create(name, d_model, **cfg)


def sized_for(name: str, length: int, **cfg: Any) -> dict[str, Any]:
    """``cfg`` with the length bound of mixer ``name`` raised to run ``length`` tokens (its Config's
    ``sized_for_length``: hyena's filter length ``max_len``, S4ND's image); unchanged for other mixers."""
    return MIXERS.get(name).Config.sized_for_length(cfg, length)


def weight_bytes(name: str, d_model: int, **cfg: Any) -> int:
    """Bytes of the parameters and buffers of ``create_mixer(name, d_model, **cfg)``, counted on a
    copy built on the meta device (shapes only: nothing is allocated, a config error raises)."""
    key = (MIXERS.get(name), d_model, tuple(sorted(cfg.items())), torch.get_default_dtype())
    try:
        hash(key)
    except TypeError:  # an unhashable setting (a dict or list): count without the cache
        return _weight_bytes.__wrapped__(*key)
    return _weight_bytes(*key)


# A build on the meta device costs ~3x a small real one (meta kernels run in Python); a model
# builds the same mixer once per layer and tests rebuild the same few, so the counts are kept.
@functools.lru_cache(maxsize=512)
def _weight_bytes(cls: type[SequenceMixer], d_model: int, cfg: tuple[tuple[str, Any], ...],
                  default_dtype: torch.dtype) -> int:
    """``default_dtype`` is only part of the cache key: the parameters' element size follows it."""
    with torch.device("meta"):
        probe = cls(d_model, **dict(cfg))
    return sum(t.numel() * t.element_size() for t in itertools.chain(probe.parameters(), probe.buffers()))


def check_fits(name: str, d_model: int, **cfg: Any) -> None:
    """Raise ``ValueError`` naming the sizes and the memory available when the weights of mixer
    ``name`` cannot fit on the default device; nothing to check where that memory is unknown."""
    device = torch.get_default_device()
    available = runtime.available_memory(device)
    if available is None:
        return
    try:
        need = weight_bytes(name, d_model, **cfg)
    except (NotImplementedError, RuntimeError) as e:  # an op without a meta kernel: build unchecked
        log_once(f"mixer '{name}': its size is not checked before building (it cannot be built on the "
                 f"meta device: {e})")
        return
    if need > available:
        sizes = ", ".join(f"{k}={v!r}" for k, v in {"d_model": d_model, **cfg}.items())
        raise ValueError(f"mixer '{name}' with {sizes} needs {_bytes(need)} for its parameters and buffers, "
                         f"but {_bytes(available)} of memory is available on {device}: choose smaller sizes")


def _bytes(n: int) -> str:
    """n bytes in the largest binary unit that keeps the number >= 1 (at most PiB)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"
