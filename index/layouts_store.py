"""Stored map layouts (see :mod:`hubdelta.index.layouts`): one per space, replaced whole, read whole."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from hubdelta.index.layouts import (
    LAYOUT_META,
    LAYOUTS,
    Layout,
    layout_from_rows,
    layout_rows,
    meta_row,
    meta_times,
)
from hubdelta.index.schema import sql_string
from hubdelta.index.tables import Tables
from hubdelta.kernel.errors import StoreError

POINT_COLUMNS = ["row", "repo_id", "x", "y", "cluster", "new"]
# Rows per batch of a points read: LanceDB's default (1,024) makes a 1M-point read ~1,000 round trips through
# its event loop, 0.25 s here, where 65,536 takes 0.05 s.
BATCH_ROWS = 65_536
READ_TRIES = 3


@dataclass(frozen=True)
class LayoutHead:
    """A stored layout's ``layout_meta`` row: what it is, without its points."""

    space_id: str
    version: str
    stamp: int  # the put whose rows are current
    n: int
    computed_at: datetime
    report_id: str | None
    source: str


class LayoutsStore:
    """``index.layouts``: each space's map layout.

    A layout is a million rows at Hub scale, more than one Lance commit can replace in place atomically for
    another table to point at, so a put is three commits, ordered so that no reader ever sees half a layout:

    1. append the new points, tagged with a fresh ``stamp`` (readers do not look at them yet);
    2. upsert the space's ``layout_meta`` row naming that stamp (the switch: one small atomic commit);
    3. delete the space's points of every other stamp.

    A reader reads the meta row, then the points of its stamp, and checks their number against the row's ``n``:
    one that read the old stamp just before step 2 and scanned just after step 3 finds no points and reads the
    meta row again. A writer killed after step 1 leaves points no meta row names; the next put's step 3 deletes
    them. (Delete-then-insert would show readers an empty space between its two commits; a ``merge_insert`` that
    deletes unmatched rows in the same commit is atomic but joins a million keys against the stored ones: an
    append and a delete by stamp are cheaper and the reader's check costs nothing.)
    """

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    def put(self, layout: Layout) -> None:
        """Replace ``layout.space_id``'s layout (three commits, see the class).

        Raises:
            StoreError: the index is read-only.
            ValueError: ``computed_at`` without a timezone, or arrays that do not match ``repo_ids``.
        """
        self._t.require_writer()
        n = layout.n
        if layout.xy.shape != (n, 2) or layout.cluster.shape != (n,) or layout.new.shape != (n,):
            raise ValueError(f"layout of {layout.space_id!r}: arrays do not match its {n} repo ids")
        previous = self.heads().get(layout.space_id)
        # Unique per put: the clock, and never at or below the stamp it replaces (a clock set back).
        stamp = max(time.time_ns(), previous.stamp + 1 if previous else 0)
        meta = meta_row(layout, stamp)  # a naive computed_at fails here, before anything is written
        self._t.append(LAYOUTS, layout_rows(layout, stamp))
        self._t.upsert(LAYOUT_META, "space_id", meta)
        self._t.delete_where(LAYOUTS, f"space_id = {sql_string(layout.space_id)} AND stamp != {stamp}")

    def heads(self) -> dict[str, LayoutHead]:
        """Every stored layout's meta row, by space id (a read of one small table)."""
        rows = self._t.scan(LAYOUT_META)
        times = meta_times(rows)
        return {
            r["space_id"]: LayoutHead(r["space_id"], r["version"], r["stamp"], r["n"], t, r["report_id"], r["source"])
            for r, t in zip(rows.to_pylist(), times, strict=True)
        }

    def versions(self) -> dict[str, str]:
        """Each stored layout's version by space id: what a server compares to know its copy is stale."""
        return {space: head.version for space, head in self.heads().items()}

    def get(self, space_id: str) -> Layout | None:
        """The stored layout of ``space_id`` (None: none stored).

        Raises:
            StoreError: the stored points never matched their meta row in several reads (a damaged table).
        """
        where = f"space_id = {sql_string(space_id)}"
        for _ in range(READ_TRIES):
            metas = self._t.scan(LAYOUT_META, where)
            if metas.num_rows == 0:
                return None
            meta = metas.to_pylist()[0]
            points = self._points(f"{where} AND stamp = {int(meta['stamp'])}")
            if points.num_rows == meta["n"]:
                return layout_from_rows(meta, meta_times(metas)[0], points)
            # A put switched stamps between the two reads: the meta row now names the new points.
        raise StoreError(
            f"holds a layout of {space_id!r} whose points do not match its {LAYOUT_META} row",
            uri=self._t.uri,
            fix="recompute it: hubdelta layout --force",
        )

    def _points(self, where: str) -> pa.Table:
        def run() -> pa.Table:
            query = self._t.table(LAYOUTS).search().select(POINT_COLUMNS).where(where)
            return query.to_batches(BATCH_ROWS).read_all()

        return self._t.read(run)

    def delete(self, space_id: str) -> bool:
        """Forget a space's layout (meta row first: readers then see none). Returns whether one was stored."""
        existed = self._t.delete_key(LAYOUT_META, "space_id", space_id)
        self._t.delete_where(LAYOUTS, f"space_id = {sql_string(space_id)}")
        return existed
