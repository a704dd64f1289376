"""The ``models`` table (one row a repo) and the ``tracked`` table (one row a followed base).

Reads take a typed :class:`~hubdelta.index.selectors.Selector`, never SQL text; writes are one commit each.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from hubdelta.index.records import EMBEDDABLE, ModelRecord, ModelStatus, TrackedBase
from hubdelta.index.schema import (
    MODELS,
    TRACKED,
    models_from_table,
    models_to_table,
    python_values,
    tracked_from_table,
    tracked_to_table,
)
from hubdelta.index.selectors import Filter, Selector, by_base, by_ids, compile_selector, hidden
from hubdelta.index.tables import PutResult, Tables

# The reason a queued model fails with when none of its bases is tracked: re-tracking the base re-queues it.
NO_TRACKED_BASE = "none of its base models is tracked"


def requeued(record: ModelRecord) -> ModelRecord:
    """``record`` back in the queue as if new: status queued, no reason, attempts reset (pure).

    What would never be queued when new stays out: a relation the embedder does not take (a gated quantized child
    is skipped, not discovered) goes back to ``discovered``; a repo with no revision keeps its status.
    """
    if record.model.sha is None:
        return record
    status = ModelStatus.QUEUED if record.model.relation in EMBEDDABLE else ModelStatus.DISCOVERED
    return replace(record, status=status, reason="", attempts=0)


def reason_matches(record: ModelRecord, text: str | None) -> bool:
    """Whether ``record``'s reason contains ``text``, ignoring case (every record when ``text`` is None)."""
    return text is None or text.casefold() in record.reason.casefold()


class ModelsStore:
    """``index.models``: the Hub's metadata of every repo plus hubdelta's status, keyed by repo id."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    def _filter(self, where: Selector | None) -> Filter | None:
        return None if where is None else compile_selector(where, self._space_ids)

    def _space_ids(self, space_id: str) -> list[str]:
        table = self._t.emb(space_id)
        if table is None:
            return []
        ids: list[str] = self._t.scan(table.name, columns=["repo_id"])["repo_id"].to_pylist()
        return ids

    @staticmethod
    def _records(rows: pa.Table) -> dict[str, ModelRecord]:
        return {r.repo_id: r for r in models_from_table(rows)}

    def get(self, repo_ids: Iterable[str] | None = None) -> dict[str, ModelRecord]:
        """Records by repo id: those of ``repo_ids`` that are stored (unknown ids are absent), or all.

        Every status, removed models included: a caller that shows models to people selects with
        :func:`~hubdelta.index.selectors.visible` (or checks ``visible_to_queries``).
        """
        return self.select(None if repo_ids is None else by_ids(repo_ids))

    def select(self, where: Selector | None = None, *, limit: int | None = None) -> dict[str, ModelRecord]:
        """Records of the models ``where`` selects (all when None), at most ``limit`` of them.

        Raises:
            ValueError, RuntimeError: a malformed ``user_filter`` text (Lance's own message).
        """
        return self._records(self._t.scan(MODELS, self._filter(where), limit=limit))

    def ids(self, where: Selector | None = None) -> list[str]:
        """Repo ids of the models ``where`` selects (all when None), reading one column only."""
        rows = self._t.scan(MODELS, self._filter(where), columns=["repo_id"])
        ids: list[str] = rows["repo_id"].to_pylist()
        return ids

    def column_batches(self, columns: Sequence[str], batch_size: int = 65_536) -> Iterator[dict[str, list[Any]]]:
        """Every model's ``columns`` as Python values (datetimes in UTC, lists as tuples), one batch at a time.

        For reads over every model at Hub scale (the report): no :class:`ModelRecord` per row, and no more than
        one batch converted at once. Each batch is ``{column: values}``, all lists of one length.
        """
        reader = self._t.read(lambda: self._t.table(MODELS).search().select(list(columns)).to_batches(batch_size))
        for batch in reader:
            yield {name: python_values(batch[name]) for name in columns}

    def count(self, where: Selector | None = None) -> int:
        """Number of models ``where`` selects (all when None)."""
        return self._t.count(MODELS, self._filter(where))

    def for_base(self, base: str) -> dict[str, ModelRecord]:
        """Records whose ``base_models`` contains ``base`` (any relation, any status)."""
        return self.select(by_base(base))

    def hidden_ids(self, among: Iterable[str] | None = None) -> frozenset[str]:
        """Repo ids of the models hidden from queries (removed from the Hub), all of them or those ``among``.

        A search asks only about its candidates: one small id lookup, however many models were ever removed.
        """
        return frozenset(self.ids(hidden() if among is None else hidden() & by_ids(among)))

    def count_by_status(self) -> dict[ModelStatus, int]:
        """Number of models per status (every status present, zeros included)."""
        counts = dict.fromkeys(ModelStatus, 0)
        for item in pc.value_counts(self._t.scan(MODELS, columns=["status"])["status"]).to_pylist():
            counts[ModelStatus(item["values"])] = item["counts"]
        return counts

    def requeue(self, where: Selector, *, reason: str | None = None, dry_run: bool = False) -> list[ModelRecord]:
        """Put the models ``where`` selects whose reason contains ``reason`` back in the queue, in one commit.

        Their attempts restart from zero, so the embedder gives them ``[embed] max_attempts`` tries again.

        Args:
            where: which models (e.g. ``by_status(FAILED) & by_ids(...)``).
            reason: only models whose reason contains this text, ignoring case; None: any reason.
            dry_run: write nothing; return what would be requeued.

        Returns:
            The records as they were before, sorted by repo id.

        Raises:
            StoreError: the index is read-only (and ``dry_run`` is false).
        """
        rows = self.select(where).values()  # a repo with no revision cannot be fetched: it is never requeued
        picked = sorted((r for r in rows if reason_matches(r, reason) and r.model.sha is not None),
                        key=lambda r: r.repo_id)  # fmt: skip
        if not dry_run:
            self.put([requeued(r) for r in picked])
        return picked

    def put(self, records: Sequence[ModelRecord]) -> PutResult:
        """Insert or replace ``records`` by ``repo_id`` in ONE commit: readers see all of them or none.

        A repo id given twice is written once, with its last record (as if put one after the other): Lance
        would insert both copies of a new id, and refuse two updates of a stored one.

        Raises:
            StoreError: the index is read-only.
            ValueError: a datetime without a timezone.
        """
        self._t.writable(MODELS)  # refuse a reader before converting anything
        latest = list({r.repo_id: r for r in records}.values())
        if not latest:
            return PutResult(0, 0)  # an empty merge would still commit a version
        return self._t.upsert(MODELS, "repo_id", models_to_table(latest))


class TrackedStore:
    """``index.tracked``: the bases hubdelta follows and their crawl cursors."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    def all(self) -> list[TrackedBase]:
        """Every tracked base, sorted by name."""
        return sorted(tracked_from_table(self._t.scan(TRACKED)), key=lambda b: b.base)

    def put(self, bases: Sequence[TrackedBase]) -> PutResult:
        """Insert or replace ``bases`` (keyed by ``base``; a later duplicate wins) in one commit.

        Write a base's cursor only after the models it covers (``index.models.put`` first): a kill in between
        then re-crawls a little rather than skipping repos.

        Raises:
            StoreError: the index is read-only.
        """
        self._t.writable(TRACKED)
        latest = list({b.base: b for b in bases}.values())
        if not latest:
            return PutResult(0, 0)
        return self._t.upsert(TRACKED, "base", tracked_to_table(latest))

    def delete(self, base: str) -> bool:
        """Stop tracking ``base`` (its models stay). Returns whether it was tracked."""
        return self._t.delete_key(TRACKED, "base", base)
