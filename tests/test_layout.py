"""Map layouts (``hubdelta serve``'s maps): computed from a space's visible vectors and the latest report, stored
in the index, refreshed when vectors change; over a real LanceDB index written through :class:`Index`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hubdelta.cli import app
from hubdelta.daemon.service import Daemon
from hubdelta.index.door import open_reader, open_writer
from hubdelta.index.embeddings import Embedding, SpaceRow
from hubdelta.index.layouts import LAYOUTS, Layout, layout_rows
from hubdelta.index.records import HubModel, ModelRecord, ModelStatus, Relation
from hubdelta.index.reports import StoredCluster, StoredReport
from hubdelta.kernel.errors import NotFoundError
from hubdelta.kernel.settings import Settings
from hubdelta.report import layout as layouts
from hubdelta.report.api import run_report
from hubdelta.report.layout import compute_layout, refresh, refresh_after_writes
from tests.helpers import REPORT_SPACE, PlantedPool, one_line_error, pool_names, settings_for

runner = CliRunner()
BASE = "org/base"
DIM = 8
A, B = "base-aaaaaaaa", "base-bbbbbbbb"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
H = timedelta(hours=1)
NOW = T0 + 48 * H


def repo(i: int) -> str:
    return f"org/model-{i:03d}"


def record(i: int, first_seen: datetime, status: ModelStatus = ModelStatus.EMBEDDED) -> ModelRecord:
    m = HubModel(repo(i), f"{i:040x}", Relation.ADAPTER, (BASE,), created_at=first_seen)
    return ModelRecord(m, status, first_seen=first_seen, last_seen=first_seen)


def vector(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return (np.eye(DIM)[i % 3] * 3 + rng.normal(size=DIM)).astype(np.float32)


def write(settings: Settings, space: str, ids: range, when: datetime) -> None:
    """Models ``ids`` first seen and embedded at ``when`` in ``space`` (created if missing)."""
    with open_writer(settings, "test") as index:
        index.models.put([record(i, when) for i in ids if repo(i) not in index.models.get([repo(i)])])
        if space not in index.vectors.spaces():
            params = {"base_repo": BASE, "dim": DIM, "position": space}
            index.vectors.put_space(SpaceRow(space, params, np.zeros((5, DIM), np.float32), T0))
        index.vectors.put(space, [Embedding(repo(i), f"{i:040x}", vector(i), when) for i in ids])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Space A: models 0-29 seen and embedded at T0; space B: models 0-9 too."""
    s = settings_for(tmp_path / "home", "http://127.0.0.1:9")
    write(s, A, range(30), T0)
    write(s, B, range(10), T0)
    return s


def report(report_id: str, created: datetime, since: datetime, clusters: dict, previous: str | None = None):
    return StoredReport(report_id, created, since, f"/x/{report_id}", clusters, summary={"previous_id": previous})


# ---- storing and reading ------------------------------------------------------------------------------------------


def test_a_layout_is_stored_and_read_back_equal(settings: Settings) -> None:
    with open_writer(settings, "test") as index:
        index.reports.put(report("r1", T0 + H, T0 - H, {A: (StoredCluster("c1", "one", (repo(0), repo(3))),)}))
        layout = compute_layout(index, A, index.reports.latest(), now=NOW)
        index.layouts.put(layout)
    assert layout.n == 30 and layout.xy.dtype == np.float32 and layout.cluster.dtype == np.int32
    assert layout.repo_ids == sorted(layout.repo_ids) and np.abs(layout.xy).max() == 1.0
    assert layout.report_id == "r1" and layout.source and len(layout.packed()) == 30 * 13
    with open_reader(settings) as reader:
        stored = reader.layouts.get(A)
        assert stored == layout and reader.layouts.versions() == {A: layout.version}
        assert reader.layouts.get(B) is None and reader.layouts.heads()[A].n == 30
    x0 = np.frombuffer(layout.packed()[:120], "<f4")
    assert np.array_equal(x0, layout.xy[:, 0])


def test_an_empty_layout_round_trips(tmp_path: Path) -> None:
    s = settings_for(tmp_path / "home", "http://127.0.0.1:9")
    write(s, A, range(0), T0)
    with open_writer(s, "test") as index:
        assert refresh(index).computed == {A: 0}
        stored = index.layouts.get(A)
    assert stored is not None and stored.n == 0 and stored.xy.shape == (0, 2) and stored.bounds() == (0, 0, 0, 0)


def test_a_put_replaces_the_layout_and_removes_a_killed_puts_points(settings: Settings) -> None:
    with open_writer(settings, "test") as index:
        first = compute_layout(index, A, None, now=NOW)
        index.layouts.put(first)
        index._tables.append(LAYOUTS, layout_rows(first, stamp=1))  # a put killed after its first commit
        assert index.layouts.get(A) == first  # readers look only at the stamp the meta row names
        write_more = [Embedding(repo(i), "s", vector(i), NOW) for i in range(30, 35)]
        index.models.put([record(i, NOW) for i in range(30, 35)])
        index.vectors.put(A, write_more)
        second = compute_layout(index, A, None, now=NOW)
        index.layouts.put(second)
        assert index.layouts.get(A) == second and second.version != first.version
        assert index._tables.count(LAYOUTS) == 35  # the old points and the orphans are gone


def test_a_reader_that_crosses_a_put_reads_the_new_layout_whole(settings: Settings) -> None:
    with open_writer(settings, "test") as writer:
        writer.layouts.put(compute_layout(writer, A, None, now=NOW))
        writer.vectors.put(A, [Embedding(repo(40), "s", vector(40), NOW)])
        newer = compute_layout(writer, A, None, now=NOW)
        with open_reader(settings) as reader:
            scan = reader._tables.scan
            calls = []

            def between(name, *args, **kwargs):  # the put lands between the meta read and the points read
                out = scan(name, *args, **kwargs)
                calls.append(name)
                if len(calls) == 1:
                    writer.layouts.put(newer)
                return out

            reader._tables.scan = between  # type: ignore[method-assign]
            got = reader.layouts.get(A)
    assert got == newer and calls == ["layout_meta", "layout_meta"]  # the old stamp's points were gone: read again


# ---- what a layout shows ------------------------------------------------------------------------------------------


def test_clusters_come_from_the_latest_report_in_id_order(settings: Settings) -> None:
    clusters = {A: (StoredCluster("c10", "ten", (repo(1), repo(2))), StoredCluster("c2", "two", (repo(5),))),
                B: (StoredCluster("c1", "other space", (repo(7),)),)}  # fmt: skip
    with open_writer(settings, "test") as index:
        index.reports.put(report("old", T0 - 24 * H, T0 - 48 * H, {}))
        index.reports.put(report("r1", T0 + H, T0 - H, clusters, previous="old"))
        layout = compute_layout(index, A, index.reports.latest(), now=NOW)
    assert layout.cluster_names == ["two", "ten"] and layout.cluster_ids == ["c2", "c10"]
    of = dict(zip(layout.repo_ids, layout.cluster.tolist(), strict=True))
    assert (of[repo(5)], of[repo(1)], of[repo(2)], of[repo(7)]) == (0, 1, 1, -1)
    assert layout.cluster_sizes() == [1, 2]


def test_new_is_what_the_nightly_report_calls_new(settings: Settings) -> None:
    # r1 covers T0 - H .. T0 + H: everything embedded at T0 is new in it. Then model 30 is first seen and embedded
    # after r1 (new for the next report too); model 31 was first seen before the window, waited in the queue and
    # is embedded only now, never clustered (new); model 3 is re-embedded at a new revision but was clustered by
    # the report before r1 (not new: the report's rule).
    with open_writer(settings, "test") as index:
        index.reports.put(report("r0", T0 - 24 * H, T0 - 48 * H, {A: (StoredCluster("c1", "x", (repo(3),)),)}))
        index.models.put([record(30, NOW), record(31, T0 - 30 * H), record(3, T0 - 30 * H)])
        index.vectors.put(A, [Embedding(repo(i), "new", vector(i), NOW) for i in (30, 31, 3)])
        index.reports.put(report("r1", T0 + H, T0 - H, {}, previous="r0"))
        new = compute_layout(index, A, index.reports.latest(), now=NOW).new
        before = compute_layout(index, A, None, now=NOW).new
    layout_ids = [repo(i) for i in sorted({*range(30), 30, 31})]
    assert dict(zip(layout_ids, new.tolist(), strict=True)) == {r: r != repo(3) for r in layout_ids}
    assert not before.any()  # before any report there is no window: nothing is new


def test_removed_models_are_left_out_and_the_layout_is_deterministic(settings: Settings) -> None:
    with open_writer(settings, "test") as index:
        index.models.put([record(4, T0, ModelStatus.REMOVED)])
        one = compute_layout(index, A, None, now=NOW)
        two = compute_layout(index, A, None, now=NOW)
    assert repo(4) not in one.repo_ids and one.n == 29
    assert one == two and one.version == two.version
    # The same models written in another order, in another index: the same layout.
    other = settings_for(settings.home.parent / "other", "http://127.0.0.1:9")
    write(other, A, range(29, -1, -1), T0)
    with open_writer(other, "test") as index:
        index.models.put([record(4, T0, ModelStatus.REMOVED)])
        again = compute_layout(index, A, None, now=NOW)
    assert again.version == one.version and np.array_equal(again.xy, one.xy)


def test_an_unknown_space_is_not_found(settings: Settings) -> None:
    with open_writer(settings, "test") as index, pytest.raises(NotFoundError):
        compute_layout(index, "nope", None)


# ---- refreshing ---------------------------------------------------------------------------------------------------


def test_refresh_recomputes_only_what_changed(settings: Settings) -> None:
    with open_writer(settings, "test") as index:
        assert refresh(index).computed == {A: 30, B: 10}
        versions = index.layouts.versions()
        assert refresh(index).unchanged == {A: 30, B: 10}
        index.vectors.put(A, [Embedding(repo(50), "s", vector(50), NOW)])  # a new vector in A
        done = refresh(index)
        assert (done.computed, done.unchanged) == ({A: 31}, {B: 10})
        index.models.put([record(8, T0, ModelStatus.REMOVED)])  # hides a vector of both spaces
        assert refresh(index).computed == {A: 30, B: 9}
        index.reports.put(report("r1", NOW, T0, {B: (StoredCluster("c1", "b", (repo(1), repo(2))),)}))
        assert refresh(index, [B]).computed == {B: 9}  # a new report: its clusters
        assert refresh(index, [A], force=True).computed == {A: 30}
        assert index.layouts.get(B).cluster_names == ["b"]  # type: ignore[union-attr]
        assert index.layouts.versions()[B] != versions[B]
        with pytest.raises(NotFoundError):
            refresh(index, ["nope"])


def test_a_refresh_that_stops_stores_what_it_finished(settings: Settings) -> None:
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 1

    with open_writer(settings, "test") as index:
        done = refresh(index, should_stop=stop)
    assert done.computed == {A: 30} and done.stopped


def test_a_failed_refresh_never_fails_the_run(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_writer(settings, "other writer"):
        assert refresh_after_writes(settings, "hubdelta embed") is None  # locked: logged, not raised
        assert Daemon(settings)._layouts() == "failed"

    def broken(*_a: object, **_k: object) -> Layout:
        raise MemoryError("no room")

    monkeypatch.setattr(layouts, "compute_layout", broken)
    assert refresh_after_writes(settings, "hubdelta embed") is None
    monkeypatch.undo()
    done = refresh_after_writes(settings, "hubdelta embed")
    assert done is not None and done.computed == {A: 30, B: 10}


def test_a_report_stores_layouts_with_its_clusters_and_new_models(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", "http://127.0.0.1:9")
    pool = PlantedPool()
    pool.put(settings, pool_names("math", [1, 2, 3]) | pool_names("code", [1, 2, 3]), datetime.now(UTC) - 3 * H)
    run_report(settings, command="test")
    second = pool_names("legal", [1, 2, 3, "fewshot"])
    pool.put(settings, second, datetime.now(UTC))
    rep = run_report(settings, command="test")
    with open_reader(settings) as index:
        layout = index.layouts.get(REPORT_SPACE)
    assert layout is not None and layout.report_id == rep.report_id
    assert {r for r, new in zip(layout.repo_ids, layout.new, strict=True) if new} == set(second)
    assert {r.repo_id for r in rep.new_models} == set(second)
    named = {c.name: set(c.members) for c in rep.clusters}
    for k, name in enumerate(layout.cluster_names):
        assert {r for r, c in zip(layout.repo_ids, layout.cluster, strict=True) if c == k} == named[name]


# ---- the command --------------------------------------------------------------------------------------------------


def test_the_layout_command(settings: Settings) -> None:
    home = str(settings.home)
    result = runner.invoke(app, ["--home", home, "layout", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"computed": {A: 30, B: 10}, "unchanged": {}}
    result = runner.invoke(app, ["--home", home, "layout", "--space", B])
    assert result.exit_code == 0 and result.stdout == f"{B}: 10 points (current)\n"
    result = runner.invoke(app, ["--home", home, "layout", "--space", A, "--force"])
    assert result.exit_code == 0 and result.stdout == f"{A}: 30 points (recomputed)\n"
    result = runner.invoke(app, ["--home", home, "layout", "--space", "nope"])
    assert result.exit_code == 2 and "nope: no such space" in one_line_error(result)


def test_an_embed_run_that_embedded_refreshes_the_layouts_and_never_fails_for_them(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hubdelta.embedder import api, runtime
    from hubdelta.embedder.ledger import EmbedSummary

    runs = []

    def fake_run(s: Settings, **_: object) -> EmbedSummary:  # the run: one new vector written, its lock released
        runs.append(60 + len(runs))
        write(s, A, range(runs[-1], runs[-1] + 1), NOW)
        return EmbedSummary(embedded=1, spaces=[A])

    monkeypatch.setattr(api, "run_embed", fake_run)
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: None)
    result = runner.invoke(app, ["--home", str(settings.home), "embed", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["embedded"] == 1
    with open_reader(settings) as index:
        assert {s: h.n for s, h in index.layouts.heads().items()} == {A: 31, B: 10}

    monkeypatch.setattr(layouts, "compute_layout", lambda *a, **k: 1 / 0)
    result = runner.invoke(app, ["--home", str(settings.home), "embed", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["embedded"] == 1  # the run's result stands
    with open_reader(settings) as index:
        assert index.vectors.count(A) == 32 and index.layouts.heads()[A].n == 31  # the layout is stale, logged


def test_the_daemon_refreshes_maps_after_embed_jobs_at_most_every_layout_every_s(settings: Settings) -> None:
    daemon = Daemon(settings)
    assert settings.daemon.layout_every_s == 600
    first = daemon._layouts()
    assert isinstance(first, dict) and first  # computed now
    assert daemon._layouts() == "later"  # the next embed job, seconds later: not again
    daemon._layouts_at -= settings.daemon.layout_every_s
    assert daemon._layouts() == {}  # due again: checked, and nothing had changed
