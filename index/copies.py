"""Copies in the index: which models of a space are the same weights, found before download or after embedding.

One table (migration m006), ``copies``: one row a (space, repo) that was embedded with a **fingerprint** (the
sha256 of every weight file plus the blob id of the configs that change what the weights mean, from the Hub's
listing alone: :mod:`hubdelta.embedder.copies`), its weight bytes, and ``copy_of``: the model whose vector it
reused without downloading (None for a model that was downloaded and computed).

Groups (pure, :func:`copy_groups`): models of one space are in one group when their fingerprints are equal
(byte-identical re-uploads) or their vectors are **near-copies** (cosine >= :data:`NEAR_COSINE` and norms within
:data:`NEAR_NORM`: the same behaviour on the probes, e.g. a re-save in another dtype or shard layout). A group's
representative is its earliest created member (the Hub's ``createdAt``, then the repo id), whoever was downloaded:
the answer is the same whatever order a run took them in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa

from hubdelta.index.schema import TIMESTAMP, datetimes, utc

COPIES = "copies"
NEAR_COSINE = 0.999  # the same direction, up to a re-save's rounding
NEAR_NORM = 0.01  # and the same length, within 1% (a LoRA with a doubled alpha points the same way)

COPIES_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # "<space_id>|<repo_id>": one merge key
        pa.field("space_id", pa.string(), nullable=False),
        pa.field("repo_id", pa.string(), nullable=False),
        pa.field("sha", pa.string()),
        pa.field("fingerprint", pa.string(), nullable=False),
        pa.field("weight_bytes", pa.int64(), nullable=False),
        pa.field("copy_of", pa.string()),  # the model whose vector it reused, not downloaded; None: computed
        pa.field("recorded_at", TIMESTAMP),
    ]
)


@dataclass(frozen=True)
class CopyRow:
    """One embedded model's fingerprint in one space, and whose vector it reused (if any)."""

    space_id: str
    repo_id: str
    sha: str | None
    fingerprint: str
    weight_bytes: int
    copy_of: str | None = None
    recorded_at: datetime | None = None


@dataclass(frozen=True)
class CopyGroup:
    """Models of one space that are the same weights or behave identically: ``members`` in representative order
    (the representative first); ``near`` when some member joined by its vector rather than its files."""

    members: tuple[str, ...]
    near: bool = False

    @property
    def representative(self) -> str:
        return self.members[0]


def copies_to_table(rows: Sequence[CopyRow]) -> pa.Table:
    return pa.table(
        {
            "key": [f"{r.space_id}|{r.repo_id}" for r in rows],
            "space_id": [r.space_id for r in rows],
            "repo_id": [r.repo_id for r in rows],
            "sha": [r.sha for r in rows],
            "fingerprint": [r.fingerprint for r in rows],
            "weight_bytes": [int(r.weight_bytes) for r in rows],
            "copy_of": [r.copy_of for r in rows],
            "recorded_at": [utc(r.recorded_at, "recorded_at") for r in rows],
        },
        schema=COPIES_SCHEMA,
    )


def copies_from_table(table: pa.Table) -> list[CopyRow]:
    cols = table.to_pydict()
    when = datetimes(table["recorded_at"])
    return [
        CopyRow(cols["space_id"][i], cols["repo_id"][i], cols["sha"][i], cols["fingerprint"][i],
                int(cols["weight_bytes"][i]), cols["copy_of"][i], when[i])
        for i in range(table.num_rows)
    ]  # fmt: skip


def near_copy(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two vectors of one space are near-copies: cosine >= 0.999 and norms within 1%."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return False
    cosine = float(np.dot(a.astype(np.float64), b.astype(np.float64))) / (na * nb)
    return cosine >= NEAR_COSINE and abs(na - nb) <= NEAR_NORM * max(na, nb)


def copy_groups(
    fingerprints: Mapping[str, str],
    vectors: Mapping[str, np.ndarray],
    order: Callable[[str], tuple[object, ...]],
) -> list[CopyGroup]:
    """The groups of two or more among ``vectors``' models (pure): equal fingerprints, or near-copy vectors.

    Args:
        fingerprints: repo id -> fingerprint (models without one join only by their vectors).
        vectors: repo id -> vector, all of one space: the models to group.
        order: the sort key that picks a group's representative (earliest created first).
    """
    ids = sorted(vectors)
    parent = {k: k for k in ids}

    def root(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    by_print: dict[str, str] = {}
    for k in ids:
        fp = fingerprints.get(k)
        if fp is not None:
            parent[root(k)] = root(by_print.setdefault(fp, k))
    near: set[str] = set()
    for a, b in _near_pairs(ids, vectors):
        if root(a) != root(b):
            near.update((a, b))
            parent[root(a)] = root(b)
    members: dict[str, list[str]] = {}
    for k in ids:
        members.setdefault(root(k), []).append(k)
    groups = [CopyGroup(tuple(sorted(m, key=order)), near=any(k in near for k in m)) for m in members.values()]
    return sorted((g for g in groups if len(g.members) > 1), key=lambda g: order(g.representative))


def _near_pairs(ids: Sequence[str], vectors: Mapping[str, np.ndarray], block: int = 1024) -> list[tuple[str, str]]:
    """Every near-copy pair among ``ids`` (pure), ``block`` rows at a time: the memory is ``block`` x N."""
    if len(ids) < 2:
        return []
    matrix = np.stack([np.asarray(vectors[k], np.float64) for k in ids])
    norms = np.linalg.norm(matrix, axis=1)
    unit = matrix / np.where(norms > 0, norms, 1.0)[:, None]
    pairs = []
    for start in range(0, len(ids), block):
        rows = slice(start, start + block)
        cos = unit[rows] @ unit.T
        same_length = np.abs(norms[rows, None] - norms[None, :]) <= NEAR_NORM * np.maximum(norms[rows, None], norms)
        close = (cos >= NEAR_COSINE) & same_length & (norms[rows, None] > 0) & (norms[None, :] > 0)
        for i, j in zip(*np.nonzero(close), strict=True):
            if start + int(i) < int(j):
                pairs.append((ids[start + int(i)], ids[int(j)]))
    return pairs
