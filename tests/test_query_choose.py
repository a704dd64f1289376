"""The query side's pure decisions, as tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubdelta.index.records import Relation
from hubdelta.index.selectors import Selector, by_relation, compile_selector, user_filter
from hubdelta.kernel.errors import UsageError
from hubdelta.query.choose import choose_space, close_ids, first_fetch, model_filter, next_fetch
from hubdelta.query.export import choose_format

LAST = {"layer": None, "position": "last", "dtype": "float32"}
MEAN = {"layer": None, "position": "mean", "dtype": "float32"}
PREFER = {"layer": None, "position": "last", "dtype": "float32"}


@pytest.mark.parametrize(
    ("available", "requested", "want"),
    [
        ({"a": LAST}, None, ("a", [])),
        ({"m": MEAN, "a": LAST}, None, ("a", ["m"])),  # the settings' space wins over a newer one
        ({"m": MEAN, "n": MEAN}, None, ("m", ["n"])),  # none matches: the newest (first)
        ({"m": MEAN, "a": LAST}, "m", ("m", ["a"])),
    ],
)
def test_choose_space(available: dict, requested: str | None, want: tuple) -> None:
    assert choose_space(available, requested, PREFER, what="r") == want


@pytest.mark.parametrize(("available", "requested", "needle"), [({"a": LAST}, "b", "no vector in space 'b'"),
                                                                  ({}, None, "no vector")])  # fmt: skip
def test_choose_space_refuses(available: dict, requested: str | None, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        choose_space(available, requested, PREFER, what="r")


@pytest.mark.parametrize(
    ("where", "relation", "want", "sql"),
    [
        (None, None, None, None),
        ("  ", None, None, None),
        ("downloads > 1", None, user_filter("downloads > 1"), "(downloads > 1)"),
        (None, "adapter", by_relation(Relation.ADAPTER), "relation IN ('adapter')"),
        ("a = 1 OR b = 2", "merge", user_filter("a = 1 OR b = 2") & by_relation(Relation.MERGE),
         "relation IN ('merge') AND (a = 1 OR b = 2)"),  # the OR stays inside its parentheses
    ],
)  # fmt: skip
def test_model_filter(where: str | None, relation: str | None, want: Selector | None, sql: str | None) -> None:
    got = model_filter(where, relation)
    assert got == want
    assert (compile_selector(got, lambda space: []).where if got else None) == sql  # the index writes the SQL


@pytest.mark.parametrize(
    ("k", "fetched", "found", "total", "want"),
    [
        (10, 40, 10, 1000, None),  # enough
        (10, 1000, 3, 1000, None),  # everything seen
        (10, 40, 3, 1000, 320),  # 8x
        (10, 400, 0, 1000, 1000),  # capped at the table
        (10, 1, 0, 1000, 10),  # never below k
    ],
)
def test_next_fetch(k: int, fetched: int, found: int, total: int, want: int | None) -> None:
    assert next_fetch(k, fetched, found, total) == want


def test_first_fetch_leaves_room_for_the_query_and_the_filter() -> None:
    assert first_fetch(10, 1, 1000, filtered=False) == 11
    assert first_fetch(10, 1, 1000, filtered=True) == 201
    assert first_fetch(10, 1, 5, filtered=True) == 5


def test_close_ids_prefer_the_same_name_then_spelling() -> None:
    ids = ["alice/math-lora", "bob/math-lora", "bob/code-lora", "carol/other"]
    assert close_ids("dave/math-lora", ids)[:2] == ["alice/math-lora", "bob/math-lora"]
    assert close_ids("bob/mth-lora", ids)[0] == "bob/math-lora"
    assert close_ids("zzz/qqq", ids) == [] and "bob/math-lora" not in close_ids("bob/math-lora", ids)


@pytest.mark.parametrize(
    ("out", "fmt", "chosen"),
    [("a.npz", None, "npz"), ("a.Parquet", None, "parquet"), ("a", "csv", "csv"), ("a.npz", "npz", "npz"),
     ("a.npz", "csv", None), ("a.xlsx", None, None), ("a", None, None), ("a.tar.gz", "npz", None),
     ("a.csv", "xlsx", None)],
)  # fmt: skip
def test_choose_format(out: str, fmt: str | None, chosen: str | None) -> None:
    if chosen is None:
        with pytest.raises(UsageError):
            choose_format(Path(out), fmt)
    else:
        assert choose_format(Path(out), fmt) == chosen
