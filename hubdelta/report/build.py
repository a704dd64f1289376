"""Build a report from the index: clusters of every space, their changes, new models and their neighbours.

``build_report`` reads (models, spaces, vectors) and hands each space to :func:`analyse_space`, a pure
function of that space's vectors, records and the previous report's clusters.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from hubdelta.index.embeddings import SpaceRow
from hubdelta.index.records import ModelRecord, ModelStatus
from hubdelta.index.reports import StoredCluster, StoredReport
from hubdelta.index.store import Index
from hubdelta.query.records import Neighbor
from hubdelta.report import cluster as clustering
from hubdelta.report import match, naming, neighbours, window
from hubdelta.report.map import project_2d
from hubdelta.report.records import (
    Cluster,
    ClusterChange,
    FailureCount,
    MapPoint,
    NewModel,
    Report,
    SpaceMap,
    SpaceSummary,
)


@dataclass(frozen=True)
class ReportParams:
    """How a report is made (stored with it)."""

    clustering: clustering.ClusterParams = field(default_factory=clustering.ClusterParams)
    neighbours: int = 5  # established neighbours listed per new model
    jaccard_min: float = match.JACCARD_MIN

    def to_dict(self) -> dict[str, Any]:
        return {"clustering": self.clustering.to_dict(), "neighbours": self.neighbours, "jaccard_min": self.jaccard_min}


@dataclass(frozen=True)
class SpaceInput:
    """One space's vectors (rows sorted by repo id) and what the report needs to know about them."""

    space_id: str
    base: str
    repo_ids: list[str]
    vectors: np.ndarray  # (N, C)
    embedded_at: list[datetime | None]
    records: Mapping[str, ModelRecord]  # may lack some repo ids (a vector added without a models row)


@dataclass(frozen=True)
class SpaceResult:
    summary: SpaceSummary
    clusters: list[Cluster]
    changes: list[ClusterChange]
    new_models: list[NewModel]
    next_number: int
    map: SpaceMap


def analyse_space(
    data: SpaceInput,
    *,
    since: datetime,
    previous: Sequence[StoredCluster],
    next_number: int,
    previously_clustered: frozenset[str],
    params: ReportParams,
) -> SpaceResult:
    """Cluster one space, match its clusters to the previous report's, name them, and find its new models."""
    ids = data.repo_ids
    unit = clustering.normalise(data.vectors) if ids else np.zeros((0, 0))
    labels = clustering.cluster_labels(data.vectors, params.clustering) if ids else np.zeros(0, np.int64)
    groups = clustering.groups(ids, labels)
    before = {c.id: frozenset(c.members) for c in previous}
    matches = match.match([frozenset(g) for g in groups], before, params.jaccard_min)
    cluster_ids, next_number = match.cluster_ids(matches, next_number)
    names = _names(data, groups, cluster_ids)
    row = {r: i for i, r in enumerate(ids)}
    clusters = [
        Cluster(cid, data.space_id, g, names[cid], clustering.centroid(unit[[row[m] for m in g]]))
        for cid, g in zip(cluster_ids, groups, strict=True)
    ]
    changes = match.changes(data.space_id, [(c.id, frozenset(c.members)) for c in clusters], before, matches)
    label_of = {m: c.id for c in clusters for m in c.members}
    new_rows = [i for i, r in enumerate(ids) if _new(data, i, since, previously_clustered)]
    new_models = _new_models(data, unit, new_rows, label_of, params.neighbours)
    xy = project_2d(unit) if ids else np.zeros((0, 2))
    fresh = set(new_rows)
    points = tuple(
        MapPoint(r, float(xy[i, 0]), float(xy[i, 1]), label_of.get(r), i in fresh) for i, r in enumerate(ids)
    )
    title = f"{data.space_id} ({data.base}): {len(ids)} models, {len(clusters)} clusters"
    space_map = SpaceMap(data.space_id, title, points, names)
    summary = SpaceSummary(data.space_id, data.base, len(ids), len(label_of))
    return SpaceResult(summary, clusters, changes, new_models, next_number, space_map)


def _names(data: SpaceInput, groups: list[tuple[str, ...]], cluster_ids: list[str]) -> dict[str, str]:
    """Readable names by cluster id; a cluster without one, or sharing one, gets its id added."""
    # Only the bases models are embedded against (a family space has several): a merge's base_models list the
    # finetunes it merges after its base, and those names are telling.
    firsts = {r.model.base_models[0] for r in data.records.values() if r.model.base_models}
    ignore = naming.base_words([data.base, *sorted(firsts)])
    tokens = {}
    for repo_id in data.repo_ids:
        record = data.records.get(repo_id)
        tags, card = (record.model.tags, record.model.card_summary) if record else ((), "")
        tokens[repo_id] = naming.model_tokens(repo_id, tags, card, ignore)
    raw = naming.cluster_names(groups, tokens)
    counts = Counter(raw)
    return {
        cid: (f"cluster {cid}" if not name else name if counts[name] == 1 else f"{name} ({cid})")
        for cid, name in zip(cluster_ids, raw, strict=True)
    }


def _new(data: SpaceInput, row: int, since: datetime, previously_clustered: frozenset[str]) -> bool:
    repo_id = data.repo_ids[row]
    record = data.records.get(repo_id)
    first_seen = record.first_seen if record else None
    return window.is_new(repo_id, embedded_at=data.embedded_at[row], first_seen=first_seen, since=since,
                  previously_clustered=previously_clustered)  # fmt: skip


def _new_models(
    data: SpaceInput, unit: np.ndarray, new_rows: list[int], label_of: Mapping[str, str], k: int
) -> list[NewModel]:
    fresh = set(new_rows)
    established = [i for i in range(len(data.repo_ids)) if i not in fresh]
    found = neighbours.nearest(unit, new_rows, established, k)
    out = []
    for row, near in zip(new_rows, found, strict=True):
        repo_id = data.repo_ids[row]
        record = data.records.get(repo_id)
        out.append(
            NewModel(
                repo_id=repo_id,
                space_id=data.space_id,
                relation=record.model.relation.value if record else "unknown",
                created_at=record.model.created_at if record else None,
                first_seen=record.first_seen if record else None,
                embedded_at=data.embedded_at[row],
                neighbors=tuple(
                    Neighbor.of(
                        rank,
                        round(score, 4),
                        data.records.get(data.repo_ids[j]),
                        data.repo_ids[j],
                        label_of.get(data.repo_ids[j]),
                    )
                    for rank, (j, score) in enumerate(near, start=1)
                ),
                cluster_id=label_of.get(repo_id),
            )
        )
    return out


def failure_counts(records: Sequence[ModelRecord]) -> list[FailureCount]:
    """Failed and skipped models by (status, reason), most frequent first."""
    counts = Counter(
        (r.status, r.reason or "(no reason)") for r in records if r.status in (ModelStatus.FAILED, ModelStatus.SKIPPED)
    )
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [FailureCount(status, reason, n) for (status, reason), n in ranked]


def next_numbers(previous: StoredReport | None) -> dict[str, int]:
    """Per space, the number the next new cluster gets (stored with each report; derived from ids otherwise)."""
    if previous is None:
        return {}
    stored = previous.summary.get("next_cluster")
    if isinstance(stored, dict):
        return {str(k): int(v) for k, v in stored.items()}
    derived = {}
    for space, clusters in previous.clusters.items():
        numbers = [int(m.group(1)) for c in clusters if (m := re.fullmatch(r"c(\d+)", c.id))]
        derived[space] = max(numbers, default=0) + 1
    return derived


def space_input(index: Index, space_id: str, space: SpaceRow, records: Mapping[str, ModelRecord]) -> SpaceInput:
    """One space's visible vectors, sorted by repo id, with their records."""
    # Removed models keep their vectors but are hidden from queries, and from reports.
    embeddings = index.vectors.visible(space_id)
    ids = sorted(embeddings)
    vectors = np.stack([embeddings[r].vector for r in ids]) if ids else np.zeros((0, space.dim), np.float32)
    family = space.params.get("family")
    base = f"family {family}" if family else str(space.params.get("base_repo", ""))
    when = [embeddings[r].embedded_at for r in ids]
    return SpaceInput(space_id, base, ids, vectors, when, {r: records[r] for r in ids if r in records})


def build_report(
    index: Index,
    *,
    since: datetime,
    now: datetime,
    previous: StoredReport | None,
    report_id: str | None = None,
    params: ReportParams | None = None,
) -> Report:
    """Read the index and build the report of ``since`` → ``now`` against ``previous``.

    Args:
        index: an open index (read-only suffices).
        since: models embedded after this are candidates for "new".
        now: the report's creation time.
        previous: the last stored report (None for the first one).
        report_id: the new report's id (default: from ``now``, see :func:`hubdelta.report.window.report_id`).
        params: how to cluster and how many neighbours (defaults: ``ReportParams()``).

    Returns:
        The report, with each space's map data and without files (:mod:`hubdelta.report.render` writes them).
    """
    params = params or ReportParams()
    records = index.models.get()
    previous_clusters = previous.clusters if previous else {}
    clustered_before = frozenset(m for cs in previous_clusters.values() for c in cs for m in c.members)
    numbers = next_numbers(previous)
    results = []
    for space_id, space in sorted(index.vectors.spaces().items()):
        data = space_input(index, space_id, space, records)
        result = analyse_space(
            data,
            since=since,
            previous=previous_clusters.get(space_id, ()),
            next_number=numbers.get(space_id, 1),
            previously_clustered=clustered_before,
            params=params,
        )
        results.append(result)
    return Report(
        report_id=report_id or window.report_id(now, ()),
        created_at=now,
        since=since,
        spaces=tuple(r.summary for r in results),
        new_models=tuple(m for r in results for m in r.new_models),
        clusters=tuple(c for r in results for c in r.clusters),
        changes=tuple(c for r in results for c in r.changes),
        failures=tuple(failure_counts(list(records.values()))),
        previous_id=previous.report_id if previous else None,
        params=params.to_dict(),
        next_cluster={r.summary.space_id: r.next_number for r in results},
        maps=tuple(r.map for r in results),
    )
