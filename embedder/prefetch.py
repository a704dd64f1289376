"""Downloads ahead of the compute (:class:`Prefetcher`): a bounded window of models fetched in the order the
compute takes them, on threads of a child process (:mod:`~hubdelta.embedder.fetch_process`) or of this one."""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

from hubdelta.embedder.fetch import FetchedModel
from hubdelta.embedder.fetch_process import ChildFetcher, FetchFailed
from hubdelta.embedder.plan import Failure
from hubdelta.embedder.run import Fetch
from hubdelta.kernel.errors import DownloadsLost

DOWNLOAD_NICE = 10  # how much lower a download thread's CPU priority is than the compute's (Linux)
# The download process's: at +10 it got too little of two busy cores and bf16 forwards waited 2-3 s a run for it;
# at +3, 1.0 s; at 0, 0.1 s, its forwards still 7% faster than beside download threads (docs/embedder.md).
CHILD_NICE = 0
# Downloads at once until the compute first finds one unfinished; then doubled each time, up to ``workers``. Over
# loopback 230 adapter files (2 GB) cost 5.3 s user + 8.6 s kernel CPU on 2 threads, 6.0 + 12.2 s on 8
# (bench/download_threads.py, 2-core Zen 3), CPU the forwards lose on a busy box; a Hub 100 ms a request away
# makes the compute wait at once, and the pool widens to all its threads within a few takes.
FIRST_DOWNLOADS = 2


def _yielding() -> None:
    """Lower this download thread's CPU priority: its work (HTTP, copies, checks) then takes the cores when the
    compute leaves them idle instead of preempting the compute's threads, whose parallel regions all wait for the
    slowest thread. Downloads run far enough ahead that they can wait. Linux only (a thread's own nice value).

    Counted from the main thread's value, not this thread's: a thread inherits its creator's, and a download that
    ends starts the next ones, so a pool thread can be created by a download thread already lowered."""
    if sys.platform.startswith("linux"):
        with suppress(OSError):
            main = os.getpriority(os.PRIO_PROCESS, os.getpid())  # the main thread's: its id is the process id
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, main + DOWNLOAD_NICE))


class _Threads:
    """Downloads on threads of this process (``[embed] download_process = false``; tests' in-process fetches)."""

    def __init__(self, fetch_one: Fetch, workers: int) -> None:
        self._fetch = fetch_one
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="hubdelta-fetch", initializer=_yielding)

    def submit(self, repo_id: str, sha: str) -> Future[FetchedModel]:
        return self._pool.submit(self._fetch, repo_id, sha)

    def cancel(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class Prefetcher:
    """Downloads ``items`` in order on ``workers`` threads, at most ``ahead`` items past what was taken, and further
    while the downloads that ended and wait to be taken hold under ``ahead_bytes``.

    At most :data:`FIRST_DOWNLOADS` run at once until :meth:`take` finds one unfinished (the compute would wait);
    each such take doubles it, up to ``workers``: downloads that keep ahead take no more CPU than they need.

    The byte lookahead lets small repos (LoRA adapters: megabytes) be fetched far ahead, e.g. while this process
    imports torch and loads the base: past ``ahead``, a download starts only when fewer than that limit run and
    what waits is under the bound. A repo's size is known once it has ended, so large ones (full finetunes) stop
    the lookahead after the first, with at most ``workers`` of them started past the window (the disk ledger
    still refuses what would not fit). Each item's download is :data:`Fetch`'s; its exception becomes the item's
    :class:`Failure`. With ``process``, the threads are a child process's
    (:mod:`~hubdelta.embedder.fetch_process`; ``fetch_one`` must pickle).
    """

    def __init__(self, fetch_one: Fetch, items: Sequence[tuple[str, str]], *, workers: int, ahead: int,
                 ahead_bytes: int = 0, process: bool = False, cache_dir: Path | None = None) -> None:  # fmt: skip
        self._items, self._ahead, self._ahead_bytes = list(items), max(1, ahead), ahead_bytes
        self._workers = max(1, workers)
        self._limit = min(self._workers, FIRST_DOWNLOADS)  # downloads at once; widened when the compute waits
        self._pool: _Threads | ChildFetcher = _Threads(fetch_one, workers)
        if process and self._items:  # no process to start for nothing
            self._pool = ChildFetcher(fetch_one, workers=workers, nice=CHILD_NICE, cache_dir=cache_dir)
        self._lock = threading.RLock()  # downloads end (and fill) on the pool's threads
        self._futures: dict[str, Future[FetchedModel]] = {}
        self._ended: dict[str, int] = {}  # ended and not taken: the bytes each holds on disk
        self._submitted = self._taken = 0
        self._filling = False
        self._fill()

    def _fill(self) -> None:
        with self._lock:
            if self._filling:  # a download that ended at once, inside this loop: the loop goes on
                return
            self._filling = True
            try:
                while self._submitted < len(self._items) and self._may_start():
                    repo_id, sha = self._items[self._submitted]
                    future = self._pool.submit(repo_id, sha)
                    self._submitted += 1
                    self._futures[repo_id] = future
                    future.add_done_callback(functools.partial(self._done, repo_id))
            finally:
                self._filling = False

    def _may_start(self) -> bool:
        # Those not taken yet: the one the compute takes next is then always started (a taken download still
        # running is not counted, so up to a chunk more may run while the compute waits for them).
        if self._submitted - self._taken - len(self._ended) >= self._limit:
            return False
        return self._submitted < self._taken + self._ahead or sum(self._ended.values()) < self._ahead_bytes

    def _done(self, repo_id: str, future: Future[FetchedModel]) -> None:
        """A download ended: count what it holds on disk until it is taken, and start the next ones."""
        ok = not future.cancelled() and future.exception() is None
        with self._lock:
            if repo_id in self._futures:  # not taken yet
                self._ended[repo_id] = future.result().bytes if ok else 0
        self._fill()

    def take(self, items: Sequence[tuple[str, str]]) -> tuple[dict[str, FetchedModel], dict[str, Failure]]:
        """The downloads of ``items`` (the next ones in order), waiting for them; (fetched, failures)."""
        fetched: dict[str, FetchedModel] = {}
        failures: dict[str, Failure] = {}
        for repo_id, _ in items:
            with self._lock:
                self._taken += 1
                future = self._futures.pop(repo_id)
                self._ended.pop(repo_id, None)
                if not future.done():  # the compute is about to wait: more downloads at once
                    self._limit = min(self._workers, 2 * self._limit)
            self._fill()  # before waiting: the next downloads start while this one finishes
            try:
                fetched[repo_id] = future.result()
            except DownloadsLost:  # not this model's failure: the run stops and gives its claims back
                raise
            except FetchFailed as e:  # in the download process: already a Failure there
                failures[repo_id] = e.failure
            except Exception as e:
                failures[repo_id] = Failure.of(e)
        return fetched, failures

    def ready(self, items: Sequence[tuple[str, str]]) -> bool:
        """Whether the downloads of ``items`` (submitted) have all ended."""
        with self._lock:
            return all(k in self._futures and self._futures[k].done() for k, _ in items)

    def cancel(self) -> None:
        """Start no more downloads (those running go on)."""
        with self._lock:  # first: a download ending during the pool's shutdown must find nothing left to start
            self._items = self._items[: self._submitted]
        self._pool.cancel()

    def close(self) -> None:
        """Cancel downloads not started; wait for those running (a thread never outlives its run)."""
        self.cancel()
        self._pool.close()
