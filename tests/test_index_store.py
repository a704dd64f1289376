"""The store on a real LanceDB in tmp_path: upserts, reads, tracked bases, read-only rules, compaction."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hubdelta.index import selectors
from hubdelta.index.compaction import CompactionPolicy
from hubdelta.index.records import Cursor, ModelStatus, Relation, TrackedBase
from hubdelta.index.selectors import by_status
from hubdelta.index.store import Index, PutResult
from hubdelta.kernel.errors import IndexNotFoundError, StoreError
from tests.helpers import T0, record, records

NO_AUTO = CompactionPolicy(auto=False)


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return str(tmp_path / "index")


@pytest.fixture
def writer(uri: str, tmp_path: Path) -> Iterator[Index]:
    with Index.open(uri, lock_dir=tmp_path, writer="pytest writer", compaction=NO_AUTO) as index:
        yield index


def repo_ids(index: Index) -> list[str]:
    return sorted(index.models.get())


# ---- models ----


def test_put_then_get_round_trips_through_lance(writer: Index) -> None:
    batch = [*records(0, 20), record(99, sha=None, created_at=None, tags=(), gated="auto", private=True)]
    assert writer.models.put(batch) == PutResult(inserted=21, updated=0)
    assert writer.models.get() == {r.repo_id: r for r in batch}


def test_repeated_puts_upsert_by_repo_id(writer: Index) -> None:
    writer.models.put(records(0, 10))
    writer.models.put(records(0, 10))  # the same batch again
    changed = [r.with_status(ModelStatus.EMBEDDED) for r in records(5, 10)]  # 5 known, 5 new
    assert writer.models.put(changed) == PutResult(inserted=5, updated=5)
    assert writer.models.count() == 15
    assert repo_ids(writer) == sorted(r.repo_id for r in records(0, 15))
    got = writer.models.get()
    assert {got[r.repo_id].status for r in records(0, 5)} == {ModelStatus.QUEUED}
    assert {got[r.repo_id].status for r in changed} == {ModelStatus.EMBEDDED}


def test_duplicates_in_one_batch_last_wins(writer: Index) -> None:
    writer.models.put([record(1)])
    first, last = record(1, sha="1" * 40), record(1, sha="2" * 40)
    new_a, new_b = record(2, likes=1), record(2, likes=2)
    # Lance alone would insert both copies of the new id and refuse two updates of the stored one.
    assert writer.models.put([first, new_a, last, new_b]) == PutResult(inserted=1, updated=1)
    got = writer.models.get()
    assert writer.models.count() == 2
    assert (got[first.repo_id].model.sha, got[new_a.repo_id].model.likes) == ("2" * 40, 2)


def test_empty_put_commits_nothing(writer: Index) -> None:
    before = writer.maintenance.stats()["models"].version
    assert writer.models.put([]) == PutResult(0, 0)
    assert writer.maintenance.stats()["models"].version == before


def test_get_models_by_ids_both_paths(writer: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    writer.models.put(records(0, 50))
    wanted = [r.repo_id for r in records(10, 5)] + ["nobody/unknown", records(10, 1)[0].repo_id]
    by_in_list = writer.models.get(wanted)
    monkeypatch.setattr(selectors, "IN_LIST_MAX", 2)  # force the scan-and-filter path
    by_scan = writer.models.get(iter(wanted))
    assert by_in_list == by_scan == {r.repo_id: r for r in records(10, 5)}
    assert writer.models.get([]) == {}


def test_models_for_base_matches_any_listed_base(writer: Index) -> None:
    writer.models.put(
        [
            record(1, base_models=("acme/base",)),
            record(2, base_models=("other/base", "acme/base")),  # a merge lists several
            record(3, base_models=("other/base",)),
            record(4, base_models=("acme/base-2",)),  # a prefix is not a match
            record(5, base_models=("it's/odd",)),
        ]
    )
    assert sorted(writer.models.for_base("acme/base")) == ["user1/model-1", "user2/model-2"]
    assert list(writer.models.for_base("it's/odd")) == ["user5/model-5"]
    assert writer.models.for_base("nobody/base") == {}


def test_counts_and_filters(writer: Index) -> None:
    writer.models.put(records(0, 6) + [record(i, status=ModelStatus.FAILED) for i in range(6, 8)])
    counts = writer.models.count_by_status()
    assert counts[ModelStatus.QUEUED] == 6 and counts[ModelStatus.FAILED] == 2
    assert set(counts) == set(ModelStatus) and counts[ModelStatus.EMBEDDED] == 0
    assert writer.models.count(by_status(ModelStatus.FAILED)) == 2
    assert sorted(writer.models.select(by_status(ModelStatus.FAILED))) == ["user0/model-7", "user6/model-6"]
    assert len(writer.models.select(limit=3)) == 3


# ---- tracked ----


def test_tracked_upsert_and_delete(writer: Index) -> None:
    cursor = Cursor(datetime(2024, 5, 1, tzinfo=UTC), "alice/x")
    writer.tracked.put([TrackedBase("zeta/base", added_at=T0), TrackedBase("acme/base", added_at=T0)])
    moved = TrackedBase("acme/base", cursors={Relation.ADAPTER: cursor}, added_at=T0, last_crawl=T0)
    writer.tracked.put([moved])
    assert writer.tracked.all() == [moved, TrackedBase("zeta/base", added_at=T0)]  # sorted, one row per base
    assert writer.tracked.delete("zeta/base") is True
    assert writer.tracked.delete("zeta/base") is False
    assert [t.base for t in writer.tracked.all()] == ["acme/base"]


# ---- readers ----


def test_reader_sees_each_new_commit(writer: Index, uri: str) -> None:
    reader = Index.open(uri)  # opened before the writes, kept open like the daemon's
    assert reader.read_only and reader.models.count() == 0
    writer.models.put(records(0, 3))
    assert reader.models.count() == 3
    writer.models.put(records(3, 4))
    writer.maintenance.compact()  # old versions and their files are deleted under the reader
    assert sorted(reader.models.get()) == repo_ids(writer)
    assert reader.meta()["schema_version"] == writer.meta()["schema_version"]


def test_reader_cannot_write(writer: Index, uri: str) -> None:
    reader = Index.open(uri)
    calls = (lambda: reader.models.put([record(1)]), reader.maintenance.compact, lambda: reader.tracked.delete("x"))
    for call in calls:
        with pytest.raises(StoreError, match="read-only") as e:
            call()
        assert "writer=" in e.value.one_line()


def test_reader_of_a_missing_index_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError) as e:
        Index.open(str(tmp_path / "nothing"))
    assert "hubdelta crawl" in e.value.one_line()
    assert not (tmp_path / "nothing").exists()


def test_closed_index_refuses_calls(uri: str, tmp_path: Path) -> None:
    index = Index.open(uri, lock_dir=tmp_path, writer="w")
    index.close()
    index.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        index.models.count()


# ---- compaction ----


def test_compact_merges_fragments_and_keeps_rows(writer: Index) -> None:
    for start in range(0, 200, 10):
        writer.models.put(records(start, 10))
    writer.models.put([r.with_status(ModelStatus.EMBEDDED) for r in records(0, 10)])  # updates too
    before, rows = writer.maintenance.stats()["models"], writer.models.get()
    assert before.fragments >= 20 and before.versions >= 21
    assert writer.maintenance.maybe_compact(CompactionPolicy(max_fragments=1000, max_versions=1000)) == []
    assert writer.maintenance.maybe_compact(CompactionPolicy(max_fragments=8)) == ["models"]
    after = writer.maintenance.stats()["models"]
    assert (after.fragments, after.versions, after.rows) == (1, 1, 200)
    assert writer.models.get() == rows


def test_auto_compaction_bounds_fragments_and_versions(uri: str, tmp_path: Path) -> None:
    policy = CompactionPolicy(max_fragments=5, max_versions=8)
    with Index.open(uri, lock_dir=tmp_path, writer="w", compaction=policy) as index:
        seen = []
        for start in range(0, 120, 4):
            index.models.put(records(start, 4))
            index.tracked.put([TrackedBase("acme/base", last_crawl=T0)])  # updates only: versions grow
            stats = index.maintenance.stats()
            seen.append((stats["models"].fragments, stats["tracked"].versions))
        assert max(f for f, _ in seen) <= 5 and max(v for _, v in seen) <= 8
        assert index.models.count() == 120 and len(index.tracked.all()) == 1


def test_a_read_retries_once_when_a_compaction_deleted_its_file(writer: Index) -> None:
    calls = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("lance error: LanceError(IO): Not found: /x/models.lance/data/abc.lance")
        return 7

    assert writer._read(flaky) == 7 and len(calls) == 2

    def broken() -> int:
        raise RuntimeError("lance error: something else")

    with pytest.raises(RuntimeError, match="something else"):
        writer._read(broken)
