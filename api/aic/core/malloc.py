"""glibc's malloc, kept from handing the buffers of every job back to the kernel and faulting them in again.

Each job moves buffers of a few hundred KB to a few MB through the API and the dispatcher: the upload (~275 KB,
several copies between the socket, the parser and Redis), the batch tensor, its protobuf request and the gRPC
message (~1.5 MB for ten images). glibc serves anything above its mmap threshold (128 KB to start with, raised
as it sees such blocks freed) with a fresh mapping and returns it with munmap, or trims the heap's top after a
free: the next buffer's pages are faulted in and zeroed again. Building one Triton request that way cost 1,070
page faults and 3.1 ms of system time (against 0.04 ms with the thresholds below; bench/README.md).

``tune()`` fixes the mmap threshold at 16 MiB (buffers below it come from the heap and are reused) and keeps up
to 32 MiB free at the heap's top. A process that is not on glibc (musl, macOS) is left as it is, and so is one
whose user set glibc's own variables (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
``GLIBC_TUNABLES``): those win.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from typing import Final

M_TRIM_THRESHOLD: Final = -1
M_MMAP_THRESHOLD: Final = -3
"""mallopt's parameter numbers (glibc's malloc.h)."""
MMAP_THRESHOLD_BYTES: Final = 16 * 1024 * 1024
TRIM_THRESHOLD_BYTES: Final = 32 * 1024 * 1024
USER_SETTINGS: Final = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def tune(environ: Mapping[str, str] = os.environ) -> bool:
    """Set the thresholds for this process; whether they were set."""
    if any(name in environ for name in USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library to ask, or not glibc's
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
