"""Downloads in a child process: the compute keeps its interpreter's lock to itself.

On the compute's 2 cores the downloads' Python (HTTP, the Hub client's bookkeeping, checks) took the GIL from the
forwards between torch ops: the same forwards ran 20-38% slower in bf16 beside download threads than alone
(docs/embedder.md). A child process has its own interpreter, and its nice value applies to all of it, so its
work takes the cores only where the compute leaves them idle.

One child serves a run's downloads on its own thread pool: the disk ledger and the 429 gate stay shared by every
download, as they are between threads (the parent's deletions of full-finetune weights reach the child's ledger
as a fresh walk when a download would not fit, :meth:`~hubdelta.embedder.disk.DiskLedger.reserve`). Requests
and answers cross a pipe as plain data: a :class:`~hubdelta.embedder.fetch.FetchedModel`, or a
:class:`~hubdelta.embedder.plan.Failure` for an exception. The child ignores Ctrl-C and SIGTERM (its parent
decides when downloads stop, and then closes it) and exits when its parent's end of the pipe closes, so a parent
killed with SIGKILL leaves no download running: a half-downloaded file is resumed by the next run.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import threading
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

import structlog

from hubdelta.embedder.fetch import FetchedModel
from hubdelta.embedder.plan import Failure
from hubdelta.embedder.run import Fetch
from hubdelta.kernel.log import configure_logging, logging_config

log = structlog.get_logger(__name__)

CLOSE_TIMEOUT_S = 600.0  # a download still running at close is waited for this long, then the child is killed


class FetchFailed(Exception):
    """A download failed in the child: ``failure`` is what it became there."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


class ChildFetcher:
    """Downloads on ``workers`` threads of one child process, at ``nice`` lower CPU priority (Linux).

    ``submit`` answers with a future, as a thread pool would; ``cancel`` starts no more downloads; ``close``
    waits for the running ones and ends the child.
    """

    def __init__(self, fetch_one: Fetch, *, workers: int, nice: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that holds torch's threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, fetch_one, max(1, workers), nice, logging_config()),
                                 name="hubdelta-fetch", daemon=True)  # fmt: skip
        self._proc.start()
        child.close()
        self._lock = threading.Lock()
        self._futures: dict[int, Future[FetchedModel]] = {}
        self._next = 0
        self._reader = threading.Thread(target=self._read, name="hubdelta-fetch-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def submit(self, repo_id: str, sha: str) -> Future[FetchedModel]:
        future: Future[FetchedModel] = Future()
        with self._lock:
            key, self._next = self._next, self._next + 1
            self._futures[key] = future
            try:
                self._conn.send(("fetch", key, repo_id, sha))
            except (OSError, ValueError) as e:  # the child is gone
                del self._futures[key]
                future.set_exception(e)
        return future

    def _read(self) -> None:
        while True:
            try:
                key, ok, value = self._conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                future = self._futures.pop(key, None)
            if future is not None:
                future.set_result(value) if ok else future.set_exception(FetchFailed(value))
        with self._lock:
            left, self._futures = self._futures, {}
        for future in left.values():
            future.set_exception(FetchFailed(Failure("the download process ended", transient=True)))

    def cancel(self) -> None:
        """Start no more downloads (those running go on)."""
        with self._lock, _quiet():
            self._conn.send(("cancel",))

    def close(self) -> None:
        """Cancel what has not started, wait for what runs, end the child."""
        with self._lock, _quiet():
            self._conn.send(("close",))
        self._proc.join(CLOSE_TIMEOUT_S)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._reader.join()
        self._conn.close()


class _quiet:
    """Suppress the errors of a pipe whose other end is gone."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, OSError | ValueError)


def _serve(conn: Connection, fetch_one: Fetch, workers: int, nice: int, logging: dict[str, Any]) -> None:
    """The child: fetch what the parent asks, answer each as it ends, until closed or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(**logging)
    if nice and hasattr(os, "nice"):
        os.nice(nice)  # before any thread starts: every download thread inherits it
    pool = ThreadPoolExecutor(workers, thread_name_prefix="hubdelta-fetch")
    lock = threading.Lock()

    def answer(key: int, future: Future[FetchedModel]) -> None:
        try:
            msg: tuple[int, bool, Any] = (key, True, future.result())
        except CancelledError:
            msg = (key, False, Failure("its download was cancelled", transient=True))
        except Exception as e:
            msg = (key, False, Failure.of(e))
        with lock, _quiet():
            conn.send(msg)

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone: nothing will read what is downloaded
            os._exit(0)
        if msg[0] == "fetch":
            _, key, repo_id, sha = msg
            try:
                pool.submit(fetch_one, repo_id, sha).add_done_callback(functools.partial(answer, key))
            except RuntimeError:  # cancelled: the pool takes no more
                answer(key, _cancelled())
        else:
            pool.shutdown(wait=msg[0] == "close", cancel_futures=True)
            if msg[0] == "close":
                with lock:
                    conn.close()
                return


def _cancelled() -> Future[FetchedModel]:
    future: Future[FetchedModel] = Future()
    future.cancel()
    return future
