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

**Above ``exact_max`` live vectors** (20,000) exact HDBSCAN is too slow (it grows as about n^2.2: 52 s at
30,000 vectors, ~12 min at 100,000, more than a day at 1M): such a space is clustered by HDBSCAN on seeded
samples with every other vector assigned to its nearest sampled member's cluster
(:mod:`hubdelta.report.cluster_scale`, which says why and how), on float32 unit vectors and a PCA fitted block
by block (:mod:`hubdelta.report.pca`). Spaces up to ``exact_max`` are clustered exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hubdelta.kernel.errors import MissingDependencyError
from hubdelta.report import cluster_scale, pca
from hubdelta.report.blocks import rows_per_block

EXACT = "hdbscan"
SAMPLED = "sampled-hdbscan"


@dataclass(frozen=True)
class ClusterParams:
    """How a space is clustered (stored in each report's params)."""

    min_cluster_size: int = 3
    min_samples: int = 2
    selection: str = "eom"  # sklearn's cluster_selection_method: eom | leaf
    max_dims: int = 50
    # Above exact_max live vectors: sampled rounds (hubdelta/report/cluster_scale.py; docs/report.md has the
    # measurements behind each value).
    exact_max: int = 20_000  # exact HDBSCAN takes ~15-25 s here at 20,000 vectors
    sample_size: int = 20_000  # vectors HDBSCAN sees per round
    sample_seed: int = 0
    reach_factor: float = 1.5  # a cluster reaches 1.5 x its members' 90th-percentile nearest-member distance
    looseness: float = 2.0  # clusters looser than 2 x the first round's median reach are scattered outliers
    max_rounds: int = 4

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "method": f"{EXACT} up to exact_max live vectors, {SAMPLED} above"}

    def method(self, live: int) -> str:
        """How a space of ``live`` non-zero vectors is clustered: ``EXACT`` or ``SAMPLED``."""
        return EXACT if live <= self.exact_max else SAMPLED


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; an all-zero row (a model identical to its base) stays zero."""
    x = np.asarray(vectors, np.float64)  # (N, C)
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (N, 1)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def normalise_in_place(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` (float32, the caller's to overwrite) scaled to unit rows block by block; zero rows stay zero.

    For large spaces: :func:`normalise` would make a float64 copy, 4.6 GB at 1M x 576.
    """
    step = rows_per_block(vectors.shape[1] * 16)
    for start in range(0, len(vectors), step):
        block = vectors[start : start + step]  # a view: written in place
        norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))[:, None]
        np.divide(block, norms, out=block, where=norms > 0)
    return vectors


def row_norms(unit: np.ndarray) -> np.ndarray:
    """``(N,)`` row lengths without an ``(N, C)`` temporary (``np.linalg.norm`` makes one)."""
    return np.sqrt(np.einsum("ij,ij->i", unit, unit, dtype=np.float64))


def reduce(unit: np.ndarray, max_dims: int) -> np.ndarray:
    """``unit`` projected on its top ``max_dims`` principal components (unchanged when narrow enough)."""
    n, c = unit.shape
    if c <= max_dims:
        return unit
    centred = unit - unit.mean(axis=0)  # (N, C)
    d = min(max_dims, n)
    if n < c:
        # Fewer rows than columns (a young space; a family space's 8,000-wide meaning vectors): the (N, N) Gram
        # matrix has the same spectrum, and its eigenvectors scaled by the singular values are the rows'
        # coordinates on the principal components. The (C, C) covariance took minutes at C = 8,261.
        values, vectors = np.linalg.eigh(centred @ centred.T)  # ascending
        return vectors[:, ::-1][:, :d] * np.sqrt(np.clip(values[::-1][:d], 0, None))  # (N, D)
    # eigh of the (C, C) covariance: cheaper than an SVD of (N, C) at Hub scale, and deterministic.
    _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending
    return centred @ vectors[:, ::-1][:, :d]  # (N, D)


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
    return cluster_unit(normalise(vectors), params)[0]


def cluster_unit(unit: np.ndarray, params: ClusterParams | None = None) -> tuple[np.ndarray, str]:
    """Labels of unit rows (as :func:`cluster_labels`) and the method used (``EXACT`` or ``SAMPLED``).

    Up to ``exact_max`` live rows this is exact HDBSCAN on float64 (the same labels whatever ``unit``'s dtype
    was); above, sampled rounds on ``unit`` as given (float32 at Hub scale), never copying it whole.

    Raises:
        MissingDependencyError: scikit-learn is not installed (the ``report`` extra).
    """
    params = params or ClusterParams()
    hdbscan = _hdbscan(params)
    labels = np.full(len(unit), -1, dtype=np.int64)
    live = np.flatnonzero(row_norms(unit) > 0)
    method = params.method(len(live))
    if len(live) < max(params.min_cluster_size, params.min_samples, 2):
        return labels, method
    if method == EXACT:
        labels[live] = hdbscan(reduce(np.asarray(unit[live], np.float64), params.max_dims))
        return renumber(labels), method
    mean, axes = pca.principal_axes(unit, params.max_dims, rows=live)
    points = pca.project(unit, mean, axes, rows=live)  # (L, D) float32: 200 MB at 1M
    labels[live] = cluster_scale.sampled_labels(points, hdbscan, exact_max=params.exact_max,
                                                sample_size=params.sample_size, seed=params.sample_seed,
                                                reach_factor=params.reach_factor, looseness=params.looseness,
                                                max_rounds=params.max_rounds)  # fmt: skip
    return renumber(labels), method


def _hdbscan(params: ClusterParams) -> Callable[[np.ndarray], np.ndarray]:
    """HDBSCAN with ``params`` as a function of the points.

    Raises:
        MissingDependencyError: scikit-learn is not installed.
    """
    try:
        from sklearn.cluster import HDBSCAN
    except ImportError as e:
        raise MissingDependencyError("scikit-learn", extra="report") from e

    def fit(points: np.ndarray) -> np.ndarray:
        model = HDBSCAN(min_cluster_size=params.min_cluster_size, min_samples=params.min_samples,
                        cluster_selection_method=params.selection, copy=True)  # fmt: skip
        return np.asarray(model.fit_predict(points), dtype=np.int64)

    return fit


def renumber(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0, 1, ... in order of each cluster's first row; -1 stays -1."""
    found, first = np.unique(labels, return_index=True)
    keep = found >= 0
    number = np.full(int(found.max(initial=-1)) + 2, -1, dtype=np.int64)  # index label + 1; -1 -> slot 0
    number[found[keep] + 1] = np.argsort(np.argsort(first[keep], kind="stable"), kind="stable")
    return number[np.asarray(labels, dtype=np.int64) + 1]


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
