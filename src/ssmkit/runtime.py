"""Process-level settings that long sequences need: glibc's allocator thresholds.

glibc's malloc serves every request above ``M_MMAP_THRESHOLD`` (dynamic, at most 32 MB on 64-bit
Linux) with a fresh ``mmap`` and gives it back with ``munmap`` on free. At long lengths every
(B, L, D) temporary is that large (2 x 16,384 x 512 float32 = 64 MB), so each op page-faults its
output in anew: at L = 16k this was ~1-2 s of system time per forward. Raising the mmap threshold
(and the trim threshold, so freed heap is kept) lets PyTorch's CPU allocations reuse freed blocks.
The price is a resident set that does not shrink after a peak (memory is kept for reuse);
``release_free_memory()`` gives it back (``benchmarks.timing.peak_rss_mb`` calls it before measuring).

The ``ssmkit`` command applies it at start (``SSMKIT_TUNE_MALLOC=0`` turns that off); a library
user calls ``ssmkit.runtime.tune_allocator()`` once. Elsewhere than glibc it does nothing.

``with deterministic(seed):`` is the switch for bitwise-reproducible training on CPU (``TrainConfig.
deterministic`` / ``--set deterministic=true`` run training in it; docs/training.md).

``available_memory(device)`` is what a device can still hold (``create_mixer`` refuses a mixer
whose weights cannot fit, before allocating them).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
from collections.abc import Iterator

import torch

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
ENV = "SSMKIT_TUNE_MALLOC"


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, looked up once (find_library searches the linker cache on every call)."""
    path = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(path) if path else None
    except OSError:
        return None


def _libc_function(name: str):
    return getattr(_libc(), name, None)


def release_free_memory() -> bool:
    """Give the allocator's free blocks back to the OS (glibc ``malloc_trim(0)``), e.g. before
    measuring a peak resident set; True when glibc did it."""
    trim = _libc_function("malloc_trim")
    if trim is None:
        return False
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    trim(0)
    return True


def tune_allocator(mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 30) -> bool:
    """Raise glibc's mmap and trim thresholds (bytes); True when applied, False where there is no
    glibc ``mallopt`` (macOS, Windows, musl)."""
    for value, name in ((mmap_threshold, "mmap_threshold"), (trim_threshold, "trim_threshold")):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**31:
            raise ValueError(f"{name} must be an int in (0, 2**31) bytes, got {value!r}")
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def tune_allocator_from_env() -> bool:
    """``tune_allocator()`` unless ``SSMKIT_TUNE_MALLOC`` is 0/false/no/off."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return tune_allocator()


def available_memory(device: torch.device) -> int | None:
    """Bytes that ``device`` can still hold: ``MemAvailable`` of /proc/meminfo for the CPU (Linux),
    the free memory of a CUDA device; None where that is unknown (other systems and devices)."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file counts kB
    except (OSError, ValueError, IndexError):
        return None
    return None


@contextlib.contextmanager
def deterministic(seed: int | None = None) -> Iterator[None]:
    """Within the block, bitwise-reproducible runs: the same code, data, seed, torch build, machine
    type and number of threads (``torch.get_num_threads()``: reductions split their work by it)
    give the same bits. The previous settings come back on exit.

    - ``torch.use_deterministic_algorithms(True)``: an op without a deterministic implementation
      raises instead of running (on CUDA also cuBLAS's workspace must be fixed: set
      ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` before starting);
    - uninitialized memory (``torch.empty``) is filled, so a kernel that read it would show;
    - Python's ``random``, NumPy's global generator and torch's are seeded with ``seed`` when given.
    ssmkit's own kernels need nothing more: the C++ selective scan gives each task its own output
    rows and sums them in a fixed order, and data orders are functions of (seed, epoch)."""
    import random

    import numpy as np

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.utils.deterministic.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.utils.deterministic.fill_uninitialized_memory = before[2]
