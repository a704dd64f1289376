"""How well vectors cluster by label: cosine silhouette and leave-one-out nearest-neighbour accuracy (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def cosine_distances(vectors: np.ndarray) -> np.ndarray:
    """(N, C) → (N, N) cosine distances, 1 − cos, in float64."""
    v = np.asarray(vectors, np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return np.clip(1.0 - v @ v.T, 0.0, 2.0)


def silhouette(distances: np.ndarray, labels: Sequence[str]) -> float:
    """Mean silhouette over samples (as sklearn's ``silhouette_score(metric="precomputed")``; 0 for singletons)."""
    labels_arr = np.asarray(labels)
    names = sorted(set(labels))
    assert 2 <= len(names) < len(labels), "silhouette needs 2..N-1 clusters"
    scores = []
    for i in range(len(labels_arr)):
        own = labels_arr == labels_arr[i]
        if own.sum() == 1:
            scores.append(0.0)
            continue
        a = distances[i, own].sum() / (own.sum() - 1)  # the mean excludes the sample itself (distance 0)
        b = min(distances[i, labels_arr == n].mean() for n in names if n != labels_arr[i])
        scores.append((b - a) / max(a, b) if max(a, b) > 0 else 0.0)
    return float(np.mean(scores))


def nearest_neighbour_accuracy(distances: np.ndarray, labels: Sequence[str]) -> float:
    """Leave-one-out: the share of samples whose nearest other sample has the same label."""
    d = distances.copy()
    np.fill_diagonal(d, np.inf)
    nearest = d.argmin(axis=1)
    labels_arr = np.asarray(labels)
    return float((labels_arr[nearest] == labels_arr).mean())
