"""Process-wide performance settings that scripts opt into; importing this module changes nothing.

``keep_freed_memory()``: glibc's malloc serves blocks above its mmap threshold (128 KiB at start,
rising to at most 32 MiB) with fresh ``mmap`` pages and gives them back on ``free``. A batched
dream step at 256 envs allocates dozens of 1-12 MiB activations, and faulting in fresh pages for
them on every step showed in profiles of ``DreamVecEnv.step`` on CPU (figures in
``benchmarks/README.md``). Raising the mmap and trim thresholds
keeps freed blocks in the heap for reuse; PyTorch's CPU tuning guide gets the same effect by
swapping in jemalloc or tcmalloc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's ceiling on 64-bit systems (larger values are refused)


def keep_freed_memory(trim_threshold: int = 2**30) -> bool:
    """Make glibc keep freed blocks up to 32 MiB for reuse and trim a heap only when more than
    ``trim_threshold`` bytes are free at its top. Returns ``True`` when both settings took;
    ``False`` off Linux/glibc (nothing changed) or when glibc refused one of them (the first may
    then have taken). Resident memory may stay higher, by up to the largest working set seen in
    each malloc arena."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim = min(int(trim_threshold), 2**31 - 1)
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))
