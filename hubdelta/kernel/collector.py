"""The cyclic garbage collector kept off work that makes many long-lived objects and no garbage cycles.

Each full collection walks every live object. Building 200k index records, or importing torch and transformers
and loading a base (~0.5 M objects), triggers many, which find nothing to free. Both context managers put the
collector back as they found it, so library code may wrap its own work in them.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """The collector off within the block, as it was after; reference counting still frees everything else.

    Measured: ~30% of ``get_models()`` on 100k index rows; in ``hubdelta embed`` (SmolLM2, 2 cores) 8 full
    collections, 1.2 s, before the first forward, over the torch import and the base load.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def frozen_gc() -> Iterator[None]:
    """Everything alive on entry is moved out of the collector's sight within the block (``gc.freeze``).

    A long compute allocates enough Python objects to trigger full collections now and then; each walked the
    ~0.5 M objects of torch, transformers and the index for ~0.25 s, and found nothing to free among them. Objects
    made within the block are collected as usual. On exit everything frozen is handed back (``gc.unfreeze``), so a
    long-lived process (the daemon) collects what became garbage meanwhile, such as a closed base's cycles.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
