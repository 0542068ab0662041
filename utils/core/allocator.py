"""Keep freed large buffers for reuse: the fast path's feature maps are 50-150 MB each.

glibc serves every allocation above 32 MB with a fresh ``mmap`` and unmaps it on free, so each
layer's output pays a page fault (and the kernel's zeroing) per 4 KB page, every forward. On a
SpikeRain-S forward at 256x256 that was about 3 million page faults and a fifth of the CPU time
(docs/efficiency.md). :func:`keep_freed_memory` tells glibc to serve large blocks from the heap
and not to give freed memory back, so the second forward reuses the first one's pages. The cost
is a resident size that stays at its peak (measured: about 10 % above the peak without it).
No-op elsewhere than glibc, with ``SPIKEDERAIN_KEEP_MEMORY=0``, or where the environment sets
glibc's malloc itself (``MALLOC_*_`` variables, ``GLIBC_TUNABLES``: e.g. tools/benchmark.py's
live-memory measurement maps every large block on its own), which then wins.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

DISABLE_ENV = 'SPIKEDERAIN_KEEP_MEMORY'
_M_TRIM_THRESHOLD = -1       # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_done: list[bool] = []


def keep_freed_memory() -> bool:
    """Once per process; ``True`` if glibc took the settings."""
    if _done:
        return _done[0]
    ok = False
    own_settings = any(k.startswith('MALLOC_') and k.endswith('_') for k in os.environ) or \
        'malloc' in os.environ.get('GLIBC_TUNABLES', '')
    if (sys.platform.startswith('linux') and not own_settings
            and os.environ.get(DISABLE_ENV, '1').strip() != '0'):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
            ok = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
                libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
        except (OSError, AttributeError):      # not glibc (musl has no mallopt)
            ok = False
    _done.append(ok)
    return ok
