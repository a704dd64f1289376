"""Stored reports: the ``reports`` table (one row a report) and the pure conversions to and from its rows.

A report row keeps what the *next* report needs to compare against (each space's clusters: id, name, members)
and a summary for ``hubdelta status``; the rendered files stay on disk under ``files``. Clusters, params and the
summary are JSON strings: their shape belongs to ``hubdelta.report`` and may grow without a migration, as the
``tracked`` table's cursors do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from hubdelta.index.schema import TIMESTAMP, datetimes, utc

REPORTS = "reports"

REPORTS_SCHEMA = pa.schema(
    [
        pa.field("report_id", pa.string(), nullable=False),
        pa.field("created_at", TIMESTAMP, nullable=False),
        pa.field("since", TIMESTAMP, nullable=False),
        pa.field("params", pa.string(), nullable=False),  # JSON: how the report was made (clustering, k)
        pa.field("clusters", pa.string(), nullable=False),  # JSON: {space_id: [{id, name, members}]}
        pa.field("summary", pa.string(), nullable=False),  # JSON: counts, new models, next cluster numbers
        pa.field("files", pa.string(), nullable=False),  # the folder holding report.md, report.html, maps
    ]
)


@dataclass(frozen=True)
class StoredCluster:
    """One cluster as a report stored it: enough to match it against the next report's clusters."""

    id: str
    name: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class StoredReport:
    """One row of the ``reports`` table."""

    report_id: str
    created_at: datetime
    since: datetime
    files: str
    clusters: dict[str, tuple[StoredCluster, ...]] = field(default_factory=dict)  # by space id
    params: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def cluster_of(self, repo_id: str) -> StoredCluster | None:
        """The cluster ``repo_id`` belonged to in this report (in any space), or None."""
        for clusters in self.clusters.values():
            for cluster in clusters:
                if repo_id in cluster.members:
                    return cluster
        return None


def clusters_to_json(clusters: dict[str, tuple[StoredCluster, ...]]) -> str:
    data = {
        space: [{"id": c.id, "name": c.name, "members": list(c.members)} for c in items]
        for space, items in sorted(clusters.items())
    }
    return json.dumps(data, sort_keys=True)


def clusters_from_json(text: str) -> dict[str, tuple[StoredCluster, ...]]:
    return {
        space: tuple(StoredCluster(c["id"], c["name"], tuple(c["members"])) for c in items)
        for space, items in json.loads(text).items()
    }


def reports_to_table(rows: Sequence[StoredReport]) -> pa.Table:
    """Arrow rows (``REPORTS_SCHEMA``) of ``rows``.

    Raises:
        ValueError: a datetime without a timezone.
    """
    return pa.table(
        {
            "report_id": [r.report_id for r in rows],
            "created_at": [utc(r.created_at, "created_at") for r in rows],
            "since": [utc(r.since, "since") for r in rows],
            "params": [json.dumps(r.params, sort_keys=True) for r in rows],
            "clusters": [clusters_to_json(r.clusters) for r in rows],
            "summary": [json.dumps(r.summary, sort_keys=True) for r in rows],
            "files": [r.files for r in rows],
        },
        schema=REPORTS_SCHEMA,
    )


def reports_from_table(table: pa.Table) -> list[StoredReport]:
    """Records of arrow rows shaped like ``REPORTS_SCHEMA``."""
    cols = table.to_pydict()
    created, since = datetimes(table["created_at"]), datetimes(table["since"])
    out = []
    for i in range(table.num_rows):
        created_at, since_at = created[i], since[i]
        assert created_at is not None and since_at is not None  # non-nullable columns
        out.append(
            StoredReport(
                report_id=cols["report_id"][i],
                created_at=created_at,
                since=since_at,
                files=cols["files"][i],
                clusters=clusters_from_json(cols["clusters"][i]),
                params=json.loads(cols["params"][i]),
                summary=json.loads(cols["summary"][i]),
            )
        )
    return out
