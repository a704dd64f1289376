"""Build a report from the index: clusters of every space, their changes, new models and their neighbours.

``build_report`` reads (models, spaces, vectors) and hands each space to :func:`analyse_space`, a pure
function of that space's vectors, records and the previous report's clusters.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import structlog

from hubdelta.index.embeddings import SpaceRow
from hubdelta.index.records import ModelRecord
from hubdelta.index.reports import StoredCluster, StoredReport
from hubdelta.index.store import Index
from hubdelta.query.labels import read_labels
from hubdelta.query.records import Neighbor
from hubdelta.report import cluster as clustering
from hubdelta.report import match, naming, neighbours, window
from hubdelta.report.facts import ModelFact, ModelFacts, facts_of, read_facts
from hubdelta.report.map import SCATTER_MAX, project_2d
from hubdelta.report.records import (
    Cluster,
    ClusterChange,
    MapLayer,
    MapPoint,
    NewModel,
    Report,
    SpaceMap,
    SpaceSummary,
)

log = structlog.get_logger(__name__)


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
    # What a report needs of every model (default: from ``records``); a Hub-scale report reads only this and
    # fills in the records of the neighbours it lists afterwards (``with_records``).
    facts: ModelFacts | None = None
    normalised: bool = False  # ``vectors`` are unit rows already (float32 normalised in place at Hub scale)


@dataclass(frozen=True)
class SpaceResult:
    summary: SpaceSummary
    clusters: list[Cluster]
    changes: list[ClusterChange]
    new_models: list[NewModel]
    next_number: int
    map: SpaceMap
    seconds: dict[str, float] = field(default_factory=dict, compare=False)  # where the time went, for the log


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
    clock = _Clock()
    ids = data.repo_ids
    facts = (data.facts or facts_of(data.records)).models
    unit = data.vectors if data.normalised else clustering.normalise(data.vectors) if ids else np.zeros((0, 0))
    labels, method = clustering.cluster_unit(unit, params.clustering) if ids else (np.zeros(0, np.int64), "")
    clock.lap("cluster")
    groups = clustering.groups(ids, labels)
    before = {c.id: frozenset(c.members) for c in previous}
    matches = match.match([frozenset(g) for g in groups], before, params.jaccard_min)
    cluster_ids, next_number = match.cluster_ids(matches, next_number)
    names = _names(data, facts, groups, cluster_ids)
    clock.lap("name")
    clusters = [
        Cluster(cid, data.space_id, g, names[cid], clustering.centroid(unit[np.flatnonzero(labels == i)]))
        for i, (cid, g) in enumerate(zip(cluster_ids, groups, strict=True))
    ]
    changes = match.changes(data.space_id, [(c.id, frozenset(c.members)) for c in clusters], before, matches)
    label_of = {m: c.id for c in clusters for m in c.members}
    new_rows = [i for i, r in enumerate(ids) if _new(data, facts, i, since, previously_clustered)]
    new_models = _new_models(data, facts, unit, new_rows, label_of, params.neighbours)
    clock.lap("neighbours")
    space_map = _map(data, unit, labels, cluster_ids, names, new_rows)
    clock.lap("map")
    summary = SpaceSummary(data.space_id, data.base, len(ids), len(label_of), method)
    return SpaceResult(summary, clusters, changes, new_models, next_number, space_map, clock.laps)


class _Clock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now


def _map(
    data: SpaceInput,
    unit: np.ndarray,
    labels: np.ndarray,
    cluster_ids: list[str],
    names: dict[str, str],
    new_rows: list[int],
) -> SpaceMap:
    """The space's map: arrays always, a ``MapPoint`` per model too while the space is small."""
    ids = data.repo_ids
    xy = project_2d(unit) if ids else np.zeros((0, 2))
    fresh = np.zeros(len(ids), dtype=bool)
    fresh[new_rows] = True
    layer = MapLayer(xy, labels, tuple(cluster_ids), fresh)
    title = f"{data.space_id} ({data.base}): {len(ids)} models, {len(cluster_ids)} clusters"
    if len(ids) > SCATTER_MAX:
        return SpaceMap(data.space_id, title, (), names, layer)
    of = [cluster_ids[k] if k >= 0 else None for k in labels.tolist()]
    points = tuple(MapPoint(r, float(xy[i, 0]), float(xy[i, 1]), of[i], bool(fresh[i])) for i, r in enumerate(ids))
    return SpaceMap(data.space_id, title, points, names, layer)


def _names(
    data: SpaceInput, facts: Mapping[str, ModelFact], groups: list[tuple[str, ...]], cluster_ids: list[str]
) -> dict[str, str]:
    """Readable names by cluster id; a cluster without one, or sharing one, gets its id added."""
    # Only the bases models are embedded against (a family space has several): a merge's base_models list the
    # finetunes it merges after its base, and those names are telling.
    known = [facts[r] for r in data.repo_ids if r in facts]
    firsts = {f.first_base for f in known if f.first_base}
    ignore = naming.base_words([data.base, *sorted(firsts)])
    tokens = {}
    for repo_id in data.repo_ids:
        found = facts.get(repo_id)
        own = found.tokens if found else naming.model_tokens(repo_id, (), "")
        tokens[repo_id] = own - ignore if not own.isdisjoint(ignore) else own
    raw = naming.cluster_names(groups, tokens)
    counts = Counter(raw)
    return {
        cid: (f"cluster {cid}" if not name else name if counts[name] == 1 else f"{name} ({cid})")
        for cid, name in zip(cluster_ids, raw, strict=True)
    }


def _new(
    data: SpaceInput, facts: Mapping[str, ModelFact], row: int, since: datetime, previously_clustered: frozenset[str]
) -> bool:
    repo_id = data.repo_ids[row]
    found = facts.get(repo_id)
    first_seen = found.first_seen if found else None
    return window.is_new(repo_id, embedded_at=data.embedded_at[row], first_seen=first_seen, since=since,
                  previously_clustered=previously_clustered)  # fmt: skip


def _new_models(
    data: SpaceInput,
    facts: Mapping[str, ModelFact],
    unit: np.ndarray,
    new_rows: list[int],
    label_of: Mapping[str, str],
    k: int,
) -> list[NewModel]:
    established = np.ones(len(data.repo_ids), dtype=bool)
    established[new_rows] = False
    found = neighbours.nearest(unit, new_rows, np.flatnonzero(established), k)
    out = []
    for row, near in zip(new_rows, found, strict=True):
        repo_id = data.repo_ids[row]
        fact = facts.get(repo_id)
        out.append(
            NewModel(
                repo_id=repo_id,
                space_id=data.space_id,
                relation=fact.relation if fact else "unknown",
                created_at=fact.created_at if fact else None,
                first_seen=fact.first_seen if fact else None,
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


def with_records(models: Sequence[NewModel], records: Mapping[str, ModelRecord]) -> list[NewModel]:
    """``models`` with each neighbour's details from ``records`` (neighbours without a record stay bare)."""
    out = []
    for m in models:
        near = (Neighbor.of(n.rank, n.score, records.get(n.repo_id), n.repo_id, n.cluster) for n in m.neighbors)
        out.append(replace(m, neighbors=tuple(near)))
    return out


def with_labels(models: Sequence[NewModel], index: Index, space_id: str) -> list[NewModel]:
    """``models`` with their stored suggested labels, stale ones marked (refreshed before the report is built,
    ``run_report``, unless left to ``hubdelta labels``: a large space's whole labelling)."""
    stored = read_labels(index, space_id, [m.repo_id for m in models]) if models else {}
    return [replace(m, labels=stored.get(m.repo_id)) for m in models]


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


def with_copies(index: Index, summary: SpaceSummary) -> SpaceSummary:
    """``summary`` with its space's copy groups and the bytes its copies did not download."""
    groups, near = index.copies.report_groups(summary.space_id)
    reused, saved = index.copies.saved_bytes(summary.space_id)
    return replace(summary, copy_groups=tuple(g.members for g in groups), copies_reused=reused,
                   bytes_not_downloaded=saved, near_checked=near)  # fmt: skip


def space_input(
    index: Index, space_id: str, space: SpaceRow, facts: ModelFacts, params: ReportParams | None = None
) -> SpaceInput:
    """One space's visible vectors, sorted by repo id, with every model's facts (no records).

    A space larger than ``exact_max`` rows is normalised in place to float32 unit rows: the float64 copy that
    small spaces get would be 4.6 GB at 1M x 576.
    """
    # Removed models keep their vectors but are hidden from queries, and from reports.
    matrix = index.vectors.visible_matrix(space_id)
    large = len(matrix.repo_ids) > (params or ReportParams()).clustering.exact_max
    vectors = clustering.normalise_in_place(matrix.vectors) if large else matrix.vectors
    family = space.params.get("family")
    base = f"family {family}" if family else str(space.params.get("base_repo", ""))
    return SpaceInput(space_id, base, matrix.repo_ids, vectors, matrix.embedded_at, {}, facts, normalised=large)


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
    facts = read_facts(index)
    previous_clusters = previous.clusters if previous else {}
    clustered_before = frozenset(m for cs in previous_clusters.values() for c in cs for m in c.members)
    numbers = next_numbers(previous)
    results = []
    for space_id, space in sorted(index.vectors.spaces().items()):
        data = space_input(index, space_id, space, facts, params)
        result = analyse_space(data, since=since, previous=previous_clusters.get(space_id, ()),
                               next_number=numbers.get(space_id, 1), previously_clustered=clustered_before,
                               params=params)  # fmt: skip
        del data  # the space's vectors: the next space's may be as large
        result = replace(result, summary=with_copies(index, result.summary))
        listed = {n.repo_id for m in result.new_models for n in m.neighbors}
        result = replace(result, new_models=with_records(result.new_models, index.models.get(listed)))
        result = replace(result, new_models=with_labels(result.new_models, index, space_id))
        log.info("report space", space=space_id, vectors=result.summary.vectors, method=result.summary.method,
                 clusters=len(result.clusters), new=len(result.new_models), **result.seconds)  # fmt: skip
        results.append(result)
    return Report(
        report_id=report_id or window.report_id(now, ()),
        created_at=now,
        since=since,
        spaces=tuple(r.summary for r in results),
        new_models=tuple(m for r in results for m in r.new_models),
        clusters=tuple(c for r in results for c in r.clusters),
        changes=tuple(c for r in results for c in r.changes),
        failures=tuple(facts.failures),
        previous_id=previous.report_id if previous else None,
        params=params.to_dict(),
        next_cluster={r.summary.space_id: r.next_number for r in results},
        maps=tuple(r.map for r in results),
    )
