"""Spaces and their vectors: the ``spaces`` table, one ``emb_<space>`` table a space, nearest-neighbour search
and the upkeep of each space's ANN index.

Queries go through :meth:`VectorsStore.nearest` and :meth:`VectorsStore.visible`, which apply the visibility
rule (:func:`hubdelta.index.records.visible_to_queries`): a removed model keeps its vectors, but no search
returns it. :meth:`VectorsStore.get` and :meth:`VectorsStore.of_repo` read every stored vector (the embedder's
bookkeeping, ``show``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hubdelta.index import ann
from hubdelta.index.embeddings import (
    SPACES,
    Embedding,
    SpaceRow,
    VectorMatrix,
    embeddings_from_table,
    embeddings_to_table,
    permute_rows,
    spaces_from_table,
    spaces_to_table,
)
from hubdelta.index.models_store import ModelsStore
from hubdelta.index.schema import datetimes
from hubdelta.index.selectors import id_filter
from hubdelta.index.tables import PutResult, Tables
from hubdelta.kernel.errors import NotFoundError, StoreError


class VectorsStore:
    """``index.vectors``: every space, its vectors, and search among them."""

    def __init__(self, tables: Tables, models: ModelsStore, settings: ann.AnnSettings) -> None:
        self._t = tables
        self._models = models
        self.ann = settings

    # ---- spaces ----

    def spaces(self) -> dict[str, SpaceRow]:
        """Every embedding space, by id."""
        return {r.space_id: r for r in spaces_from_table(self._t.scan(SPACES))}

    def named(self, spaces: Iterable[str] | None) -> list[str]:
        """``spaces`` in order without repeats, or every space (sorted) for None: what a refresh of derived data
        (layouts, labels) goes over.

        Raises:
            NotFoundError: a named space the index does not hold.
        """
        known = self.spaces()
        wanted = sorted(known) if spaces is None else list(dict.fromkeys(spaces))
        for space_id in wanted:
            if space_id not in known:
                raise NotFoundError(space_id, "no such space", fix="see `hubdelta status` for the spaces")
        return wanted

    def put_space(self, space: SpaceRow) -> None:
        """Create a space's vector table, then record the space and its base activations (one commit each).

        The table first: a writer killed between the two leaves a table and no row, which the next run's
        ``put_space`` completes; the other order would leave a row that says the space exists without its table.

        Raises:
            StoreError: the index is read-only.
        """
        self._t.writable(SPACES)
        self._t.create_emb(space.space_id, space.dim)
        self._t.upsert(SPACES, "space_id", spaces_to_table([space]))

    # ---- vectors ----

    def put(self, space_id: str, embeddings: Sequence[Embedding]) -> PutResult:
        """Insert or replace vectors by repo id in ONE commit (a new sha replaces the old vector).

        Raises:
            StoreError: the index is read-only, or has no such space (record it with ``put_space`` first).
            ValueError: a vector that does not fit the space's dimension, or a naive datetime.
        """
        self._t.writable(SPACES)  # the read-only error before the missing-space one
        table = self._t.emb(space_id)
        if table is None:
            raise StoreError(f"has no space {space_id!r}", uri=self._t.uri, fix="record it with put_space first")
        latest = list({e.repo_id: e for e in embeddings}.values())
        if not latest:
            return PutResult(0, 0)
        dim = table.schema.field("vector").type.list_size
        return self._t.upsert(table.name, "repo_id", embeddings_to_table(latest, dim))

    def get(self, space_id: str, repo_ids: Iterable[str] | None = None) -> dict[str, Embedding]:
        """Stored vectors of ``space_id`` by repo id (those of ``repo_ids`` that exist, or all), hidden ones too.

        For what people see, use :meth:`visible`.
        """
        table = self._t.emb(space_id)
        if table is None:
            return {}
        flt = None if repo_ids is None else id_filter(repo_ids)
        return embeddings_from_table(self._t.scan(table.name, flt))

    def shas(self, space_id: str, repo_ids: Iterable[str]) -> dict[str, str | None]:
        """The sha each of ``repo_ids`` has a vector at in ``space_id`` (two columns read, no vectors)."""
        table = self._t.emb(space_id)
        if table is None:
            return {}
        rows = self._t.scan(table.name, id_filter(repo_ids), columns=["repo_id", "sha"]).to_pydict()
        return dict(zip(rows["repo_id"], rows["sha"], strict=True))

    def visible(self, space_id: str, repo_ids: Iterable[str] | None = None) -> dict[str, Embedding]:
        """Like :meth:`get`, without the vectors of models hidden from queries (removed from the Hub).

        A vector whose model has no record at all is kept (shown bare, as before records existed).
        """
        found = self.get(space_id, repo_ids)
        gone = self._models.hidden_ids(None if repo_ids is None else found)
        return {k: e for k, e in found.items() if k not in gone} if gone else found

    def visible_matrix(self, space_id: str, batch_size: int = 65_536) -> VectorMatrix:
        """The visible vectors of ``space_id`` (as :meth:`visible` selects them) as one matrix sorted by repo id.

        Read batch by batch into one preallocated float32 array and sorted in place: the memory is the matrix
        plus one batch, where :meth:`visible` at 1M rows would hold a million objects and their stacked copy.
        """
        table = self._t.emb(space_id)
        dim = 0 if table is None else table.schema.field("vector").type.list_size
        if table is None:
            return VectorMatrix([], np.zeros((0, dim), np.float32), [])
        gone = self._models.hidden_ids()
        matrix = np.empty((self._t.count(table.name), dim), np.float32)
        ids: list[str] = []
        when: list[datetime | None] = []
        columns = ["repo_id", "vector", "embedded_at"]
        reader = self._t.read(lambda: table.search().select(columns).to_batches(batch_size))
        for batch in reader:
            keep = [i for i, r in enumerate(batch["repo_id"].to_pylist()) if r not in gone]
            rows = batch.take(keep) if len(keep) < batch.num_rows else batch
            if len(ids) + rows.num_rows > len(matrix):  # a writer added rows since the count
                matrix = np.resize(matrix, (len(ids) + rows.num_rows, dim))
            flat = rows["vector"].flatten().to_numpy(zero_copy_only=False)
            matrix[len(ids) : len(ids) + rows.num_rows] = flat.reshape(rows.num_rows, dim)
            ids += rows["repo_id"].to_pylist()
            when += datetimes(rows["embedded_at"])
        matrix = matrix[: len(ids)]
        order = sorted(range(len(ids)), key=ids.__getitem__)
        permute_rows(matrix, order)
        return VectorMatrix([ids[i] for i in order], matrix, [when[i] for i in order])

    def norms(self, space_id: str, limit: int = 20_000) -> np.ndarray:
        """The norms of up to ``limit`` of the space's vectors (float32; empty for an unknown space): a sample
        to tell the space's typical vector length by, read without holding a million vectors."""
        table = self._t.emb(space_id)
        if table is None:
            return np.zeros(0, np.float32)
        rows = self._t.read(lambda: table.search().select(["vector"]).limit(limit).to_arrow())
        dim = table.schema.field("vector").type.list_size
        flat = rows["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return np.linalg.norm(flat.reshape(-1, dim).astype(np.float32), axis=1)

    def fingerprint(self, space_id: str) -> str:
        """A short string that changes whenever ``space_id``'s visible vectors change, read cheaply.

        The number of vectors, the latest ``embedded_at`` (every write stamps its time: a new vector or a new
        revision's moves it) and a digest of the hidden models (a removal hides a vector without writing one).
        Not the table's version, which compaction and ANN upkeep also move. "" for an unknown space.
        """
        table = self._t.emb(space_id)
        if table is None:
            return ""
        times = self._t.scan(table.name, columns=["embedded_at"])["embedded_at"]
        latest = pc.max(times).cast(pa.int64()).as_py() if len(times) else None
        hidden = hashlib.sha256("\n".join(sorted(self._models.hidden_ids())).encode()).hexdigest()[:12]
        return f"n={len(times)} t={latest} hidden={hidden}"

    def count(self, space_id: str) -> int:
        """Vectors stored in ``space_id``, hidden ones included (0 for an unknown space)."""
        table = self._t.emb(space_id)
        return 0 if table is None else self._t.count(table.name)

    def of_repo(self, repo_id: str) -> dict[str, Embedding]:
        """``repo_id``'s vector in every space that has one, by space id (whatever its status)."""
        found = {}
        for space_id in self.spaces():
            hit = self.get(space_id, [repo_id]).get(repo_id)
            if hit is not None:
                found[space_id] = hit
        return found

    # ---- search ----

    def nearest(
        self, space_id: str, vector: np.ndarray, k: int, *, only: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        """The ``k`` visible vectors of ``space_id`` nearest to ``vector`` as (repo id, cosine), best first.

        Exact below ``self.ann.threshold`` rows, an ANN index above (see :mod:`hubdelta.index.ann`). Models
        hidden from queries are never returned: the statuses of each round's candidates are looked up, and a
        round that lost some to the rule is followed by a wider one, so the cost does not grow with the number
        of models ever removed.

        Raises:
            StoreError: no such space.
            ValueError: a zero, non-finite or wrong-sized vector; a negative ``k``.
        """
        table = self._t.emb(space_id)
        if table is None:
            raise StoreError(f"has no space {space_id!r}", uri=self._t.uri, fix="see hubdelta status for the spaces")
        if only is not None:
            gone = self._models.hidden_ids(only)
            allowed = [i for i in only if i not in gone]
            return self._t.read(lambda: ann.nearest(table, vector, k, self.ann, only=allowed))
        fetch = k
        while True:
            hits = self._t.read(partial(ann.nearest, table, vector, fetch, self.ann))
            gone = self._models.hidden_ids(h[0] for h in hits) if hits else frozenset()
            shown = [h for h in hits if h[0] not in gone]
            if len(shown) >= k or len(hits) < fetch or not gone:
                return shown[: max(k, 0)]
            fetch = 2 * fetch + len(gone)  # the next round holds at least the hidden ones and as many again

    # ---- ANN upkeep ----

    def ann_status(self, space_id: str) -> ann.AnnStatus | None:
        """How much of a space's vectors its ANN index covers (None: no such space)."""
        table = self._t.emb(space_id)
        return None if table is None else self._t.read(partial(ann.ann_status, table))

    def maintain_ann(self, space_ids: Iterable[str] | None = None) -> dict[str, str]:
        """Build or update each space's ANN index as :func:`hubdelta.index.ann.decide` says; the actions taken.

        Raises:
            StoreError: the index is read-only.
        """
        actions: dict[str, str] = {}
        for space_id in self.spaces() if space_ids is None else space_ids:
            found = self._t.emb(space_id)
            if found is not None:
                table = self._t.writable(found.name)
                actions[space_id] = ann.maintain(table, self.ann)  # the writer: no compaction runs under it
        return actions
