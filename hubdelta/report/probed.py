"""Nearest neighbours of many rows among many candidates, found in the candidates' nearest lists (pure numpy).

An exact search of every model of a space among its documented ones is one ``N x documented`` product: at 100,000
documented vectors ~180 s on 2 cores, at 1,000,000 about 100 times that: hours, against a report's 10 minutes.
Finetunes of one base sit in clusters, so a model's nearest documented models lie in the few parts of the space
nearest to it: the candidates are split into ``~sqrt(n)`` lists by spherical k-means (trained on a sample), each
query is compared with the candidates of its ``probes`` nearest lists only (an inverted file, as vector indexes
search), and the cost falls to ``N x probes x sqrt(n)`` similarities. Every cosine returned is exact; what can be
missed is a neighbour that sits in a list the query did not probe (recall measured by ``bench/labels_scale.py``).
Deterministic for the same rows: the sample and the initial centroids come from a seeded generator.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hubdelta.report.neighbours import ELEMENTS, best_columns, nearest, ordered

PROBES = 4  # lists searched per query: bench/labels_scale.py
ROUNDS = 8  # k-means rounds on the sample
PER_LIST = 32  # sample rows per list the centroids are trained on
SEED = 0
# Up to this many query x candidate pairs the search is exact (~17 s on 2 cores): every space of a few tens of
# thousands of models, the test pool's included, keeps exact neighbours.
EXACT_PAIRS = 1_000_000_000


def search(unit: np.ndarray, queries: Sequence[int] | np.ndarray, candidates: Sequence[int] | np.ndarray,
           k: int) -> list[list[tuple[int, float]]]:  # fmt: skip
    """Exact neighbours (:func:`~hubdelta.report.neighbours.nearest`) up to ``EXACT_PAIRS`` pairs, probed above."""
    if len(queries) * len(candidates) <= EXACT_PAIRS:
        return nearest(unit, queries, candidates, k)
    return nearest_probed(unit, queries, candidates, k)


def nearest_probed(
    unit: np.ndarray,
    queries: Sequence[int] | np.ndarray,
    candidates: Sequence[int] | np.ndarray,
    k: int,
    *,
    probes: int = PROBES,
    lists: int | None = None,
) -> list[list[tuple[int, float]]]:
    """:func:`~hubdelta.report.neighbours.nearest`'s answer (the ``k`` candidates of highest cosine per query, best
    first, never the query itself), searched in each query's ``probes`` nearest lists of candidates.

    Args:
        unit: ``(N, C)`` L2-normalised float32 rows.
        lists: how many lists the candidates are split into (default ``~sqrt(len(candidates))``).
    """
    cand = np.asarray(candidates, dtype=np.int64)
    rows = np.asarray(queries, dtype=np.int64)
    if k <= 0 or len(cand) == 0:
        return [[] for _ in rows]
    n_lists = max(1, min(len(cand), lists or int(np.sqrt(len(cand)))))
    centroids = train_centroids(unit, cand, n_lists)
    probed, home = _lists(unit, rows, cand, centroids, min(probes, n_lists))
    best_rows = np.full((len(rows), k), -1, np.int64)
    best_sims = np.full((len(rows), k), -np.inf, np.float32)
    members = _grouped(home, n_lists)
    askers = _grouped(probed.ravel(), n_lists)
    for p in range(n_lists):
        if len(members[p]) and len(askers[p]):
            qi = askers[p] // probed.shape[1]  # positions in `rows` of the queries probing list p
            _search_list(unit, rows, qi, np.sort(cand[members[p]]), best_rows, best_sims)
    return ordered(best_rows, best_sims, k)


def train_centroids(unit: np.ndarray, cand: np.ndarray, n_lists: int) -> np.ndarray:
    """``n_lists`` unit centroids of ``cand``'s rows: spherical k-means on a seeded sample of them."""
    rng = np.random.default_rng(SEED)
    sample = unit[np.sort(rng.choice(cand, size=min(len(cand), PER_LIST * n_lists), replace=False))]
    centroids = sample[rng.choice(len(sample), size=n_lists, replace=False)].copy()
    for _ in range(ROUNDS):
        assigned = np.argmax(sample @ centroids.T, axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assigned, sample)
        norms = np.linalg.norm(sums, axis=1)
        empty = norms == 0  # a list no sample row chose: restarted on a random row
        sums[empty] = sample[rng.choice(len(sample), size=int(empty.sum()), replace=False)]
        centroids = sums / np.where(empty, 1.0, norms)[:, None]
    return centroids.astype(np.float32)


def _lists(unit: np.ndarray, rows: np.ndarray, cand: np.ndarray, centroids: np.ndarray,
           n: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Each query's ``n`` nearest lists ``(len(rows), n)`` and each candidate's own (nearest) list ``(len(cand),)``,
    in blocked products: one pass over the rows when the candidates are among the queries (a whole space)."""
    union = np.union1d(rows, cand)
    top = np.empty((len(union), n), np.int64)
    home = np.empty(len(union), np.int64)
    step = max(1, ELEMENTS // len(centroids))
    for start in range(0, len(union), step):
        sims = unit[union[start : start + step]] @ centroids.T
        home[start : start + step] = np.argmax(sims, axis=1)
        top[start : start + step] = np.argpartition(-sims, n - 1, axis=1)[:, :n] if n < len(centroids) else \
            np.argsort(-sims, axis=1)  # fmt: skip
    return top[np.searchsorted(union, rows)], home[np.searchsorted(union, cand)]


def _grouped(labels: np.ndarray, n: int) -> list[np.ndarray]:
    """Positions in ``labels`` of each value ``0..n-1``, in order."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n + 1))
    return [order[bounds[p] : bounds[p + 1]] for p in range(n)]


def _search_list(unit: np.ndarray, rows: np.ndarray, qi: np.ndarray, members: np.ndarray,
                 best_rows: np.ndarray, best_sims: np.ndarray) -> None:  # fmt: skip
    """Merge one list's candidates (``members``, sorted row numbers) into the running best of the queries ``qi``
    (positions in ``rows``)."""
    k = best_rows.shape[1]
    vectors = unit[members]  # (m, C)
    step = max(1, ELEMENTS // len(members))
    for start in range(0, len(qi), step):
        at = qi[start : start + step]
        sims = unit[rows[at]] @ vectors.T  # (b, m)
        here = np.minimum(np.searchsorted(members, rows[at]), len(members) - 1)
        itself = np.flatnonzero(members[here] == rows[at])
        sims[itself, here[itself]] = -np.inf  # a query is never its own neighbour
        top = best_columns(sims, members, k)
        both_rows = np.concatenate([best_rows[at], members[top]], axis=1)
        both_sims = np.concatenate([best_sims[at], np.take_along_axis(sims, top, axis=1)], axis=1)
        keep = best_columns(both_sims, both_rows, k)
        best_rows[at] = np.take_along_axis(both_rows, keep, axis=1)
        best_sims[at] = np.take_along_axis(both_sims, keep, axis=1)
