"""Process-level speed settings for CPU runs.

glibc's malloc returns every freed block larger than its (adaptive) mmap threshold to the kernel,
and a training loop frees and re-allocates activation buffers of tens of MB every step, so each
step pays for page faults and for the kernel zeroing fresh pages. Keeping those blocks in the heap
(the same reason PyTorch's CPU tuning guides suggest jemalloc or tcmalloc) made a DM iteration on
MNIST 2.1x faster on the 2-core reference machine (1.34 s -> 0.64 s, `benchmarks/budget.py`), at
the price of a higher resident peak (the freed memory is kept for reuse rather than returned).

The CLI applies this at start-up, except for trajectory-matching distillations (MTT, PAD, DATM:
the methods that need experts), whose unroll is bounded by memory: there the kept blocks cost
2.5 GiB at 30 steps (13,181 MiB peak against 10,600 MiB with glibc's defaults, benchmarks/speed.py
--mtt-memory) for about 10 % of speed. Python users opt in with `datadistill.tune_allocator()`.
Set DATADISTILL_MALLOC=default to leave the allocator alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_DEFAULT_BYTES = 1 << 30


def tune_allocator(threshold_bytes: int = _DEFAULT_BYTES) -> bool:
    """Raise glibc's mmap and trim thresholds to `threshold_bytes` for this process.

    Returns True when the setting was applied; False (and changes nothing) on other C libraries
    (macOS, Windows, musl) or when DATADISTILL_MALLOC=default."""
    if os.environ.get("DATADISTILL_MALLOC", "").strip().lower() == "default":
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    value = int(min(threshold_bytes, 2**31 - 1))
    return bool(mallopt(_M_MMAP_THRESHOLD, value)) and bool(mallopt(_M_TRIM_THRESHOLD, value))
