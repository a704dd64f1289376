"""``index.copies``: embedded models' fingerprints, what was reused without download, and copy groups.

The one place that says which models of a space are copies of each other (:func:`hubdelta.index.copies
.copy_groups` over the stored fingerprints and vectors): ``similar`` collapses by it, ``show`` and the report
list by it. A fingerprint row counts only while its model's vector is stored at the row's sha (:meth:`CopiesStore
._current`). Copies stay visible to queries (:func:`hubdelta.index.records.visible_to_queries` is unchanged):
they are collapsed for display, never hidden.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from hubdelta.index.copies import COPIES, CopyGroup, CopyRow, copies_from_table, copies_to_table, copy_groups
from hubdelta.index.models_store import ModelsStore
from hubdelta.index.schema import sql_string
from hubdelta.index.selectors import id_filter
from hubdelta.index.tables import Tables
from hubdelta.index.vectors_store import VectorsStore

_LONG_AGO = datetime.min.replace(tzinfo=UTC)
NEAR_MAX = 5_000  # a report looks for near-copies among at most this many models of a space


class CopiesStore:
    """``index.copies``: one row an embedded model of a space that had a fingerprint."""

    def __init__(self, tables: Tables, models: ModelsStore, vectors: VectorsStore) -> None:
        self._t, self._models, self._vectors = tables, models, vectors

    def put(self, rows: Sequence[CopyRow]) -> None:
        """Record fingerprints (keyed by space and repo; a new sha replaces the row) in one commit."""
        if rows:
            self._t.upsert(COPIES, "key", copies_to_table(rows))

    def of_space(self, space_id: str, repo_ids: Iterable[str] | None = None) -> dict[str, CopyRow]:
        """The current rows of ``space_id`` by repo id (those of ``repo_ids``, or all): see :meth:`_current`."""
        where = f"space_id = {sql_string(space_id)}"
        flt = where if repo_ids is None else id_filter(repo_ids, where=where)
        return self._current(space_id, copies_from_table(self._t.scan(COPIES, flt)))

    def with_fingerprints(self, space_id: str, fingerprints: Iterable[str]) -> dict[str, CopyRow]:
        """The current rows of ``space_id`` whose fingerprint is one of ``fingerprints``, by repo id."""
        flt = id_filter(fingerprints, column="fingerprint", where=f"space_id = {sql_string(space_id)}")
        return self._current(space_id, copies_from_table(self._t.scan(COPIES, flt)))

    def _current(self, space_id: str, rows: Sequence[CopyRow]) -> dict[str, CopyRow]:
        """THE rule of what a row says: only while the model's vector in the space is stored at the row's sha. A
        model re-embedded without a fingerprint (a Ray run, a listing without sha256) keeps its old row, which
        then describes weights it no longer has; a row whose vector never landed (a kill between the writes)
        describes nothing. Neither groups, counts as saved bytes, names a ``copied_from`` or is reused."""
        stored = self._vectors.shas(space_id, [r.repo_id for r in rows])
        return {r.repo_id: r for r in rows if r.repo_id in stored and stored[r.repo_id] == r.sha}

    def known(self, space_id: str) -> dict[str, tuple[str, str]]:
        """fingerprint -> (a model of ``space_id`` with that fingerprint, the sha its vector is stored at): what a
        run may reuse without downloading. The first embedded (a downloaded one before its copies)."""
        found: dict[str, CopyRow] = {}
        rows = self.of_space(space_id).values()
        for r in sorted(rows, key=lambda r: (r.copy_of is not None, r.recorded_at or _LONG_AGO, r.repo_id)):
            found.setdefault(r.fingerprint, r)
        return {fp: (r.repo_id, r.sha or "") for fp, r in found.items()}

    def groups(self, space_id: str, repo_ids: Iterable[str] | None = None) -> list[CopyGroup]:
        """The copy groups among the visible models ``repo_ids`` of ``space_id`` (all visible models when None)."""
        vectors = {k: e.vector for k, e in self._vectors.visible(space_id, repo_ids).items()}
        prints = {k: r.fingerprint for k, r in self.of_space(space_id, list(vectors)).items()}
        records = self._models.get(list(vectors))

        def order(repo_id: str) -> tuple[object, ...]:
            r = records.get(repo_id)
            created = r.model.created_at if r is not None else None
            return (created or _LONG_AGO, repo_id)

        return copy_groups(prints, vectors, order)

    def report_groups(self, space_id: str, near_max: int = NEAR_MAX) -> tuple[list[CopyGroup], bool]:
        """(the copy groups of the whole space, whether near-copies were looked for): above ``near_max`` visible
        models only equal fingerprints are grouped (the pairwise cosines would grow as N squared)."""
        if self._vectors.count(space_id) <= near_max:
            return self.groups(space_id), True
        rows = self.of_space(space_id)
        seen: dict[str, int] = {}
        for r in rows.values():
            seen[r.fingerprint] = seen.get(r.fingerprint, 0) + 1
        shared = [k for k, r in rows.items() if seen[r.fingerprint] > 1]
        return self.groups(space_id, shared), False

    def group_of(self, space_id: str, repo_id: str, near: Sequence[str] = ()) -> CopyGroup | None:
        """``repo_id``'s group in ``space_id``: its same-fingerprint models plus ``near`` (candidates for
        near-copies, e.g. its nearest neighbours), or None when it has no copy."""
        mine = self.of_space(space_id, [repo_id]).get(repo_id)
        same = self.with_fingerprints(space_id, [mine.fingerprint]) if mine is not None else {}
        for g in self.groups(space_id, {repo_id, *same, *near}):
            if repo_id in g.members:
                return g
        return None

    def saved_bytes(self, space_id: str) -> tuple[int, int]:
        """(models reused without download, their weight bytes not downloaded) in ``space_id``."""
        copies = [r for r in self.of_space(space_id).values() if r.copy_of is not None]
        return len(copies), sum(r.weight_bytes for r in copies)
