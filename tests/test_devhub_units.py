"""devhub's pure decisions, as tables: lineage, catalog validation, ranges, cursors, rate windows, synth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub.utils import parse_ratelimit_headers

from hubdelta_dev.devhub import cards
from hubdelta_dev.devhub.blobs import read_header, safetensors_parameters, virtual_entry
from hubdelta_dev.devhub.catalog import Catalog
from hubdelta_dev.devhub.faults import (
    FaultConfig,
    FaultInjector,
    random_action,
    rate_headers,
    updated,
    window_state,
)
from hubdelta_dev.devhub.listing import QueryError, decode_cursor, encode_cursor
from hubdelta_dev.devhub.reqlog import max_in_window
from hubdelta_dev.devhub.routes import parse_range, parse_route
from hubdelta_dev.devhub.synth import BASE_ORG, mutate_entries, synth_entries
from hubdelta_dev.errors import CatalogError, DevhubError


def facts(*paths: str) -> cards.PathFacts:
    return cards.path_facts(paths)


@pytest.mark.parametrize(
    ("card", "paths", "config", "expected"),
    [
        ({"base_model": "a/b"}, ("adapter_config.json",), None, ("adapter", ("a/b",))),
        ({"base_model": ["a/b", "c/d"]}, ("config.json",), None, ("merge", ("a/b", "c/d"))),
        ({"base_model": "a/b"}, ("model-Q4.gguf",), None, ("quantized", ("a/b",))),
        (
            {"base_model": "a/b"},
            ("config.json",),
            {"quantization_config": {"bits": 4}},
            ("quantized", ("a/b",)),
        ),
        ({"base_model": "a/b", "quantized_by": "x"}, (), None, ("quantized", ("a/b",))),
        ({"base_model": "a/b"}, ("config.json", "model.safetensors"), None, ("finetune", ("a/b",))),
        (
            {"base_model": "a/b", "base_model_relation": "merge"},
            ("adapter_config.json",),
            None,
            ("merge", ("a/b",)),
        ),
        ({"base_model": "a/b", "base_model_relation": "bogus"}, (), None, ("finetune", ("a/b",))),
        ({"base_model": ["a/b", "a/b"]}, (), None, ("finetune", ("a/b",))),  # duplicates collapse
        ({"base_model": ["a/b", "c/d"]}, ("sub/adapter_config.json",), None, ("adapter", ("a/b", "c/d"))),
    ],
)
def test_lineage_inference(card: dict, paths: tuple, config: dict | None, expected: tuple) -> None:
    lineage = cards.derive_lineage(card, facts(*paths), config)
    assert lineage is not None and (lineage.relation, lineage.bases) == expected


def test_no_base_no_lineage_and_tags() -> None:
    assert cards.derive_lineage({"license": "mit"}, facts("config.json")) is None
    lin = cards.Lineage("adapter", ("a/b",))
    tags = cards.derive_tags(
        {"license": "mit", "tags": ["x", "x"], "language": ["en"]},
        facts("adapter_model.safetensors"),
        lin,
        "peft",
        "text-generation",
    )
    assert tags == (
        "peft", "safetensors", "x", "text-generation", "en", "base_model:a/b", "base_model:adapter:a/b",
        "license:mit", "region:us",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "meta", "body"),
    [
        ("---\nbase_model: a/b\n---\nhello\n", {"base_model": "a/b"}, "hello\n"),
        ("\ufeff---\r\nlicense: mit\r\n---\r\n", {"license": "mit"}, ""),
        ("no front matter", {}, "no front matter"),
        ("---\n---\nbody", {}, "body"),
    ],
)
def test_front_matter(text: str, meta: dict, body: str) -> None:
    assert cards.split_front_matter(text) == (meta, body)
    rendered = cards.render_card(meta, body or "x\n")
    assert cards.split_front_matter(rendered)[0] == meta


@pytest.mark.parametrize("text", ["---\na: [1\n---\n", "---\n- a\n---\n", "---\na: 1\n"])
def test_bad_front_matter(text: str) -> None:
    with pytest.raises(ValueError):
        cards.split_front_matter(text)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a"]', "expected a JSON object"),
        ('{"id": "noslash"}', "'id' must be 'org/name'"),
        ('{"id": "a/b", "downloads": -1}', "'downloads' must be >= 0"),
        ('{"id": "a/b", "downloads": true}', "'downloads' must be int"),
        ('{"id": "a/b", "gated": true}', "'gated' must be false"),
        ('{"id": "a/b", "createdAt": "yesterday"}', "'createdAt' is not an ISO-8601 time"),
        ('{"id": "a/b", "files": {"../x": 1}}', "'files' must map"),
        ('{"id": "a/b", "sha": "abc"}', "'sha' must be 40"),
        ('{"id": "a/b", "card": "text"}', "'card' must be dict"),
    ],
)
def test_malformed_catalog_lines_name_file_line_and_fix(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "catalog.jsonl").write_text('{"id": "ok/repo"}\n\n' + line + "\n")
    with pytest.raises(CatalogError) as err:
        Catalog(tmp_path)
    assert f"catalog.jsonl:3: {message}" in err.value.message
    assert err.value.fix and "org/name" in err.value.fix


def test_duplicate_ids_fail_a_bad_card_does_not_and_a_missing_root(tmp_path: Path) -> None:
    (tmp_path / "catalog.jsonl").write_text('{"id": "a/b"}\n{"id": "a/b"}\n')
    with pytest.raises(CatalogError, match="duplicate id"):
        Catalog(tmp_path)
    (tmp_path / "catalog.jsonl").unlink()
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "README.md").write_text("---\nx: [\nbase_model: c/d\n---\n")
    repo = Catalog(tmp_path).current().repos["a/b"]  # served like the Hub does: listed, without cardData
    assert repo.card == {} and repo.lineage is None and repo.card_text.startswith("---")
    with pytest.raises(DevhubError, match="does not exist"):
        Catalog(tmp_path / "missing")


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-3", 10, (0, 4)),
        ("bytes=4-", 10, (4, 10)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=0-100000", 10, (0, 10)),
        ("bytes=10-", 10, "unsatisfiable"),
        ("bytes=5-2", 10, "unsatisfiable"),
        ("bytes=0-1,4-5", 10, None),
        ("items=0-1", 10, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: Any) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("path", "kind", "repo", "rev", "rest"),
    [
        ("/api/models", "list", None, None, ""),
        ("/api/models/a/b", "model_info", "a/b", None, ""),
        ("/api/models/a/b/revision/refs%2Fpr%2F1", "model_info", "a/b", "refs/pr/1", ""),
        ("/api/models/a/b/tree/main/sub%2Fdir", "tree", "a/b", "main", "sub/dir"),
        ("/a/b/resolve/main/sub/x%20y.txt", "resolve", "a/b", "main", "sub/x y.txt"),
        ("/models/a/b/resolve/abc/f", "resolve", "a/b", "abc", "f"),
        ("/a/b", "other", None, None, ""),
    ],
)
def test_parse_route(path: str, kind: str, repo: str | None, rev: str | None, rest: str) -> None:
    route = parse_route(path)
    assert (route.kind, route.repo_id, route.revision, route.path) == (kind, repo, rev, rest)


def test_cursor_roundtrip_and_rejection() -> None:
    key = (-123, "org/name")
    assert decode_cursor(encode_cursor("likes", key), "likes") == key
    with pytest.raises(QueryError):
        decode_cursor(encode_cursor("likes", key), "downloads")
    with pytest.raises(QueryError):
        decode_cursor("!!garbage", "likes")


@pytest.mark.parametrize(
    ("now", "window", "index", "reset"),
    [(0.0, 300, 0, 300), (299.2, 300, 0, 1), (300.0, 300, 1, 300), (1.5, 2, 0, 1), (2.01, 2, 1, 2)],
)
def test_window_state(now: float, window: float, index: int, reset: int) -> None:
    assert window_state(now, 0.0, window) == window_state(now, 0.0, window)
    state = window_state(now, 0.0, window)
    assert (state.index, state.reset_s) == (index, reset)


def test_rate_headers_parse_with_the_clients_parser() -> None:
    info = parse_ratelimit_headers(rate_headers("api", 0, 55, 500, 300))
    assert info is not None and (info.resource_type, info.remaining, info.reset_in_seconds) == ("api", 0, 55)
    assert (info.limit, info.window_seconds) == (500, 300)


@pytest.mark.parametrize(
    ("draw", "expected"), [(0.05, "hang"), (0.15, "error"), (0.25, "truncate"), (0.35, "ok"), (0.99, "ok")]
)
def test_random_action_bands(draw: float, expected: str) -> None:
    cfg = FaultConfig(hang_rate=0.1, error_rate=0.1, truncate_rate=0.1)
    assert random_action(cfg, draw) == expected


def test_injector_quota_window_and_seed() -> None:
    inj = FaultInjector(FaultConfig(rate_limit=2, rate_window_s=10), start=0.0)
    actions = [inj.decide("/api/models", "api", "c", t).action for t in (0, 1, 2, 3)]
    assert actions == ["ok", "ok", "rate_limited", "rate_limited"]
    assert inj.decide("/api/models", "api", "other-client", 4).action == "ok"  # per client
    assert inj.decide("/a/b/resolve/main/f", "resolvers", "c", 4).action == "ok"  # per bucket
    assert inj.decide("/api/models", "api", "c", 10.5).action == "ok"  # next window
    runs = []
    for _ in range(2):
        inj = FaultInjector(FaultConfig(error_rate=0.5, seed=7))
        runs.append([inj.decide("/x", "api", "c", 0).status for _ in range(20)])
    assert runs[0] == runs[1] and len(set(runs[0])) > 1


@pytest.mark.parametrize(
    "changes",
    [
        {"error_rate": 1.5},
        {"error_rate": 0.6, "hang_rate": 0.6},
        {"rate_limit": 0},
        {"nope": 1},
        {"path_regex": "("},
    ],
)
def test_bad_fault_settings(changes: dict) -> None:
    with pytest.raises(DevhubError):
        updated(FaultConfig(), changes)


def test_max_in_window() -> None:
    assert max_in_window([], 300) == 0
    assert max_in_window([0, 1, 2, 299.9, 300, 600], 300) == 4
    assert max_in_window([0, 300, 600], 300) == 1


def test_virtual_safetensors_header_matches_its_size() -> None:
    for size in (200, 4096, 4097, 10_000_001):
        entry = virtual_entry("seed", "model.safetensors", size)
        header = read_header(entry)
        assert header is not None
        meta = json.loads(header)
        assert 8 + len(header) + meta["weight"]["data_offsets"][1] == size
        assert sum(safetensors_parameters(header).values()) > 0
    assert virtual_entry("s", "model.safetensors", 10).lfs is not None  # weights are LFS whatever the size
    assert virtual_entry("s", "notes.txt", 10).lfs is None


def test_synth_is_deterministic_and_realistic() -> None:
    a, b = synth_entries(2000, 3, seed=5), synth_entries(2000, 3, seed=5)
    assert a == b and a != synth_entries(2000, 3, seed=6)
    assert len({e["id"] for e in a}) == 2003 and len({e["createdAt"] for e in a}) == 2003
    assert [e["id"] for e in a[:3]] == [f"{BASE_ORG}/base-{i}" for i in range(3)]
    assert len({e["id"].split("/")[0] for e in a[3:]}) >= 40
    assert any(e.get("gated") for e in a) and any(e.get("private") for e in a)
    relations = {cards.derive_lineage(e["card"], facts(*e["files"]), e.get("config")).relation for e in a[3:]}  # type: ignore[union-attr]
    assert relations == {"adapter", "finetune", "merge", "quantized"}


def test_mutate_entries_is_pure_and_exact() -> None:
    entries = synth_entries(500, 2, seed=1)
    snapshot = json.dumps(entries)
    m = mutate_entries(entries, add=30, change=20, drop=10, seed=3)
    assert json.dumps(entries) == snapshot  # the input is untouched
    ids = [e["id"] for e in m.entries]
    assert len(ids) == len(set(ids)) == 502 + 30 - 10
    assert set(m.dropped).isdisjoint(ids) and set(m.added) <= set(ids)
    assert not any(i.startswith(BASE_ORG) for i in m.dropped + m.changed)
    by_id = {e["id"]: e for e in m.entries}
    assert all(by_id[i]["revision"] == 1 for i in m.changed)
    newest = max(e["createdAt"] for e in entries)
    assert all(by_id[i]["createdAt"] > newest for i in m.added)
    with pytest.raises(ValueError):
        mutate_entries(entries, drop=400, change=200)


def test_a_deeply_nested_config_does_not_stop_a_scan(tmp_path: Path) -> None:
    repo = tmp_path / "evil" / "nested"
    repo.mkdir(parents=True)
    (repo / "README.md").write_text("---\nbase_model: org/base\n---\n")
    (repo / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    snapshot = Catalog(tmp_path).current()
    assert "evil/nested" in snapshot.repos
