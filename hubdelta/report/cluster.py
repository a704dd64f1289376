"""Clusters of one space's vectors: HDBSCAN on L2-normalised Delta Activations (pure: numpy and scikit-learn).

Why these choices:

- **Normalised vectors, Euclidean metric.** Queries rank by cosine; on unit vectors Euclidean distance is a
  monotone function of cosine (``|a - b|^2 = 2 - 2 cos``), so clusters agree with what ``similar`` says is near,
  and a model's delta norm (how far training moved it) does not decide its cluster.
- **HDBSCAN** needs no number of clusters, finds clusters of different density and leaves outliers
  unclustered (label -1, "noise") instead of forcing them into the nearest group: one odd merge should not
  blur a family of adapters.
- **min_cluster_size = 3.** The smallest group worth a name: the test pool trains three disjoint-split
  adapters per domain (plus a few-shot one), and on the Hub a "family" is rarely fewer than three uploads.
  Two near-identical repos (a re-upload) are not a cluster.
- **min_samples = 2.** Each point's density is the distance to its nearest other point: small, so a few-shot
  or merged model near a family joins it rather than becoming noise, yet one bridging point cannot chain two
  families (as min_samples = 1, single linkage, would).
- **excess of mass** selection (sklearn's default) prefers the stable, larger clusters over the leaves.
- **At most 50 dimensions.** Vectors are projected on their top principal components before clustering when
  the space is wider: lossless while a space holds fewer vectors than that (the centred vectors then span fewer
  dimensions), and it keeps HDBSCAN's neighbour searches tractable at Hub scale.

The result does not depend on row order: callers pass rows sorted by repo id, and labels are renumbered by
each cluster's first row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hubdelta.kernel.errors import MissingDependencyError


@dataclass(frozen=True)
class ClusterParams:
    """How a space is clustered (stored in each report's params)."""

    min_cluster_size: int = 3
    min_samples: int = 2
    selection: str = "eom"  # sklearn's cluster_selection_method: eom | leaf
    max_dims: int = 50

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; an all-zero row (a model identical to its base) stays zero."""
    x = np.asarray(vectors, np.float64)  # (N, C)
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (N, 1)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def reduce(unit: np.ndarray, max_dims: int) -> np.ndarray:
    """``unit`` projected on its top ``max_dims`` principal components (unchanged when narrow enough)."""
    n, c = unit.shape
    if c <= max_dims:
        return unit
    centred = unit - unit.mean(axis=0)  # (N, C)
    # eigh of the (C, C) covariance: cheaper than an SVD of (N, C) at Hub scale, and deterministic.
    _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending
    top = vectors[:, ::-1][:, : min(max_dims, n)]  # (C, D)
    return centred @ top  # (N, D)


def cluster_labels(vectors: np.ndarray, params: ClusterParams | None = None) -> np.ndarray:
    """HDBSCAN labels of ``vectors`` (any norms): ``-1`` is noise, clusters are numbered 0.. by first row.

    Args:
        vectors: ``(N, C)`` Delta Activations of one space, in a fixed order (sorted by repo id).
        params: clustering parameters (defaults: ``ClusterParams()``).

    Returns:
        ``(N,)`` int labels. All noise when fewer than ``min_cluster_size`` vectors are non-zero; a zero
        vector is always noise (it has no direction).

    Raises:
        MissingDependencyError: scikit-learn is not installed (the ``report`` extra).
    """
    try:
        from sklearn.cluster import HDBSCAN
    except ImportError as e:
        raise MissingDependencyError("scikit-learn", extra="report") from e
    params = params or ClusterParams()
    unit = normalise(vectors)
    labels = np.full(len(unit), -1, dtype=np.int64)
    live = np.flatnonzero(np.linalg.norm(unit, axis=1) > 0)
    if len(live) < max(params.min_cluster_size, params.min_samples, 2):
        return labels
    points = reduce(unit[live], params.max_dims)
    found = HDBSCAN(
        min_cluster_size=params.min_cluster_size,
        min_samples=params.min_samples,
        cluster_selection_method=params.selection,
        copy=True,
    ).fit_predict(points)
    labels[live] = found
    return renumber(labels)


def renumber(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0, 1, ... in order of each cluster's first row; -1 stays -1."""
    order: dict[int, int] = {}
    for label in labels.tolist():
        if label >= 0 and label not in order:
            order[label] = len(order)
    return np.array([order.get(label, -1) for label in labels.tolist()], dtype=np.int64)


def groups(repo_ids: list[str], labels: np.ndarray) -> list[tuple[str, ...]]:
    """Member repo ids of each cluster label 0, 1, ..., each sorted."""
    count = int(labels.max()) + 1 if len(labels) else 0
    members: list[list[str]] = [[] for _ in range(count)]
    for repo_id, label in zip(repo_ids, labels.tolist(), strict=True):
        if label >= 0:
            members[label].append(repo_id)
    return [tuple(sorted(m)) for m in members]


def centroid(unit: np.ndarray) -> np.ndarray:
    """The unit-length mean direction of unit rows (zero when they cancel out)."""
    mean = unit.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm if norm > 0 else mean).astype(np.float32)
