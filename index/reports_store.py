"""Stored reports (see :mod:`hubdelta.index.reports`): what the next report compares against."""

from __future__ import annotations

import pyarrow.compute as pc

from hubdelta.index.reports import REPORTS, StoredReport, reports_from_table, reports_to_table
from hubdelta.index.schema import sql_string
from hubdelta.index.tables import Tables


class ReportsStore:
    """``index.reports``: one row a report."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    def put(self, report: StoredReport) -> None:
        """Record a report (keyed by ``report_id``; the same id again replaces it) in one commit.

        Raises:
            StoreError: the index is read-only.
        """
        self._t.upsert(REPORTS, "report_id", reports_to_table([report]))

    def latest(self) -> StoredReport | None:
        """The most recently created report, or None before the first one."""
        # Two columns first: every row carries its clusters' member lists, and only one row is wanted.
        heads = self._t.scan(REPORTS, columns=["report_id", "created_at"])
        if heads.num_rows == 0:
            return None
        latest = pc.max(heads["created_at"])
        report_id = heads.filter(pc.equal(heads["created_at"], latest))["report_id"][0].as_py()
        rows = reports_from_table(self._t.scan(REPORTS, f"report_id = {sql_string(report_id)}"))
        return rows[0] if rows else None
