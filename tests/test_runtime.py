"""ssmkit.runtime: glibc allocator thresholds for long sequences, and the memory a device can hold.

What the tuning buys (fewer page faults per long-sequence op) depends on the machine and the heap's
history, so it is measured by ``ssmkit bench``, not asserted here; these tests check what the code
deterministically does: which mallopt calls it makes, and what it reports.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from ssmkit import runtime
from ssmkit.runtime import tune_allocator, tune_allocator_from_env

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


class FakeLibc:
    """Records the calls that runtime makes into the C library, and answers like glibc (1 = done)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def function(self, name: str):
        def call(*args: int) -> int:
            self.calls.append((name, *args))
            return 1

        return call


def test_tune_allocator_raises_both_thresholds_through_mallopt(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(runtime, "_libc_function", libc.function)
    assert tune_allocator(mmap_threshold=1 << 20, trim_threshold=1 << 21) is True
    assert libc.calls == [("mallopt", -3, 1 << 20), ("mallopt", -1, 1 << 21)]  # M_MMAP_, M_TRIM_THRESHOLD
    assert runtime.release_free_memory() is True
    assert libc.calls[-1] == ("malloc_trim", 0)


def test_without_glibc_nothing_is_applied(monkeypatch):
    monkeypatch.setattr(runtime, "_libc_function", lambda name: None)
    assert tune_allocator() is False
    assert runtime.release_free_memory() is False


def test_the_real_c_library_accepts_the_thresholds_where_it_is_glibc():
    # In a fresh process: the thresholds stay set for the rest of the process that sets them.
    code = ("from ssmkit.runtime import tune_allocator, release_free_memory; "
            "print(tune_allocator(), release_free_memory())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.split()
    assert out == [str(bool(GLIBC))] * 2, out


def test_bad_thresholds_are_named():
    with pytest.raises(ValueError, match="mmap_threshold"):
        tune_allocator(mmap_threshold=0)
    with pytest.raises(ValueError, match="trim_threshold"):
        tune_allocator(trim_threshold=2**40)


def test_environment_turns_it_off(monkeypatch):
    monkeypatch.setenv("SSMKIT_TUNE_MALLOC", "0")
    assert tune_allocator_from_env() is False


def test_available_memory_is_read_where_it_is_known(tmp_path, monkeypatch):
    assert runtime.available_memory(torch.device("meta")) is None
    cpu = runtime.available_memory(torch.device("cpu"))
    assert cpu is None or cpu > 0
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    1234567 kB\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(meminfo if path == "/proc/meminfo" else path, *a, **k))
    assert runtime.available_memory(torch.device("cpu")) == 1234567 * 1024
    meminfo.write_text("MemTotal:       16000000 kB\n")  # an old kernel without MemAvailable: unknown
    assert runtime.available_memory(torch.device("cpu")) is None
