"""The index: hubdelta's one door to LanceDB. Typed records in, typed records out.

One writer at a time (``WriteLock``), any number of readers that take no lock: every write is one Lance
commit, which is atomic, so a reader sees a batch entirely or not at all, and a writer killed mid-batch leaves
the previous version intact. Connections use ``read_consistency_interval=0`` so a long-lived reader (the
daemon) sees each new commit on its next read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.table import Table

from hubdelta.index import ann, migrations
from hubdelta.index.compaction import CompactionPolicy, TableStats, compact_table, due, table_stats
from hubdelta.index.embeddings import (
    EMB_PREFIX,
    SPACES,
    Embedding,
    SpaceRow,
    emb_schema,
    emb_table_name,
    embeddings_from_table,
    embeddings_to_table,
    spaces_from_table,
    spaces_to_table,
)
from hubdelta.index.families import (
    CONTINUATIONS,
    FAMILIES,
    FAMILY_SCHEMAS,
    MEANING_BASES,
    SPACE_MEMBERS,
    BaseProfile,
    Family,
    Member,
    families_from_table,
    families_to_table,
    members_from_table,
    members_to_table,
    profiles_from_table,
    profiles_to_table,
)
from hubdelta.index.location import local_path, storage_errors
from hubdelta.index.lock import WriteLock
from hubdelta.index.records import ModelRecord, ModelStatus, TrackedBase
from hubdelta.index.reports import REPORTS, StoredReport, reports_from_table, reports_to_table
from hubdelta.index.schema import (
    MODELS,
    SCHEMAS,
    TRACKED,
    models_from_table,
    models_to_table,
    sql_string,
    tracked_from_table,
    tracked_to_table,
)
from hubdelta.kernel.errors import IndexNotFoundError, StoreError

T = TypeVar("T")

# Up to this many ids, get_models asks Lance for `repo_id IN (...)`; beyond it a column scan filtered in arrow
# is faster (measured on 100k rows: IN over 10k ids 0.6 s, a full scan + is_in ~0.05 s).
IN_LIST_MAX = 500


@dataclass(frozen=True)
class PutResult:
    """What one ``put_models`` / ``put_tracked`` commit did."""

    inserted: int
    updated: int


def _vanished(e: Exception) -> bool:
    # A compaction by the writer deleted a file this read was about to open (lance reports "Not found").
    return "not found" in str(e).lower()


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
        fixed = (*SCHEMAS, SPACES, REPORTS, *FAMILY_SCHEMAS)
        self._tables: dict[str, Table] = {name: db.open_table(name) for name in fixed}
        self._closed = False
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
            compaction: thresholds for :meth:`maybe_compact` (defaults: ``CompactionPolicy()``).
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
        self._closed = True
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Index:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _table(self, name: str) -> Table:
        if self._closed:
            raise StoreError("is closed", uri=self.uri, fix="open it again with Index.open")
        return self._tables[name]

    def _writable(self, name: str) -> Table:
        if self._lock is None:
            raise StoreError("was opened read-only", uri=self.uri, fix="open it with Index.open(..., writer=...)")
        return self._table(name)

    def _read(self, fn: Callable[[], T]) -> T:
        """Run a read, once more if a concurrent compaction deleted a file under it."""
        try:
            return fn()
        except (OSError, RuntimeError, ValueError) as e:
            if not _vanished(e):
                raise
        return fn()

    def _scan(self, name: str, where: str | None = None, limit: int | None = None) -> pa.Table:
        def run() -> pa.Table:
            query = self._table(name).search()
            if where is not None:
                query = query.where(where)
            return query.limit(limit).to_arrow()

        return self._read(run)

    def meta(self) -> dict[str, str]:
        """The ``meta`` table: schema_version, created_at, hubdelta_version."""
        return self._read(lambda: migrations.read_meta(self._db))

    # ---- tracked bases ----

    def tracked(self) -> list[TrackedBase]:
        """Every tracked base, sorted by name."""
        return sorted(tracked_from_table(self._scan(TRACKED)), key=lambda b: b.base)

    def put_tracked(self, bases: Sequence[TrackedBase]) -> PutResult:
        """Insert or replace ``bases`` (keyed by ``base``; a later duplicate wins) in one commit.

        Write a base's cursor only after the models it covers (``put_models`` first): a kill in between then
        re-crawls a little rather than skipping repos.
        """
        table = self._writable(TRACKED)
        latest = list({b.base: b for b in bases}.values())
        if not latest:
            return PutResult(0, 0)
        result = self._upsert(table, "base", tracked_to_table(latest))
        self._after_write(TRACKED)
        return result

    def delete_tracked(self, base: str) -> bool:
        """Stop tracking ``base`` (its models stay). Returns whether it was tracked."""
        return self._delete_key(TRACKED, "base", base)

    def _delete_key(self, name: str, column: str, value: str) -> bool:
        """Delete the row of table ``name`` whose ``column`` is ``value`` (one commit). Returns whether it existed."""
        table = self._writable(name)
        where = f"{column} = {sql_string(value)}"
        if table.count_rows(where) == 0:
            return False
        table.delete(where)
        self._after_write(name)
        return True

    # ---- models ----

    def get_models(self, repo_ids: Iterable[str] | None = None) -> dict[str, ModelRecord]:
        """Records by repo id: those of ``repo_ids`` that are stored (unknown ids are absent), or all."""
        if repo_ids is None:
            return self._records(self._scan(MODELS))
        ids = list(dict.fromkeys(repo_ids))
        if not ids:
            return {}
        if len(ids) <= IN_LIST_MAX:
            where = f"repo_id IN ({', '.join(sql_string(i) for i in ids)})"
            return self._records(self._scan(MODELS, where))
        rows = self._scan(MODELS)
        return self._records(rows.filter(pc.is_in(rows["repo_id"], value_set=pa.array(ids, pa.string()))))

    def repo_ids(self, where: str | None = None) -> list[str]:
        """Repo ids of the models matching a Lance SQL filter (all when None), reading one column only."""

        def run() -> pa.Table:
            query = self._table(MODELS).search().select(["repo_id"])
            return (query if where is None else query.where(where)).limit(None).to_arrow()

        ids: list[str] = self._read(run)["repo_id"].to_pylist()
        return ids

    def models_for_base(self, base: str) -> dict[str, ModelRecord]:
        """Records whose ``base_models`` contains ``base`` (any relation, any status)."""
        return self._records(self._scan(MODELS, f"array_has(base_models, {sql_string(base)})"))

    def select_models(self, where: str | None = None, *, limit: int | None = None) -> dict[str, ModelRecord]:
        """Records matching a Lance SQL filter over the ``models`` columns, e.g. ``"status = 'queued'"``."""
        return self._records(self._scan(MODELS, where, limit))

    def put_models(self, records: Sequence[ModelRecord]) -> PutResult:
        """Insert or replace ``records`` by ``repo_id`` in ONE commit: readers see all of them or none.

        A repo id given twice is written once, with its last record (as if put one after the other): Lance
        would insert both copies of a new id, and refuse two updates of a stored one.

        Raises:
            StoreError: the index is read-only.
            ValueError: a datetime without a timezone.
        """
        table = self._writable(MODELS)
        latest = list({r.repo_id: r for r in records}.values())
        if not latest:
            return PutResult(0, 0)  # an empty merge would still commit a version
        result = self._upsert(table, "repo_id", models_to_table(latest))
        self._after_write(MODELS)
        return result

    def count_by_status(self) -> dict[ModelStatus, int]:
        """Number of models per status (every status present, zeros included)."""

        def run() -> pa.Table:
            return self._table(MODELS).search().select(["status"]).limit(None).to_arrow()

        counts = dict.fromkeys(ModelStatus, 0)
        for item in pc.value_counts(self._read(run)["status"]).to_pylist():
            counts[ModelStatus(item["values"])] = item["counts"]
        return counts

    def count_models(self, where: str | None = None) -> int:
        """Number of models matching a Lance SQL filter (all when None)."""
        return self._read(lambda: self._table(MODELS).count_rows(where))

    @staticmethod
    def _records(rows: pa.Table) -> dict[str, ModelRecord]:
        return {r.repo_id: r for r in models_from_table(rows)}

    @staticmethod
    def _upsert(table: Table, key: str, data: pa.Table) -> PutResult:
        result = table.merge_insert(key).when_matched_update_all().when_not_matched_insert_all().execute(data)
        return PutResult(inserted=result.num_inserted_rows, updated=result.num_updated_rows)

    # ---- spaces and vectors ----

    def spaces(self) -> dict[str, SpaceRow]:
        """Every embedding space, by id."""
        return {r.space_id: r for r in spaces_from_table(self._scan(SPACES))}

    def put_space(self, space: SpaceRow) -> None:
        """Record a space and its base activations, and create its vector table (one commit each)."""
        table = self._writable(SPACES)
        self._upsert(table, "space_id", spaces_to_table([space]))
        name = emb_table_name(space.space_id)
        self._tables[name] = self._db.create_table(name, schema=emb_schema(space.dim), exist_ok=True)
        self._after_write(SPACES)

    def _emb(self, space_id: str) -> Table | None:
        name = emb_table_name(space_id)
        if name not in self._tables:
            if name not in migrations.table_names(self._db):
                return None
            self._tables[name] = self._db.open_table(name)
        return self._table(name)

    def put_embeddings(self, space_id: str, embeddings: Sequence[Embedding]) -> PutResult:
        """Insert or replace vectors by repo id in ONE commit (a new sha replaces the old vector)."""
        if self.read_only:
            self._writable(SPACES)  # raises the read-only error
        table = self._emb(space_id)
        if table is None:
            raise StoreError(f"has no space {space_id!r}", uri=self.uri, fix="record it with put_space first")
        latest = list({e.repo_id: e for e in embeddings}.values())
        if not latest:
            return PutResult(0, 0)
        dim = table.schema.field("vector").type.list_size
        result = self._upsert(table, "repo_id", embeddings_to_table(latest, dim))
        self._after_write(table.name)
        return result

    def get_embeddings(self, space_id: str, repo_ids: Iterable[str] | None = None) -> dict[str, Embedding]:
        """Vectors of ``space_id`` by repo id (those of ``repo_ids`` that exist, or all)."""
        table = self._emb(space_id)
        if table is None:
            return {}
        where = None
        if repo_ids is not None:
            ids = list(dict.fromkeys(repo_ids))
            if not ids:
                return {}
            where = f"repo_id IN ({', '.join(sql_string(i) for i in ids)})"
        name = table.name
        return embeddings_from_table(self._scan(name, where))

    def count_embeddings(self, space_id: str) -> int:
        """Vectors stored in ``space_id`` (0 for an unknown space)."""
        table = self._emb(space_id)
        return 0 if table is None else self._read(table.count_rows)

    def vectors_of(self, repo_id: str) -> dict[str, Embedding]:
        """``repo_id``'s vector in every space that has one, by space id."""
        found = {}
        for space_id in self.spaces():
            hit = self.get_embeddings(space_id, [repo_id]).get(repo_id)
            if hit is not None:
                found[space_id] = hit
        return found

    def nearest(
        self, space_id: str, vector: np.ndarray, k: int, *, only: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        """The ``k`` vectors of ``space_id`` nearest to ``vector`` as (repo id, cosine), best first.

        Exact below ``self.ann.threshold`` rows, an ANN index above (see :mod:`hubdelta.index.ann`).

        Raises:
            StoreError: no such space.
            ValueError: a zero, non-finite or wrong-sized vector.
        """
        table = self._emb(space_id)
        if table is None:
            raise StoreError(f"has no space {space_id!r}", uri=self.uri, fix="see hubdelta status for the spaces")
        return self._read(lambda: ann.nearest(table, vector, k, self.ann, only=only))

    def ann_status(self, space_id: str) -> ann.AnnStatus | None:
        """How much of a space's vectors its ANN index covers (None: no such space)."""
        table = self._emb(space_id)
        return None if table is None else self._read(partial(ann.ann_status, table))

    def maintain_ann(self, space_ids: Iterable[str] | None = None) -> dict[str, str]:
        """Build or update each space's ANN index as :func:`hubdelta.index.ann.decide` says; the actions taken.

        Raises:
            StoreError: the index is read-only.
        """
        actions: dict[str, str] = {}
        for space_id in self.spaces() if space_ids is None else space_ids:
            if self._emb(space_id) is not None:
                table = self._writable(emb_table_name(space_id))
                action = ann.decide(self._read(partial(ann.ann_status, table)), self.ann)
                if action == "build":
                    ann.build_index(table, self.ann)
                elif action == "optimize":
                    # optimize() folds new rows into the index; through compact_table it also drops old versions
                    # (its own default keeps 7 days of them: ~6 GB at 1M x 576).
                    compact_table(table)
                actions[space_id] = action
        return actions

    @staticmethod
    def in_list(column: str, values: Iterable[str]) -> str:
        """``column IN ('a', 'b')`` with every value quoted for Lance SQL."""
        return f"{column} IN ({', '.join(sql_string(v) for v in values)})"

    # ---- families (meaning spaces) ----

    def families(self) -> dict[str, Family]:
        """Every family, by name."""
        return {f.name: f for f in families_from_table(self._scan(FAMILIES))}

    def put_family(self, family: Family) -> None:
        """Insert or replace a family (keyed by name) in one commit."""
        self._upsert(self._writable(FAMILIES), "name", families_to_table([family]))
        self._after_write(FAMILIES)

    def delete_family(self, name: str) -> bool:
        """Forget a family (its space and vectors stay, like a removed base's). Returns whether it existed."""
        return self._delete_key(FAMILIES, "name", name)

    def continuation_set(self, hash_: str) -> dict[str, Any] | None:
        """The stored continuation set with this hash, as ``ContinuationSet.to_dict()`` (None if absent)."""
        rows = self._scan(CONTINUATIONS, f"hash = {sql_string(hash_)}").to_pylist()
        return json.loads(rows[0]["doc"]) if rows else None

    def put_continuation_set(self, hash_: str, doc: dict[str, Any]) -> None:
        """Store a continuation set under its hash (the same hash again is the same set: a no-op)."""
        data = pa.table({"hash": [hash_], "doc": [json.dumps(doc, ensure_ascii=False, sort_keys=True)],
                         "created_at": [datetime.now(UTC)]}, schema=FAMILY_SCHEMAS[CONTINUATIONS])  # fmt: skip
        self._writable(CONTINUATIONS).merge_insert("hash").when_not_matched_insert_all().execute(data)
        self._after_write(CONTINUATIONS)

    def base_profiles(self, space_id: str) -> dict[str, BaseProfile]:
        """The cached base profiles of a meaning space, by base repo."""
        table = self._scan(MEANING_BASES, f"space_id = {sql_string(space_id)}")
        return {p.base: p for p in profiles_from_table(table)}

    def put_base_profile(self, profile: BaseProfile) -> None:
        self._upsert(self._writable(MEANING_BASES), "key", profiles_to_table([profile]))
        self._after_write(MEANING_BASES)

    def members(self, space_id: str) -> dict[str, Member]:
        """Each model's state in a family space, by repo id."""
        table = self._scan(SPACE_MEMBERS, f"space_id = {sql_string(space_id)}")
        return {m.repo_id: m for m in members_from_table(table)}

    def put_members(self, members: Sequence[Member]) -> None:
        """Insert or replace member states (keyed by space and repo) in one commit."""
        if members:
            self._upsert(self._writable(SPACE_MEMBERS), "key", members_to_table(members))
            self._after_write(SPACE_MEMBERS)

    # ---- reports ----

    def put_report(self, report: StoredReport) -> None:
        """Record a report (keyed by ``report_id``; the same id again replaces it) in one commit."""
        table = self._writable(REPORTS)
        self._upsert(table, "report_id", reports_to_table([report]))
        self._after_write(REPORTS)

    def latest_report(self) -> StoredReport | None:
        """The most recently created report, or None before the first one."""

        def run() -> pa.Table:
            return self._table(REPORTS).search().select(["report_id", "created_at"]).limit(None).to_arrow()

        # Two columns first: every row carries its clusters' member lists, and only one row is wanted.
        heads = self._read(run)
        if heads.num_rows == 0:
            return None
        latest = pc.max(heads["created_at"])
        report_id = heads.filter(pc.equal(heads["created_at"], latest))["report_id"][0].as_py()
        rows = reports_from_table(self._scan(REPORTS, f"report_id = {sql_string(report_id)}"))
        return rows[0] if rows else None

    # ---- maintenance ----

    def stats(self) -> dict[str, TableStats]:
        """Rows, fragments and versions of every table, by table name."""
        return {name: self._read(partial(table_stats, name, self._table(name))) for name in self._all_tables()}

    def compact(self, tables: Iterable[str] | None = None) -> dict[str, TableStats]:
        """Compact ``tables`` (all by default) and drop their old versions. Returns their stats after.

        Raises:
            StoreError: the index is read-only.
        """
        names = list(self._all_tables() if tables is None else tables)
        for name in names:
            compact_table(self._writable(name))
        return {name: table_stats(name, self._table(name)) for name in names}

    def maybe_compact(self, policy: CompactionPolicy | None = None) -> list[str]:
        """Compact each table past a threshold of ``policy`` (the index's own by default).

        Returns:
            The names of the tables compacted.
        """
        policy = policy or self.policy
        names = [n for n in self._all_tables() if due(table_stats(n, self._writable(n)), policy)]
        if names:
            self.compact(names)
        return names

    def _all_tables(self) -> list[str]:
        """The fixed tables and every space's vector table (opened on first use)."""
        for name in migrations.table_names(self._db):
            if name.startswith(EMB_PREFIX) and name not in self._tables:
                self._tables[name] = self._db.open_table(name)
        return list(self._tables)

    def _after_write(self, name: str) -> None:
        if self.policy.auto and due(table_stats(name, self._table(name)), self.policy):
            self.compact([name])
