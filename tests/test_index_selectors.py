"""Typed selectors over the models table and the visibility rule, compiled and run on a real LanceDB in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from hubdelta.index import selectors
from hubdelta.index.compaction import CompactionPolicy
from hubdelta.index.embeddings import Embedding, SpaceRow
from hubdelta.index.families import Member, MemberStatus
from hubdelta.index.records import HIDDEN_STATUSES, VISIBLE_STATUSES, ModelStatus, Relation, visible_to_queries
from hubdelta.index.selectors import (
    Selector,
    by_base,
    by_ids,
    by_relation,
    by_space,
    by_status,
    compile_selector,
    hidden,
    in_list,
    user_filter,
    visible,
)
from hubdelta.index.store import Index
from tests.helpers import record, records

T = datetime(2024, 5, 1, tzinfo=UTC)
DIM = 4
SPACE = "base-sel"


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    """Ten queued models, two failed, one removed; a space holding vectors of five of them."""
    with Index.open(str(tmp_path / "index"), lock_dir=tmp_path, writer="test",
                    compaction=CompactionPolicy(auto=False)) as ix:  # fmt: skip
        ix.models.put(
            [
                *records(0, 10),
                *(record(i, status=ModelStatus.FAILED) for i in (10, 11)),
                record(12, status=ModelStatus.REMOVED, base_models=("other/base",), relation=Relation.MERGE),
            ]
        )
        ix.vectors.put_space(SpaceRow(SPACE, {}, np.zeros((5, DIM), np.float32), T))
        ix.vectors.put(SPACE, [Embedding(r.repo_id, "s", np.eye(DIM, dtype=np.float32)[i % DIM] + i * 0.01, T)
                               for i, r in enumerate([*records(0, 4), record(12)])])  # fmt: skip
        yield ix


def ids(*numbers: int) -> list[str]:
    return sorted(record(i).repo_id for i in numbers)


# ---- the rule and the SQL ----------------------------------------------------------------------------------------


def test_removed_and_unchanged_are_the_only_statuses_hidden_from_queries() -> None:
    hidden_statuses, visible_statuses = HIDDEN_STATUSES, VISIBLE_STATUSES
    hidden = {ModelStatus.REMOVED, ModelStatus.UNCHANGED}
    assert hidden_statuses == hidden and visible_statuses == set(ModelStatus) - hidden_statuses
    assert {s for s in ModelStatus if not visible_to_queries(s)} == hidden


def test_selectors_compile_to_one_quoted_filter() -> None:
    def sql(s: Selector) -> str | None:
        return compile_selector(s, lambda space: ["a/x", "b/y"]).where

    assert sql(Selector()) is None
    assert sql(by_status(ModelStatus.QUEUED, ModelStatus.EMBEDDING)) == "status IN ('embedding', 'queued')"
    assert sql(by_base("it's/odd") & by_relation(Relation.ADAPTER)) == (
        "relation IN ('adapter') AND array_has(base_models, 'it''s/odd')"
    )
    assert sql(user_filter("a = 1 OR b = 2") & by_ids(["o'k/x"])) == "((a = 1 OR b = 2)) AND repo_id IN ('o''k/x')"
    assert sql(by_space("s") & by_ids(["b/y", "c/z"])) == "repo_id IN ('b/y')"  # the space's ids met the list
    assert (by_status(ModelStatus.QUEUED) & visible()).statuses == {"queued"}
    assert compile_selector(by_ids([]), lambda space: []).empty
    assert compile_selector(by_status(ModelStatus.QUEUED) & hidden(), lambda space: []).empty
    assert in_list("repo_id", ["a/x", "a/x", "b'c/y"]) == "repo_id IN ('a/x', 'b''c/y')" and in_list("c", []) == "false"


def test_a_long_id_list_is_filtered_after_the_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selectors, "IN_LIST_MAX", 2)
    f = compile_selector(by_ids(["a/x", "b/y", "c/z"]) & by_status(ModelStatus.QUEUED), lambda space: [])
    assert f.keep == {"a/x", "b/y", "c/z"} and f.where == "status IN ('queued')"


# ---- the models store ------------------------------------------------------------------------------------------


def test_the_models_store_answers_each_selector(index: Index) -> None:
    m = index.models
    assert sorted(m.ids(by_status(ModelStatus.FAILED))) == ids(10, 11)
    assert sorted(m.select(by_ids([*ids(1, 2, 12), "nobody/x"]) & visible())) == ids(1, 2)
    assert sorted(m.ids(by_base("other/base"))) == ids(12) and sorted(m.for_base("acme/base")) == ids(*range(12))
    assert sorted(m.ids(by_space(SPACE))) == ids(0, 1, 2, 3, 12) and m.ids(by_space("no-such-space")) == []
    assert sorted(m.ids(by_space(SPACE) & visible())) == ids(0, 1, 2, 3)
    assert m.ids(by_relation(Relation.MERGE)) == ids(12) and m.hidden_ids() == set(ids(12))
    assert m.count(user_filter("downloads >= 30") & by_status(ModelStatus.QUEUED)) == 0  # 30+: failed or removed
    assert m.count(user_filter("downloads >= 27")) == 4  # 3 * i >= 27: i = 9..12
    assert m.count(by_ids([])) == 0 and m.select(by_ids([])) == {} and m.count() == 13
    assert len(m.select(visible(), limit=3)) == 3


def test_both_id_paths_give_the_same_answer(index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = by_ids([*ids(1, 2, 3, 11, 12), "o'k/unknown"]) & visible()
    listed = (sorted(index.models.ids(wanted)), index.models.count(wanted), index.vectors.get(SPACE, ids(1, 2, 9)))
    monkeypatch.setattr(selectors, "IN_LIST_MAX", 2)  # every list above is scanned and kept in arrow now
    scanned = (sorted(index.models.ids(wanted)), index.models.count(wanted), index.vectors.get(SPACE, ids(1, 2, 9)))
    assert listed[0] == scanned[0] == ids(1, 2, 3, 11) and listed[1] == scanned[1] == 4
    assert sorted(listed[2]) == sorted(scanned[2]) == ids(1, 2)


# ---- the vectors store applies the rule ------------------------------------------------------------------------------


@pytest.mark.parametrize("in_list_max", [500, 0])  # 0: every id lookup is a scan kept in arrow, not an IN list
def test_search_never_returns_a_hidden_model(index: Index, monkeypatch: pytest.MonkeyPatch, in_list_max: int) -> None:
    monkeypatch.setattr("hubdelta.index.selectors.IN_LIST_MAX", in_list_max)
    gone = record(12).repo_id
    query = index.vectors.get(SPACE, [gone])[gone].vector  # its own vector: it would be the nearest
    got = [r for r, _ in index.vectors.nearest(SPACE, query, 4)]
    assert gone not in got and len(got) == 4  # the top k is still k long: the search went past it
    assert index.vectors.nearest(SPACE, query, 1, only=[gone]) == []
    assert [r for r, _ in index.vectors.nearest(SPACE, query, 9, only=[gone, *ids(1)])] == ids(1)
    assert index.vectors.nearest(SPACE, query, 0) == []
    assert gone in index.vectors.get(SPACE) and gone not in index.vectors.visible(SPACE)
    assert sorted(index.vectors.visible(SPACE, [gone, *ids(0)])) == ids(0)
    assert index.vectors.of_repo(gone).keys() == {SPACE}  # show still finds it


def test_member_status_is_an_enum_stored_as_its_value(index: Index) -> None:
    index.families.put_members([Member(SPACE, "a/x", "s", "acme/base", MemberStatus.EMBEDDED, raw=np.ones(3)),
                                Member(SPACE, "b/y", "s", "acme/base", MemberStatus.FAILED, "broken")])  # fmt: skip
    got = index.families.members(SPACE)
    assert {k: m.status for k, m in got.items()} == {"a/x": MemberStatus.EMBEDDED, "b/y": MemberStatus.FAILED}
    assert isinstance(got["a/x"].status, MemberStatus) and got["b/y"].status == "failed"  # the stored values
