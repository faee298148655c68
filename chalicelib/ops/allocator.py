"""glibc's allocator, set for a long-running server.

glibc keeps an arena per thread and, once a large block has been freed, raises the size from
which it maps blocks of their own: a server that handles large bodies (pasted logs of 200 KB)
in several threads then keeps their freed memory. bench/soak.py: 474 MB after 19,000 mixed
requests, 184 MB with two arenas and a fixed mmap threshold, at no measurable CPU cost
(bench/hotpath.py; bench/README.md). The environment's MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_
win, and another C library is left as it is.
"""

import ctypes
import os

M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc's malloc.h
ARENAS = 2
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, kept: blocks this large go back to the system when freed


def keep_memory_down() -> list[str]:
    """Set what the environment does not; the names of the settings applied."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return []
    applied = []
    for variable, option, value in (("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENAS),
                                    ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD)):
        if variable not in os.environ and mallopt(option, value) == 1:
            applied.append(variable)
    return applied
