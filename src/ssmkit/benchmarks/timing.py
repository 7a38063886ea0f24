"""Timing and memory measurement shared by every benchmark.

Times are the best of ``repeats`` calls after one warm-up call (allocator and kernel caches);
peak memory is the resident set size above its level before the call, sampled every millisecond
during a separate untimed call (Linux ``/proc``; None elsewhere). Benchmarks report ratios between
rows measured in one run: other processes on the machine move absolute seconds.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from ..runtime import release_free_memory


def best_time(fn: Callable[[], object], repeats: int = 3,
              clock: Callable[[], float] = time.perf_counter) -> float:
    """The best of ``repeats`` calls after a warm-up, by ``clock`` (wall time; ``time.thread_time``
    for the CPU time of the calling thread, which other processes move least)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def cpu_time(fn: Callable[[], object]) -> float:
    """The CPU seconds this process (all its threads) spends in one call of ``fn``: unlike wall
    time, other processes on a shared machine do not add to it."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def peak_rss_mb(fn: Callable[[], object]) -> float | None:
    """Peak resident memory (MB) above the starting level while ``fn`` runs. Freed blocks the
    allocator keeps (``ssmkit.runtime.tune_allocator``) are given back first, so that ``fn``'s own
    allocations show."""
    release_free_memory()
    try:
        start = _rss_mb()
    except OSError:
        return None
    peak, done = start, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_mb())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return max(peak, _rss_mb()) - start
