"""Argument checks shared by the op entry points: every message names the op, the argument, the
expected shape with its legend, and what was given.

Dimension legend: B batch, L length, H heads, K key dim, V value dim.
"""
from __future__ import annotations

from torch import Tensor


def check_tensors(op: str, named: dict[str, Tensor | None], like: str, optional: tuple[str, ...] = ()) -> None:
    """Every entry of ``named`` is a real floating tensor with the dtype and device of ``named[like]``;
    entries listed in ``optional`` may be None."""
    ref = named[like]
    for name, t in named.items():
        if t is None and name in optional:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{op}: {name} must be a real floating-point tensor, got {t.dtype}")
        if isinstance(ref, Tensor) and (t.dtype != ref.dtype or t.device != ref.device):
            raise TypeError(f"{op}: {name} is {t.dtype} on {t.device}, expected {like}'s real {ref.dtype} "
                            f"on {ref.device}")


def check_real_or_complex(named: dict[str, Tensor | None]) -> None:
    """Every given entry is a real or complex floating tensor (None entries are skipped)."""
    for name, t in named.items():
        if t is not None and not (t.is_floating_point() or t.is_complex()):
            raise TypeError(f"{name} must be a real or complex floating tensor, got {t.dtype}")


def check_sequence(op: str, name: str, t: Tensor, legend: str) -> tuple[int, ...]:
    """``t`` is a rank-4 (B, L, ., .) tensor with L >= 1; returns its shape."""
    if t.ndim != 4:
        raise ValueError(f"{op}: {name} must have shape {legend}, got {tuple(t.shape)}")
    if t.shape[1] == 0:
        raise ValueError(f"{op}: {name} is an empty sequence (L = 0); expected at least one time step")
    return tuple(t.shape)


def expect_shape(op: str, name: str, t: Tensor, shape: tuple[int, ...], legend: str) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(f"{op}: {name} must have shape {legend} = {shape}, got {tuple(t.shape)}")


def check_values(op: str, v: Tensor, batch: int, L: int, H: int) -> int:
    """v is (B, L, H, V) for the given (B, L, H); returns V."""
    if v.ndim != 4 or tuple(v.shape[:3]) != (batch, L, H):
        raise ValueError(f"{op}: v must have shape (B, L, H, V) with (B, L, H) = {(batch, L, H)}, "
                         f"got {tuple(v.shape)}")
    return v.shape[-1]


def check_chunk_size(op: str, chunk_size: int, power_of_two: bool = False) -> None:
    ok = isinstance(chunk_size, int) and not isinstance(chunk_size, bool) and chunk_size >= 1
    if power_of_two:
        if not ok or chunk_size & (chunk_size - 1):
            raise ValueError(f"{op}: chunk_size must be a power of two >= 1, got {chunk_size!r}")
    elif not ok:
        raise ValueError(f"{op}: chunk_size must be a positive int, got {chunk_size!r}")
