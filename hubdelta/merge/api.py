"""``hubdelta merge-plan``: propose a set of models of one space to merge, and explain it (reads the index only).

The selection itself is pure (:mod:`hubdelta.merge.plan`); this module reads what it needs (the space's visible
vectors, the models' records, ``--where``, the clusters of the latest report) and refuses bad input in one line
before anything else runs. ``--apply`` lives in :mod:`hubdelta.merge.apply` (torch), imported only when asked.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from hubdelta.index.door import reading
from hubdelta.index.embeddings import SpaceRow
from hubdelta.index.records import ModelRecord, visible_to_queries
from hubdelta.index.store import Index
from hubdelta.kernel.errors import HubdeltaError, NotFoundError, UsageError
from hubdelta.kernel.settings import Settings
from hubdelta.merge.plan import (
    MergePlan,
    covered,
    describe,
    distinct,
    farthest_points,
    group_labels,
    medoid,
    pairwise,
    unit_rows,
    unmergeable,
)
from hubdelta.query.api import NOT_EMBEDDED_FIX, check_filter, removed_error
from hubdelta.query.choose import close_ids, model_filter

MEDOID_RULE = "none given: the medoid, the mergeable model with the highest mean cosine to the others"


@dataclass(frozen=True)
class Candidates:
    """What a space offers a merge: unit vectors of the mergeable models (sorted ids) and why others are out."""

    space_id: str
    base: str
    ids: list[str]
    unit: np.ndarray  # (N, C) float64 unit rows, in ``ids`` order
    relations: dict[str, str]
    excluded: dict[str, int]


def choose_space_id(spaces: dict[str, SpaceRow], space: str | None) -> str:
    """``--space``, checked; the only space when there is one.

    Raises:
        UsageError: no space given while several exist, or none exists.
        NotFoundError: the space does not exist.
    """
    if space is None:
        if len(spaces) == 1:
            return next(iter(spaces))
        raise UsageError("--space", f"{len(spaces)} spaces in the index" if spaces else "no space in the index",
                         fix=f"choose one of: {', '.join(spaces)}" if spaces else "embed models first")  # fmt: skip
    if space not in spaces:
        raise NotFoundError("--space", f"space {space!r} does not exist", fix=f"use one of: {', '.join(spaces)}")
    return space


def check_anchor(index: Index, anchor: str, space_id: str) -> None:
    """The anchor is in the index, visible, and embedded in ``space_id``.

    Raises:
        NotFoundError: not in the index (with close ids).
        HubdeltaError: hidden from queries, or not embedded yet.
        UsageError: embedded in other spaces only.
    """
    record = index.models.get([anchor]).get(anchor)
    if record is not None and not visible_to_queries(record.status):
        raise removed_error(record)
    vectors = index.vectors.of_repo(anchor)
    if space_id in vectors:
        return
    if vectors:
        raise UsageError("--anchor", f"{anchor} is embedded in {', '.join(sorted(vectors))}, not in {space_id}",
                         fix="choose an anchor of this space, or pass its own space with --space")  # fmt: skip
    if record is None:
        close = close_ids(anchor, index.models.ids())
        hint = f"; close: {', '.join(close)}" if close else ""
        raise NotFoundError("--anchor", f"{anchor} is not in the index{hint}", fix="check the spelling")
    why = f" ({record.reason})" if record.reason else ""
    raise HubdeltaError(f"{anchor} is not embedded yet: status {record.status.value}{why}",
                        fix=NOT_EMBEDDED_FIX.get(record.status, "run hubdelta embed"))  # fmt: skip


def candidates(index: Index, space_id: str, where: str | None, anchor: str | None) -> Candidates:
    """The space's visible models that pass ``where`` and can be merged onto its base (the anchor always kept).

    Raises:
        UsageError: a malformed ``where``.
        HubdeltaError: the anchor itself cannot be merged.
    """
    base = str(index.vectors.spaces()[space_id].params.get("base_repo", ""))
    stored = index.vectors.visible_matrix(space_id)  # one float32 matrix, rows in repo-id order
    records = index.models.get(stored.repo_ids)
    chosen = model_filter(where, None)
    passing: set[str] | None = None
    if chosen is not None:
        check_filter(index, chosen)
        passing = set(index.models.ids(chosen))
    excluded: Counter[str] = Counter()
    rows = []
    for row, rid in enumerate(stored.repo_ids):
        why = unmergeable(records.get(rid), base)
        if rid == anchor and why is not None:
            raise HubdeltaError(f"{anchor} cannot be merged: {why}",
                                fix="choose an adapter or a full finetune of the space's base as --anchor")  # fmt: skip
        if why is None and passing is not None and rid not in passing and rid != anchor:
            why = "left out by --where"
        if why is not None:
            excluded[why] += 1
            continue
        rows.append(row)
    ids = [stored.repo_ids[r] for r in rows]
    relations = {r: _relation(records.get(r)) for r in ids}
    return Candidates(space_id, base, ids, unit_rows(stored.vectors[rows]), relations, dict(excluded))


def _relation(record: ModelRecord | None) -> str:
    return record.model.relation.value if record is not None else "unknown"


def merge_plan(
    settings: Settings, *, space: str | None = None, anchor: str | None = None, k: int = 3, where: str | None = None
) -> MergePlan:
    """Propose ``k`` models of ``space`` to merge: the anchor, then the models most dispersed from it and each other.

    Args:
        settings: where the index is.
        space: the space id (default: the only one).
        anchor: the model the set is built around (default: the medoid of the mergeable models).
        k: the size of the set, the anchor included.
        where: SQL over the models' metadata restricting the other members (the anchor is kept).

    Raises:
        UsageError: a bad ``k``, space, anchor (another space, unknown) or ``where``; ``k`` larger than the space
            offers.
        HubdeltaError: the anchor is not embedded, is hidden, or cannot be merged.
    """
    if k < 1:
        raise UsageError("-k", f"{k} is not a positive count", fix="use e.g. -k 3")
    from hubdelta.task.api import space_clusters

    with reading(settings, None) as index:
        space_id = choose_space_id(index.vectors.spaces(), space)
        if anchor is not None:
            check_anchor(index, anchor, space_id)
        offer = candidates(index, space_id, where, anchor)
        clusters, source, _ = space_clusters(index, space_id)
        copies, _ = index.copies.report_groups(space_id)  # the index's rule: same files, or near-copy vectors
    labels = group_labels(offer.ids, [g.members for g in copies])
    offered = distinct(labels)  # a re-upload and its original are one model to a merge
    if k > offered:
        after = " after --where" if where else ""
        apart = " (copies counted once)" if offered < len(offer.ids) else ""
        raise UsageError("-k", f"{k} is more than the {offered} mergeable models {space_id} offers{after}{apart}",
                         fix=f"use -k {offered} or less" + (", or loosen --where" if where else ""))  # fmt: skip
    names = {m: c.name for c in clusters for m in c.members}
    rule = "given" if anchor is not None else MEDOID_RULE
    start = offer.ids.index(anchor) if anchor is not None else medoid(offer.unit)
    picks = farthest_points(offer.unit, start, k, labels)
    members = describe(offer.ids, picks, names, offer.relations, rule)
    rows = [p[0] for p in picks]
    hit = covered([m.repo_id for m in members], names)
    return MergePlan(space_id, offer.base, rule, members, pairwise(offer.unit, rows), hit, len(clusters),
                     len(offer.ids), offer.excluded, where, source)  # fmt: skip
