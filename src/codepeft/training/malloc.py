"""glibc malloc tuning for training: keep freed memory in the heap during a run, hand it back after."""

from __future__ import annotations

import functools


@functools.cache
def _glibc() -> object | None:
    """glibc's C library (for its malloc settings), or None on other systems and C libraries."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


#: mallopt parameters in glibc's malloc.h
_TRIM_THRESHOLD, _TOP_PAD, _MMAP_THRESHOLD = -1, -2, -3
#: glibc's documented defaults for them (mallopt(3)): 128 KiB each
_DEFAULT = 128 * 1024


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel; True if applied.

    A training step allocates and frees the same activation-sized blocks (hundreds of KiB to MiB) over
    and over. By default glibc serves big blocks with fresh ``mmap``s and trims the heap when it shrinks,
    so the kernel zeroes those pages again on first touch every step: ~43,000 page faults and about 3% of
    a LoRA step of smollm2-135m on CPU (benchmarks/results/training.md). Serving every block from the heap
    and never trimming it cuts that to ~10,000; memory freed stays with the process, whose peak grows a
    little (one MBPP epoch: 6.29 vs 5.98 GiB, for 1.10x the tokens/s; benchmarks/README.md).
    Process-wide until ``restore_malloc_defaults`` (``training.speedups.kept_freed_memory`` scopes it
    to one training run); nothing happens on other C libraries.
    """
    libc = _glibc()
    if libc is None:
        return False
    # older glibc caps the mmap threshold at 32 MiB; the larger blocks (vocabulary logits) then keep their mmaps
    served = libc.mallopt(_MMAP_THRESHOLD, 1 << 30) == 1 or libc.mallopt(_MMAP_THRESHOLD, 1 << 25) == 1
    return served and libc.mallopt(_TRIM_THRESHOLD, 1 << 40) == 1 and libc.mallopt(_TOP_PAD, 1 << 28) == 1


def restore_malloc_defaults() -> bool:
    """Undo ``keep_freed_memory``: glibc's default trim threshold, top pad and mmap threshold again.

    (glibc's sliding mmap threshold stays fixed at its default once set; big blocks are mapped again.)
    """
    libc = _glibc()
    if libc is None:
        return False
    return all(libc.mallopt(param, _DEFAULT) == 1 for param in (_MMAP_THRESHOLD, _TRIM_THRESHOLD, _TOP_PAD))


def release_freed_memory() -> bool:
    """Hand the memory glibc's malloc holds free back to the kernel (``malloc_trim``); False where it cannot."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
