"""Process-wide settings for CPU embedding, applied once by an entry point (the worker, a CLI command, a benchmark).

Nothing here runs on import: these change the whole process, so only the code that owns the process calls them.
(The garbage collector's pause and freeze, which put the process back as they found it, are in
:mod:`hubdelta.kernel.collector`.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MIB = 1 << 20


def keep_freed_memory(*, mmap_threshold_mib: int = 32, trim_threshold_mib: int = 1024, top_pad_mib: int = 512) -> bool:
    """Let glibc keep freed memory for reuse instead of handing it back to the kernel after every forward.

    A batched forward allocates and frees hundreds of activation tensors of a few MB each. By default glibc
    serves many of them with fresh ``mmap``s and trims its heap, so each forward page-faults its memory in again:
    measured here (22 SmolLM2 adapters, batches of 8, 2 cores) ~0.5 M minor faults and ~1 s of kernel time, and
    9% faster steady throughput with these settings (0.26 instead of 0.285 s per adapter). The cost: the process
    keeps up to ``trim_threshold_mib`` of freed memory mapped; its peak RSS does not change.

    Args:
        mmap_threshold_mib: allocations below this come from the heap (glibc's ceiling is 32 MiB on 64-bit).
        trim_threshold_mib: free memory at the heap's top kept before trimming (must fit a C int in bytes).
        top_pad_mib: extra memory requested from the kernel whenever the heap grows.

    Returns:
        Whether every setting took (False where the C library is not glibc or refuses a value).
    """
    mallopt = _glibc("mallopt")
    if mallopt is None:  # not glibc (musl, macOS, Windows): nothing to tune
        return False
    settings = (
        (M_MMAP_THRESHOLD, mmap_threshold_mib),
        (M_TRIM_THRESHOLD, trim_threshold_mib),
        (M_TOP_PAD, top_pad_mib),
    )
    return all(mallopt(param, mib * MIB) == 1 for param, mib in settings)


def hand_back_freed_memory() -> None:
    """Return the heap's free pages to the kernel now (glibc's ``malloc_trim``; nothing elsewhere).

    For after a one-off burst of large frees, such as a resident base's weights replaced by packed or converted
    copies: the copies did not reuse the chunks just freed (torch asks for 64-byte-aligned memory, which an
    exactly-sized free chunk may not give), and :func:`keep_freed_memory`'s trim threshold would keep them.
    Measured on SmolLM2-135M loaded in fp32: 1,355 MB RSS with the packed weights, 949 MB after this (936 MB
    unpacked). Safe at any time: only free pages go.
    """
    trim = _glibc("malloc_trim")
    if trim is not None:
        trim(0)


@functools.cache
def _glibc(function: str) -> Any:
    """A function of the C library, or None where it is not there (not glibc). Looked up once: ``find_library``
    runs ``ldconfig``."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), function)
    except (OSError, AttributeError):
        return None
