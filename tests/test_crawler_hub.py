"""The crawler against devhub: the pool, a 100k synthetic catalog, faults and kill -9, with the real index."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from hubdelta.crawler.api import run_crawl, track
from hubdelta.index.door import open_reader
from hubdelta.index.records import ModelStatus, Relation
from hubdelta.kernel.settings import Settings
from hubdelta_dev.devhub.faults import FaultConfig
from hubdelta_dev.devhub.reqlog import max_in_window
from hubdelta_dev.devhub.server import DevhubServer
from hubdelta_dev.devhub.synth import generate_catalog, mutate_entries, read_catalog, write_catalog
from hubdelta_dev.pool.base import BASE_REPO_ID
from hubdelta_dev.pool.build import PoolManifest
from tests.helpers import Processes, settings_for

ALL = tuple(Relation)


def index_state(settings: Settings) -> dict[str, tuple[str | None, str, str]]:
    """repo id -> (sha, relation, status) of every row not marked removed; asserts one row per repo."""
    with open_reader(settings) as index:
        rows = index.models.get()
        assert index.models.count() == len(rows), "duplicate repo ids in the models table"
    return {k: (r.model.sha, r.model.relation.value, r.status.value) for k, r in rows.items() if r.status != "removed"}


def listed_children(url: str, bases: list[str]) -> dict[str, str]:
    """What the Hub lists (through the real client): repo id -> relation. The oracle for the crawler."""
    api = HfApi(endpoint=url)
    out: dict[str, str] = {}
    for base in bases:
        for rel in ALL:
            for m in api.list_models(filter=f"base_model:{rel.value}:{base}"):
                out.setdefault(m.id, rel.value)
    return out


# --- the pool -------------------------------------------------------------------------------------------


def test_one_crawl_finds_exactly_the_pool_children(pool_hub: DevhubServer, manifest: PoolManifest, tmp_path: Path):
    settings = settings_for(tmp_path / "home", pool_hub.url)
    track(settings, BASE_REPO_ID)  # checks the base exists on the hub
    summary = run_crawl(settings)
    relation = {"lora": "adapter", "full": "finetune", "merge": "merge"}
    expected = {r.repo_id: (relation[r.kind], "queued") for r in manifest.repos}
    assert {k: (rel, status) for k, (_, rel, status) in index_state(settings).items()} == expected
    assert summary.total("new") == len(expected) and summary.errors == []
    with open_reader(settings) as index:
        merge = index.models.get([f"{manifest.repos[-2].repo_id}"])[manifest.repos[-2].repo_id]
    assert merge.model.relation == Relation.MERGE and len(merge.model.base_models) == 3


# --- 100k synthetic catalog -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevhubServer, list[str]]]:
    root = tmp_path_factory.mktemp("big")
    summary = generate_catalog(root, 100_000, 3, seed=0)
    with DevhubServer(root, check_interval_s=0.2) as server:
        yield server, list(summary.bases)


def test_100k_crawl_is_exact_incremental_and_reconciles(big_hub, tmp_path: Path) -> None:
    hub, bases = big_hub
    settings = settings_for(tmp_path / "home", hub.url)
    for base in bases:
        track(settings, base, ALL, check=False)
    first = run_crawl(settings)
    state = index_state(settings)
    expected = listed_children(hub.url, bases)
    assert {k: rel for k, (_, rel, _) in state.items()} == expected
    assert len(expected) > 90_000 and first.total("new") == len(expected)

    hub.reset_requests()
    second = run_crawl(settings)
    lists = hub.requests()["by_kind"].get("list", 0)
    assert second.requests == lists <= len(bases) * len(ALL)
    assert (second.total("new"), second.total("updated"), second.total("removed")) == (0, 0, 0)

    entries = read_catalog(hub.catalog.root)
    private = [e for e in entries if e.get("private")]
    mutation = mutate_entries([e for e in entries if not e.get("private")], add=50, change=10, drop=5, seed=7)
    for e in mutation.entries:
        if e["id"] in mutation.added:
            e["private"] = False
    write_catalog(hub.catalog.root, mutation.entries + private)
    hub.reload()
    third = run_crawl(settings, full=True)
    assert (third.total("new"), third.total("updated"), third.total("removed")) == (50, 10, 5)
    with open_reader(settings) as index:
        rows = index.models.get([*mutation.dropped, *mutation.changed])
    assert {rows[i].status for i in mutation.dropped} == {ModelStatus.REMOVED}
    assert all(rows[i].model.sha != state[i][0] for i in mutation.changed)


# --- faults ---------------------------------------------------------------------------------------------

BUDGET, WINDOW = 18, 1.0
FAULT_TOML = f"[crawl]\nrequests = {BUDGET}\nwindow_s = {WINDOW}\ntimeout_s = 0.5\nmax_attempts = 40\n"


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("small")
    summary = generate_catalog(root, 3_000, 3, seed=1)
    return root, list(summary.bases)


def _reference(root: Path, bases: list[str], home: Path) -> dict[str, tuple[str | None, str, str]]:
    with DevhubServer(root, page_size=50) as hub:
        settings = settings_for(home, hub.url)
        for base in bases:
            track(settings, base, ALL, check=False)
        run_crawl(settings)
        return index_state(settings)


def test_faults_give_the_same_index_within_budget(small_root, tmp_path: Path) -> None:
    root, bases = small_root
    reference = _reference(root, bases, tmp_path / "ref")
    faults = FaultConfig(rate_limit=8, rate_window_s=WINDOW, error_rate=0.1, hang_rate=0.03, hang_s=1.5,
                         truncate_rate=0.05, seed=3)  # fmt: skip
    with DevhubServer(root, page_size=50, faults=faults) as hub:
        settings = settings_for(tmp_path / "home", hub.url, FAULT_TOML)
        for base in bases:
            track(settings, base, ALL, check=False)
        summary = run_crawl(settings)
        records = hub.request_records()
    assert summary.errors == []
    assert index_state(settings) == reference
    seen = {r.fault for r in records}
    assert {"rate_limited", "error", "hang", "truncate"} <= seen, seen
    assert summary.retries >= sum(1 for r in records if r.fault in {"rate_limited", "error", "hang", "truncate"})
    assert max_in_window([r.t for r in records if r.kind == "list"], WINDOW) <= BUDGET


# --- kill -9 --------------------------------------------------------------------------------------------


def test_kill_9_at_random_points_then_rerun_gives_the_same_index(
    small_root, tmp_path: Path, processes: Processes
) -> None:
    root, bases = small_root
    reference = _reference(root, bases, tmp_path / "ref")
    rng = random.Random(11)
    # 40 ms a request, a Hub-like round trip: over bare loopback a crawl can end before the earliest kill
    with DevhubServer(root, page_size=50, faults=FaultConfig(shape_latency_ms=40)) as hub:
        settings = settings_for(tmp_path / "home", hub.url)
        for base in bases:
            track(settings, base, ALL, check=False)
        env = {**os.environ, "HUBDELTA_HOME": str(settings.home), "HF_ENDPOINT": hub.url}
        killed = 0
        for trial in range(10):
            args = [sys.executable, "-m", "hubdelta", "crawl"] + (["--full"] if trial % 3 == 2 else [])
            proc = processes.popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(1.0, 4.0))  # ~1.5 s of start-up, then somewhere inside the crawl
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
            proc.wait()
            index_state(settings)  # opens every time, one row per repo
        assert killed >= 5
        run_crawl(settings, full=True)
    assert index_state(settings) == reference
