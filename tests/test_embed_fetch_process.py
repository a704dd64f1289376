"""Downloads in a child process (hubdelta.embedder.fetch_process): answers and failures cross the pipe, the child
runs at a lower priority in its own process, stops when asked, and dies with its parent.

The fetch here is a stand-in defined at module level (the child imports it by name); the real fetch in a child
process is what every `hubdelta embed` test runs (``[embed] download_process`` is on by default).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest

from hubdelta.embedder.fetch import FetchedModel
from hubdelta.embedder.fetch_process import ChildFetcher
from hubdelta.embedder.options import EmbedOptions
from hubdelta.embedder.pipeline import Pipeline, Timings
from hubdelta.embedder.prefetch import CHILD_NICE, Prefetcher
from hubdelta.embedder.run import Run
from hubdelta.embedder.safety_records import RepoKind
from hubdelta.index.door import open_writer
from hubdelta.index.records import ModelStatus
from hubdelta.index.store import Index
from hubdelta.kernel.errors import DownloadsLost, ModelRefused, ModelUnavailable
from tests.helpers import REPO_ROOT, Processes, records, settings_for
from tests.test_embed_pipeline import SPACE, Runner, ledger_for

# Every test here starts a process (the download child): the e2e tier.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice values and /proc are Linux's"),
]


def stand_in(repo_id: str, sha: str) -> FetchedModel:
    """Where and how it ran, in the answer's path; a refusal or an outage for the repos named so."""
    time.sleep(0.05 if "slow" not in repo_id else 2.0)
    if "refused" in repo_id:
        raise ModelRefused(repo_id, "pytorch_model.bin: pickle-only weights refused", rule="pickle")
    if "down" in repo_id:
        raise ModelUnavailable(repo_id, "the Hub answered 503 after retries", code="http", retryable=True)
    ran = f"pid-{os.getpid()}-nice-{os.getpriority(os.PRIO_PROCESS, 0)}"
    return FetchedModel(repo_id, sha, RepoKind.ADAPTER, Path(ran), ("adapter_config.json",), (), 10, 2, False)


_CALLS = itertools.count()


def fast_then_slow(repo_id: str, sha: str) -> FetchedModel:
    """The child's first two downloads are quick, every later one takes 5 s."""
    time.sleep(0.05 if next(_CALLS) < 2 else 5.0)
    return stand_in(repo_id, sha)


class KillsItsDownloads(Runner):
    """Computes like the stand-in runner, and kills the download process (its pid is in the paths) at the first
    chunk: what a crash or the OOM killer would do."""

    def adapters(self, folders: Mapping[str, Path]) -> dict[str, np.ndarray]:
        if not self.ran:
            os.kill(int(str(next(iter(folders.values()))).split("-")[1]), signal.SIGKILL)
        return super().adapters(folders)


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    with open_writer(settings_for(tmp_path / "home", "http://127.0.0.1:9"), "test") as index:
        yield index


def test_a_dead_download_process_stops_the_run_and_gives_the_claims_back(index: Index) -> None:
    todo = records(0, 8, base="acme/base")
    ledger = ledger_for(index, todo)
    flow = EmbedOptions(batch=2, prefetch=2, download_workers=2, commit_every=2, commit_interval_s=3600)
    assert flow.download_process  # the default
    run, runner = Run(), KillsItsDownloads()
    with pytest.raises(DownloadsLost), Pipeline(run, ledger, flow, Timings()) as pipeline:
        pipeline.start(todo, fast_then_slow)
        pipeline.go(runner)
    rows = index.models.get([r.repo_id for r in todo])
    first = {r.repo_id for r in todo[:2]}
    assert {rows[k].status for k in first} == {ModelStatus.EMBEDDED} and set(index.vectors.get(SPACE.id)) == first
    # No model is blamed for the lost process: every other one is queued again, no attempt spent.
    assert {(rows[r.repo_id].status, rows[r.repo_id].attempts) for r in todo[2:]} == {(ModelStatus.QUEUED, 0)}


def test_downloads_run_in_one_child_at_its_priority_and_failures_come_back_as_failures() -> None:
    items = [(f"o/m{i}", "sha") for i in range(6)] + [("o/refused", "sha"), ("o/down", "sha")]
    prefetch = Prefetcher(stand_in, items, workers=3, ahead=8, process=True)
    try:
        got, failures = prefetch.take(items)
    finally:
        prefetch.close()
    assert list(got) == [k for k, _ in items[:6]] and list(failures) == ["o/refused", "o/down"]
    (where,) = {str(f.path) for f in got.values()}  # all in one process
    _, pid, _, nice = where.split("-")
    assert int(pid) != os.getpid() and int(nice) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + CHILD_NICE)
    assert got["o/m0"].files == ("adapter_config.json",) and got["o/m0"].kind is RepoKind.ADAPTER
    assert "pickle-only" in failures["o/refused"].reason and not failures["o/refused"].transient
    assert "503" in failures["o/down"].reason and failures["o/down"].transient


def test_cancel_starts_nothing_more_and_close_waits_for_the_running_download() -> None:
    fetcher = ChildFetcher(stand_in, workers=1, nice=0)
    running = fetcher.submit("o/slow", "sha")
    queued = fetcher.submit("o/m1", "sha")
    time.sleep(0.5)
    fetcher.cancel()
    late = fetcher.submit("o/m2", "sha")
    started = time.monotonic()
    fetcher.close()
    assert running.result().repo_id == "o/slow"  # it was running: close waited for it
    assert time.monotonic() - started > 0.5
    for future in (queued, late):
        with pytest.raises(Exception, match="cancelled"):
            future.result()


PARENT = """
import sys, time
from tests.test_embed_fetch_process import stand_in
from hubdelta.embedder.fetch_process import ChildFetcher
f = ChildFetcher(stand_in, workers=1, nice=0)
f.submit("o/slow", "sha")
print(f.pid, flush=True)
time.sleep(60)
"""


def test_the_child_ends_when_its_parent_is_killed(processes: Processes) -> None:
    parent = processes.popen([sys.executable, "-c", PARENT], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.kill()  # SIGKILL: no cleanup of any kind in the parent
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
