"""The one door to the store: every stage, query, report and the daemon opens the index here."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from hubdelta.index.ann import AnnSettings
from hubdelta.index.store import Index
from hubdelta.kernel.settings import Settings


def open_writer(settings: Settings, command: str) -> Index:
    """The index at ``settings.index_uri`` for writing: takes the single-writer lock, recording ``command``.

    Creates a fresh index, and migrates an old one.

    Raises:
        IndexLockedError: another process writes (the error names it).
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    return Index.open(settings.index_uri, lock_dir=settings.home, writer=command,
                      ann_settings=AnnSettings(threshold=settings.ann_threshold),
                      storage_options=settings.index_storage or None)  # fmt: skip


def open_reader(settings: Settings) -> Index:
    """The index, read-only: takes no lock, never waits for a writer, sees each new commit.

    Raises:
        IndexNotFoundError: no writer has created it yet.
    """
    return Index.open(settings.index_uri, ann_settings=AnnSettings(threshold=settings.ann_threshold),
                      storage_options=settings.index_storage or None)  # fmt: skip


class SharedReader:
    """One read-only index for a long-lived process (the web service), opened on first use and kept open.

    Opening costs ~5 ms, a fifth of a whole query at a million models; an open reader sees each new commit
    anyway (``read_consistency_interval=0``), so keeping it loses nothing. Safe to use from several threads.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._index: Index | None = None
        self._lock = threading.Lock()

    def get(self) -> Index:
        """The open index.

        Raises:
            IndexNotFoundError: no writer has created it yet (asked again on the next call).
        """
        with self._lock:
            if self._index is None:
                self._index = open_reader(self.settings)
            return self._index

    def close(self) -> None:
        with self._lock:
            if self._index is not None:
                self._index.close()
                self._index = None


@contextmanager
def reading(settings: Settings, shared: SharedReader | None = None) -> Iterator[Index]:
    """The index to read: ``shared``'s when given (left open), else one opened for this read and closed after."""
    if shared is not None:
        yield shared.get()
        return
    with open_reader(settings) as index:
        yield index
