"""What every ``triton`` mode of an op shares: whether it can run for an input, and why ``auto``
passes over it on a CPU.

``import ssmkit`` never imports triton: an op's kernels live in its ``triton.py`` and are imported
on the first call of the mode; these checks only ask whether the package is installed.

Triton decides when a kernel module is first imported whether its kernels are compiled for a GPU
or run by its interpreter (``TRITON_INTERPRET=1``, numpy on the CPU). So on a CPU tensor the mode
runs only when the interpreter was chosen: that is how the test suite checks every kernel without
a GPU. Interpreted kernels are correct but orders of magnitude slower than the PyTorch modes, so
``auto`` never picks ``triton`` for a CPU tensor; on a CUDA tensor it comes first.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

DTYPES = (torch.float32, torch.float64)
INSTALL = "pip install 'ssmkit[triton]'"


@functools.cache
def _installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreted() -> bool:
    """True when Triton kernels run in its interpreter (TRITON_INTERPRET=1, read at kernel import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_unavailable(like: Tensor | None, what: str = "the Triton kernels") -> str | None:
    """Why a ``triton`` mode cannot run for inputs like ``like`` (any input when None); None when it can."""
    if not _installed():
        return f"triton is not installed ({INSTALL})"
    if like is None:
        if torch.cuda.is_available() or interpreted():
            return None
        return f"{what} need a CUDA device (none here) or TRITON_INTERPRET=1 for the CPU interpreter"
    if like.device.type == "cpu" and not interpreted():
        return (f"{what} run CUDA tensors, got a CPU tensor (on a CPU they run only through the "
                f"Triton interpreter: TRITON_INTERPRET=1 set before triton is imported)")
    if like.device.type not in ("cpu", "cuda"):
        return f"{what} run CUDA tensors, got a tensor on {like.device}"
    if like.dtype not in DTYPES:
        return f"{what} run float32 or float64, got {like.dtype}"
    return None


def triton_auto_skip(like: Tensor | None) -> str | None:
    """Why ``auto`` passes over a ``triton`` mode for inputs like ``like``: it is for CUDA tensors
    (on a CPU it runs interpreted, correct but far slower, or not at all)."""
    if like is not None and like.device.type != "cuda":
        return "auto picks Triton kernels for CUDA tensors only (on a CPU they run interpreted, if at all)"
    return None


def block(n: int, least: int = 16, most: int | None = None) -> int:
    """The power of two ≥ n (at least ``least``: tl.dot needs 16 on a GPU), capped at ``most``."""
    size = max(least, 1 << max(0, n - 1).bit_length())
    return size if most is None else min(size, most)


def lazy(module: str, name: str) -> Callable[..., Any]:
    """The function ``name`` of the kernel module ``module`` (absolute), imported on the first call:
    ``import ssmkit`` stays free of triton."""

    loaded: dict[str, Callable[..., Any]] = {}  # after the first call, no import: torch.compile reads a dict

    def run(*args: Any, **kwargs: Any) -> Any:
        fn = loaded.get(name)
        if fn is None:
            fn = loaded[name] = getattr(importlib.import_module(module), name)
        return fn(*args, **kwargs)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = f"``{module}.{name}``, imported on the first call."
    return run


PEER_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def fla_recurrent_unavailable(like: Tensor | None) -> str | None:
    """Why flash-linear-attention's fused recurrent kernels cannot run for inputs like ``like``."""
    if importlib.util.find_spec("fla") is None:
        return "flash-linear-attention is not installed (pip install flash-linear-attention)"
    reason = triton_unavailable(like, "flash-linear-attention's kernels")
    if reason is None and like is not None and like.dtype not in PEER_DTYPES:
        return f"flash-linear-attention's kernels run float32, bfloat16 or float16, got {like.dtype}"
    return reason


def fla_chunk_unavailable(like: Tensor | None) -> str | None:
    """Why flash-linear-attention's chunked kernels cannot run for inputs like ``like``: as the
    recurrent ones, and never interpreted (fla 0.6.0's chunk kernels fail in the interpreter)."""
    reason = fla_recurrent_unavailable(like)
    if reason is None and interpreted():
        return ("flash-linear-attention's chunk kernels fail in the Triton interpreter (fla/ops/common/chunk_h.py "
                "calls .to on a loop index, a Python int there); they run on a GPU (benchmarks/gpu.py checks them)")
    return reason


def peer_auto_skip(like: Tensor | None) -> str | None:
    """``auto`` never runs a peer's kernel: it is refereed (ssmkit check --peers), not trusted."""
    return "a peer's kernel runs only when named; ssmkit check --peers compares it with the reference"


@functools.cache
def pin_first_config_when_interpreted() -> None:
    """Under the interpreter, make every autotuned Triton kernel run its first config, for the rest
    of the process (once): the interpreter cannot time configs (fla's autotuner then fails with "0
    active drivers"), and every config computes the same values. The fla modes call it, forward
    and backward being autotuned alike; compiled runs on a GPU are untouched."""
    if interpreted():
        from triton.runtime.autotuner import Autotuner

        prune = Autotuner.prune_configs
        Autotuner.prune_configs = lambda self, kwargs: prune(self, kwargs)[:1]


@contextlib.contextmanager
def interpreter_first_config():
    """While active, every autotuned Triton kernel (fla's) runs its first config: the interpreter
    cannot time configs (it has no device; fla's autotuner then fails with "0 active drivers"), and
    every config computes the same values. Used by ``ssmkit check --peers`` when interpreted and by
    the tests."""
    from triton.runtime.autotuner import Autotuner

    prune = Autotuner.prune_configs
    Autotuner.prune_configs = lambda self, kwargs: prune(self, kwargs)[:1]
    try:
        yield
    finally:
        Autotuner.prune_configs = prune
