"""``hubdelta embed`` end to end: devhub → crawl → embed → index; bad repos, idempotence, kill -9, the CLI."""

from __future__ import annotations

import gc
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hubdelta.cli import app
from hubdelta.crawler.api import run_crawl, track
from hubdelta.embedder.api import run_embed
from hubdelta.index.door import open_reader, open_writer
from hubdelta.index.records import ModelStatus
from hubdelta.kernel.settings import Settings
from hubdelta_dev.devhub.badrepos import BASE_ID as TINY_BASE
from hubdelta_dev.devhub.badrepos import write_bad_repos
from hubdelta_dev.devhub.server import DevhubServer
from hubdelta_dev.pool.base import BASE_REPO_ID
from hubdelta_dev.pool.build import PoolManifest
from tests.helpers import Processes, kill_after_progress, one_line_error, settings_for


def statuses(settings: Settings) -> dict[str, tuple[str, str]]:
    with open_reader(settings) as index:
        return {k: (r.status.value, r.reason) for k, r in index.models.get().items()}


def test_the_bad_repo_corpus_ends_with_the_right_statuses(tmp_path: Path) -> None:
    expected = {r.repo_id: r for r in write_bad_repos(tmp_path / "hub")}
    with DevhubServer(tmp_path / "hub") as hub:
        settings = settings_for(tmp_path / "home", hub.url)
        track(settings, TINY_BASE)
        run_crawl(settings)
        summary = run_embed(settings, batch=4)
        got = statuses(settings)
    assert gc.isenabled() and gc.get_freeze_count() == 0  # the run's pause and freeze of the collector are undone
    assert set(got) == set(expected)
    for repo_id, (status, reason) in got.items():
        want = expected[repo_id]
        if want.outcome == "plan":
            assert status == "embedded", (repo_id, reason)
        elif want.rule == "gated":
            assert status == "skipped" and "gated" in reason  # the crawler already knew
        elif repo_id in ("hostile/quantized", "hostile/gguf-only"):
            assert status == "discovered" and "quantized" in reason  # recorded, never queued
        else:
            assert status == "failed" and want.reason in reason and "\n" not in reason, (repo_id, reason)
    assert summary.embedded == sum(1 for r in expected.values() if r.outcome == "plan")
    assert summary.failed == len(summary.failures) == len(expected) - summary.embedded - 3


@pytest.fixture(scope="module")
def embedded_pool(pool: Path, tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("home")
    with DevhubServer(pool / "hub") as hub:
        settings = settings_for(home, hub.url)
        track(settings, BASE_REPO_ID)
        run_crawl(settings)
        first = run_embed(settings)
        yield settings, first, hub


def test_every_pool_model_is_embedded_once_into_one_space(embedded_pool, manifest: PoolManifest) -> None:
    settings, first, _ = embedded_pool
    assert first.embedded == len(manifest.repos) and first.failed == 0 and len(first.spaces) == 1
    assert set(statuses(settings).values()) == {("embedded", "")}
    with open_reader(settings) as index:
        vectors = index.vectors.get(first.spaces[0])
        rows = index.maintenance.stats()[f"emb_{first.spaces[0]}"].rows
        models = index.models.get()
    assert set(vectors) == {r.repo_id for r in manifest.repos} and rows == len(vectors)
    assert all(vectors[k].sha == models[k].model.sha for k in vectors)
    assert all(np.isfinite(v.vector).all() and np.linalg.norm(v.vector) > 0 for v in vectors.values())
    t = first.timings  # where the seconds went: forwards, waiting for downloads, commits, the base
    assert set(t) == {"compute_s", "wait_s", "commit_s", "base_s"} and t["compute_s"] > 0 and t["base_s"] > 0
    assert t["compute_s"] + t["wait_s"] + t["commit_s"] + t["base_s"] <= first.seconds


def test_rerunning_embeds_nothing_and_a_requeued_model_reuses_its_vector(embedded_pool) -> None:
    settings, first, _ = embedded_pool
    again = run_embed(settings)
    assert (again.embedded, again.reused, again.failed) == (0, 0, 0)
    with open_writer(settings, "test") as index:
        record = index.models.get(["hubdelta-pool/smollm2-lora-math-1"])["hubdelta-pool/smollm2-lora-math-1"]
        index.models.put([record.with_status(ModelStatus.QUEUED)])
        before = index.vectors.get(first.spaces[0], [record.repo_id])[record.repo_id]
    third = run_embed(settings)
    assert (third.embedded, third.reused) == (0, 1)
    with open_reader(settings) as index:
        after = index.vectors.get(first.spaces[0], [record.repo_id])[record.repo_id]
    assert np.array_equal(before.vector, after.vector) and before.embedded_at == after.embedded_at


def test_kill_9_during_embedding_then_rerun_embeds_every_model_exactly_once(
    embedded_pool, tmp_path: Path, processes: Processes
) -> None:
    _, first, hub = embedded_pool
    # small commit groups and two downloads ahead: kills land between groups, and a rerun has suspects to claim
    toml = "[embed]\ncommit_every = 4\nprefetch = 1\ndownload_workers = 2\n"
    settings = settings_for(tmp_path / "home", hub.url, toml)
    track(settings, BASE_REPO_ID)
    run_crawl(settings)
    env = {**os.environ, "HUBDELTA_HOME": str(settings.home), "HF_ENDPOINT": hub.url}
    rng = random.Random(5)
    killed = 0
    for _ in range(3):
        proc = processes.popen([sys.executable, "-m", "hubdelta", "embed", "--batch", "3"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        killed += kill_after_progress(proc, settings, rng)  # mid-run, whatever the machine's speed
        statuses(settings)  # the store opens every time
    assert killed >= 2
    last = run_embed(settings)  # may find nothing left when the run that was not killed finished
    assert last.failed == 0
    space = first.spaces[0]  # same base and options, so the same space id
    with open_reader(settings) as index:
        assert set(index.vectors.spaces()) == {space}
        vectors = index.vectors.get(space)
        rows = index.maintenance.stats()[f"emb_{space}"].rows
        counts = index.models.count_by_status()
    assert counts[ModelStatus.EMBEDDED] == len(vectors) == rows == first.embedded
    with open_reader(embedded_pool[0]) as index:
        reference = index.vectors.get(space)
    assert all(np.allclose(vectors[k].vector, reference[k].vector, atol=1e-5) for k in reference)


def test_add_a_local_adapter_and_refuse_a_bad_folder(pool: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    base = pool / "hub" / BASE_REPO_ID
    adapter = pool / "hub" / "hubdelta-pool/smollm2-lora-legal-2"
    home = ["--home", str(tmp_path / "home")]
    result = runner.invoke(app, [*home, "add", str(adapter), "--base", str(base), "--name", "me/legal", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["repo_id"] == "me/legal" and doc["kind"] == "adapter" and doc["norm"] > 0
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "target_modules": ["q_proj"]}))
    (bad / "adapter_model.bin").write_bytes(b"PK\x03\x04")
    line = one_line_error(runner.invoke(app, [*home, "add", str(bad), "--base", str(base)]))
    assert "pickle" in line
    assert "is not a folder" in one_line_error(runner.invoke(app, [*home, "add", str(tmp_path / "x"), "--base", "a/b"]))
