"""How many downloads the prefetcher runs at once (hubdelta.embedder.prefetch): few while they keep ahead of the
compute, all its threads once the compute finds one unfinished."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from hubdelta.embedder.fetch import FetchedModel
from hubdelta.embedder.prefetch import FIRST_DOWNLOADS, Prefetcher
from hubdelta.embedder.safety_records import RepoKind

ITEMS = [(f"o/m{i}", "sha") for i in range(48)]


def counting(seconds: float) -> tuple[Callable[[str, str], FetchedModel], Callable[[], int]]:
    """A download taking ``seconds``, and the most that ran at once so far."""
    lock, state = threading.Lock(), {"running": 0, "most": 0}

    def fetch(repo_id: str, sha: str) -> FetchedModel:
        with lock:
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
        time.sleep(seconds)
        with lock:
            state["running"] -= 1
        return FetchedModel(repo_id, sha, RepoKind.ADAPTER, Path("/nonexistent") / repo_id, (), (), 100, 0, False)

    return fetch, lambda: state["most"]


def take_all(prefetch: Prefetcher, compute_s: float) -> list[str]:
    got: list[str] = []
    for start in range(0, len(ITEMS), 8):  # chunks of 8, each computed for compute_s
        fetched, failures = prefetch.take(ITEMS[start : start + 8])
        assert not failures
        got += fetched
        time.sleep(compute_s)
    prefetch.close()
    return got


def test_downloads_that_keep_ahead_run_few_at_once() -> None:
    fetch, most = counting(0.005)
    prefetch = Prefetcher(fetch, ITEMS, workers=8, ahead=32, ahead_bytes=10_000)
    time.sleep(0.3)  # the compute starts late (imports, the base): everything in the window is fetched meanwhile
    assert take_all(prefetch, compute_s=0.05) == [k for k, _ in ITEMS]
    assert most() == FIRST_DOWNLOADS < 8


def test_downloads_the_compute_waits_for_widen_to_every_thread() -> None:
    fetch, most = counting(0.1)
    prefetch = Prefetcher(fetch, ITEMS, workers=8, ahead=32, ahead_bytes=10_000)
    assert take_all(prefetch, compute_s=0.0) == [k for k, _ in ITEMS]
    assert most() >= 8  # 2, then 4, then 8 (taken ones still running may add a few while the compute waits)


def test_one_worker_runs_one_download_and_still_hands_over_everything_in_order() -> None:
    fetch, most = counting(0.01)
    assert take_all(Prefetcher(fetch, ITEMS, workers=1, ahead=4), compute_s=0.0) == [k for k, _ in ITEMS]
    assert most() == 1
