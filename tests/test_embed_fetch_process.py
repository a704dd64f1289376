"""Downloads in a child process (hubdelta.embedder.fetch_process): answers and failures cross the pipe, the child
runs at a lower priority in its own process, stops when asked, and dies with its parent.

The fetch here is a stand-in defined at module level (the child imports it by name); the real fetch in a child
process is what every `hubdelta embed` test runs (``[embed] download_process`` is on by default).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hubdelta.embedder.fetch import FetchedModel
from hubdelta.embedder.fetch_process import ChildFetcher
from hubdelta.embedder.pipeline import DOWNLOAD_NICE, Prefetcher
from hubdelta.embedder.safety_records import RepoKind
from hubdelta.kernel.errors import ModelRefused, ModelUnavailable
from tests.helpers import REPO_ROOT, Processes

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


def test_downloads_run_in_a_lower_priority_child_and_failures_come_back_as_failures() -> None:
    items = [(f"o/m{i}", "sha") for i in range(6)] + [("o/refused", "sha"), ("o/down", "sha")]
    prefetch = Prefetcher(stand_in, items, workers=3, ahead=8, process=True)
    try:
        got, failures = prefetch.take(items)
    finally:
        prefetch.close()
    assert list(got) == [k for k, _ in items[:6]] and list(failures) == ["o/refused", "o/down"]
    (where,) = {str(f.path) for f in got.values()}  # all in one process
    _, pid, _, nice = where.split("-")
    assert int(pid) != os.getpid() and int(nice) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + DOWNLOAD_NICE)
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
