"""Clusters of a space too large for exact HDBSCAN: HDBSCAN on a seeded sample, every other vector assigned.

Exact HDBSCAN (:mod:`hubdelta.report.cluster`) grows as about n^2.2 here: 4.7 s at 10,000 vectors, 52 s at
30,000, ~12 min at 100,000 and more than a day at 1,000,000. Above ``ClusterParams.exact_max`` live vectors a
space is clustered in rounds instead:

1. draw ``sample_size`` of the still unclustered vectors (a generator seeded with ``sample_seed``, rows in
   repo-id order, so the same space gives the same labels) and run the same HDBSCAN on them;
2. measure each cluster's *reach*: the 90th percentile of its sampled members' distances to their nearest
   fellow member (the largest would be set by one stray member), and drop clusters looser than ``looseness`` ×
   the first round's median reach (three outliers that happen to lie near each other, see :func:`_clusters`);
3. give every other unclustered vector the cluster of its nearest clustered sampled member, if it lies within
   ``reach_factor`` × that cluster's reach; else it stays unclustered;
4. repeat on what is left unclustered (small clusters have too few members in the first sample to be found,
   and are found among the left-overs) until at most ``exact_max`` vectors are left, which get exact HDBSCAN,
   or ``max_rounds`` rounds are done.

Why this method (docs/report.md has the measured table): the assignment is one blocked matrix product per
round (1M x 20k in 50 dimensions), so a 1M-vector space clusters in about two minutes on two cores and a few
hundred MB beyond its vectors, and the clusters HDBSCAN finds on a sample are the clusters of the whole space
wherever each cluster has a few sampled members; the rounds recover the smaller ones. On the bench's planted
spaces (bench/report_scale.py) it recovers them with ARI 0.999 at 100k and 1M, as exact HDBSCAN does at 10k-20k
(0.996); with reach 1.0 x the 90th percentile, fringes left over became hundreds of extra small clusters (ARI
0.92), and without the looseness limit, outlier triplets did. An approximate k-NN graph for HDBSCAN would need a
library this project does not ship (scikit-learn has no approximate neighbours), and assigning against the
previous report's clusters would never find a new cluster.

Pure numpy and scikit-learn; all distances are Euclidean on the rows given (the caller's PCA of unit vectors).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hubdelta.report.blocks import rows_per_block

QUANTILE = 0.9  # of members' nearest-member distances: a cluster's reach
Hdbscan = Callable[[np.ndarray], np.ndarray]  # (M, D) points -> (M,) labels, -1 noise


def sampled_labels(
    points: np.ndarray,
    hdbscan: Hdbscan,
    *,
    exact_max: int,
    sample_size: int,
    seed: int,
    reach_factor: float,
    looseness: float,
    max_rounds: int,
) -> np.ndarray:
    """Cluster labels of ``points`` by sampled rounds (see the module docstring); -1 is noise.

    Args:
        points: ``(N, D)`` float rows, in a fixed order.
        hdbscan: the clustering of one sample (the caller's exact HDBSCAN).
        exact_max: left-overs up to this many are clustered exactly, in one last round.
        sample_size: vectors clustered per round.
        seed: the sampling generator's seed.
        reach_factor: how far past its members' 90th-percentile nearest-member distance a cluster reaches.
        looseness: clusters whose reach exceeds this many times the first round's median are dropped.
        max_rounds: sampled rounds at most; what is left after them is noise.

    Returns:
        ``(N,)`` int64 labels, numbered by round (not yet renumbered by first row).
    """
    rng = np.random.default_rng(seed)
    labels = np.full(len(points), -1, dtype=np.int64)
    residual = np.arange(len(points))
    next_label, limit = 0, np.inf
    for _ in range(max_rounds):
        last = len(residual) <= max(exact_max, sample_size)
        sample = residual if last else np.sort(rng.choice(residual, size=sample_size, replace=False))
        found, reach, limit = _clusters(points[sample], hdbscan, limit, looseness)
        if len(reach) == 0:
            break
        members = sample[found >= 0]
        labels[members] = found[found >= 0] + next_label
        if not last:
            rest = np.setdiff1d(residual, sample, assume_unique=True)
            assigned = assign(points, rest, points[members], found[found >= 0], reach * reach_factor)
            labels[rest] = np.where(assigned >= 0, assigned + next_label, -1)
        next_label += len(reach)
        residual = residual[labels[residual] < 0]
        if last or len(residual) == 0:
            break
    return labels


def _clusters(
    points: np.ndarray, hdbscan: Hdbscan, limit: float, looseness: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """HDBSCAN labels of one sample, each cluster's reach, and the limit of reach for every round.

    HDBSCAN with min_cluster_size 3 calls three scattered outliers that happen to lie near each other a cluster;
    on left-overs alone (mostly outliers) it finds hundreds, and assignment would grow each by every outlier
    within its wide reach. Such a cluster is as loose as the outliers are far apart, several times looser than
    a family: a cluster whose reach exceeds ``looseness`` × the median reach of the first round's clusters is
    dropped, its members left as noise.
    """
    found = hdbscan(points)
    if found.max(initial=-1) < 0:
        return found, np.zeros(0), limit
    reach = reaches(points[found >= 0], found[found >= 0])
    if np.isinf(limit):
        limit = looseness * float(np.median(reach))
    kept = np.flatnonzero(reach <= limit)
    number = np.full(len(reach), -1, dtype=np.int64)
    number[kept] = np.arange(len(kept))
    found = np.where(found >= 0, number[np.maximum(found, 0)], -1)
    return found, reach[kept], limit


def reaches(members: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per cluster label 0..L-1, the largest distance from a member to its nearest fellow member.

    Args:
        members: ``(M, D)`` clustered rows; ``labels``: their ``(M,)`` labels.
    """
    nearest = nearest_distances(members, np.arange(len(members)), labels)
    nearest = np.where(np.isfinite(nearest), nearest, 0.0)  # a lone member reaches nothing
    order = np.lexsort((nearest, labels))  # by label, then distance
    counts = np.bincount(labels)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    at = starts + np.floor(QUANTILE * (counts - 1)).astype(np.int64)
    return nearest[order][at]


def nearest_distances(points: np.ndarray, rows: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """For each of ``points[rows]``, the distance to its nearest other point of the same group (inf: none)."""
    out = np.full(len(rows), np.inf)
    half_sq = 0.5 * np.einsum("ij,ij->i", points, points)  # (M,)
    step = rows_per_block(len(points))
    for start in range(0, len(rows), step):
        own = rows[start : start + step]
        # |a - b|^2 / 2 = |a|^2/2 + |b|^2/2 - a.b, so the nearest b is the largest a.b - |b|^2/2.
        score = points[own] @ points.T - half_sq[None, :]  # (B, M)
        score[np.arange(len(own)), own] = -np.inf  # not itself
        score[groups[own][:, None] != groups[None, :]] = -np.inf
        best = score.max(axis=1)
        out[start : start + len(own)] = np.sqrt(np.maximum(2 * (half_sq[own] - best), 0.0))
    return out


def assign(
    points: np.ndarray, rows: np.ndarray, members: np.ndarray, labels: np.ndarray, reach: np.ndarray
) -> np.ndarray:
    """For each of ``points[rows]``, the label of its nearest member if within that label's reach, else -1.

    Args:
        points: ``(N, D)`` rows; ``rows``: which of them to assign.
        members: ``(M, D)`` clustered sample rows; ``labels``: their ``(M,)`` labels.
        reach: ``(L,)`` distance limit per label.
    """
    out = np.full(len(rows), -1, dtype=np.int64)
    if len(members) == 0:
        return out
    half_sq = (0.5 * np.einsum("ij,ij->i", members, members)).astype(points.dtype)  # (M,)
    step = rows_per_block(len(members))
    for start in range(0, len(rows), step):
        block = points[rows[start : start + step]]  # (B, D)
        score = block @ members.T  # (B, M)
        score -= half_sq[None, :]
        best = score.argmax(axis=1)  # the first of equals: deterministic
        top = score[np.arange(len(block)), best].astype(np.float64)
        dist = np.sqrt(np.maximum(np.einsum("ij,ij->i", block, block) - 2 * top, 0.0))
        label = labels[best]
        out[start : start + len(block)] = np.where(dist <= reach[label], label, -1)
    return out
