"""The plumbing every per-table store of :class:`~hubdelta.index.store.Index` shares.

Open tables (a space's ``emb_`` table is opened on first use), the closed and read-only checks, reads that run
once more when the writer's compaction deleted a file under them, filtered scans, upserts, and the compaction
check after every write. The stores (``models_store``, ``vectors_store``, ...) hold one ``Tables`` each and
never open LanceDB tables themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import lancedb
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.table import Table

from hubdelta.index import migrations
from hubdelta.index.compaction import CompactionPolicy, TableStats, compact_table, due, table_stats
from hubdelta.index.copies import COPIES
from hubdelta.index.embeddings import EMB_PREFIX, SPACES, emb_schema, emb_table_name
from hubdelta.index.families import FAMILY_SCHEMAS
from hubdelta.index.labels import LABEL_SCHEMAS
from hubdelta.index.layouts import LAYOUT_SCHEMAS
from hubdelta.index.reports import REPORTS
from hubdelta.index.schema import SCHEMAS, sql_string
from hubdelta.index.selectors import Filter
from hubdelta.kernel.errors import StoreError

T = TypeVar("T")


@dataclass(frozen=True)
class PutResult:
    """What one ``put`` commit did."""

    inserted: int
    updated: int


def vanished(e: Exception) -> bool:
    """Whether a read failed because a compaction by the writer deleted a file it was about to open."""
    return "not found" in str(e).lower()  # lance reports "Not found"


class Tables:
    """The open tables of one index, and the read and write steps every store uses."""

    def __init__(self, uri: str, db: lancedb.DBConnection, *, writer: bool, policy: CompactionPolicy) -> None:
        self.uri = uri
        self.policy = policy
        self.db = db
        self.writer = writer
        self.closed = False
        fixed = (*SCHEMAS, SPACES, REPORTS, *FAMILY_SCHEMAS, *LAYOUT_SCHEMAS, COPIES, *LABEL_SCHEMAS)
        self._open: dict[str, Table] = {name: db.open_table(name) for name in fixed}

    # ---- access ----

    def table(self, name: str) -> Table:
        """An open table by name.

        Raises:
            StoreError: the index was closed.
        """
        if self.closed:
            raise StoreError("is closed", uri=self.uri, fix="open it again with Index.open")
        return self._open[name]

    def writable(self, name: str) -> Table:
        """An open table to write to.

        Raises:
            StoreError: the index is read-only (or closed).
        """
        self.require_writer()
        return self.table(name)

    def require_writer(self) -> None:
        """Raise unless this index was opened for writing.

        Raises:
            StoreError: the index is read-only.
        """
        if not self.writer:
            raise StoreError("was opened read-only", uri=self.uri, fix="open it with Index.open(..., writer=...)")

    def emb(self, space_id: str) -> Table | None:
        """The ``emb_<space>`` table of a space, opened on first use (None: no such space)."""
        name = emb_table_name(space_id)
        if name not in self._open:
            if name not in migrations.table_names(self.db):
                return None
            self._open[name] = self.db.open_table(name)
        return self.table(name)

    def create_emb(self, space_id: str, dim: int) -> Table:
        """Create (or open, when it exists) a space's vector table."""
        name = emb_table_name(space_id)
        self._open[name] = self.db.create_table(name, schema=emb_schema(dim), exist_ok=True)
        return self.table(name)

    def names(self) -> list[str]:
        """The fixed tables and every space's vector table (opened on first use)."""
        for name in migrations.table_names(self.db):
            if name.startswith(EMB_PREFIX) and name not in self._open:
                self._open[name] = self.db.open_table(name)
        return list(self._open)

    # ---- reads ----

    def read(self, fn: Callable[[], T]) -> T:
        """Run a read, once more if a concurrent compaction deleted a file under it."""
        try:
            return fn()
        except (OSError, RuntimeError, ValueError) as e:
            if not vanished(e):
                raise
        return fn()

    def scan(
        self,
        name: str,
        flt: Filter | str | None = None,
        *,
        limit: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Rows of table ``name`` that pass ``flt`` (a compiled selector, or a Lance filter written in index/).

        A filter whose ids were too many for an IN list is applied in arrow after the scan; ``limit`` counts the
        rows that pass it.
        """
        f = flt if isinstance(flt, Filter) else Filter(where=flt)
        if f.empty:
            schema = self.table(name).schema
            return (schema if columns is None else pa.schema([schema.field(c) for c in columns])).empty_table()
        wanted = list(columns) if columns is not None else None
        if wanted is not None and f.post_filtered and f.column not in wanted:
            wanted.append(f.column)  # needed to filter by; dropped below

        def run() -> pa.Table:
            query = self.table(name).search()
            if wanted is not None:
                query = query.select(wanted)
            if f.where is not None:
                query = query.where(f.where)
            return query.limit(None if f.post_filtered else limit).to_arrow()

        rows = self.read(run)
        if f.keep is not None:
            rows = rows.filter(pc.is_in(rows[f.column], value_set=pa.array(sorted(f.keep), pa.string())))
            rows = rows if limit is None else rows.slice(0, limit)
        return rows if columns is None else rows.select(list(columns))

    def count(self, name: str, flt: Filter | None = None) -> int:
        """Rows of table ``name`` passing ``flt`` (all when None), without reading them when Lance can count."""
        if flt is None or not (flt.empty or flt.post_filtered):
            where = None if flt is None else flt.where
            return self.read(lambda: self.table(name).count_rows(where))
        return 0 if flt.empty else self.scan(name, flt, columns=[flt.column]).num_rows

    # ---- writes ----

    def upsert(self, name: str, key: str, data: pa.Table) -> PutResult:
        """Insert or replace rows by ``key`` in ONE commit, then compact the table if it is due.

        Raises:
            StoreError: the index is read-only.
        """
        merge = self.writable(name).merge_insert(key).when_matched_update_all().when_not_matched_insert_all()
        result = merge.execute(data)
        self.after_write(name)
        return PutResult(inserted=result.num_inserted_rows, updated=result.num_updated_rows)

    def insert_new(self, name: str, key: str, data: pa.Table) -> None:
        """Insert the rows whose ``key`` is not stored yet (stored ones are kept as they are), in one commit."""
        self.writable(name).merge_insert(key).when_not_matched_insert_all().execute(data)
        self.after_write(name)

    def append(self, name: str, data: pa.Table) -> None:
        """Add rows to table ``name`` as they are (no key, no merge) in one commit; an empty table writes nothing.

        Raises:
            StoreError: the index is read-only.
        """
        table = self.writable(name)
        if data.num_rows:
            table.add(data)
            self.after_write(name)

    def delete_where(self, name: str, where: str) -> None:
        """Delete the rows of table ``name`` that pass ``where`` (a Lance filter written in index/), one commit.

        Raises:
            StoreError: the index is read-only.
        """
        self.writable(name).delete(where)
        self.after_write(name)

    def delete_key(self, name: str, column: str, value: str) -> bool:
        """Delete the row of table ``name`` whose ``column`` is ``value`` (one commit). Returns whether it existed."""
        table = self.writable(name)
        where = f"{column} = {sql_string(value)}"
        if table.count_rows(where) == 0:
            return False
        table.delete(where)
        self.after_write(name)
        return True

    def after_write(self, name: str) -> None:
        """Compact ``name`` when the policy says so (a writer checks after every commit)."""
        if self.policy.auto and due(table_stats(name, self.table(name)), self.policy):
            self.compact([name])

    # ---- maintenance ----

    def stats(self, name: str) -> TableStats:
        """Rows, fragments and versions of one table."""
        return self.read(lambda: table_stats(name, self.table(name)))

    def compact(self, names: Iterable[str]) -> dict[str, TableStats]:
        """Compact ``names`` and drop their old versions; their stats after.

        Raises:
            StoreError: the index is read-only.
        """
        names = list(names)
        for name in names:
            compact_table(self.writable(name))
        return {name: table_stats(name, self.table(name)) for name in names}
