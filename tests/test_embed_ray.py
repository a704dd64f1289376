"""``hubdelta embed --ray`` on a local Ray cluster (a head and two worker nodes): same vectors, exactly once.

The cluster is real Ray (``ray.cluster_utils.Cluster`` starts a GCS, and a raylet per node, as processes on this
machine); the workers are the product's actors; the driver is the ``hubdelta`` command in its own process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from hubdelta.crawler.api import run_crawl, track
from hubdelta.embedder.api import ray_options, run_embed
from hubdelta.index.door import open_reader
from hubdelta.index.records import ModelStatus
from hubdelta.kernel.settings import load_settings
from hubdelta_dev.devhub.server import DevhubServer
from hubdelta_dev.pool.base import BASE_REPO_ID
from tests.helpers import PoolIndex, Processes, drained, settings_for, start_daemon, statuses, stop_daemon, wait_for

pytestmark = pytest.mark.pool


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A head with no CPUs (it schedules, like a cluster's head) and two worker nodes of one CPU each."""
    from ray.cluster_utils import Cluster

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        yield str(cluster.address)
    finally:
        cluster.shutdown()


def _worker_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "^ray::EmbedWorker"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_two_ray_workers_embed_the_pool_exactly_once_like_one_process_with_one_killed_mid_run(
    pool_index: PoolIndex, pool_hub: DevhubServer, ray_cluster: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    settings = load_settings({"HF_ENDPOINT": pool_hub.url}, home=home)
    track(settings, BASE_REPO_ID)
    run_crawl(settings)
    with open_reader(settings) as index:
        queued = sorted(index.models.get())
    log = tmp_path / "embed.log"
    env = {**os.environ, "HUBDELTA_HOME": str(home), "HF_ENDPOINT": pool_hub.url, "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "hubdelta", "--log-json", "embed", "--ray", ray_cluster, "--batch", "2", "--json"]
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            # Mid-run: the first batch is committed, each worker holds more batches (two in flight each).
            _wait_for(lambda: '"embed.model"' in log.read_text() or proc.poll() is not None, 300, "a first commit")
            pids = _worker_pids()
            assert proc.poll() is None and len(pids) == 2, (pids, log.read_text()[-2000:])
            os.kill(pids[0], signal.SIGKILL)
            out, _ = proc.communicate(timeout=600)
        finally:
            proc.kill()
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert out.lstrip().startswith("{"), out[:2000]
    summary = json.loads(out)
    assert summary["workers"] == 2 and summary["worker_deaths"] == 1, summary
    assert summary["embedded"] == len(queued) and summary["failed"] == 0 and summary["reused"] == 0, summary
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert [e["event"] for e in events].count("ray.worker_died") == 1
    assert sorted(e["repo"] for e in events if e["event"] == "embed.model") == queued  # each reported once

    (space_id,) = summary["spaces"]
    with open_reader(settings) as index, open_reader(pool_index.settings) as reference:
        models = index.models.get()
        assert {k: (r.status, r.attempts) for k, r in models.items()} == {k: (ModelStatus.EMBEDDED, 1) for k in queued}
        assert index.vectors.count(space_id) == len(queued)  # one row per model: no duplicate upsert
        got = index.vectors.get(space_id, queued)
        assert set(reference.vectors.spaces()) == {space_id}  # the same space as the single-process embedder
        want = reference.vectors.get(space_id, queued)
    assert sorted(got) == sorted(want) == queued
    for repo in queued:
        a, b = got[repo].vector, want[repo].vector
        assert got[repo].sha == want[repo].sha
        cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        assert cos >= 0.9999, (repo, cos)


def test_a_base_no_worker_can_load_leaves_its_models_queued_and_the_run_ends(
    pool: Path, ray_cluster: str, tmp_path: Path
) -> None:
    """The driver reads only the base's config; the workers find its weights corrupt."""
    import shutil

    hub_root = tmp_path / "hub"
    shutil.copytree(pool / "hub", hub_root, symlinks=True)
    base_dir = hub_root / BASE_REPO_ID
    for weights in base_dir.glob("*.safetensors"):
        weights.unlink()
        weights.write_bytes(b"not a safetensors file")
    with DevhubServer(hub_root) as hub:
        settings = load_settings({"HF_ENDPOINT": hub.url}, home=tmp_path / "home")
        track(settings, BASE_REPO_ID)
        run_crawl(settings)
        summary = run_embed(settings, limit=6, batch=2, ray=ray_options(settings, address=ray_cluster))
    assert summary.embedded == 0 and summary.workers == 2, summary
    ((base, why),) = summary.failures
    assert base == BASE_REPO_ID and why.startswith("base not loaded:"), why
    with open_reader(settings) as index:
        models = index.models.get()
    assert {r.status for r in models.values()} == {ModelStatus.QUEUED}  # as they were: the next run tries again
    assert {r.attempts for r in models.values()} == {0}


def test_the_daemon_with_ray_enabled_keeps_its_workers_across_embed_runs(
    pool_hub: DevhubServer, ray_cluster: str, tmp_path: Path, processes: Processes
) -> None:
    home = tmp_path / "home"
    toml = f"""
[daemon]
crawl_every_s = 600
embed_every_s = 1
embed_limit = 8
report_every_s = 3600
[ray]
enabled = true
address = "{ray_cluster}"
"""
    track(settings_for(home, pool_hub.url, toml), BASE_REPO_ID)
    proc = start_daemon(processes, home, pool_hub.url)
    try:
        wait_for("the pool embedded by the Ray workers", lambda: drained(home, pool_hub.url), timeout=600, proc=proc)
    finally:
        log = stop_daemon(proc)
    assert proc.returncode == 0, log[-3000:]
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    runs = [e for e in events if e["event"] == "daemon.job_done" and e["job"] == "embed" and e.get("embedded")]
    models = statuses(home, pool_hub.url)
    assert set(models.values()) == {"embedded"}
    assert len(runs) >= 3 and all(e["workers"] == 2 for e in runs), runs  # at most 8 models a run
    names = [e["event"] for e in events]
    assert names.count("ray.workers") == 1 and names.count("ray.worker_ready") == 2  # started once, kept
    assert sum(e["embedded"] for e in runs) == len(models)
