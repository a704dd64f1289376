"""Nearest-neighbour search over a space's vectors: exact below a size threshold, an ANN index above it.

Below ``AnnSettings.threshold`` rows a table has no vector index and every query is an exact flat scan: at
20k x 576 float32 that is ~46 MB and ~45 ms on 2 cores, exact by construction, with nothing to build or keep
up to date. Above it a flat scan stops being cheap (100k x 576 float32 is ~230 MB read and multiplied a query,
~0.2 s; 1M is 2.3 GB, ~2 s), so :func:`maintain` builds an IVF index and :func:`nearest` probes a few of its
partitions and re-ranks the candidates by their exact distance (~5 ms at 1M).

Rows written after the index was built are "unindexed": LanceDB still scans them flat on every query (we never
turn on ``fast_search``, which would skip them), so a new model is found at once; :func:`maintain` folds them
into the index with ``Table.optimize()`` once they are numerous enough to cost a query noticeable time.

The decision (:func:`decide`) is a pure function of :class:`AnnStatus` and :class:`AnnSettings`; only
:func:`ann_status`, :func:`maintain` and :func:`nearest` touch the table. Similarities are cosine and vectors
are stored unnormalised, so the index is trained with the cosine metric and every query asks for it: a query
whose metric differs from the index's silently falls back to a flat scan in LanceDB 0.40.

This module must stay light to import (the query path has a cold-start budget): numpy and lancedb only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
from lancedb.index import HnswSq, IvfPq, IvfSq
from lancedb.query import LanceVectorQueryBuilder
from lancedb.table import Table

from hubdelta.index.compaction import compact_table
from hubdelta.index.selectors import in_list

VECTOR = "vector"
METRIC: Literal["cosine"] = "cosine"

IndexType = Literal["IVF_PQ", "IVF_SQ", "IVF_HNSW_SQ"]
Action = Literal["none", "build", "optimize", "ok"]

# The index types ``index_stats`` reports for a vector index (scalar indices report BTREE, BITMAP, ...).
_VECTOR_INDEX_TYPES = frozenset(
    {"IVF_FLAT", "IVF_SQ", "IVF_PQ", "IVF_RQ", "IVF_HNSW_SQ", "IVF_HNSW_PQ", "IVF_HNSW_FLAT"}
)


@dataclass(frozen=True)
class AnnSettings:
    """When to build and maintain a table's vector index, and how to build and query it.

    The defaults were measured with ``bench/ann_bench.py`` on 1M x 576 clustered vectors on 2 cores: build
    ~55-70 s, recall@10 1.000, p50 ~5-6 ms a query, against ~2 s for an exact flat scan (figures in the
    bench's docstring).
    """

    # Below this many rows there is no index and queries are exact: a flat scan of 20k x 576 float32 takes
    # ~45 ms (the index: ~4 ms, built in ~1 s), a price worth paying for exact answers and no index upkeep.
    threshold: int = 20_000
    # IVF_SQ (8-bit scalar quantisation, 576 bytes a vector): builds 1M x 576 in ~55-70 s on 2 cores, and its
    # distances are close enough that refine_factor 2 already gives full recall. IVF_PQ (72-byte codes, 8x
    # smaller) built in 130 s but reached only recall 0.61 / 0.76 / 0.89 at refine_factor 5 / 10 / 20;
    # IVF_HNSW_SQ built in 200 s and reached 0.98 at 20 probes, slower per query than IVF_SQ.
    index_type: IndexType = "IVF_SQ"
    # num_partitions = partition_factor * sqrt(rows), the usual balance between ranking the centroids (grows
    # with partitions) and scanning the probed ones (shrinks with them): ~1000 partitions of ~1000 rows at 1M.
    partition_factor: float = 1.0
    # IVF_PQ only: dimensions a sub-vector (a code byte); 8 gives 72 sub-vectors at 576, twice LanceDB's default
    # of dim/16, because PQ's coarse ranking limits recall more than the probes do.
    sub_vector_dim: int = 8
    # Partitions probed a query (2% of them at 1M): recall@10 at 1M went 0.92 / 0.97-0.99 / 0.996 / 1.000 with
    # 5 / 10 / 15 / 20 probes, while latency hardly moved (~5 ms is fixed cost); 20 leaves a margin for real
    # data whose clusters straddle partitions more than the benchmark's do.
    nprobes: int = 20
    # Re-rank refine_factor * k quantised candidates by their exact distance: SQ misorders a few (recall 0.94 at
    # 1, 1.000 at 2), it makes the returned similarities exact, and 3 adds margin for < 1 ms.
    refine_factor: int = 3
    # IVF_HNSW_SQ only: graph candidates kept a probed partition (raised to k * refine_factor when lower, as
    # LanceDB requires).
    ef: int = 100
    # Fold unindexed rows into the index once they exceed this fraction of the indexed rows...
    optimize_fraction: float = 0.1
    # ... or this many rows, whichever comes first: every query scans unindexed rows flat (~2.3 ms a 1k rows of
    # 576 dims; 20k unindexed rows took p50 5 -> 46 ms at 1M), and an optimize at 1M takes ~20 s.
    optimize_rows: int = 5_000
    # Up to this many ``only`` ids, read their vectors and rank them exactly instead of probing the index with
    # a prefilter: at 1M rows 10 / 1k / 10k ids took 41 / 55 / 180 ms exactly against 55 / 68 / 114 ms probing
    # (the repo_id IN filter itself costs ~40 ms, a column scan).
    exact_only_max: int = 5_000

    def num_partitions(self, rows: int) -> int:
        """IVF partitions for a table of ``rows`` rows: ``partition_factor * sqrt(rows)``, at least 1.

        Capped at ``rows / 256``: LanceDB trains each partition's k-means centroid on 256 sampled rows and
        trains (and warns about) fewer partitions than asked when the table has too few.
        """
        return max(1, min(round(self.partition_factor * math.sqrt(rows)), rows // 256))

    def num_sub_vectors(self, dim: int) -> int:
        """PQ sub-vectors for vectors of ``dim`` dimensions: ``dim / sub_vector_dim`` when it divides, else 1."""
        return dim // self.sub_vector_dim if dim % self.sub_vector_dim == 0 else 1


@dataclass(frozen=True)
class AnnStatus:
    """How much of a table its vector index covers."""

    rows: int
    indexed_rows: int
    unindexed_rows: int
    index_type: str | None  # as index_stats says it, e.g. "IVF_SQ"; None: no vector index


def _vector_index_name(table: Table) -> str | None:
    for config in table.list_indices():
        if list(config.columns) == [VECTOR]:
            return str(config.name)
    return None


def ann_status(table: Table) -> AnnStatus:
    """Rows of ``table`` and how many of them its vector index covers (manifest reads only)."""
    rows = table.count_rows()
    name = _vector_index_name(table)
    stats = table.index_stats(name) if name is not None else None
    if stats is None or stats.index_type not in _VECTOR_INDEX_TYPES:
        return AnnStatus(rows=rows, indexed_rows=0, unindexed_rows=rows, index_type=None)
    return AnnStatus(
        rows=rows,
        indexed_rows=int(stats.num_indexed_rows),
        unindexed_rows=int(stats.num_unindexed_rows),
        index_type=str(stats.index_type),
    )


def decide(status: AnnStatus, settings: AnnSettings) -> Action:
    """What :func:`maintain` should do for a table in ``status``.

    Returns:
        ``"none"``: below the threshold with no index (queries are exact flat scans);
        ``"build"``: at or above the threshold with no vector index, or with one of another type than
        ``settings.index_type`` (the settings changed);
        ``"optimize"``: the unindexed rows exceed ``optimize_fraction`` of the indexed rows or ``optimize_rows``;
        ``"ok"``: nothing to do (an index below the threshold, e.g. after deletions, is kept: it still answers).
    """
    if status.index_type is None:
        return "build" if status.rows >= settings.threshold else "none"
    if status.index_type != settings.index_type and status.rows >= settings.threshold:
        return "build"
    limit = min(settings.optimize_fraction * status.indexed_rows, settings.optimize_rows)
    return "optimize" if status.unindexed_rows > limit else "ok"


def _index_config(settings: AnnSettings, rows: int, dim: int) -> Any:
    partitions = settings.num_partitions(rows)
    if settings.index_type == "IVF_PQ":
        return IvfPq(distance_type=METRIC, num_partitions=partitions, num_sub_vectors=settings.num_sub_vectors(dim))
    if settings.index_type == "IVF_SQ":
        return IvfSq(distance_type=METRIC, num_partitions=partitions)
    return HnswSq(distance_type=METRIC, num_partitions=partitions)


def build_index(table: Table, settings: AnnSettings) -> None:
    """(Re)build the vector index of ``table`` over all its rows, replacing any existing one (slow: minutes at 1M).

    Writes a new table version; call it only as the index's single writer.
    """
    rows = table.count_rows()
    dim = table.schema.field(VECTOR).type.list_size
    table.create_index(VECTOR, config=_index_config(settings, rows, dim), replace=True)


def maintain(table: Table, settings: AnnSettings) -> Action:
    """Bring the vector index of ``table`` in line with :func:`decide`, and say what was done.

    ``"build"`` trains a new index over every row (replacing any; ~70 s at 1M x 576 on 2 cores); ``"optimize"``
    runs :func:`~hubdelta.index.compaction.compact_table`, whose ``Table.optimize()`` in LanceDB 0.40 adds the
    unindexed rows to the existing index without retraining it (new rows join their nearest existing partition)
    and compacts small fragments, and which then drops every old version (optimize's own default keeps 7 days
    of them: ~6 GB at 1M x 576; ~20 s at 1M). Partitions are never re-trained by an optimize:
    after heavy growth (say 2x since the build) call :func:`build_index` to re-balance them. Both write new
    table versions: call this only as the index's single writer.

    Args:
        table: an ``emb_<space>`` table (schema ``emb_schema``).
        settings: thresholds and index parameters.

    Returns:
        The action taken: ``"none"``, ``"build"``, ``"optimize"`` or ``"ok"``.
    """
    action = decide(ann_status(table), settings)
    if action == "build":
        build_index(table, settings)
    elif action == "optimize":
        compact_table(table)
    return action


def _query_vector(vector: np.ndarray, dim: int) -> np.ndarray:
    q = np.asarray(vector, dtype=np.float32)
    if q.shape != (dim,):
        raise ValueError(f"query vector of shape {q.shape} does not fit a space of dimension {dim}")
    if not np.all(np.isfinite(q)):
        raise ValueError("query vector has NaN or infinite components")
    if not np.any(q):
        raise ValueError("query vector is all zeros: cosine similarity to it is undefined")
    return q


def _exact_among(table: Table, q: np.ndarray, k: int, where: str) -> list[tuple[str, float]]:
    # A filtered scan reads the vectors of the matching rows only (10k of 1M: ~0.15 s); LanceDB's own flat
    # search with the same prefilter (bypass_vector_index) read every vector (~0.7 s at 1M whatever the filter).
    rows = table.search().where(where).select(["repo_id", VECTOR]).limit(None).to_arrow()
    if rows.num_rows == 0:
        return []
    column = rows[VECTOR].combine_chunks()
    vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(rows.num_rows, column.type.list_size)
    norms = np.linalg.norm(vectors, axis=1)
    valid = np.flatnonzero(norms > 0)  # like LanceDB, never return a zero vector (its cosine is undefined)
    sims = vectors[valid] @ (q / np.linalg.norm(q)) / norms[valid]
    order = np.argsort(-sims, kind="stable")[:k]
    repo_ids: list[str] = rows["repo_id"].to_pylist()
    return [(repo_ids[i], float(s)) for i, s in zip(valid[order], sims[order], strict=True)]


def nearest(
    table: Table,
    vector: np.ndarray,
    k: int,
    settings: AnnSettings,
    *,
    only: Sequence[str] | None = None,
) -> list[tuple[str, float]]:
    """The ``k`` rows of ``table`` nearest to ``vector`` by cosine, best first.

    Exact (a flat scan) when the table has no vector index; otherwise the index is probed with
    ``settings.nprobes`` partitions and ``settings.refine_factor`` re-ranking, and rows written since the index
    was built are scanned flat, so they are always found. Re-ranking makes the returned similarities exact;
    which rows are returned is approximate (recall@10 ~0.95 at the defaults).

    Args:
        table: an ``emb_<space>`` table (schema ``emb_schema``).
        vector: the query, shape ``(dim,)``; any norm but zero.
        k: how many rows at most.
        settings: query parameters.
        only: when given, search only among these repo ids (unknown ids are ignored). Up to
            ``settings.exact_only_max`` ids the search is exact among them (their vectors are read and
            compared here); beyond, the index is probed with a ``repo_id IN (...)`` prefilter.

    Returns:
        ``(repo_id, cosine similarity)`` pairs, similarity descending; fewer than ``k`` when the table (or
        ``only``) has fewer rows.

    Raises:
        ValueError: ``vector`` is all zeros, not finite, or of the wrong dimension; ``k`` is negative.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, not {k}")
    q = _query_vector(vector, table.schema.field(VECTOR).type.list_size)
    ids = list(dict.fromkeys(only)) if only is not None else None
    if k == 0 or (ids is not None and not ids):
        return []
    where = None
    if ids is not None:
        where = in_list("repo_id", ids)
        if len(ids) <= settings.exact_only_max:
            return _exact_among(table, q, k, where)
    search = cast(LanceVectorQueryBuilder, table.search(q, vector_column_name=VECTOR))  # a vector query is one
    # Naming _distance in the selection silences LanceDB's warning that it will stop adding it by itself.
    query = search.distance_type(METRIC).select(["repo_id", "_distance"]).limit(k)
    # Harmless without an index (a flat scan ignores them), so no list_indices round trip a query. LanceDB
    # refuses an HNSW ef below the candidates it must return (k * refine_factor).
    ef = max(settings.ef, k * max(1, settings.refine_factor))
    query = query.nprobes(settings.nprobes).refine_factor(settings.refine_factor).ef(ef)
    if where is not None:
        # A prefilter can leave the probed partitions with fewer than k allowed rows: let LanceDB probe on.
        query = query.where(where, prefilter=True).maximum_nprobes(0)
    result = query.to_arrow()
    repo_ids: list[str] = result["repo_id"].to_pylist()
    distances: list[float] = result["_distance"].to_pylist()
    return [(r, 1.0 - d) for r, d in zip(repo_ids, distances, strict=True)]
