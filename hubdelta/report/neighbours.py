"""The established models nearest to each new one, by cosine (pure numpy).

The report already holds every vector of the space in memory for clustering, so one blocked matrix product
gives exact neighbours for all new models at once, instead of one index query per new model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BLOCK = 1024  # queries per matrix product: bounds memory at BLOCK x N similarities


def nearest(
    unit: np.ndarray, queries: Sequence[int], candidates: Sequence[int], k: int
) -> list[list[tuple[int, float]]]:
    """For each query row, the ``k`` candidate rows of highest cosine, best first.

    Args:
        unit: ``(N, C)`` L2-normalised vectors (zero rows never match: their cosine is 0).
        queries: row numbers to find neighbours for.
        candidates: row numbers that may be returned (a query is never its own neighbour).
        k: neighbours per query at most.

    Returns:
        Per query, ``(row, cosine)`` pairs; equal scores in order of row number (rows are sorted by repo id).
    """
    cand = np.asarray(candidates, dtype=np.int64)
    if k <= 0 or len(cand) == 0:
        return [[] for _ in queries]
    pool = unit[cand]  # (M, C)
    out: list[list[tuple[int, float]]] = []
    for start in range(0, len(queries), BLOCK):
        rows = np.asarray(queries[start : start + BLOCK], dtype=np.int64)
        sims = unit[rows] @ pool.T  # (B, M)
        sims[rows[:, None] == cand[None, :]] = -np.inf  # not itself
        for b in range(len(rows)):
            top = np.argpartition(-sims[b], k - 1)[:k] if k < len(cand) else np.arange(len(cand))
            order = top[np.lexsort((cand[top], -sims[b, top]))]  # by similarity, then row number
            out.append([(int(cand[j]), float(sims[b, j])) for j in order if np.isfinite(sims[b, j])])
    return out
