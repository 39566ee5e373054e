"""Keeping the C heap from holding on to the OCR models' tensors (glibc; elsewhere these do nothing).

Each photo's tensors have new shapes. glibc keeps what they free for reuse, and the small blocks
allocated between them pin it, so RSS rises with every new shape and a bench that runs all day would
only ever grow. Two remedies: hand free pages back after each photo, and let the detector's
buffers (tens of MB each at the second pass's size) be mapped on their own, so that freeing them
unmaps them instead of leaving holes in the heap.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
# Blocks from this size on are mapped on their own while the detector runs: its feature maps, not the
# small blocks of the code around it. glibc's own default is 128 KiB, before it starts to adapt.
MAPPED_FROM = 128 * 1024
# Afterwards: the ceiling glibc's adaptive threshold reaches by itself (DEFAULT_MMAP_THRESHOLD_MAX: 32 MiB
# on 64-bit, 16 MiB on 32-bit), so the recogniser's buffers come from the heap as before and are not
# faulted in anew on every batch.
HEAP_UP_TO = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)


def _libc_function(name: str) -> Callable[..., int] | None:
    try:
        libc: Any = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt ignores the parameter
        fn: Callable[..., int] = getattr(libc, name)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None
    return fn


_TRIM = _libc_function("malloc_trim")
_MALLOPT = _libc_function("mallopt")


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the kernel (after a photo, and before the cascade's second pass)."""
    if _TRIM is not None:
        _TRIM(0)


@contextmanager
def large_blocks_mapped() -> Iterator[None]:
    """Within the block, allocations of MAPPED_FROM or more are mmapped and go back to the kernel when freed.

    On the OCR benchmark's 300 photos (one core) peak RSS fell from 454 to 343 MB. The price is page
    faults: the second pass's detector took 546 ms against 356 ms (median, clean photos), and only
    photos with a second pass pay it (benchmarks/results/ocr.md)."""
    if _MALLOPT is not None:
        _MALLOPT(M_MMAP_THRESHOLD, MAPPED_FROM)
    try:
        yield
    finally:
        if _MALLOPT is not None:
            _MALLOPT(M_MMAP_THRESHOLD, HEAP_UP_TO)
