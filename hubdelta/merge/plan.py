"""Pure decisions of ``hubdelta merge-plan``: which models to merge, and why (numpy only, no I/O).

As the paper's merging study (Delta Activations, Xu et al. 2025, section on model merging) chooses: an anchor,
then the models most dispersed from it and from each other in the embedding space. Dispersion is greedy
farthest-point selection on cosine distance: each next member is the candidate whose *nearest* already-chosen
member is farthest (max-min), so the set spreads over the space instead of piling into one direction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hubdelta.index.records import ModelRecord, Relation

# Relations whose weights can be merged onto their base: an adapter's delta (B @ A * scaling) or a full model's
# (weights - base). Quantized children store other numbers than the base's weights.
MERGEABLE = frozenset({Relation.ADAPTER, Relation.FINETUNE, Relation.MERGE})


@dataclass(frozen=True)
class Member:
    """One model of a proposed merge set, with why it was chosen."""

    repo_id: str
    relation: str | None  # adapter / finetune / merge; None for a vector without a record
    cluster: str | None  # its cluster in the latest report (or computed now), if any
    reason: str
    distance: float | None  # cosine distance to the nearest member chosen before it (None for the anchor)
    nearest: str | None  # that member

    def to_dict(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "relation": self.relation, "cluster": self.cluster, "reason": self.reason,
                "distance": self.distance, "nearest_chosen": self.nearest}  # fmt: skip


@dataclass(frozen=True)
class MergePlan:
    """A proposed merge set of one space: the anchor first, then the members in the order they were chosen."""

    space_id: str
    base: str
    anchor_rule: str  # "given" or how the anchor was chosen
    members: tuple[Member, ...]
    cosines: tuple[tuple[float, ...], ...]  # pairwise cosines of the members, in ``members`` order
    clusters_covered: tuple[str, ...]
    clusters_total: int
    candidates: int  # models the space offered after --where and the compatibility rule, anchor included
    excluded: Mapping[str, int]  # why other models of the space were left out -> how many
    where: str | None = None
    cluster_source: str = ""

    @property
    def repo_ids(self) -> tuple[str, ...]:
        return tuple(m.repo_id for m in self.members)

    @property
    def mean_cosine(self) -> float:
        """The mean pairwise cosine of the set (lower: more dispersed); 1.0 for a single model."""
        n = len(self.cosines)
        if n < 2:
            return 1.0
        return float(np.mean([self.cosines[i][j] for i in range(n) for j in range(i + 1, n)]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space_id, "base": self.base, "anchor": self.members[0].repo_id,
            "anchor_rule": self.anchor_rule, "k": len(self.members), "where": self.where,
            "members": [m.to_dict() for m in self.members], "cosines": [list(r) for r in self.cosines],
            "mean_cosine": round(self.mean_cosine, 6), "clusters_covered": list(self.clusters_covered),
            "clusters_total": self.clusters_total, "cluster_source": self.cluster_source,
            "candidates": self.candidates, "excluded": dict(self.excluded),
        }  # fmt: skip


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float64 (a zero row stays zero)."""
    v = np.asarray(vectors, dtype=np.float64)  # (N, C)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


def medoid(unit: np.ndarray) -> int:
    """The row with the highest mean cosine to all others (the most central model); ties: the lowest row."""
    # Σ_j cos(i, j) = u_i · Σ_j u_j: one pass over the rows, never the (N, N) matrix of a big space
    return int(np.argmax(unit @ unit.sum(axis=0)))


def farthest_points(
    unit: np.ndarray, anchor: int, k: int, groups: Sequence[int] | None = None
) -> list[tuple[int, float | None, int | None]]:
    """Greedy max-min cosine-distance selection of ``k`` rows starting from ``anchor``.

    ``groups``: a copy-group label per row (-1: no copy); once a row is chosen, the other rows of its group are
    not candidates any more (a re-upload of a member adds nothing to a merge). ``k`` must not exceed
    :func:`distinct`.

    Returns:
        ``(row, distance to the nearest row chosen before it, that row)`` in the order chosen; the anchor first
        with ``(anchor, None, None)``. Ties go to the lowest row, so the answer is deterministic.
    """
    labels = np.asarray(groups if groups is not None else [-1] * len(unit))
    assert 1 <= k <= distinct(labels), (k, len(unit))
    chosen: list[tuple[int, float | None, int | None]] = [(anchor, None, None)]
    nearest_d = 1.0 - unit @ unit[anchor]  # (N,) distance of every row to its nearest chosen row
    nearest_i = np.full(len(unit), anchor)
    taken = np.zeros(len(unit), dtype=bool)

    def take(row: int) -> None:
        taken[row] = True
        if labels[row] >= 0:
            taken[labels == labels[row]] = True

    take(anchor)
    while len(chosen) < k:
        scores = np.where(taken, -np.inf, nearest_d)
        row = int(np.argmax(scores))
        chosen.append((row, float(nearest_d[row]), int(nearest_i[row])))
        take(row)
        d = 1.0 - unit @ unit[row]
        closer = d < nearest_d
        nearest_d = np.where(closer, d, nearest_d)
        nearest_i = np.where(closer, row, nearest_i)
    return chosen


def distinct(groups: Sequence[int] | np.ndarray) -> int:
    """How many rows a merge set can hold: rows without a copy (-1) plus one a copy group."""
    labels = np.asarray(groups)
    return int((labels < 0).sum()) + len(set(labels[labels >= 0].tolist()))


def group_labels(ids: Sequence[str], groups: Sequence[Sequence[str]]) -> list[int]:
    """A copy-group label per id (-1 for an id in no group), for :func:`farthest_points`."""
    label = {m: n for n, members in enumerate(groups) for m in members}
    return [label.get(i, -1) for i in ids]


def nearest_rows(unit: np.ndarray, anchor: int, k: int) -> list[int]:
    """The anchor and its ``k - 1`` nearest rows by cosine (the same-cluster set the evaluation compares with)."""
    sims = unit @ unit[anchor]
    sims[anchor] = np.inf
    return [int(i) for i in np.argsort(-sims, kind="stable")[:k]]


def unmergeable(record: ModelRecord | None, base: str) -> str | None:
    """Why a model cannot join a merge onto ``base`` (None: it can)."""
    if record is None:
        return "no record (relation unknown)"
    relation = record.model.relation
    if relation not in MERGEABLE:
        return f"{relation.value} weights cannot be merged"
    bases = record.model.base_models
    if bases and base not in bases:
        return f"its base is {bases[0]}, not {base}"
    return None


def pairwise(unit: np.ndarray, rows: Sequence[int]) -> tuple[tuple[float, ...], ...]:
    """The cosines between ``rows``, rounded to 6 places (1.0 on the diagonal)."""
    sub = unit[list(rows)]  # (k, C)
    return tuple(tuple(round(float(x), 6) for x in r) for r in sub @ sub.T)


def describe(
    ids: Sequence[str],
    picks: Sequence[tuple[int, float | None, int | None]],
    clusters: Mapping[str, str],
    relations: Mapping[str, str],
    anchor_rule: str,
) -> tuple[Member, ...]:
    """The members of a selection by :func:`farthest_points`, each with why it was chosen."""
    out = []
    for n, (row, distance, near) in enumerate(picks):
        rid = ids[row]
        if distance is None or near is None:
            out.append(Member(rid, relations.get(rid), clusters.get(rid), f"anchor ({anchor_rule})", None, None))
        else:
            out.append(Member(rid, relations.get(rid), clusters.get(rid), _reason(n, distance, ids[near]),
                              round(distance, 6), ids[near]))  # fmt: skip
    return tuple(out)


def _reason(n: int, distance: float, nearest: str) -> str:
    return f"pick {n}, farthest from the set: cosine {1 - distance:.3f} to its nearest member, {nearest}"


def covered(members: Sequence[str], clusters: Mapping[str, str]) -> tuple[str, ...]:
    """The distinct clusters the members fall in, in member order."""
    seen: dict[str, None] = {}
    for m in members:
        if m in clusters:
            seen.setdefault(clusters[m], None)
    return tuple(seen)
