"""Table upkeep across the whole index: statistics and compaction (the policy lives in ``compaction.py``)."""

from __future__ import annotations

from collections.abc import Iterable

from lancedb.index import BTree

from hubdelta.index.compaction import CompactionPolicy, TableStats, due
from hubdelta.index.embeddings import EMB_PREFIX
from hubdelta.index.labels import LABELS
from hubdelta.index.schema import MODELS
from hubdelta.index.tables import Tables

# Rows from which a table's repo_id gets a BTREE index. A lookup by id without one scans the whole column: at
# 1M rows ~100 ms for the models table and ~45 ms for a space's (what `similar` and every page pay several
# times); with one, a few ms. Below this a scan is as quick and the index is not worth its upkeep.
KEY_INDEX_MIN_ROWS = 10_000
KEY = "repo_id"


class Maintenance:
    """``index.maintenance``: rows, fragments and versions of every table, and compacting them."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    def stats(self) -> dict[str, TableStats]:
        """Rows, fragments and versions of every table (the fixed ones and each space's), by table name."""
        return {name: self._t.stats(name) for name in self._t.names()}

    def compact(self, tables: Iterable[str] | None = None) -> dict[str, TableStats]:
        """Compact ``tables`` (all by default) and drop their old versions. Returns their stats after.

        Raises:
            StoreError: the index is read-only.
        """
        return self._t.compact(self._t.names() if tables is None else tables)

    def maybe_compact(self, policy: CompactionPolicy | None = None) -> list[str]:
        """Compact each table past a threshold of ``policy`` (the index's own by default).

        Returns:
            The names of the tables compacted.

        Raises:
            StoreError: the index is read-only.
        """
        policy = policy or self._t.policy
        self._t.require_writer()
        names = [n for n in self._t.names() if due(self._t.stats(n), policy)]
        if names:
            self._t.compact(names)
        return names

    def key_indexes(self, min_rows: int = KEY_INDEX_MIN_ROWS) -> list[str]:
        """Give ``repo_id`` a BTREE index in the models table, the labels table and each space's table once it has
        ``min_rows`` rows (rows added later are found too: Lance scans what an index does not cover yet, and
        compaction's optimize folds them in). Returns the tables indexed now.

        Raises:
            StoreError: the index is read-only.
        """
        self._t.require_writer()
        made = []
        for name in self._t.names():
            if name not in (MODELS, LABELS) and not name.startswith(EMB_PREFIX):
                continue
            table = self._t.writable(name)
            if table.count_rows() < min_rows or any(list(c.columns) == [KEY] for c in table.list_indices()):
                continue
            table.create_index(KEY, config=BTree())
            made.append(name)
        return made
