"""Typed records of a report: clusters, how they changed since the last report, new models, failures.

Pure data (numpy only for centroids); ``Report.to_dict`` is the stable JSON of ``hubdelta report --json``
(fields may be added, never renamed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from hubdelta.index.labels import ModelLabels
from hubdelta.index.records import ModelStatus
from hubdelta.query.records import Neighbor


class ChangeKind(StrEnum):
    """What became of a cluster since the previous report (see docs/report.md for the matching rule)."""

    NEW = "new"  # no previous cluster shares at least half its members (Jaccard >= 0.5)
    GROWN = "grown"  # matched, and more members than before
    SHRUNK = "shrunk"  # matched, and fewer members
    SAME = "same"  # matched, same number of members
    DISSOLVED = "dissolved"  # a previous cluster that no current one matches


@dataclass(frozen=True)
class Cluster:
    """A group of models of one space whose normalised vectors HDBSCAN put together."""

    id: str  # stable across reports: a matched cluster keeps its previous id
    space_id: str
    members: tuple[str, ...]  # repo ids, sorted
    name: str
    centroid: np.ndarray | None = field(default=None, compare=False, repr=False)  # (C,) unit mean

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass(frozen=True)
class ClusterChange:
    """One current cluster against its match in the previous report (or a previous one that dissolved)."""

    space_id: str
    kind: ChangeKind
    cluster_id: str | None  # None for a dissolved cluster
    previous_id: str | None  # None for a new cluster
    jaccard: float  # of the two member sets; 0.0 when there is no counterpart
    size: int
    previous_size: int
    added: tuple[str, ...] = ()  # members now that were not members then
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class NewModel:
    """A model embedded since the last report, and the established models it behaves most like."""

    repo_id: str
    space_id: str
    relation: str
    created_at: datetime | None  # on the Hub
    first_seen: datetime | None  # by the crawler
    embedded_at: datetime | None
    neighbors: tuple[Neighbor, ...] = ()  # established models near it, best first
    cluster_id: str | None = None  # the cluster it landed in, if any
    labels: ModelLabels | None = None  # suggested from its documented neighbours (None: not labelled)


@dataclass(frozen=True)
class FailureCount:
    """How many models are failed or skipped for one reason."""

    status: ModelStatus  # failed or skipped
    reason: str
    count: int


@dataclass(frozen=True)
class SpaceSummary:
    """One embedding space as the report saw it."""

    space_id: str
    base: str
    vectors: int
    clustered: int  # vectors in some cluster; the rest are noise
    method: str = "hdbscan"  # hdbscan (exact) or sampled-hdbscan (above ClusterParams.exact_max live vectors)
    copy_groups: tuple[tuple[str, ...], ...] = ()  # same weights or behaviour: the representative first
    copies_reused: int = 0  # models whose vector was reused without download (the same weight files)
    bytes_not_downloaded: int = 0  # their weight bytes
    near_checked: bool = True  # near-copies looked for (else only equal fingerprints: a space too large)

    @property
    def noise(self) -> int:
        return self.vectors - self.clustered


@dataclass(frozen=True)
class MapPoint:
    """One model on a space's map."""

    repo_id: str
    x: float
    y: float
    cluster_id: str | None  # None: noise
    new: bool


@dataclass(frozen=True)
class MapLayer:
    """A space's map as arrays: what is drawn (a ``MapPoint`` per model would be a million objects at Hub scale)."""

    xy: np.ndarray  # (N, 2) coordinates
    cluster: np.ndarray  # (N,) int index into cluster_ids; -1: noise
    cluster_ids: tuple[str, ...]
    new: np.ndarray  # (N,) bool

    @classmethod
    def of_points(cls, points: tuple[MapPoint, ...]) -> MapLayer:
        ids = tuple(sorted({p.cluster_id for p in points if p.cluster_id is not None}))
        index = {c: i for i, c in enumerate(ids)}
        return cls(
            xy=np.array([(p.x, p.y) for p in points], dtype=np.float64).reshape(-1, 2),
            cluster=np.array([-1 if p.cluster_id is None else index[p.cluster_id] for p in points], np.int64),
            cluster_ids=ids,
            new=np.array([p.new for p in points], dtype=bool),
        )


@dataclass(frozen=True)
class SpaceMap:
    """Everything a space's map shows: 2-D coordinates (PCA of the normalised vectors) and cluster names.

    Small spaces list ``points``; a report's maps always carry ``layer`` (the same, as arrays), and a large
    space's only that.
    """

    space_id: str
    title: str
    points: tuple[MapPoint, ...]
    names: dict[str, str]  # cluster id -> name
    layer: MapLayer | None = field(default=None, compare=False, repr=False)

    def arrays(self) -> MapLayer:
        """The map as arrays, from ``layer`` or else from ``points``."""
        return self.layer if self.layer is not None else MapLayer.of_points(self.points)

    @property
    def size(self) -> int:
        return len(self.layer.xy) if self.layer is not None else len(self.points)


@dataclass(frozen=True)
class Report:
    """One report: what is new since ``since``, and the clusters of every space."""

    report_id: str
    created_at: datetime
    since: datetime
    spaces: tuple[SpaceSummary, ...]
    new_models: tuple[NewModel, ...]
    clusters: tuple[Cluster, ...]
    changes: tuple[ClusterChange, ...]
    failures: tuple[FailureCount, ...]
    previous_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None
    files: tuple[Path, ...] = ()
    next_cluster: dict[str, int] = field(default_factory=dict)  # per space: the number the next new cluster gets
    maps: tuple[SpaceMap, ...] = field(default=(), repr=False)  # for rendering; not part of the JSON

    def changes_of(self, *kinds: ChangeKind) -> list[ClusterChange]:
        return [c for c in self.changes if c.kind in kinds]

    def cluster(self, cluster_id: str, space_id: str) -> Cluster | None:
        return next((c for c in self.clusters if c.id == cluster_id and c.space_id == space_id), None)

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON document (datetimes as ISO strings, paths as strings)."""

        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat()

        return {
            "report_id": self.report_id,
            "created_at": iso(self.created_at),
            "since": iso(self.since),
            "previous_id": self.previous_id,
            "out_dir": None if self.out_dir is None else str(self.out_dir),
            "files": [str(p) for p in self.files],
            "spaces": [
                {
                    "space_id": s.space_id,
                    "base": s.base,
                    "vectors": s.vectors,
                    "clustered": s.clustered,
                    "method": s.method,
                    "copy_groups": [list(g) for g in s.copy_groups],
                    "copies_reused": s.copies_reused,
                    "bytes_not_downloaded": s.bytes_not_downloaded,
                }
                for s in self.spaces
            ],
            "new_models": [
                {
                    "repo_id": m.repo_id,
                    "space_id": m.space_id,
                    "relation": m.relation,
                    "created_at": iso(m.created_at),
                    "first_seen": iso(m.first_seen),
                    "embedded_at": iso(m.embedded_at),
                    "cluster": m.cluster_id,
                    "neighbors": [{"repo_id": n.repo_id, "score": n.score, "cluster": n.cluster} for n in m.neighbors],
                }
                for m in self.new_models
            ],
            "clusters": [
                {"id": c.id, "space_id": c.space_id, "name": c.name, "size": c.size, "members": list(c.members)}
                for c in self.clusters
            ],
            "changes": [
                {
                    "space_id": c.space_id,
                    "kind": c.kind.value,
                    "cluster": c.cluster_id,
                    "previous": c.previous_id,
                    "jaccard": c.jaccard,
                    "size": c.size,
                    "previous_size": c.previous_size,
                    "added": list(c.added),
                    "removed": list(c.removed),
                }
                for c in self.changes
            ],
            "failures": [{"status": f.status, "reason": f.reason, "count": f.count} for f in self.failures],
            "params": self.params,
        }
