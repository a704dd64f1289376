"""Scores of labelled vectors: silhouette, leave-one-out nearest-neighbour accuracy, chance, per label (pure)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hubdelta.embedder.quality import cosine_distances, nearest_neighbour_accuracy, silhouette


@dataclass(frozen=True)
class LabelScore:
    """How one label's models sit in the space."""

    label: str
    count: int
    nn_accuracy: float  # share of this label's models whose nearest other model has the label
    mean_cosine: float  # mean pairwise cosine similarity within the label (nan for a single model)


@dataclass(frozen=True)
class Scores:
    """Cluster quality of labelled vectors under cosine distance."""

    n: int
    silhouette: float  # in [-1, 1]; sklearn's silhouette_score(metric="cosine")
    nn_accuracy: float  # leave-one-out: nearest other model has the same label
    nn_chance: float  # the expected nn_accuracy if neighbours were drawn at random
    per_label: tuple[LabelScore, ...]


def chance_accuracy(labels: Sequence[str]) -> float:
    """Expected leave-one-out accuracy of a random neighbour: Σ n_i (n_i − 1) / (n (n − 1))."""
    n = len(labels)
    return sum(c * (c - 1) for c in Counter(labels).values()) / (n * (n - 1))


def score(vectors: np.ndarray, labels: Sequence[str]) -> Scores:
    """Silhouette and nearest-neighbour accuracy of ``vectors`` (``(N, C)``) by ``labels``, under cosine distance.

    Raises:
        ValueError: fewer than 2 distinct labels, or every model alone in its label.
    """
    return score_distances(cosine_distances(vectors), labels)


def score_distances(d: np.ndarray, labels: Sequence[str]) -> Scores:
    """As :func:`score`, from precomputed ``(N, N)`` cosine distances (for vectors too big to stack)."""
    names = sorted(set(labels))
    if not 2 <= len(names) < len(labels):
        raise ValueError(f"{len(labels)} models in {len(names)} labels: need at least 2 labels and one shared")
    arr = np.asarray(labels)
    masked = d.copy()
    np.fill_diagonal(masked, np.inf)
    hit = arr[masked.argmin(axis=1)] == arr  # (N,)
    per_label = []
    for name in names:
        own = arr == name
        count = int(own.sum())
        block = 1.0 - d[np.ix_(own, own)]  # (n, n) cosine similarities
        mean_cos = float((block.sum() - np.trace(block)) / (count * (count - 1))) if count > 1 else float("nan")
        per_label.append(LabelScore(name, count, float(hit[own].mean()), mean_cos))
    return Scores(
        n=len(labels),
        silhouette=silhouette(d, labels),
        nn_accuracy=nearest_neighbour_accuracy(d, labels),
        nn_chance=chance_accuracy(labels),
        per_label=tuple(per_label),
    )


def cross_group_accuracy(d: np.ndarray, labels: Sequence[str], groups: Sequence[str]) -> tuple[float, float]:
    """Nearest-neighbour label accuracy across groups (e.g. base models), and its chance level.

    For each model, its nearest model *of another group* (under the distances ``d``) must share its label: the
    question a family space answers ("which finetunes of the other architecture behave like this one?").

    Returns:
        (accuracy, chance): chance is the mean share of same-label models among each model's candidates.

    Raises:
        ValueError: fewer than two groups.
    """
    lab, grp = np.asarray(labels), np.asarray(groups)
    if len(set(groups)) < 2:
        raise ValueError("cross-group accuracy needs models of at least two groups")
    hits, chance = [], []
    for i in range(len(lab)):
        other = np.flatnonzero(grp != grp[i])
        hits.append(lab[other[d[i, other].argmin()]] == lab[i])
        chance.append(float((lab[other] == lab[i]).mean()))
    return float(np.mean(hits)), float(np.mean(chance))
