"""Reading the stored suggested labels (computed by :mod:`hubdelta.report.labels`): never computed here.

Labels are marked ``stale`` when the space's vectors changed since they were computed (its fingerprint moved):
shown anyway, since most of a large space's labels do not change with one new model, and the next refresh
(after any embed, or ``hubdelta labels``) recomputes the ones that do. A model embedded after the last refresh
has none yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from hubdelta.index.labels import ModelLabels
from hubdelta.index.store import Index


def read_labels(index: Index, space_id: str, repo_ids: Iterable[str]) -> dict[str, ModelLabels]:
    """The stored labels of ``repo_ids`` in ``space_id`` by repo id (those labelled), marked stale if they are."""
    head = index.labels.heads().get(space_id)
    if head is None:
        return {}
    found = index.labels.get(space_id, repo_ids)
    if found and head.source != index.vectors.fingerprint(space_id):
        return {r: replace(x, stale=True) for r, x in found.items()}
    return found


def labels_of_repo(index: Index, repo_id: str) -> list[ModelLabels]:
    """``repo_id``'s labels in every space that has them, by space id order, stale ones marked."""
    out: list[ModelLabels] = []
    for space_id in sorted(index.labels.of_repo(repo_id)):
        out.extend(read_labels(index, space_id, [repo_id]).values())
    return out
