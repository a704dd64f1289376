"""Synthetic catalogs at scale: 100k repos paged exactly once, and cursors that survive a changing catalog."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from hubdelta_dev.devhub.server import DevhubServer
from hubdelta_dev.devhub.synth import generate_catalog, mutate_entries, read_catalog, write_catalog

N_REPOS = 100_000


@pytest.fixture(scope="module")
def big_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub100k")
    started = time.perf_counter()
    summary = generate_catalog(root, N_REPOS, 3, seed=0)
    assert time.perf_counter() - started < 30
    assert summary.repos == N_REPOS and set(summary.relations) == {
        "adapter",
        "finetune",
        "merge",
        "quantized",
    }
    return root


@pytest.fixture(scope="module")
def big_hub(big_root: Path) -> Iterator[DevhubServer]:
    started = time.perf_counter()
    with DevhubServer(big_root) as server:
        assert time.perf_counter() - started < 30  # about 5 s on a busy 2-core machine
        yield server


def test_100k_catalog_pages_every_visible_repo_exactly_once_newest_first(big_root: Path, big_hub: DevhubServer) -> None:
    server = big_hub
    server.reset_requests()
    visible = {e["id"] for e in read_catalog(big_root) if not e.get("private")}
    models = list(HfApi(endpoint=server.url).list_models(sort="created_at"))
    listed = [m.id for m in models]
    assert len(listed) == len(set(listed)) == len(visible)
    assert set(listed) == visible
    created = [m.created_at for m in models]
    assert all(a > b for a, b in itertools.pairwise(created))  # distinct, strictly newest first
    assert server.requests()["by_status"] == {"200": -(-len(visible) // 1000)}  # 1000 per page, no extras


def test_relation_filter_over_100k_matches_the_catalog(big_root: Path, big_hub: DevhubServer) -> None:
    server = big_hub
    base = "synth-base/base-1"
    listed = [m.id for m in HfApi(endpoint=server.url).list_models(filter=f"base_model:merge:{base}", expand=["tags"])]
    expected = {
        e["id"]
        for e in read_catalog(big_root)
        if not e.get("private") and isinstance(e["card"].get("base_model"), list) and base in e["card"]["base_model"]
    }
    assert len(listed) == len(set(listed)) and set(listed) == expected and len(expected) > 1000


def _key(entry: dict) -> tuple[int, str]:
    return (-entry.get("downloads", 0), entry["id"])


def test_cursor_is_stable_when_the_catalog_changes_mid_listing(
    tmp_path: Path, serve: Callable[..., DevhubServer]
) -> None:
    root = tmp_path / "hub"
    generate_catalog(root, 3000, 3, seed=1)
    server = serve(root, page_size=250, check_interval_s=0.1)
    entries = read_catalog(root)
    mutation = mutate_entries(entries, add=500, change=100, drop=100, seed=2)  # pure: nothing written yet
    private = {e["id"] for e in entries if e.get("private")}
    target = next(i for i in mutation.changed if i not in private)
    api = HfApi(endpoint=server.url)
    sha_before = api.model_info(target).sha
    models = iter(api.list_models(sort="downloads"))
    first_page = [next(models).id for _ in range(250)]  # page 2 is not requested until we ask for item 251
    cursor = max(_key(e) for e in entries if e["id"] in set(first_page))
    write_catalog(root, mutation.entries)
    time.sleep(0.3)  # the server notices the rewritten catalog on its own (no reload call, no restart)
    rest = [m.id for m in models]
    seen = first_page + rest
    assert len(seen) == len(set(seen))  # keyset cursor: nothing listed twice
    after_cursor = {e["id"] for e in mutation.entries if not e.get("private") and _key(e) > cursor}
    assert set(rest) == after_cursor  # exactly the current repos past the cursor, new ones included
    assert set(rest) & set(mutation.added) and not set(rest) & set(mutation.dropped)
    assert api.model_info(target).sha != sha_before
