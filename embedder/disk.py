"""The download cache's disk use as a run's download threads see it: one walk, then arithmetic.

Every download is checked against ``[embed] disk_budget_gb`` and the free disk before a byte moves. Walking the
cache for each check costs a walk that grows with the cache: quadratic over a run (230 adapters cached is ~2,000
entries a walk), and the walk holds the GIL against the compute. A :class:`DiskLedger` walks once (again after a
:meth:`~DiskLedger.rescan`, which every run's fetcher asks for, and after a download that failed halfway), then
adds each finished download's bytes and takes off what :func:`~hubdelta.embedder.fetch.release` frees. Downloads
in flight are reserved, so two downloads checked at once never both count on the same free bytes.

What another process writes to the same cache during a run is seen at the next run's walk. A download process
(:mod:`~hubdelta.embedder.fetch_process`) keeps its own ledger: it hears of what its parent frees through
:meth:`DiskLedger.listen`.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from hubdelta.embedder.safety import Limits, Refusal, check_disk


def cache_bytes(cache_dir: Path) -> int:
    """Bytes of regular files under the download cache (links are not followed: blobs are counted once).

    A partial download (``*.incomplete``) is not counted: its whole size is reserved while it runs, and a dead
    run's is resumed by the next download of the same file.
    """
    total = 0
    for dirpath, _, filenames in os.walk(cache_dir):
        for fn in filenames:
            path = os.path.join(dirpath, fn)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            total += st.st_size if not os.path.islink(path) and not fn.endswith(".incomplete") else 0
    return total


class DiskLedger:
    """One cache folder's bytes: walked once, then kept by arithmetic; downloads in flight reserved."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self._lock = threading.Lock()
        self._used: int | None = None  # None: walk at the next check
        self._reserved = 0
        self._listeners: list[Callable[[int], None]] = []

    def rescan(self) -> None:
        """Walk the cache again at the next check (a new run; a download that failed halfway)."""
        with self._lock:
            self._used = None

    def reserve(self, need: int, limits: Limits) -> Refusal | None:
        """Reserve ``need`` bytes for a download, or the refusal that says why it does not fit (nothing reserved).
        Every reservation ends with :meth:`settle`."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if self._used is None:
                self._used = cache_bytes(self.cache_dir)
            free = shutil.disk_usage(self.cache_dir).free - self._reserved
            refusal = check_disk(need, self._used + self._reserved, free, limits)
            if refusal is None:
                self._reserved += need
            return refusal

    def settle(self, need: int, *, stored: bool) -> None:
        """A reserved download ended: its bytes are in the cache (``stored``), or unknown (walk again)."""
        with self._lock:
            self._reserved -= need
            if not stored:
                self._used = None
            elif self._used is not None:
                self._used += need

    def freed(self, n: int) -> None:
        """``n`` bytes of the cache were deleted (a full finetune's weights after its vector was stored)."""
        with self._lock:
            if self._used is not None:
                self._used = max(0, self._used - n)
            listeners = list(self._listeners)
        for tell in listeners:
            tell(n)

    def listen(self, tell: Callable[[int], None]) -> Callable[[], None]:
        """Call ``tell(n)`` after each :meth:`freed` (a download process's ledger); returns the way to stop."""
        with self._lock:
            self._listeners.append(tell)

        def stop() -> None:
            with self._lock, suppress(ValueError):
                self._listeners.remove(tell)

        return stop


_LEDGERS: dict[Path, DiskLedger] = {}
_REGISTRY = threading.Lock()


def disk_ledger(cache_dir: Path) -> DiskLedger:
    """The one ledger of ``cache_dir`` in this process (its download threads and release share it)."""
    key = cache_dir.resolve()
    with _REGISTRY:
        return _LEDGERS.setdefault(key, DiskLedger(cache_dir))
