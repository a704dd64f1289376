"""Stored suggested labels (see :mod:`hubdelta.index.labels`): per space, changed rows upserted, then the head."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from hubdelta.index.labels import (
    LABELS,
    LABELS_META,
    LabelsHead,
    ModelLabels,
    heads_from_rows,
    label_key,
    label_rows,
    labels_from_rows,
    meta_row,
)
from hubdelta.index.schema import sql_string, string_tuples
from hubdelta.index.selectors import id_filter, in_list
from hubdelta.index.tables import Tables

BATCH_ROWS = 65_536


class LabelsStore:
    """``index.labels``: each space's suggested labels.

    A put writes the changed rows (one upsert), deletes the rows of models that left the space (one delete), then
    upserts the space's head (one commit) naming what they were computed from. A writer killed before the head
    leaves the old head: readers then call the labels stale and the next refresh recomputes them.
    """

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    def put(
        self,
        head: LabelsHead,
        labels: Sequence[ModelLabels],
        drop: Iterable[str] = (),
        evidence: Mapping[str, str] | None = None,
    ) -> None:
        """Upsert ``labels`` of ``head.space_id`` (with each model's ``evidence`` digest, "" when absent), delete
        those of ``drop``, then record ``head``.

        Raises:
            StoreError: the index is read-only.
            ValueError: a label of another space, or naive datetimes.
        """
        self._t.require_writer()
        if any(x.space_id != head.space_id for x in labels):
            raise ValueError(f"labels of another space than {head.space_id!r}")
        meta = meta_row(head)  # a naive time fails here, before anything is written
        if labels:
            self._t.upsert(LABELS, "key", label_rows(list(labels), head.computed_at, evidence or {}))
        gone = [label_key(head.space_id, r) for r in dict.fromkeys(drop)]
        for start in range(0, len(gone), 1000):  # bounded IN lists
            self._t.delete_where(LABELS, in_list("key", gone[start : start + 1000]))
        self._t.upsert(LABELS_META, "space_id", meta)

    def heads(self) -> dict[str, LabelsHead]:
        """Every space's head (a read of one small table)."""
        return heads_from_rows(self._t.scan(LABELS_META))

    def get(self, space_id: str, repo_ids: Iterable[str]) -> dict[str, ModelLabels]:
        """The stored labels of ``repo_ids`` in ``space_id``, by repo id (those that have some): by ``repo_id``,
        which the index's upkeep gives a BTREE at 10,000 rows (``maintenance.key_indexes``)."""
        flt = id_filter(repo_ids, where=f"space_id = {sql_string(space_id)}")
        return {x.repo_id: x for x in labels_from_rows(self._t.scan(LABELS, flt))}

    def of_repo(self, repo_id: str) -> dict[str, ModelLabels]:
        """``repo_id``'s labels in every space that has some, by space id."""
        rows = self._t.scan(LABELS, f"repo_id = {sql_string(repo_id)}")
        return {x.space_id: x for x in labels_from_rows(rows)}

    def neighbourhoods(self, space_id: str) -> tuple[list[str], np.ndarray, list[tuple[str, ...]]]:
        """Every stored model of ``space_id``: repo ids, ``kth`` cosines and neighbour lists (what an incremental
        refresh needs, without the tags)."""
        columns = ["repo_id", "kth", "neighbours"]
        where = f"space_id = {sql_string(space_id)}"

        def run() -> pa.Table:
            return self._t.table(LABELS).search().select(columns).where(where).to_batches(BATCH_ROWS).read_all()

        rows = self._t.read(run)
        kth = rows["kth"].to_numpy().astype(np.float32) if rows.num_rows else np.zeros(0, np.float32)
        return rows["repo_id"].to_pylist(), kth, string_tuples(rows["neighbours"]) if rows.num_rows else []

    def evidence(self, space_id: str) -> dict[str, str]:
        """Each stored model of ``space_id``'s evidence digest then, by repo id (what tells a refresh whose
        documentation changed since)."""
        rows = self._t.scan(LABELS, f"space_id = {sql_string(space_id)}", columns=["repo_id", "evidence"])
        return dict(zip(rows["repo_id"].to_pylist(), rows["evidence"].to_pylist(), strict=True))

    def delete(self, space_id: str) -> bool:
        """Forget a space's labels (head first: readers then see none). Returns whether a head was stored."""
        existed = self._t.delete_key(LABELS_META, "space_id", space_id)
        self._t.delete_where(LABELS, f"space_id = {sql_string(space_id)}")
        return existed
