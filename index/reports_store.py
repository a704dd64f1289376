"""Stored reports (see :mod:`hubdelta.index.reports`): what the next report compares against."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pyarrow.compute as pc

from hubdelta.index.reports import REPORTS, StoredReport, reports_from_table, reports_to_table
from hubdelta.index.schema import datetimes, sql_string
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

    def latest_id(self) -> str | None:
        """The id of the most recently created report (two columns read), or None before the first one."""
        heads = self._t.scan(REPORTS, columns=["report_id", "created_at"])
        if heads.num_rows == 0:
            return None
        latest = pc.max(heads["created_at"])
        report_id: str = heads.filter(pc.equal(heads["created_at"], latest))["report_id"][0].as_py()
        return report_id

    def latest(self) -> StoredReport | None:
        """The most recently created report, or None before the first one."""
        # Its id first: every row carries its clusters' member lists, and only one row is wanted.
        report_id = self.latest_id()
        return None if report_id is None else self.get(report_id)

    def heads(self) -> list[dict[str, Any]]:
        """Every report, newest first, without its clusters' member lists: report_id, created_at, since,
        files, summary."""
        table = self._t.scan(REPORTS, columns=["report_id", "created_at", "since", "files", "summary"])
        cols = table.to_pydict()
        created, since = datetimes(table["created_at"]), datetimes(table["since"])
        rows = [
            {"report_id": rid, "created_at": created[i], "since": since[i], "files": cols["files"][i],
             "summary": json.loads(cols["summary"][i])}
            for i, rid in enumerate(cols["report_id"])
        ]  # fmt: skip
        return sorted(rows, key=lambda r: r["created_at"] or datetime.min, reverse=True)

    def get(self, report_id: str) -> StoredReport | None:
        """The stored report ``report_id``, or None."""
        rows = reports_from_table(self._t.scan(REPORTS, f"report_id = {sql_string(report_id)}"))
        return rows[0] if rows else None
