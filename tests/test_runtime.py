"""ssmkit.runtime: glibc allocator thresholds for long sequences."""
from __future__ import annotations

import ctypes.util
import platform
import resource

import pytest
import torch

from ssmkit.runtime import release_free_memory, tune_allocator, tune_allocator_from_env

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" and ctypes.util.find_library("c")


def _faults_of_a_fresh_64mb_tensor() -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(16 * 2**20, dtype=torch.float32)  # 64 MB: above glibc's default mmap threshold
    t.fill_(1.0)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    del t
    return after - before


@pytest.mark.skipif(not GLIBC, reason="mallopt thresholds exist only in glibc")
def test_tuned_allocator_reuses_freed_blocks_instead_of_faulting_pages_in_again():
    assert tune_allocator() is True
    _faults_of_a_fresh_64mb_tensor()  # the first one faults its pages in
    # 64 MB is 16,384 pages of 4 KB: an mmap per allocation faults every one of them again
    assert _faults_of_a_fresh_64mb_tensor() < 2_000
    assert release_free_memory() is True


def test_bad_thresholds_are_named():
    with pytest.raises(ValueError, match="mmap_threshold"):
        tune_allocator(mmap_threshold=0)
    with pytest.raises(ValueError, match="trim_threshold"):
        tune_allocator(trim_threshold=2**40)


def test_environment_turns_it_off(monkeypatch):
    monkeypatch.setenv("SSMKIT_TUNE_MALLOC", "0")
    assert tune_allocator_from_env() is False
