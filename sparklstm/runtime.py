"""Process-level settings that make CPU training and inference fast.

glibc returns large freed blocks to the OS (mmap threshold, trim threshold), so every batch's
fresh activation buffers page-fault again; on this VM a fresh MB costs ~0.6 ms. Keeping freed
memory in the heap measured 47k -> 70k tokens/s for nn.LSTM training (fp32, 2 cores).
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_done = {"allocator": False}


def tune_allocator(*, threshold: int = 1 << 30) -> bool:
    """Keep up to ``threshold`` bytes of freed memory in the heap instead of unmapping it.

    A no-op (returns False) where the C library is not glibc. Safe to call more than once.
    """
    if _done["allocator"]:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, threshold))
    _done["allocator"] = ok
    return ok
