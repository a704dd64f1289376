"""The one door to the store: every stage, query, report and the daemon opens the index here."""

from __future__ import annotations

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
