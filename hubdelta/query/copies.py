"""Copy groups on the read side: ``similar`` shows each group once; ``show`` names a model's copies.

Which models are copies of each other is the index's to say (:meth:`hubdelta.index.copies_store.CopiesStore
.groups`: equal fingerprints, or near-copy vectors); here it is only applied to an answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hubdelta.index.copies import CopyGroup
from hubdelta.index.store import Index

Hits = list[tuple[str, float]]


@dataclass(frozen=True)
class Collapsed:
    """One row of a collapsed answer: the group's representative (or a model with no copy), its best score, and
    the other members of its group found among the hits."""

    repo_id: str
    score: float
    copies: tuple[str, ...] = ()


def collapse(hits: Hits, groups: Sequence[CopyGroup]) -> list[Collapsed]:
    """Each group among ``hits`` (best first) as one row where its first member ranked (pure)."""
    group_of = {m: g for g in groups for m in g.members}
    found = {h[0] for h in hits}
    rows: list[Collapsed] = []
    done: set[str] = set()
    for repo_id, score in hits:
        g = group_of.get(repo_id)
        if g is None:
            rows.append(Collapsed(repo_id, score))
            continue
        if g.representative in done:
            continue
        done.add(g.representative)
        present = [m for m in g.members if m in found]
        rows.append(Collapsed(present[0], score, tuple(present[1:])))
    return rows


def collapsed_nearest(
    index: Index,
    space_id: str,
    k: int,
    search: Callable[[int], Hits],
) -> list[Collapsed]:
    """The ``k`` best rows of ``search(n)`` (the n nearest hits) once copy groups are collapsed: asks for more
    hits while groups ate some of the k and more are there."""
    fetch = k
    while True:
        hits = search(fetch)
        rows = collapse(hits, index.copies.groups(space_id, [h[0] for h in hits]))
        if len(rows) >= k or len(hits) < fetch:
            return rows[:k]
        fetch = 2 * fetch + (k - len(rows))


def group_of(index: Index, space_id: str, repo_id: str, near: Sequence[str]) -> CopyGroup | None:
    """``repo_id``'s copy group in ``space_id`` (``near``: its nearest models, the candidates for near-copies)."""
    return index.copies.group_of(space_id, repo_id, near)
