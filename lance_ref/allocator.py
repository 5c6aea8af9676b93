"""Ask glibc to keep freed large buffers for reuse instead of unmapping them.

The engine allocates big short-lived temporaries every step (im2col matrices, gradients). With
glibc's defaults, buffers above the mmap threshold are unmapped when freed and page-faulted in
again at the next step, which costs as much as the copy that fills them. Raising the mmap and
trim thresholds keeps such memory in the heap, which so serves as the step's reusable workspace
(`benchmarks/page_faults.py` counts a step's page faults with and without it). Process-wide,
so it is opt-in: the CLI and the benchmarks call it; library users may.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit systems


def keep_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Serve buffers up to 32 MiB from the heap and keep up to `trim_threshold` bytes of freed
    heap memory; returns False where this is not glibc (nothing is changed then)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) and mallopt(_M_TRIM_THRESHOLD, trim_threshold))
