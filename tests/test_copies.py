"""Copies, fast tier: fingerprints, who downloads a fingerprint, copy groups, a copy's outcome, devhub's sha256."""

from __future__ import annotations

import hashlib
import json
import pickle
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from huggingface_hub import HfApi

from hubdelta.embedder.copies import CopyRegistry, ListedFile, fingerprint, listed_files
from hubdelta.embedder.ledger import resolve_copies
from hubdelta.embedder.plan import Failure
from hubdelta.index.copies import CopyGroup, copy_groups, near_copy
from hubdelta.index.embeddings import Embedding
from hubdelta.query.copies import collapse
from hubdelta_dev.devhub.server import DevhubServer

W = "adapter_model.safetensors"


def listing(weights: str = "a" * 64, config: str = "c1", card: str = "r1") -> list[ListedFile]:
    return [ListedFile(W, 1000, "blob-w", weights), ListedFile("adapter_config.json", 300, config, None),
            ListedFile("README.md", 50, card, None)]  # fmt: skip


def test_the_fingerprint_is_every_file_but_the_card() -> None:
    first = fingerprint(listing())
    assert first is not None and first.weight_bytes == 1000
    assert fingerprint(listing(card="r2")) == first  # a new card: the same weights
    assert fingerprint(listing(config="c2")) != first  # another lora_alpha: the same bytes mean another model
    assert fingerprint(listing(weights="b" * 64)) != first
    assert fingerprint(listing(weights="")) is None  # a weight file without a listed sha256: no fingerprint
    assert fingerprint([ListedFile("README.md", 5, "r", None)]) is None  # nothing to fingerprint
    # Any other file the embedder may read counts: a shard index or a tokenizer changes what loads, or whether
    # it passes the checks (two hostile repos with the same shards and different indexes are not copies).
    index = ListedFile("model.safetensors.index.json", 80, "i1", None)
    assert fingerprint([*listing(), index]) not in (None, first)
    assert fingerprint([*listing(), index]) != fingerprint([*listing(), ListedFile(index.name, 80, "i2", None)])
    assert fingerprint([*listing(), ListedFile(".gitattributes", 9, "g", None)]) == first  # git's, not the model's
    assert fingerprint([*listing(), ListedFile("tokenizer.json", 9, None, None)]) is None  # unlisted blob id


def test_the_original_is_the_first_in_the_runs_order_whoever_lists_first() -> None:
    registry = CopyRegistry(["org/first", "org/second", "org/other"], known={})
    answers: dict[str, str | None] = {}

    def decide(repo: str, fp: str) -> None:
        answers[repo] = registry.decide(repo, f"sha-{repo}", fp)

    late = threading.Thread(target=decide, args=("org/second", "F"))
    late.start()  # the second lists first: it waits for the first's listing
    time.sleep(0.2)
    assert late.is_alive()
    decide("org/first", "F")
    late.join(5)
    decide("org/other", "G")
    assert answers == {"org/first": None, "org/second": ("org/first", "sha-org/first"), "org/other": None}


def test_a_fingerprint_already_embedded_is_never_downloaded_and_the_registry_pickles() -> None:
    registry = pickle.loads(pickle.dumps(CopyRegistry(["org/new"], known={"F": ("org/old", "sha-old")})))
    assert registry.decide("org/new", "s", "F") == ("org/old", "sha-old")
    ended = CopyRegistry(["org/gone", "org/next"], known={}, wait_s=5)
    ended.listed("org/gone", None)  # failed before its listing: the next does not wait for it
    started = time.monotonic()
    assert ended.decide("org/next", "s", "F") is None and time.monotonic() - started < 1


def test_a_listing_that_outlasts_one_repos_wait_is_skipped_for_every_later_repo() -> None:
    registry = CopyRegistry(["org/stuck", "org/a", "org/b", "org/c"], known={}, wait_s=2)
    assert registry.decide("org/a", "sa", "F") is None  # waited its 2 s for org/stuck: it downloads
    started = time.monotonic()
    assert registry.decide("org/b", "sb", "F") == ("org/a", "sa")  # no second wait for org/stuck
    assert registry.decide("org/c", "sc", "G") is None and time.monotonic() - started < 1
    assert registry.decide("org/stuck", "ss", "F") is None  # skipped: never anyone's original, downloads itself


def test_groups_join_equal_fingerprints_and_near_copies_only() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=64)
    vectors = {"a/one": v, "a/reupload": v, "a/resaved": v * 1.002, "a/double": v * 2, "a/other": rng.normal(size=64)}
    created = {"a/one": 1, "a/reupload": 2, "a/resaved": 3, "a/double": 0, "a/other": 4}
    groups = copy_groups({"a/one": "F", "a/reupload": "F", "a/double": "D"}, vectors, lambda k: (created[k], k))
    assert groups == [CopyGroup(("a/one", "a/reupload", "a/resaved"), near=True)]
    assert near_copy(v, v * 1.009) and not near_copy(v, v * 1.02) and not near_copy(v, np.zeros(64))


def test_collapse_shows_a_group_once_at_its_best_rank() -> None:
    hits = [("x/b", 0.9), ("x/c", 0.8), ("x/a", 0.9), ("x/d", 0.7)]
    rows = collapse(hits, [CopyGroup(("x/a", "x/b", "x/z"))])
    assert [(r.repo_id, r.score, r.copies) for r in rows] == [("x/a", 0.9, ("x/b",)), ("x/c", 0.8, ()),
                                                              ("x/d", 0.7, ())]  # fmt: skip


def test_a_copy_takes_its_originals_outcome() -> None:
    now = datetime.now(UTC)
    vec = np.ones(4, np.float32)
    vectors = {"o/ok": Embedding("o/ok", "s", vec, now)}
    unchanged = {"o/same": "no change from base: the delta's norm is 0"}
    failures = {"o/bad": Failure("refused: size", transient=False)}
    copies = {"c/1": ("s1", "o/ok", "s"), "c/2": ("s2", "o/same", "s"), "c/3": ("s3", "o/bad", "s"),
              "c/4": ("s4", "o/late", "s"), "c/5": ("s5", "o/stored", "s")}  # fmt: skip
    stored = {"o/stored": Embedding("o/stored", "s", 2 * vec, now)}
    resolve_copies(copies, stored, vectors, unchanged, failures, now)
    assert np.array_equal(vectors["c/1"].vector, vec) and vectors["c/1"].sha == "s1"
    assert np.array_equal(vectors["c/5"].vector, 2 * vec)
    assert unchanged["c/2"].startswith("a copy of o/same; no change from base")
    assert failures["c/3"] == Failure("a copy of o/bad, which failed: refused: size", transient=False)
    assert failures["c/4"].transient and "whose vector at that sha is not in this space" in failures["c/4"].reason


def test_a_copy_never_takes_its_originals_vector_at_another_sha() -> None:
    now = datetime.now(UTC)
    old, new = np.ones(4, np.float32), 3 * np.ones(4, np.float32)
    stored = {"org/A": Embedding("org/A", "sha-old", old, now)}
    # B re-uploads A@sha-new; A@sha-new fails this commit: B inherits that failure, never A@sha-old's vector.
    vectors: dict[str, Embedding] = {}
    failures = {"org/A": Failure("503", transient=True)}
    resolve_copies({"org/B": ("sha-b", "org/A", "sha-new")}, stored, vectors, {}, failures, now)
    assert "org/B" not in vectors and failures["org/B"] == Failure("a copy of org/A, which failed: 503", transient=True)
    # ... or comes out unchanged: so does B.
    vectors, unchanged = {}, {"org/A": "no change from base"}
    resolve_copies({"org/B": ("sha-b", "org/A", "sha-new")}, stored, vectors, unchanged, {}, now)
    assert "org/B" not in vectors and unchanged["org/B"] == "a copy of org/A; no change from base"
    # B re-uploads the OLD A, and A is re-embedded at sha-new in this commit: B is retried, not given A's new vector.
    vectors, failures = {"org/A": Embedding("org/A", "sha-new", new, now)}, {}
    resolve_copies({"org/B": ("sha-b", "org/A", "sha-old")}, stored, vectors, {}, failures, now)
    assert "org/B" not in vectors and failures["org/B"].transient and "sha-old" in failures["org/B"].reason
    # The old A's vector still stored at sha-old, while A@sha-new fails: it is B's (the same weight files).
    vectors, failures = {}, {"org/A": Failure("refused: size", transient=False)}
    resolve_copies({"org/B": ("sha-b", "org/A", "sha-old")}, stored, vectors, {}, failures, now)
    assert np.array_equal(vectors["org/B"].vector, old) and "org/B" not in failures


def test_devhub_lists_every_lfs_files_true_sha256(tmp_path: Path) -> None:
    repo = tmp_path / "org" / "model"
    repo.mkdir(parents=True)
    weights = np.arange(4096, dtype=np.float32).tobytes()
    (repo / W).write_bytes(weights)
    (repo / "adapter_config.json").write_text('{"r": 8}')
    (repo / "README.md").write_text("---\nbase_model: org/base\n---\n")
    want = hashlib.sha256(weights).hexdigest()
    with DevhubServer(tmp_path) as hub:
        api = HfApi(endpoint=hub.url, token=False)
        info = api.model_info("org/model", files_metadata=True)
        tree = {e.path: e for e in api.list_repo_tree("org/model", expand=True)}
    by_name = {f.name: f for f in listed_files(info.siblings or [])}
    assert by_name[W].sha256 == want and by_name[W].size == len(weights)
    assert by_name["adapter_config.json"].sha256 is None and by_name["adapter_config.json"].blob_id
    assert tree[W].lfs is not None and tree[W].lfs.sha256 == want  # type: ignore[union-attr]
    assert tree["adapter_config.json"].blob_id == by_name["adapter_config.json"].blob_id  # type: ignore[union-attr]


def test_devhub_answers_paths_info_with_the_lfs_sha256(tmp_path: Path) -> None:
    repo = tmp_path / "org" / "model"
    (repo / "sub").mkdir(parents=True)
    weights = b"\x01" * 5000
    (repo / W).write_bytes(weights)
    (repo / "sub" / "x.json").write_text("{}")
    (repo / "README.md").write_text("---\nbase_model: org/base\n---\n")
    with DevhubServer(tmp_path) as hub:
        api = HfApi(endpoint=hub.url, token=False)
        found = api.get_paths_info("org/model", [W, "sub", "missing.bin"], expand=True)
        kinds = [r.kind for r in hub.request_records()]
    by_path = {e.path: e for e in found}
    assert set(by_path) == {W, "sub"}  # a path that is not there is left out, as the Hub does
    entry = by_path[W]
    assert entry.lfs is not None and entry.lfs.sha256 == hashlib.sha256(weights).hexdigest()  # type: ignore[union-attr]
    assert entry.last_commit is not None  # type: ignore[union-attr]
    assert kinds == ["paths_info"]


def test_known_fingerprints_need_a_vector_at_the_rows_sha(tmp_path: Path) -> None:
    from hubdelta.index.copies import CopyRow
    from hubdelta.index.embeddings import SpaceRow
    from hubdelta.index.store import Index

    now = datetime.now(UTC)
    with Index.open(str(tmp_path / "index"), lock_dir=tmp_path, writer="test") as index:
        index.vectors.put_space(SpaceRow("s1", {}, np.ones((2, 4), np.float32), now))
        index.vectors.put("s1", [Embedding("o/a", "sha-a", np.ones(4, np.float32), now),
                                 Embedding("o/b", "sha-b2", np.ones(4, np.float32), now),
                                 Embedding("o/c", "sha-c", np.ones(4, np.float32), now)])  # fmt: skip
        index.copies.put(
            [
                CopyRow("s1", "o/a", "sha-a", "F", 10, None, now),
                CopyRow("s1", "o/b", "sha-b1", "G", 10, None, now),  # its vector is at another sha now
                CopyRow("s1", "o/c", "sha-c", "F", 10, "o/a", now),
                CopyRow("s1", "o/gone", "sha-g", "H", 10, None, now),
            ]
        )  # no vector: a kill before it
        assert index.copies.known("s1") == {"F": ("o/a", "sha-a")}
        assert index.copies.saved_bytes("s1") == (1, 10)
        assert [g.members for g in index.copies.groups("s1")] == [("o/a", "o/b", "o/c")]  # equal vectors: near


def test_the_cli_collapses_copies_and_all_shows_them(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hubdelta.cli import app
    from hubdelta.index.copies import CopyRow
    from hubdelta.index.door import open_writer
    from hubdelta.index.embeddings import SpaceRow
    from hubdelta.index.records import HubModel, ModelRecord, ModelStatus, Relation
    from tests.helpers import settings_for

    now = datetime(2026, 11, 1, tzinfo=UTC)
    rng = np.random.default_rng(1)
    same = rng.normal(size=8).astype(np.float32)
    vectors = {"org/query": rng.normal(size=8), "org/first": same, "org/again": same, "org/other": rng.normal(size=8)}
    created = {"org/query": 0, "org/first": 1, "org/again": 5, "org/other": 2}
    settings = settings_for(tmp_path / "home", "http://127.0.0.1:9")
    with open_writer(settings, "test") as index:
        index.models.put([ModelRecord(HubModel(k, "a" * 40, Relation.ADAPTER, ("org/base",),
                                               created_at=now + timedelta(days=d)), ModelStatus.EMBEDDED)
                          for k, d in created.items()])  # fmt: skip
        index.vectors.put_space(SpaceRow("sp", {"base_repo": "org/base"}, np.ones((2, 8), np.float32), now))
        index.vectors.put("sp", [Embedding(k, "a" * 40, np.asarray(v, np.float32), now) for k, v in vectors.items()])
        index.copies.put([CopyRow("sp", "org/first", "a" * 40, "F", 100, None, now),
                          CopyRow("sp", "org/again", "a" * 40, "F", 100, "org/first", now)])  # fmt: skip
    home = ["--home", str(settings.home)]
    runner = CliRunner()
    doc = json.loads(runner.invoke(app, [*home, "similar", "org/query", "--json"]).stdout)
    rows = {n["repo_id"]: n["copies"] for n in doc["neighbors"]}
    assert rows == {"org/first": ["org/again"], "org/other": []}
    every = json.loads(runner.invoke(app, [*home, "similar", "org/query", "--all", "--json"]).stdout)
    assert sorted(n["repo_id"] for n in every["neighbors"]) == ["org/again", "org/first", "org/other"]
    table = runner.invoke(app, [*home, "similar", "org/query"]).stdout
    assert "+1" in table and "org/again" not in table
    shown = runner.invoke(app, [*home, "show", "org/again"]).stdout
    assert "copy of    org/first" in shown and "copies     org/first" in shown


def test_a_stale_fingerprint_row_groups_nothing_saves_nothing_and_names_no_original(tmp_path: Path) -> None:
    from hubdelta.index.copies import CopyRow
    from hubdelta.index.door import open_writer
    from hubdelta.index.embeddings import SpaceRow
    from hubdelta.index.records import HubModel, ModelRecord, ModelStatus, Relation
    from hubdelta.query.api import show
    from tests.helpers import settings_for

    now = datetime(2026, 11, 1, tzinfo=UTC)
    rng = np.random.default_rng(2)
    old, other = rng.normal(size=8).astype(np.float32), rng.normal(size=8).astype(np.float32)
    settings = settings_for(tmp_path / "home", "http://127.0.0.1:9")
    with open_writer(settings, "test") as index:
        index.models.put([ModelRecord(HubModel(k, "b" * 40, Relation.ADAPTER, ("org/base",),
                                               created_at=now + timedelta(days=d)), ModelStatus.EMBEDDED)
                          for k, d in {"org/orig": 0, "org/moved": 1, "org/far": 2}.items()])  # fmt: skip
        index.vectors.put_space(SpaceRow("sp", {"base_repo": "org/base"}, np.ones((2, 8), np.float32), now))
        index.vectors.put("sp", [Embedding("org/orig", "a" * 40, old, now), Embedding("org/far", "b" * 40, -old, now)])
        index.copies.put([CopyRow("sp", "org/orig", "a" * 40, "F", 100, None, now),
                          CopyRow("sp", "org/moved", "a" * 40, "F", 100, "org/orig", now),  # a copy at sha a...
                          CopyRow("sp", "org/lost", "a" * 40, "F", 100, "org/orig", now)])  # fmt: skip
        # (org/lost's vector never landed: a kill between the writes)
        assert index.copies.saved_bytes("sp") == (0, 0)  # org/moved's vector is not there yet
        index.vectors.put("sp", [Embedding("org/moved", "a" * 40, old, now)])
        assert [g.members for g in index.copies.groups("sp")] == [("org/orig", "org/moved")]
        assert index.copies.saved_bytes("sp") == (1, 100)
        # ... re-embedded at sha b without a fingerprint (a Ray run): other weights, its row describes none of them.
        index.vectors.put("sp", [Embedding("org/moved", "b" * 40, other, now)])
        assert index.copies.groups("sp") == [] and index.copies.group_of("sp", "org/orig") is None
        assert index.copies.saved_bytes("sp") == (0, 0) and index.copies.known("sp") == {"F": ("org/orig", "a" * 40)}
    shown = show(settings, "org/moved")
    assert (shown.copied_from, shown.copy_of, shown.copies) == (None, None, [])


def test_a_commit_never_gives_a_copy_its_originals_vector_at_another_sha(tmp_path: Path) -> None:
    from hubdelta.embedder.copies import Fingerprint
    from hubdelta.embedder.ledger import SpaceLedger
    from hubdelta.embedder.run import ChunkOutput
    from hubdelta.embedder.space import Space
    from hubdelta.index.copies import CopyRow
    from hubdelta.index.door import open_writer
    from hubdelta.index.records import HubModel, ModelRecord, ModelStatus, Relation
    from tests.helpers import settings_for

    now = datetime(2026, 11, 1, tzinfo=UTC)
    base = np.zeros((2, 8), np.float32)
    space = Space("org/base", "0" * 40, "p", "h", 8)
    settings = settings_for(tmp_path / "home", "http://127.0.0.1:9")
    a_new, b = (ModelRecord(HubModel(k, s * 40, Relation.ADAPTER, ("org/base",)), ModelStatus.EMBEDDING)
                for k, s in (("org/A", "2"), ("org/B", "b")))  # fmt: skip
    with open_writer(settings, "test") as index:
        ledger = SpaceLedger(index, space, max_attempts=3)
        ledger.base(lambda: base)
        index.vectors.put(space.id, [Embedding("org/A", "1" * 40, np.ones(8, np.float32), now)])
        index.copies.put([CopyRow(space.id, "org/A", "1" * 40, "OLD", 10, None, now)])
        known = ledger.known_copies()
        assert known == {"OLD": ("org/A", "1" * 40)}
        # B re-uploads A@1 (known); A is re-embedded at 2 in the same commit, with other weights.
        out = ChunkOutput({"org/A": ("2" * 40, np.full((2, 8), 5, np.float32))},
                          copies={"org/B": ("b" * 40, *known["OLD"])},
                          prints={"org/A": Fingerprint("NEW", 10), "org/B": Fingerprint("OLD", 10)})  # fmt: skip
        outcomes = {o.record.repo_id: o for o in ledger.commit([a_new, b], out)}
        stored = index.vectors.get(space.id, ["org/A", "org/B"])
        assert set(stored) == {"org/A"} and stored["org/A"].sha == "2" * 40
        assert outcomes["org/B"].record.status == ModelStatus.QUEUED and "org/A@1111" in outcomes["org/B"].record.reason
        assert set(index.copies.of_space(space.id)) == {"org/A"}
        assert ledger.known_copies() == {"NEW": ("org/A", "2" * 40)}
