"""Which of this report's clusters are last report's clusters again (pure).

The rule (docs/report.md): within one space, a current cluster and a previous one are *the same cluster* when
their member sets have Jaccard similarity ``|A ∩ B| / |A ∪ B| >= 0.5``. Pairs are taken greedily, highest
Jaccard first (ties: smaller current index, then lower previous id number), each cluster at most once. Two
disjoint current clusters can both reach 0.5 against one previous cluster only by splitting it in exact halves;
the greedy order then keeps one as its continuation and calls the other new. A matched cluster keeps its
previous id and is ``grown``, ``shrunk`` or ``same`` by member count; an unmatched current cluster is ``new``;
an unmatched previous one is ``dissolved``.

Why Jaccard >= 0.5: it needs the two clusters to share at least half of their union, so a cluster keeps its
identity while it gains up to as many members as it had (a family doubling overnight is still that family),
while a new group that merely absorbs a few old members is new.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hubdelta.report.records import ChangeKind, ClusterChange

JACCARD_MIN = 0.5


def id_order(cluster_id: str) -> tuple[int, str]:
    """Sort key of cluster ids by number: c2 before c10 (an id not of the form c<n> last)."""
    digits = cluster_id[1:] if cluster_id.startswith("c") else ""
    return (int(digits), cluster_id) if digits.isdigit() else (1 << 62, cluster_id)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """``|a ∩ b| / |a ∪ b|`` (0.0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


@dataclass(frozen=True)
class Match:
    """A current cluster (by index) and its previous counterpart (by id), or one side alone."""

    current: int | None
    previous: str | None
    jaccard: float


def match(
    current: Sequence[frozenset[str]], previous: Mapping[str, frozenset[str]], threshold: float = JACCARD_MIN
) -> list[Match]:
    """Pair current clusters with previous ones by the rule above.

    Args:
        current: member sets of this report's clusters of one space.
        previous: member sets of the previous report's clusters of the same space, by cluster id.
        threshold: the least Jaccard that makes two clusters the same.

    Returns:
        One ``Match`` per current cluster, in order (``previous`` None when new), then one per unmatched
        previous cluster (``current`` None: dissolved), by id.
    """
    pairs = sorted(_scored_pairs(current, previous, threshold), key=lambda p: (-p[0], p[1], id_order(p[2])))
    taken: dict[int, tuple[str, float]] = {}
    used: set[str] = set()
    for score, i, pid in pairs:
        if score < threshold:
            break
        if i not in taken and pid not in used:
            taken[i] = (pid, score)
            used.add(pid)
    matches = [Match(i, taken[i][0], taken[i][1]) if i in taken else Match(i, None, 0.0) for i in range(len(current))]
    matches += [Match(None, pid, 0.0) for pid in sorted(previous, key=id_order) if pid not in used]
    return matches


def _scored_pairs(
    current: Sequence[frozenset[str]], previous: Mapping[str, frozenset[str]], threshold: float
) -> list[tuple[float, int, str]]:
    """``(jaccard, current index, previous id)`` of every pair that can reach ``threshold``.

    Only pairs sharing a member can (when the threshold is positive): they are found through each member's
    previous cluster, so a space of 1,000 clusters costs one pass over its members rather than a million set
    unions. The scores are :func:`jaccard`'s exactly (``|A ∩ B| / (|A| + |B| - |A ∩ B|)``).
    """
    if threshold <= 0:
        return [(jaccard(members, old), i, pid) for i, members in enumerate(current) for pid, old in previous.items()]
    owners: dict[str, list[str]] = {}
    for pid, old in previous.items():
        for member in old:
            owners.setdefault(member, []).append(pid)
    pairs = []
    for i, members in enumerate(current):
        shared = Counter(pid for member in members for pid in owners.get(member, ()))
        pairs += [(n / (len(members) + len(previous[pid]) - n), i, pid) for pid, n in shared.items()]
    return pairs


def change_kind(size: int, previous_size: int | None) -> ChangeKind:
    """New without a counterpart; otherwise grown, shrunk or same by member count."""
    if previous_size is None:
        return ChangeKind.NEW
    if size > previous_size:
        return ChangeKind.GROWN
    if size < previous_size:
        return ChangeKind.SHRUNK
    return ChangeKind.SAME


def cluster_ids(matches: Sequence[Match], next_number: int) -> tuple[list[str], int]:
    """Ids of the current clusters: a matched one keeps its previous id, a new one gets ``c<next number>``.

    Numbers are never reused (the caller stores the returned next number), so an id always means one lineage.

    Returns:
        The ids in current order, and the next unused number.
    """
    ids: list[str] = []
    for m in matches:
        if m.current is None:
            continue
        if m.previous is not None:
            ids.append(m.previous)
        else:
            ids.append(f"c{next_number}")
            next_number += 1
    return ids, next_number


def changes(
    space_id: str,
    current: Sequence[tuple[str, frozenset[str]]],
    previous: Mapping[str, frozenset[str]],
    matches: Sequence[Match],
) -> list[ClusterChange]:
    """A ``ClusterChange`` for every match (current clusters given as (id, members), in match order)."""
    out = []
    for m in matches:
        now_id, now = current[m.current] if m.current is not None else (None, frozenset[str]())
        then = previous[m.previous] if m.previous is not None else frozenset[str]()
        if m.current is None:
            kind = ChangeKind.DISSOLVED
        else:
            kind = change_kind(len(now), len(then) if m.previous is not None else None)
        out.append(
            ClusterChange(
                space_id=space_id,
                kind=kind,
                cluster_id=now_id,
                previous_id=m.previous,
                jaccard=round(m.jaccard, 4),
                size=len(now),
                previous_size=len(then),
                added=tuple(sorted(now - then)) if m.previous is not None else (),
                removed=tuple(sorted(then - now)),
            )
        )
    return out
