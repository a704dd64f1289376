"""Arrow schemas of the index tables and the pure conversions between records and arrow rows.

The schemas are explicit ``pyarrow`` schemas rather than ``lancedb.pydantic.LanceModel`` classes: the typed
records already exist (``records.py``, plain dataclasses shared with the crawler), so a LanceModel would be a
second, drifting copy of each record; an arrow schema states the exact storage types (int64,
``timestamp[us, UTC]``, ``list<string>``, nullability) and lets the conversions work column by column, which
keeps 100k-row reads well under a second (no per-row pydantic validation). Embedding tables, later, can still
use ``pa.list_(pa.float32(), n)`` for their vectors.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from hubdelta.index.records import Cursor, HubModel, ModelRecord, ModelStatus, Relation, TrackedBase
from hubdelta.kernel.collector import paused_gc

TIMESTAMP = pa.timestamp("us", tz="UTC")
STRINGS = pa.list_(pa.string())
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

META = "meta"
TRACKED = "tracked"
MODELS = "models"


def _required(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


META_SCHEMA = pa.schema([_required("key", pa.string()), _required("value", pa.string())])

TRACKED_SCHEMA = pa.schema(
    [
        _required("base", pa.string()),
        _required("relations", STRINGS),
        # JSON {relation: {"created_at": iso, "repo_id": ...}}: the table holds a handful of rows and the set
        # of relations may grow, so a fixed struct would buy nothing but a migration per new relation.
        _required("cursors", pa.string()),
        pa.field("added_at", TIMESTAMP),
        pa.field("last_crawl", TIMESTAMP),
        pa.field("last_full_sync", TIMESTAMP),
    ]
)

MODELS_SCHEMA = pa.schema(
    [
        _required("repo_id", pa.string()),
        pa.field("sha", pa.string()),
        _required("relation", pa.string()),
        _required("base_models", STRINGS),
        pa.field("created_at", TIMESTAMP),
        pa.field("last_modified", TIMESTAMP),
        _required("tags", STRINGS),
        pa.field("library", pa.string()),
        pa.field("pipeline_tag", pa.string()),
        pa.field("license", pa.string()),
        _required("downloads", pa.int64()),
        _required("likes", pa.int64()),
        pa.field("gated", pa.string()),
        _required("private", pa.bool_()),
        _required("card_summary", pa.string()),
        _required("status", pa.string()),
        _required("reason", pa.string()),
        _required("attempts", pa.int64()),
        pa.field("first_seen", TIMESTAMP),
        pa.field("last_seen", TIMESTAMP),
    ]
)

SCHEMAS = {META: META_SCHEMA, TRACKED: TRACKED_SCHEMA, MODELS: MODELS_SCHEMA}  # the fixed tables of m001


def utc(value: datetime | None, what: str = "datetime") -> datetime | None:
    """Return ``value`` in UTC; a naive datetime is refused because its instant is unknown.

    Raises:
        ValueError: ``value`` has no timezone.
    """
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (got naive {value.isoformat()})")
    return value.astimezone(UTC)


def datetimes(column: pa.ChunkedArray | pa.Array) -> list[datetime | None]:
    """A timestamp column as UTC datetimes (``None`` for nulls).

    Built from the int64 microseconds of the distinct values: pyarrow's own ``to_pylist`` is ~5x slower on
    timestamps with a zone, and first_seen / last_seen repeat one crawl time over thousands of rows.
    """
    micros = column.cast(pa.int64())
    encoded = (micros.combine_chunks() if isinstance(micros, pa.ChunkedArray) else micros).dictionary_encode()
    values = [_EPOCH + timedelta(microseconds=v) for v in encoded.dictionary.to_pylist()]
    return [None if i is None else values[i] for i in encoded.indices.to_pylist()]


def string_tuples(column: pa.ChunkedArray | pa.Array) -> list[tuple[str, ...]]:
    """A non-null ``list<string>`` column as tuples, sliced from its flat values (~4x ``to_pylist``)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    flat = array.flatten().to_pylist()
    offsets = array.offsets.to_pylist()
    first = offsets[0]  # non-zero when the array is a slice
    return [tuple(flat[a - first : b - first]) for a, b in itertools.pairwise(offsets)]


def python_values(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """A column as Python values the records hold: datetimes in UTC, lists as tuples."""
    if column.type == TIMESTAMP:
        return datetimes(column)
    if column.type == STRINGS:
        return string_tuples(column)
    return column.to_pylist()


# ---- models ----


def models_to_table(records: Sequence[ModelRecord]) -> pa.Table:
    """Arrow rows (``MODELS_SCHEMA``) of ``records``, in order.

    Raises:
        ValueError: a datetime without a timezone.
    """
    ms = [r.model for r in records]

    def when(name: str, values: Sequence[datetime | None]) -> list[datetime | None]:
        return [utc(v, name) for v in values]

    columns: dict[str, list[Any]] = {
        "repo_id": [m.repo_id for m in ms],
        "sha": [m.sha for m in ms],
        "relation": [Relation(m.relation).value for m in ms],
        "base_models": [list(m.base_models) for m in ms],
        "created_at": when("created_at", [m.created_at for m in ms]),
        "last_modified": when("last_modified", [m.last_modified for m in ms]),
        "tags": [list(m.tags) for m in ms],
        "library": [m.library for m in ms],
        "pipeline_tag": [m.pipeline_tag for m in ms],
        "license": [m.license for m in ms],
        "downloads": [m.downloads for m in ms],
        "likes": [m.likes for m in ms],
        "gated": [m.gated for m in ms],
        "private": [m.private for m in ms],
        "card_summary": [m.card_summary for m in ms],
        "status": [ModelStatus(r.status).value for r in records],
        "reason": [r.reason for r in records],
        "attempts": [r.attempts for r in records],
        "first_seen": when("first_seen", [r.first_seen for r in records]),
        "last_seen": when("last_seen", [r.last_seen for r in records]),
    }
    return pa.table(columns, schema=MODELS_SCHEMA)


def models_from_table(table: pa.Table) -> list[ModelRecord]:
    """Records of arrow rows shaped like ``MODELS_SCHEMA`` (extra columns are ignored)."""
    relations = {r.value: r for r in Relation}
    statuses = {s.value: s for s in ModelStatus}
    # Columns converted up front, then one zip: ~3x faster than per-row lookups on 100k rows.
    rows = zip(*(python_values(table.column(f.name)) for f in MODELS_SCHEMA), strict=True)
    with paused_gc():  # nothing built here forms cycles, so nothing is left uncollected
        return _build_models(rows, relations, statuses)


def _build_models(
    rows: Iterable[tuple[Any, ...]], relations: dict[str, Relation], statuses: dict[str, ModelStatus]
) -> list[ModelRecord]:
    return [
        ModelRecord(
            model=HubModel(
                repo_id=repo_id,
                sha=sha,
                relation=relations[relation],
                base_models=base_models,
                created_at=created_at,
                last_modified=last_modified,
                tags=tags,
                library=library,
                pipeline_tag=pipeline_tag,
                license=license_,
                downloads=downloads,
                likes=likes,
                gated=gated,
                private=private,
                card_summary=card_summary,
            ),
            status=statuses[status],
            reason=reason,
            attempts=attempts,
            first_seen=first_seen,
            last_seen=last_seen,
        )
        for (
            repo_id,
            sha,
            relation,
            base_models,
            created_at,
            last_modified,
            tags,
            library,
            pipeline_tag,
            license_,
            downloads,
            likes,
            gated,
            private,
            card_summary,
            status,
            reason,
            attempts,
            first_seen,
            last_seen,
        ) in rows
    ]


# ---- tracked ----


def cursors_to_json(cursors: dict[Relation, Cursor]) -> str:
    """The ``cursors`` column: sorted keys, so an unchanged cursor set writes an identical string.

    Raises:
        ValueError: a cursor time without a timezone.
    """
    data = {}
    for rel, cursor in cursors.items():
        created = utc(cursor.created_at, f"cursor {rel}")
        assert created is not None  # Cursor.created_at is required
        data[Relation(rel).value] = {"created_at": created.isoformat(), "repo_id": cursor.repo_id}
    return json.dumps(data, sort_keys=True)


def cursors_from_json(text: str) -> dict[Relation, Cursor]:
    """Inverse of :func:`cursors_to_json`."""
    return {
        Relation(rel): Cursor(created_at=datetime.fromisoformat(c["created_at"]), repo_id=c["repo_id"])
        for rel, c in json.loads(text).items()
    }


def tracked_to_table(bases: Sequence[TrackedBase]) -> pa.Table:
    """Arrow rows (``TRACKED_SCHEMA``) of ``bases``, in order.

    Raises:
        ValueError: a datetime without a timezone.
    """
    columns: dict[str, list[Any]] = {
        "base": [b.base for b in bases],
        "relations": [[Relation(r).value for r in b.relations] for b in bases],
        "cursors": [cursors_to_json(b.cursors) for b in bases],
        "added_at": [utc(b.added_at, "added_at") for b in bases],
        "last_crawl": [utc(b.last_crawl, "last_crawl") for b in bases],
        "last_full_sync": [utc(b.last_full_sync, "last_full_sync") for b in bases],
    }
    return pa.table(columns, schema=TRACKED_SCHEMA)


def tracked_from_table(table: pa.Table) -> list[TrackedBase]:
    """Records of arrow rows shaped like ``TRACKED_SCHEMA``."""
    c: dict[str, list[Any]] = {}
    for f in TRACKED_SCHEMA:
        col = table.column(f.name)
        c[f.name] = datetimes(col) if f.type == TIMESTAMP else col.to_pylist()
    return [
        TrackedBase(
            base=c["base"][i],
            relations=tuple(Relation(r) for r in c["relations"][i]),
            cursors=cursors_from_json(c["cursors"][i]),
            added_at=c["added_at"][i],
            last_crawl=c["last_crawl"][i],
            last_full_sync=c["last_full_sync"][i],
        )
        for i in range(table.num_rows)
    ]


def sql_string(value: str) -> str:
    """``value`` as a SQL string literal for a Lance filter (quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"
