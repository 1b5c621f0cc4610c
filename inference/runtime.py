"""CPU runtime settings shared by the command-line tools and the benchmark."""

from __future__ import annotations

import ctypes
import ctypes.util

import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory_for_reuse(threshold_bytes: int = 1 << 30) -> bool:
    """Ask glibc's allocator to serve large blocks from its heap and keep freed ones.

    By default glibc maps every block above ~128 KiB with ``mmap`` and unmaps it on free, so
    each parameter-sized temporary of a training step (a few MB) costs fresh page faults.
    Raising the mmap and trim thresholds lets the allocator reuse those blocks instead.
    Returns False (and changes nothing) where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, threshold_bytes))
    except (OSError, AttributeError):
        return False


def configure_cpu(threads: int) -> None:
    """Torch thread count plus the allocator setting above."""
    torch.set_num_threads(threads)
    keep_freed_memory_for_reuse()
