"""Keep the memory that PyTorch frees on the CPU in the process, for the next pair.

A forward pass of GIFNet at 640×480 allocates and frees about 2.7 GB, in blocks up to
57 MB. glibc's malloc serves large blocks with fresh mmap() calls and returns them to the
system on free(), so every pair page-faults all of it in again: 0.7 million faults and
1.3 s of system time per pair beside 1.0 s of arithmetic on the machine of this project
(2 cores, bf16); transparent huge pages cut the faults, not enough of the time nor its
variance (benchmarks/README.md, "Memory kept between pairs"). Served from one heap that is
trimmed only when the input size changes, the blocks a pair frees are the ones the next
pair reuses: no page faults after the first pairs of a size, at the price of keeping the
process's high-water mark for that size.

The setting is process-wide (as jemalloc or tcmalloc would be); the engine makes it for
the PyTorch CPU backend, whose activations these are. A user's own malloc settings
(MALLOC_*_ variables or glibc.malloc tunables) are left alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt() parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER_TRIM = 2**31 - 1  # the largest value mallopt takes (an int)
_USER_SETTINGS = (
    "MALLOC_MMAP_MAX_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_ARENA_MAX",
)

KEPT = "freed memory kept for the next pair"
_result: str | None = None


def retain_freed_memory() -> str:
    """Serve large allocations from the heap and never trim it (glibc); once per process.

    Returns what is true now, for reports: kept, left to the user's settings, or not
    available (not glibc).
    """
    global _result
    if _result is None:
        _result = _apply()
    return _result


def _apply() -> str:
    if any(name in os.environ for name in _USER_SETTINGS) or "glibc.malloc." in os.environ.get(
        "GLIBC_TUNABLES", ""
    ):
        return "malloc as the environment sets it"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "system malloc (not glibc: freed memory may go back to the system)"
    libc = ctypes.CDLL(None)
    # Heap only: no mmap'd blocks, which free() would unmap; no trimming of the heap; and
    # one heap for all threads, so that a block one thread frees is there for the others.
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM), (_M_ARENA_MAX, 1))
    if not all(libc.mallopt(option, value) == 1 for option, value in settings):
        return "system malloc (mallopt refused the settings)"
    return KEPT


def release_freed_memory() -> None:
    """Give the heap's free pages back to the system (malloc_trim), where the setting above is
    in force: for a new input size, whose maps the blocks cut for the old one fit badly. Kept,
    such blocks add up over a sequence of sizes (without this trim TIM's resident memory
    reaches 2.4 GB over 11 pairs of three sizes from 640×480 to 800×600, against 1.1 GB for
    640×480 alone: benchmarks/README.md, "Memory kept between pairs"). The next pair faults in
    only what it uses."""
    if _result == KEPT:
        ctypes.CDLL(None).malloc_trim(0)
