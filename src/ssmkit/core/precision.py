"""Mixed precision: the recurrence / SSM-kernel / scan core runs in float32 under autocast.

Under ``torch.autocast(dtype=torch.bfloat16)`` (``bf16=true`` training), matmul-shaped work
(projections, attention) may run in bf16, but a recurrence accumulates over L steps and an SSM
kernel raises eigenvalues to the power L: bf16's 8-bit mantissa (relative step 2^-8 = 3.9e-3)
would compound there, and complex kernels (Cauchy, Vandermonde, FFT of complex filters) have no
bf16 implementation at all. So the core runs as mamba_ssm and S4 run it: with its inputs cast to
float32 and autocast switched off inside, state math exact to float32, output in float32 (the
next autocast op, e.g. an output projection, casts it down again where that is cheap and safe).

``float32_core`` is the one mechanism: it decorates op entry points (``ssmkit.ops``), the core
kernels (Vandermonde, Cauchy) and the few layer methods that hold inline state math. Outside
autocast it is a no-op, so float32 / float64 / complex128 reference checks see no change.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

F = TypeVar("F", bound=Callable[..., Any])

_LOW = (torch.bfloat16, torch.float16)
_DEVICE_TYPES = ("cpu", "cuda")


def _first_device_type(obj: Any) -> str | None:
    if isinstance(obj, Tensor):
        return obj.device.type
    if isinstance(obj, (tuple, list)):
        items: Any = obj
    elif isinstance(obj, dict):
        items = obj.values()
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        items = (getattr(obj, f.name) for f in dataclasses.fields(obj))
    else:
        return None
    for item in items:
        found = _first_device_type(item)
        if found is not None:
            return found
    return None


def to_float32(obj: Any) -> Any:
    """``obj`` with every bf16 / float16 tensor inside (tuples, lists, dicts, dataclasses) cast to
    float32; other tensors (float32, float64, complex, integer) and non-tensors unchanged."""
    if isinstance(obj, Tensor):
        return obj.float() if obj.dtype in _LOW else obj
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(to_float32(o) for o in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_float32(o) for o in obj)
    if isinstance(obj, dict):
        return {k: to_float32(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: to_float32(getattr(obj, f.name))
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


def autocast_active(device_type: str) -> bool:
    """True when autocast is on for ``device_type`` ("cpu", "cuda", ...); False for a device that
    has no autocast (e.g. "meta", where tests trace a model without values)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # "unknown device type for autocast"
        return False


def float32_core(fn: F) -> F:
    """Run ``fn`` in float32 when autocast is on for its tensors' device: autocast off inside,
    bf16 / float16 tensor arguments cast to float32. Without autocast, ``fn`` runs unchanged."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        found = _first_device_type(args) or _first_device_type(kwargs)
        # A method that reads only parameters (no tensor argument) turns off every active autocast.
        active = [d for d in ((found,) if found else _DEVICE_TYPES) if autocast_active(d)]
        if not active:
            return fn(*args, **kwargs)
        with contextlib.ExitStack() as stack:
            for device_type in active:
                stack.enter_context(torch.autocast(device_type, enabled=False))
            return fn(*to_float32(args), **to_float32(kwargs))

    return wrapper  # type: ignore[return-value]
