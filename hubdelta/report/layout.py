"""Each space's map layout, computed when its vectors (or the latest report) change and stored in the index, so
that ``hubdelta serve`` draws a million points without projecting anything at request time.

A layout is the report's map of the space, as of now:

- **coordinates**: the same projection as the nightly report's map (:func:`hubdelta.report.map.project_2d` of
  the normalised visible vectors: an exact SVD up to 50,000 rows, the blocked PCA above), scaled into [-1, 1]
  with both axes by one factor, so distances keep their proportions;
- **clusters**: each model's cluster in the latest stored report (by membership; the report's names), -1 for a
  model in none of them: noise, or embedded after that report;
- **new**: what the nightly report calls new (:func:`hubdelta.report.window.is_new`) in the window of the
  latest report, from its ``since`` to now: the models that report listed as new, and those embedded after it
  that the next report would list (first seen after ``since``, or never clustered by the report before it).
  Before any report nothing is new: there is no window yet.

Deterministic: the same vectors and report give the same layout and the same version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import structlog

from hubdelta.index.door import open_writer
from hubdelta.index.layouts import Layout, layout_version
from hubdelta.index.reports import StoredCluster, StoredReport
from hubdelta.index.store import Index
from hubdelta.kernel.errors import NotFoundError
from hubdelta.kernel.settings import Settings
from hubdelta.report import cluster as clustering
from hubdelta.report import window
from hubdelta.report.build import SpaceInput, space_input
from hubdelta.report.facts import ModelFacts
from hubdelta.report.map import project_2d
from hubdelta.report.match import id_order

log = structlog.get_logger(__name__)


def compute_layout(index: Index, space_id: str, report: StoredReport | None, *, now: datetime | None = None) -> Layout:
    """The layout of ``space_id``'s visible vectors, with ``report``'s clusters (None: no clusters, none new).

    Args:
        index: an open index (read-only suffices).
        space_id: a space of the index.
        report: the latest stored report (``index.reports.latest()``).
        now: its ``computed_at`` (default: the current UTC time); not part of its version.

    Raises:
        NotFoundError: no such space.
    """
    space = index.vectors.spaces().get(space_id)
    if space is None:
        raise NotFoundError(space_id, "no such space", fix="see `hubdelta status` for the spaces")
    source = index.vectors.fingerprint(space_id)  # before the vectors: a write in between only recomputes again
    data = space_input(index, space_id, space, ModelFacts({}, []))
    ids, embedded_at = data.repo_ids, data.embedded_at
    xy = unit_square(project_2d(_unit(data)) if ids else np.zeros((0, 2)))
    del data  # the space's vectors (2.3 GB at 1M x 576); the rest needs ids and times only
    names, cluster_ids, cluster = clusters_of(ids, report.clusters.get(space_id, ()) if report else ())
    new = new_mask(index, ids, embedded_at, report)
    version = layout_version(ids, xy, cluster, new, names, cluster_ids, report.report_id if report else None)
    return Layout(space_id=space_id, version=version, computed_at=now or datetime.now(UTC),
                  report_id=report.report_id if report else None, repo_ids=ids, xy=xy, cluster=cluster,
                  cluster_names=names, new=new, cluster_ids=cluster_ids, source=source)  # fmt: skip


def _unit(data: SpaceInput) -> np.ndarray:
    """The space's rows as unit vectors, as the report clusters and projects them (float32 in place when large)."""
    return data.vectors if data.normalised else clustering.normalise(data.vectors)


def unit_square(xy: np.ndarray) -> np.ndarray:
    """``(N, 2)`` coordinates centred and scaled by one factor so that the wider axis spans exactly [-1, 1]."""
    if not len(xy):
        return np.zeros((0, 2), np.float32)
    lo, hi = xy.min(axis=0).astype(np.float64), xy.max(axis=0).astype(np.float64)
    half = float((hi - lo).max()) / 2
    scaled = (xy - (lo + hi) / 2) / half if half > 0 else np.zeros(xy.shape)
    return np.clip(scaled, -1.0, 1.0).astype(np.float32)


def clusters_of(repo_ids: Sequence[str], clusters: Iterable[StoredCluster]) -> tuple[list[str], list[str], np.ndarray]:
    """Cluster names and ids in id order (c1, c2, ..., c10), and each repo's cluster index (-1: in none)."""
    ordered = sorted(clusters, key=lambda c: id_order(c.id))
    index_of = {m: i for i, c in enumerate(ordered) for m in c.members}
    cluster = np.fromiter((index_of.get(r, -1) for r in repo_ids), np.int32, len(repo_ids))
    return [c.name for c in ordered], [c.id for c in ordered], cluster


def new_mask(
    index: Index, repo_ids: Sequence[str], embedded_at: Sequence[datetime | None], report: StoredReport | None
) -> np.ndarray:
    """Which rows the nightly report's rule calls new in ``report``'s window (see the module docstring)."""
    new = np.zeros(len(repo_ids), dtype=bool)
    if report is None:
        return new
    since = report.since
    # Rows embedded before the window are never new: only the rest need a first-seen time and the clusters.
    rows = [i for i, t in enumerate(embedded_at) if t is None or t > since]
    if not rows:
        return new
    wanted = {repo_ids[i] for i in rows}
    first_seen = _first_seen(index, wanted)
    clustered = _clustered_before(index, report)
    for i in rows:
        r = repo_ids[i]
        new[i] = window.is_new(r, embedded_at=embedded_at[i], first_seen=first_seen.get(r), since=since,
                               previously_clustered=clustered)  # fmt: skip
    return new


def _first_seen(index: Index, wanted: set[str]) -> dict[str, datetime | None]:
    """First-seen times of ``wanted`` repos, read two columns at a time (no records: there may be a million)."""
    found: dict[str, datetime | None] = {}
    for batch in index.models.column_batches(("repo_id", "first_seen")):
        found.update((r, t) for r, t in zip(batch["repo_id"], batch["first_seen"], strict=True) if r in wanted)
    return found


def _clustered_before(index: Index, report: StoredReport) -> frozenset[str]:
    """Every model the report before ``report`` clustered, in any space: what ``report`` compared against."""
    previous_id = report.summary.get("previous_id")
    previous = index.reports.get(str(previous_id)) if previous_id else None
    if previous is None:
        return frozenset()
    return frozenset(m for cs in previous.clusters.values() for c in cs for m in c.members)


@dataclass(frozen=True)
class Refreshed:
    """What a refresh did: points per space recomputed, and per space whose stored layout was current."""

    computed: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    stopped: bool = False  # should_stop ended it before every space was looked at


def refresh(
    index: Index,
    spaces: Iterable[str] | None = None,
    *,
    force: bool = False,
    should_stop: Callable[[], bool] | None = None,
    now: datetime | None = None,
) -> Refreshed:
    """Recompute and store the layouts of ``spaces`` (default: all) whose vectors or latest report changed.

    A stored layout is current when it was computed from the same vectors (``index.vectors.fingerprint``: count,
    latest write, hidden models) and the same latest report; ``force`` recomputes it anyway.

    Raises:
        NotFoundError: a space in ``spaces`` that the index does not hold.
        StoreError: the index is read-only.
    """
    wanted = index.vectors.named(spaces)
    report = index.reports.latest()
    report_id = report.report_id if report else None
    heads = index.layouts.heads()
    out = Refreshed()
    for space_id in wanted:
        head = heads.get(space_id)
        if not force and head and (head.source, head.report_id) == (index.vectors.fingerprint(space_id), report_id):
            out.unchanged[space_id] = head.n
            continue
        if should_stop is not None and should_stop():
            return Refreshed(out.computed, out.unchanged, stopped=True)
        layout = compute_layout(index, space_id, report, now=now)
        index.layouts.put(layout)
        out.computed[space_id] = layout.n
        log.info("layout stored", space=space_id, points=layout.n, clusters=len(layout.cluster_names),
                 new=int(layout.new.sum()), version=layout.version)  # fmt: skip
    return out


def refresh_layouts(
    settings: Settings,
    spaces: Iterable[str] | None = None,
    *,
    force: bool = False,
    command: str = "hubdelta layout",
    should_stop: Callable[[], bool] | None = None,
) -> Refreshed:
    """:func:`refresh` under the writer lock (what ``hubdelta layout`` calls).

    Raises:
        IndexLockedError: another writer holds the index.
        NotFoundError: an unknown space in ``spaces``.
    """
    with open_writer(settings, command) as index:
        return refresh(index, spaces, force=force, should_stop=should_stop)


def refresh_after_writes(
    settings: Settings, command: str, *, index: Index | None = None, should_stop: Callable[[], bool] | None = None
) -> Refreshed | None:
    """Refresh the layouts after a run that wrote vectors or a report, never failing that run.

    A layout is a view of what the run stored: when it cannot be computed (the index is locked by another
    writer, memory runs out) the run's own results stand, the failure is logged with its fix, and the next
    refresh (the next run, or ``hubdelta layout``) computes it. Returns None after such a failure.

    Args:
        settings: where the index is.
        command: recorded in the writer lock when one is taken.
        index: an index the caller already holds open for writing (the lock is not taken again).
        should_stop: checked between spaces (the daemon's stop).
    """
    try:
        if index is not None:
            return refresh(index, should_stop=should_stop)
        return refresh_layouts(settings, command=f"{command}: layout", should_stop=should_stop)
    except Exception as e:  # any failure: the run that called it has already succeeded
        log.warning("map layouts not refreshed", error=f"{type(e).__name__}: {e}",
                    fix="run `hubdelta layout` once the index is free")  # fmt: skip
        return None
