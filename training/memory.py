"""Keep freed memory in the process: the allocator setting of training runs.

glibc's ``malloc`` serves every block above 32 MiB with its own ``mmap`` and gives it back with ``munmap`` when it is
freed. Training allocates and frees such blocks all the time (a simulated 1 mm box is 40 to 80 MB, a batch's
activations several hundred MB), so the kernel maps fresh pages and zeroes them again and again: on the 2-core
development machine a training step spent 0.4 to 0.7 s of system time a step (150,000 page faults), and qc-v22's
run 2,815 s of its 16,000 CPU seconds.

:func:`keep_freed_memory` turns that off for the calling process and the processes it forks (the bank and evaluation
workers): no ``mmap`` for single blocks (``M_MMAP_MAX`` 0, every block comes from the heap), freed memory stays with
the process (``M_TRIM_THRESHOLD``) and the heap grows in steps of 256 MiB (``M_TOP_PAD``). It changes where memory
comes from, not what is computed. The cost is a resident size that stays at the process's peak.
Measured in ``docs/benchmarks.md`` ("The allocator: freed memory kept in the process").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
SETTINGS: tuple[tuple[str, int, int], ...] = (
    ("M_MMAP_MAX", M_MMAP_MAX, 0),
    ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, 2**31 - 1),
    ("M_TOP_PAD", M_TOP_PAD, 256 * 2**20),
)


def keep_freed_memory() -> bool:
    """Apply :data:`SETTINGS` with glibc's ``mallopt``; False (and nothing changed) where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    for label, param, value in SETTINGS:
        if mallopt(param, value) != 1:
            log.warning("mallopt(%s, %d) refused; freed memory goes back to the kernel", label, value)
            return False
    return True
