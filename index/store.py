"""The index: hubdelta's one door to LanceDB, a thin composition of per-table stores.

One writer at a time (``WriteLock``), any number of readers that take no lock: every write is one Lance
commit, which is atomic, so a reader sees a batch entirely or not at all, and a writer killed mid-batch leaves
the previous version intact. Connections use ``read_consistency_interval=0`` so a long-lived reader (the
daemon) sees each new commit on its next read.

``Index`` owns opening, the lock and closing; the tables are read and written through its stores:

- ``index.models`` (:class:`~hubdelta.index.models_store.ModelsStore`) and ``index.tracked``
  (:class:`~hubdelta.index.models_store.TrackedStore`);
- ``index.vectors`` (:class:`~hubdelta.index.vectors_store.VectorsStore`): spaces, vectors, nearest, ANN upkeep;
- ``index.copies`` (:class:`~hubdelta.index.copies_store.CopiesStore`): fingerprints and copy groups;
- ``index.families`` (:class:`~hubdelta.index.families_store.FamiliesStore`);
- ``index.reports`` (:class:`~hubdelta.index.reports_store.ReportsStore`);
- ``index.layouts`` (:class:`~hubdelta.index.layouts_store.LayoutsStore`): each space's map layout;
- ``index.labels`` (:class:`~hubdelta.index.labels_store.LabelsStore`): each model's suggested labels;
- ``index.maintenance`` (:class:`~hubdelta.index.maintenance.Maintenance`): stats and compaction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import lancedb

from hubdelta.index import ann, migrations
from hubdelta.index.compaction import CompactionPolicy
from hubdelta.index.copies_store import CopiesStore
from hubdelta.index.families_store import FamiliesStore
from hubdelta.index.labels_store import LabelsStore
from hubdelta.index.layouts_store import LayoutsStore
from hubdelta.index.location import local_path, storage_errors
from hubdelta.index.lock import WriteLock
from hubdelta.index.maintenance import Maintenance
from hubdelta.index.models_store import ModelsStore, TrackedStore
from hubdelta.index.reports_store import ReportsStore
from hubdelta.index.tables import PutResult, Tables
from hubdelta.index.vectors_store import VectorsStore
from hubdelta.kernel.errors import IndexNotFoundError

T = TypeVar("T")

__all__ = ["Index", "PutResult"]


class Index:
    """An open index. Build it with :meth:`Index.open`; close it (or use ``with``) to release the lock."""

    def __init__(
        self,
        uri: str,
        db: lancedb.DBConnection,
        lock: WriteLock | None,
        policy: CompactionPolicy,
        ann_settings: ann.AnnSettings | None = None,
    ) -> None:
        self.uri = uri
        self.policy = policy
        self.ann = ann_settings or ann.AnnSettings()
        self._db = db
        self._lock = lock
        self._tables = Tables(uri, db, writer=lock is not None, policy=policy)
        self.models = ModelsStore(self._tables)
        self.tracked = TrackedStore(self._tables)
        self.vectors = VectorsStore(self._tables, self.models, self.ann)
        self.copies = CopiesStore(self._tables, self.models, self.vectors)
        self.families = FamiliesStore(self._tables)
        self.reports = ReportsStore(self._tables)
        self.layouts = LayoutsStore(self._tables)
        self.labels = LabelsStore(self._tables)
        self.maintenance = Maintenance(self._tables)
        self.applied_migrations: list[str] = []  # what open() migrated, for logs

    @classmethod
    def open(
        cls,
        uri: str,
        *,
        lock_dir: Path | None = None,
        writer: str | None = None,
        compaction: CompactionPolicy | None = None,
        storage_options: dict[str, str] | None = None,
        ann_settings: ann.AnnSettings | None = None,
    ) -> Index:
        """Open the index at ``uri`` for reading, or for writing when ``writer`` is given.

        A writer takes the lock, creates a fresh store and migrates an old one. A reader takes no lock and
        never blocks, but accepts only a store at this code's schema version.

        Args:
            uri: a local path or an object-storage uri (``Settings.index_uri``).
            lock_dir: local directory of ``index.lock``; required for a writer.
            writer: the command line that writes (recorded in the lock for a second writer's error);
                None opens read-only.
            compaction: thresholds for ``maintenance.maybe_compact`` (defaults: ``CompactionPolicy()``).
            storage_options: passed to ``lancedb.connect`` (object-storage credentials, endpoint).
            ann_settings: when vector tables get an ANN index and how it is queried (defaults: ``AnnSettings()``).

        Returns:
            The open index; a context manager.

        Raises:
            IndexLockedError: another process holds the write lock.
            IndexNotFoundError: a reader asked for an index no writer has created.
            IndexSchemaError: the store is newer than this code, older (for a reader), or not an index.
            StoreError: object storage cannot be reached (wrong endpoint, missing bucket or credentials).
        """
        policy = compaction or CompactionPolicy()
        if writer is None:
            folder = local_path(uri)
            if folder is not None and not folder.exists():
                raise IndexNotFoundError(uri)  # connect() would create the folder: a reader must not
            try:
                with storage_errors(uri):  # on object storage connect() writes nothing: check() finds it empty
                    db = cls._connect(uri, storage_options)
                    migrations.check(db, uri)
                    return cls(uri, db, None, policy, ann_settings)
            except LookupError:
                raise IndexNotFoundError(uri) from None
        if lock_dir is None:
            raise ValueError("a writer needs lock_dir")
        lock = WriteLock(lock_dir, command=writer, uri=uri).acquire()
        try:
            with storage_errors(uri):
                db = cls._connect(uri, storage_options)
                applied = migrations.migrate(db, uri)
                index = cls(uri, db, lock, policy, ann_settings)
        except BaseException:
            lock.release()
            raise
        index.applied_migrations = applied
        return index

    @staticmethod
    def _connect(uri: str, storage_options: dict[str, str] | None) -> lancedb.DBConnection:
        return lancedb.connect(uri, read_consistency_interval=timedelta(0), storage_options=storage_options)

    # ---- lifecycle ----

    @property
    def read_only(self) -> bool:
        return self._lock is None

    def close(self) -> None:
        """Release the write lock (if held). Idempotent."""
        self._tables.closed = True
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Index:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- shared plumbing (the stores use the same ``Tables``) ----

    def _read(self, fn: Callable[[], T]) -> T:
        """Run a read, once more if a concurrent compaction deleted a file under it."""
        return self._tables.read(fn)

    def meta(self) -> dict[str, str]:
        """The ``meta`` table: schema_version, created_at, hubdelta_version."""
        return self._read(lambda: migrations.read_meta(self._db))
