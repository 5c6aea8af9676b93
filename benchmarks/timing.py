"""Timing shared by the benchmarks (each runs as `python benchmarks/<name>.py`)."""

from __future__ import annotations

import time


def run_times(fn, repeats: int) -> list:
    """Seconds of each of `repeats` calls of `fn`, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times
