"""Timing shared by the benchmarks (each runs as `python benchmarks/<name>.py`)."""

from __future__ import annotations

import os
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


def quiet_blas_env() -> dict:
    """This environment with OpenBLAS's idle threads sleeping at once (unless the caller chose),
    for a child process: by default they spin for about 2^28 cycles after each BLAS call, and on
    two cores the spinner takes the core that a Rust thread started right after needs. (Importing
    lance_ref before NumPy sets the same default; these scripts import NumPy first.)"""
    return {"OPENBLAS_THREAD_TIMEOUT": "4", **os.environ}
