"""Vectors in the index: a ``spaces`` table (what makes vectors comparable) and one ``emb_<space>`` table a space.

A space's vectors live in their own table with a fixed-size vector column (``pa.list_(float32, dim)``, what
LanceDB's vector search wants), so vectors of different spaces can never be compared by accident. The
``spaces`` row also caches the base model's probe activations: computed once per space, reused by every
later embedding run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from hubdelta.index.schema import TIMESTAMP, datetimes, utc

SPACES = "spaces"
EMB_PREFIX = "emb_"

SPACES_SCHEMA = pa.schema(
    [
        pa.field("space_id", pa.string(), nullable=False),
        pa.field("params", pa.string(), nullable=False),  # JSON of the space's fields
        pa.field("dim", pa.int32(), nullable=False),
        pa.field("probes", pa.int32(), nullable=False),
        pa.field("base_activations", pa.list_(pa.float32()), nullable=False),  # (probes, dim) row-major
        pa.field("created_at", TIMESTAMP),
    ]
)


def emb_schema(dim: int) -> pa.Schema:
    """The table of one space's vectors: one row per repo, at the sha that was embedded."""
    return pa.schema(
        [
            pa.field("repo_id", pa.string(), nullable=False),
            pa.field("sha", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("embedded_at", TIMESTAMP),
        ]
    )


def emb_table_name(space_id: str) -> str:
    """``emb_<space id>``; space ids are slugs, anything else is refused rather than mangled."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", space_id):
        raise ValueError(f"space id {space_id!r} is not a slug of [a-z0-9._-]")
    return EMB_PREFIX + space_id


@dataclass(frozen=True)
class SpaceRow:
    """A space as stored: its parameters, dimension and the cached base activations."""

    space_id: str
    params: dict[str, Any]
    base_activations: np.ndarray  # (P, C) float32
    created_at: datetime | None = None

    @property
    def dim(self) -> int:
        return int(self.base_activations.shape[1])


@dataclass(frozen=True)
class Embedding:
    """One model's vector in one space, for the sha that was embedded."""

    repo_id: str
    sha: str | None
    vector: np.ndarray  # (C,) float32
    embedded_at: datetime | None = None


def spaces_to_table(rows: Sequence[SpaceRow]) -> pa.Table:
    for r in rows:
        assert r.base_activations.ndim == 2, r.space_id  # (P, C)
    return pa.table(
        {
            "space_id": [r.space_id for r in rows],
            "params": [json.dumps(r.params, sort_keys=True) for r in rows],
            "dim": [r.dim for r in rows],
            "probes": [int(r.base_activations.shape[0]) for r in rows],
            "base_activations": [np.asarray(r.base_activations, np.float32).ravel() for r in rows],
            "created_at": [utc(r.created_at, "created_at") for r in rows],
        },
        schema=SPACES_SCHEMA,
    )


def spaces_from_table(table: pa.Table) -> list[SpaceRow]:
    cols = table.to_pydict()
    created = datetimes(table["created_at"])
    return [
        SpaceRow(
            space_id=cols["space_id"][i],
            params=json.loads(cols["params"][i]),
            base_activations=np.asarray(cols["base_activations"][i], np.float32).reshape(
                cols["probes"][i], cols["dim"][i]
            ),
            created_at=created[i],
        )
        for i in range(table.num_rows)
    ]


def embeddings_to_table(rows: Sequence[Embedding], dim: int) -> pa.Table:
    vectors = np.stack([np.asarray(r.vector, np.float32) for r in rows]) if rows else np.zeros((0, dim), np.float32)
    if vectors.shape[1:] != (dim,):
        raise ValueError(f"vectors of shape {vectors.shape[1:]} do not fit a space of dimension {dim}")
    flat = pa.array(vectors.ravel(), pa.float32())
    return pa.table(
        {
            "repo_id": pa.array([r.repo_id for r in rows], pa.string()),
            "sha": pa.array([r.sha for r in rows], pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
            "embedded_at": pa.array([utc(r.embedded_at, "embedded_at") for r in rows], TIMESTAMP),
        },
        schema=emb_schema(dim),
    )


def embeddings_from_table(table: pa.Table) -> dict[str, Embedding]:
    n = table.num_rows
    if n == 0:
        return {}
    column = table["vector"].combine_chunks()
    dim = column.type.list_size
    vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(n, dim)
    ids, shas = table["repo_id"].to_pylist(), table["sha"].to_pylist()
    when = datetimes(table["embedded_at"])
    return {ids[i]: Embedding(ids[i], shas[i], vectors[i], when[i]) for i in range(n)}


@dataclass(frozen=True)
class VectorMatrix:
    """A space's vectors as one matrix, rows in repo-id order: what a report reads at Hub scale.

    One float32 array and two lists instead of an :class:`Embedding` per row: 1M rows of 576 floats are 2.3 GB
    either way, but a million small objects (and a stacked copy of their vectors) are not needed to cluster.
    """

    repo_ids: list[str]  # sorted
    vectors: np.ndarray  # (N, C) float32, row i is repo_ids[i]'s
    embedded_at: list[datetime | None]


def permute_rows(matrix: np.ndarray, order: Sequence[int]) -> None:
    """Reorder ``matrix``'s rows in place so that new row ``i`` is old row ``order[i]`` (a permutation).

    Follows each cycle of the permutation with one spare row, so sorting 2.3 GB of vectors does not need a
    second 2.3 GB copy (``matrix[order]`` would).
    """
    done = np.zeros(len(order), dtype=bool)
    for start in range(len(order)):
        if done[start] or order[start] == start:
            continue
        spare = matrix[start].copy()
        i = start
        while True:
            done[i] = True
            j = order[i]
            if j == start:
                matrix[i] = spare
                break
            matrix[i] = matrix[j]
            i = j
