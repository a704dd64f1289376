"""Pure conversions between records and arrow rows: every field survives, in its own type."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pytest

from hubdelta.index.records import Cursor, HubModel, ModelRecord, ModelStatus, Relation, TrackedBase
from hubdelta.index.schema import (
    MODELS_SCHEMA,
    TRACKED_SCHEMA,
    cursors_from_json,
    cursors_to_json,
    models_from_table,
    models_to_table,
    sql_string,
    string_tuples,
    tracked_from_table,
    tracked_to_table,
)
from tests.helpers import record

PLUS_TWO = timezone(timedelta(hours=2))

FULL = ModelRecord(
    model=HubModel(
        repo_id="alice/ünïcode-lora",
        sha="a" * 40,
        relation=Relation.MERGE,
        base_models=("acme/base", "other/base"),
        created_at=datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
        last_modified=datetime(2024, 6, 1, 14, 30, tzinfo=PLUS_TWO),  # stored as 12:30 UTC
        tags=("merge", "base_model:merge:acme/base", "ja"),
        library="transformers",
        pipeline_tag="text-generation",
        license="mit",
        downloads=2**40,  # beyond int32
        likes=7,
        gated="manual",
        private=True,
        card_summary="A merge.\nSecond line, 'quoted'.",
    ),
    status=ModelStatus.FAILED,
    reason="out of memory",
    attempts=3,
    first_seen=datetime(2024, 5, 2, tzinfo=UTC),
    last_seen=datetime(2024, 7, 1, tzinfo=UTC),
)
EMPTY = ModelRecord(
    model=HubModel(repo_id="bob/bare", sha=None, relation=Relation.QUANTIZED, base_models=()),
    status=ModelStatus.DISCOVERED,
)


def test_model_rows_round_trip_every_field() -> None:
    table = models_to_table([FULL, EMPTY])
    assert table.schema == MODELS_SCHEMA
    back = models_from_table(table)
    assert back == [FULL, EMPTY]
    # Equality alone would accept str for a StrEnum, lists for tuples, or another zone for UTC.
    for got, want in zip(back, [FULL, EMPTY], strict=True):
        for f in fields(HubModel):
            assert type(getattr(got.model, f.name)) is type(getattr(want.model, f.name)), f.name
        assert type(got.status) is ModelStatus
    assert back[0].model.last_modified == datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
    assert back[0].model.last_modified.tzinfo is UTC  # type: ignore[union-attr]
    assert back[0].model.created_at.microsecond == 123456  # type: ignore[union-attr]
    assert (back[1].model.sha, back[1].model.created_at, back[1].first_seen) == (None, None, None)


def test_every_model_field_has_a_column() -> None:
    record_fields = {f.name for f in fields(HubModel)} | {f.name for f in fields(ModelRecord)} - {"model"}
    assert record_fields == set(MODELS_SCHEMA.names)


def test_naive_datetimes_are_refused() -> None:
    naive = record(1, created_at=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="created_at must be timezone-aware"):
        models_to_table([naive])
    with pytest.raises(ValueError, match="timezone-aware"):
        cursors_to_json({Relation.ADAPTER: Cursor(datetime(2024, 1, 1), "a/b")})


def test_tracked_rows_round_trip_with_cursors() -> None:
    full = TrackedBase(
        base="acme/base",
        relations=(Relation.FINETUNE, Relation.ADAPTER),
        cursors={
            Relation.ADAPTER: Cursor(datetime(2024, 5, 1, 12, 0, 0, 5, tzinfo=UTC), "alice/x"),
            Relation.FINETUNE: Cursor(datetime(2024, 5, 1, 14, 0, tzinfo=PLUS_TWO), "bob/y"),
        },
        added_at=datetime(2024, 1, 1, tzinfo=UTC),
        last_crawl=datetime(2024, 5, 2, tzinfo=UTC),
        last_full_sync=None,
    )
    bare = TrackedBase(base="other/base")
    table = tracked_to_table([full, bare])
    assert table.schema == TRACKED_SCHEMA
    back = tracked_from_table(table)
    assert back == [full, bare]
    assert back[0].relations == (Relation.FINETUNE, Relation.ADAPTER)  # order kept
    assert all(type(r) is Relation for r in back[0].relations)
    assert back[0].cursors[Relation.FINETUNE].created_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert all(type(k) is Relation for k in back[0].cursors)


def test_cursor_json_is_stable() -> None:
    a = Cursor(datetime(2024, 5, 1, tzinfo=UTC), "a/x")
    b = Cursor(datetime(2024, 5, 2, tzinfo=UTC), "b/y")
    one = cursors_to_json({Relation.MERGE: a, Relation.ADAPTER: b})
    assert one == cursors_to_json({Relation.ADAPTER: b, Relation.MERGE: a})
    assert cursors_from_json(one) == {Relation.MERGE: a, Relation.ADAPTER: b}
    assert cursors_from_json(cursors_to_json({})) == {}


def test_list_columns_of_sliced_and_chunked_arrays() -> None:
    column = pa.chunked_array([[["a"], [], ["b", "c"]], [["d", "e", "f"]]], type=pa.list_(pa.string()))
    assert string_tuples(column) == [("a",), (), ("b", "c"), ("d", "e", "f")]
    assert string_tuples(column.combine_chunks().slice(2, 2)) == [("b", "c"), ("d", "e", "f")]
    table = models_to_table([record(i) for i in range(5)])
    assert models_from_table(table.slice(3)) == [record(3), record(4)]


def test_sql_string_doubles_quotes() -> None:
    assert sql_string("it's") == "'it''s'"
