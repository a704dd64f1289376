"""``hubdelta eval``: how well one space of the index separates models by a user's labels."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hubdelta.evaluation.labels import read_labels
from hubdelta.evaluation.scores import Scores, cross_group_accuracy, score
from hubdelta.index.door import open_reader
from hubdelta.index.selectors import by_ids, hidden
from hubdelta.index.store import Index
from hubdelta.kernel.errors import UsageError
from hubdelta.kernel.settings import Settings

SHOWN_MISSING = 20


@dataclass(frozen=True)
class EvalResult:
    """What ``hubdelta eval`` prints; field names are the stable ``--json`` names."""

    space_id: str
    labels_file: str
    scores: Scores
    missing: tuple[str, ...]  # labelled repos without a vector in the space
    other_spaces: dict[str, int] = field(default_factory=dict)  # space id -> labelled repos it holds
    plot: str | None = None
    # A space holding models of several bases (a family space): nearest neighbour *of another base* has the
    # label; {"accuracy", "chance", "bases"}. None for a space of one base.
    cross_base: dict[str, float] | None = None
    removed: tuple[str, ...] = ()  # labelled repos removed from the Hub: hidden from queries, so not scored

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["missing_count"] = len(self.missing)
        out["missing"] = list(self.missing[:SHOWN_MISSING])
        out["removed"] = list(self.removed)
        for row in out["scores"]["per_label"]:  # JSON has no NaN: a label of one model has no mean cosine
            row["mean_cosine"] = None if math.isnan(row["mean_cosine"]) else row["mean_cosine"]
        return out


def _labelled_vectors(index: Index, space_id: str, labels: dict[str, str]) -> dict[str, np.ndarray]:
    # Visible models only: one removed from the Hub is hidden from queries, and so from the evaluation.
    return {k: e.vector for k, e in index.vectors.visible(space_id, labels).items()}


def _choose_space(
    index: Index, labels: dict[str, str], space: str | None
) -> tuple[str, dict[str, int], dict[str, np.ndarray]]:
    """The requested space, or the one holding the most labelled repos (refusing a tie); and its labelled vectors."""
    known = index.vectors.spaces()
    if space is not None and space not in known:
        raise UsageError(
            "--space", f"no space {space!r}", fix=f"use one of: {', '.join(known) or 'none (embed first)'}"
        )
    if not known:
        raise UsageError("eval", "the index holds no vectors yet", fix="run hubdelta crawl && hubdelta embed first")
    found = {s: _labelled_vectors(index, s, labels) for s in known}
    counts = {s: len(v) for s, v in found.items()}
    if space is not None:
        return space, {s: n for s, n in counts.items() if s != space and n}, found[space]
    best = max(counts.values())
    top = [s for s, n in counts.items() if n == best]
    if best == 0:
        raise UsageError("eval", "none of the labelled repos has a vector",
                         fix="check the repo ids (hubdelta show REPO), or embed them first")  # fmt: skip
    if len(top) > 1:
        raise UsageError(
            "--space", f"{len(top)} spaces each hold {best} labelled repos", fix=f"choose one of: {', '.join(top)}"
        )
    return top[0], {s: n for s, n in counts.items() if s != top[0] and n}, found[top[0]]


def evaluate(
    settings: Settings, labels_file: Path, *, space: str | None = None, plot: Path | None = None
) -> EvalResult:
    """Silhouette (cosine) and leave-one-out nearest-neighbour accuracy of the labelled repos in one space.

    Labelled models removed from the Hub are hidden from queries: they are not scored, and are listed in
    ``removed`` (not in ``missing``).

    Args:
        settings: where the index is.
        labels_file: a CSV of ``repo_id,label`` rows (see :func:`~hubdelta.evaluation.labels.parse_labels`).
        space: the space id (default: the one holding the most labelled repos).
        plot: also write a t-SNE map coloured by label to this PNG.

    Raises:
        UsageError: a malformed label file, an unknown or ambiguous space, or too few labelled vectors (at least
            two labels and one label with two models are needed).
    """
    labels = read_labels(labels_file)
    with open_reader(settings) as index:
        space_id, others, vectors = _choose_space(index, labels, space)
        records = index.models.get(vectors)
        removed = tuple(sorted(index.models.ids(by_ids(labels) & hidden())))
    ids = sorted(vectors)
    names = [labels[i] for i in ids]
    counts = Counter(names)
    if len(counts) < 2 or max(counts.values()) < 2:
        why = f"only {len(ids)} labelled repos in {len(counts)} label(s) have vectors in {space_id}"
        raise UsageError(str(labels_file), why, fix="label models of at least two kinds, two or more of one kind")
    stack = np.stack([vectors[i] for i in ids]).astype(np.float64)  # (N, C)
    if not np.isfinite(stack).all() or (np.linalg.norm(stack, axis=1) == 0).any():
        raise UsageError(space_id, "a labelled vector is zero or not finite", fix="re-embed it: hubdelta embed")
    result = score(stack, names)
    cross = None
    bases = [records[i].model.base_models[0] if i in records and records[i].model.base_models else "" for i in ids]
    if len(set(bases)) > 1:
        from hubdelta.embedder.quality import cosine_distances

        accuracy, chance = cross_group_accuracy(cosine_distances(stack), names, bases)
        cross = {"accuracy": accuracy, "chance": chance, "bases": float(len(set(bases)))}
    written = None
    if plot is not None:
        from hubdelta.evaluation.plot import Panel, draw_panels

        title = f"{space_id}: silhouette {result.silhouette:.3f}, NN acc {result.nn_accuracy:.2f}"
        written = str(draw_panels([Panel(title, stack, names)], plot, columns=1))
    missing = tuple(sorted(set(labels) - set(vectors) - set(removed)))
    return EvalResult(space_id, str(labels_file), result, missing, others, written, cross, removed)
