"""The established models nearest to each new one, by cosine (pure numpy).

The report already holds every vector of the space in memory for clustering, so blocked matrix products give
exact neighbours for all new models at once, instead of one index query per new model.

Memory stays bounded at any size: the candidates are taken a chunk of rows at a time (never ``unit[candidates]``
whole, 2.3 GB at 1M x 576 float32) and each product is at most ``ELEMENTS`` similarities, in ``unit``'s
own dtype (float32 at Hub scale: 1024 queries x 1M candidates in float64 would be 8 GB). Each chunk keeps its
``k`` best per query; the best of those are the exact answer, as one product over all candidates would give.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BLOCK = 1024  # queries per product
# Similarities per product: 16 MB of float32. A product's ranking takes 3x its size again (int64 positions, the
# comparison with its k-th), so ~100 MB in all whatever the space's size; 1024 x 576 x 4096 products still run at full
# BLAS speed (1,000 new models against 1M vectors: ~11 s here).
ELEMENTS = 1 << 22


def nearest(
    unit: np.ndarray,
    queries: Sequence[int] | np.ndarray,
    candidates: Sequence[int] | np.ndarray,
    k: int,
    *,
    elements: int = ELEMENTS,
) -> list[list[tuple[int, float]]]:
    """For each query row, the ``k`` candidate rows of highest cosine, best first.

    Args:
        unit: ``(N, C)`` L2-normalised vectors (zero rows never match: their cosine is 0).
        queries: row numbers to find neighbours for.
        candidates: row numbers that may be returned (a query is never its own neighbour).
        k: neighbours per query at most.
        elements: the most similarities one product holds (sets how many candidates it takes).

    Returns:
        Per query, ``(row, cosine)`` pairs; equal scores in order of row number (rows are sorted by repo id).
    """
    cand = np.asarray(candidates, dtype=np.int64)
    if k <= 0 or len(cand) == 0:
        return [[] for _ in queries]
    out: list[list[tuple[int, float]]] = []
    for start in range(0, len(queries), BLOCK):
        rows = np.asarray(queries[start : start + BLOCK], dtype=np.int64)
        chunk = max(k, elements // len(rows))  # candidates per product: all of a small space's
        best_rows, best_sims = _chunk_bests(unit, rows, cand, k, chunk)  # (B, K) each, K = chunks x k
        out.extend(ordered(best_rows, best_sims, k))
    return out


def ordered(rows: np.ndarray, sims: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """Each query's (row of ``rows``, ``sims``) ``k`` best, by similarity then row number, without the -inf ones
    (none found). Sorted for all queries at once: one sort a query in Python took ~45 s at 1M queries."""
    order = np.lexsort((rows, -sims), axis=1)[:, :k]
    top_rows = np.take_along_axis(rows, order, axis=1).tolist()
    top_sims = np.take_along_axis(sims, order, axis=1).astype(np.float64).tolist()
    pairs = zip(top_rows, top_sims, strict=True)
    return [[(r, c) for r, c in zip(rr, cc, strict=True) if math.isfinite(c)] for rr, cc in pairs]


def _chunk_bests(
    unit: np.ndarray, rows: np.ndarray, cand: np.ndarray, k: int, chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``k`` best candidates of every chunk of ``chunk`` candidates: rows and similarities."""
    found_rows, found_sims = [], []
    block = unit[rows]  # (B, C)
    for start in range(0, len(cand), chunk):
        part = cand[start : start + chunk]
        sims = block @ unit[part].T  # (B, M)
        sims[rows[:, None] == part[None, :]] = -np.inf  # not itself
        top = best_columns(sims, part, k)  # (B, min(k, M))
        found_rows.append(part[top])
        found_sims.append(np.take_along_axis(sims, top, axis=1))
    return np.concatenate(found_rows, axis=1), np.concatenate(found_sims, axis=1)


def best_columns(sims: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Per row of ``sims`` ``(b, m)``, the columns of its ``k`` highest, equal similarities at the k-th taken
    by lower row number (``rows``: each column's, ``(m,)`` or ``(b, m)``), so that which copies of one vector
    are kept does not depend on how the candidates were cut into chunks or lists (where their cosines are equal:
    products of other shapes can round equal rows' cosines differently in the last bit)."""
    b, m = sims.shape
    if k >= m:
        return np.broadcast_to(np.arange(m), (b, m))
    top = np.argpartition(sims, m - k, axis=1)[:, -k:]  # the k largest, at the end: no negated copy
    kth = np.take_along_axis(sims, top, axis=1).min(axis=1, keepdims=True)
    for i in np.flatnonzero(np.count_nonzero(sims >= kth, axis=1) > k):  # ties across the k-th: rare
        top[i] = np.lexsort((rows if rows.ndim == 1 else rows[i], -sims[i]))[:k]
    return top
