"""Table upkeep across the whole index: statistics and compaction (the policy lives in ``compaction.py``)."""

from __future__ import annotations

from collections.abc import Iterable

from hubdelta.index.compaction import CompactionPolicy, TableStats, due
from hubdelta.index.tables import Tables


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
