"""Map layouts in the index: each space's 2-D coordinates, clusters and new models, computed when its vectors
change (``hubdelta.report.layout``) and read by ``hubdelta serve``'s map.

Two tables (migration m005):

- ``layouts``: one row a (space, repo) point, tagged with the ``put`` that wrote it (``stamp``) and its position
  in the layout (``row``);
- ``layout_meta``: one row a space, naming the stamp of its current rows, the layout's version, its cluster names
  and what it was computed from (``source``, so a refresh can tell whether the space's vectors changed).

Points are plain columns (float32 x and y, int32 cluster, bool new) so a reader turns a million of them into numpy
arrays without a Python object per point; only the repo ids become a list.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from hubdelta.index.schema import TIMESTAMP, datetimes, utc

LAYOUTS = "layouts"
LAYOUT_META = "layout_meta"

LAYOUTS_SCHEMA = pa.schema(
    [
        pa.field("space_id", pa.string(), nullable=False),
        pa.field("stamp", pa.int64(), nullable=False),  # the put that wrote the row (layout_meta.stamp)
        pa.field("row", pa.int32(), nullable=False),  # position in the layout: rows are in repo-id order
        pa.field("repo_id", pa.string(), nullable=False),
        pa.field("x", pa.float32(), nullable=False),
        pa.field("y", pa.float32(), nullable=False),
        pa.field("cluster", pa.int32(), nullable=False),  # index into the space's clusters; -1: in none
        pa.field("new", pa.bool_(), nullable=False),
    ]
)

LAYOUT_META_SCHEMA = pa.schema(
    [
        pa.field("space_id", pa.string(), nullable=False),
        pa.field("stamp", pa.int64(), nullable=False),
        pa.field("version", pa.string(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
        pa.field("computed_at", TIMESTAMP, nullable=False),
        pa.field("report_id", pa.string()),
        pa.field("clusters", pa.string(), nullable=False),  # JSON {"names": [...], "ids": [...]}, by cluster index
        pa.field("source", pa.string(), nullable=False),  # the vectors' fingerprint it was computed from
    ]
)

LAYOUT_SCHEMAS = {LAYOUTS: LAYOUTS_SCHEMA, LAYOUT_META: LAYOUT_META_SCHEMA}


@dataclass(frozen=True, eq=False)
class Layout:
    """One space's map: a point per visible model, in repo-id order.

    ``xy`` lies in [-1, 1] on both axes; ``cluster[i]`` indexes ``cluster_names`` (and ``cluster_ids``), -1 when
    the model is in no cluster of the report ``report_id``. ``version`` is a digest of the content (not of
    ``computed_at``): the same layout has the same version, and a changed one a new version, so a server may
    cache by it.
    """

    space_id: str
    version: str
    computed_at: datetime
    report_id: str | None
    repo_ids: list[str]
    xy: np.ndarray  # (N, 2) float32
    cluster: np.ndarray  # (N,) int32
    cluster_names: list[str]
    new: np.ndarray  # (N,) bool
    cluster_ids: list[str] = field(default_factory=list)  # the report's ids (c1, c2, ...), by cluster index
    source: str = ""  # what it was computed from (VectorsStore.fingerprint), for refreshes

    @property
    def n(self) -> int:
        return len(self.repo_ids)

    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` of the points (zeros when there are none)."""
        if not self.n:
            return (0.0, 0.0, 0.0, 0.0)
        lo, hi = self.xy.min(axis=0), self.xy.max(axis=0)
        return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))

    def cluster_sizes(self) -> list[int]:
        """Points per cluster, by cluster index."""
        members = self.cluster[self.cluster >= 0]
        return np.bincount(members, minlength=len(self.cluster_names)).tolist()

    def packed(self) -> bytes:
        """The points as little-endian columns: float32 x[n], float32 y[n], int32 cluster[n], uint8 new[n]."""
        parts = (self.xy[:, 0].astype("<f4"), self.xy[:, 1].astype("<f4"), self.cluster.astype("<i4"),
                 self.new.astype(np.uint8))  # fmt: skip
        return b"".join(p.tobytes() for p in parts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Layout):
            return NotImplemented
        same = (self.space_id, self.version, self.computed_at, self.report_id, self.repo_ids, self.cluster_names,
                self.cluster_ids, self.source) == (other.space_id, other.version, other.computed_at, other.report_id,
                other.repo_ids, other.cluster_names, other.cluster_ids, other.source)  # fmt: skip
        return same and all(np.array_equal(a, b) for a, b in self._arrays(other))

    __hash__ = None  # type: ignore[assignment]  # holds arrays

    def _arrays(self, other: Layout) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(self.xy, other.xy), (self.cluster, other.cluster), (self.new, other.new)]


def layout_version(
    repo_ids: list[str], xy: np.ndarray, cluster: np.ndarray, new: np.ndarray, cluster_names: list[str],
    cluster_ids: list[str], report_id: str | None,
) -> str:  # fmt: skip
    """A digest of a layout's content: 16 hex digits of SHA-256."""
    h = hashlib.sha256()
    h.update("\n".join(repo_ids).encode())
    for array, dtype in ((xy, "<f4"), (cluster, "<i4"), (new, "u1")):
        h.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
    h.update(json.dumps([cluster_names, cluster_ids, report_id]).encode())
    return h.hexdigest()[:16]


def clusters_json(layout: Layout) -> str:
    return json.dumps({"names": layout.cluster_names, "ids": layout.cluster_ids})


def layout_rows(layout: Layout, stamp: int) -> pa.Table:
    """The ``layouts`` rows of ``layout`` (column by column, no per-point objects)."""
    n = layout.n
    xy = np.asarray(layout.xy, np.float32).reshape(n, 2)
    return pa.table(
        {
            "space_id": pa.array([layout.space_id] * n, pa.string()),
            "stamp": pa.array(np.full(n, stamp, np.int64)),
            "row": pa.array(np.arange(n, dtype=np.int32)),
            "repo_id": pa.array(layout.repo_ids, pa.string()),
            "x": pa.array(np.ascontiguousarray(xy[:, 0])),
            "y": pa.array(np.ascontiguousarray(xy[:, 1])),
            "cluster": pa.array(np.asarray(layout.cluster, np.int32)),
            "new": pa.array(np.asarray(layout.new, bool)),
        },
        schema=LAYOUTS_SCHEMA,
    )


def meta_row(layout: Layout, stamp: int) -> pa.Table:
    """The ``layout_meta`` row of ``layout``.

    Raises:
        ValueError: ``computed_at`` without a timezone.
    """
    return pa.table(
        {
            "space_id": [layout.space_id],
            "stamp": [stamp],
            "version": [layout.version],
            "n": [layout.n],
            "computed_at": [utc(layout.computed_at, "computed_at")],
            "report_id": [layout.report_id],
            "clusters": [clusters_json(layout)],
            "source": [layout.source],
        },
        schema=LAYOUT_META_SCHEMA,
    )


def layout_from_rows(meta: dict[str, Any], computed_at: datetime, rows: pa.Table) -> Layout:
    """A layout from its meta row (as a dict) and its point rows (any order)."""
    order = rows["row"].to_numpy()
    if len(order) and not np.array_equal(order, np.arange(len(order))):  # compaction may have moved fragments
        rows = rows.take(pa.array(np.argsort(order, kind="stable")))
    clusters = json.loads(meta["clusters"])
    xy = np.empty((rows.num_rows, 2), np.float32)
    xy[:, 0] = rows["x"].to_numpy()
    xy[:, 1] = rows["y"].to_numpy()
    return Layout(
        space_id=meta["space_id"],
        version=meta["version"],
        computed_at=computed_at,
        report_id=meta["report_id"],
        repo_ids=rows["repo_id"].to_pylist(),
        xy=xy,
        cluster=rows["cluster"].to_numpy().astype(np.int32, copy=False),
        cluster_names=list(clusters["names"]),
        new=rows["new"].to_numpy(zero_copy_only=False).astype(bool, copy=False),
        cluster_ids=list(clusters["ids"]),
        source=meta["source"],
    )


def meta_times(table: pa.Table) -> list[datetime]:
    """The ``computed_at`` column of ``layout_meta`` rows."""
    return [t for t in datetimes(table["computed_at"]) if t is not None]
