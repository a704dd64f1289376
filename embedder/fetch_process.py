"""Downloads in a child process: the compute keeps its interpreter's lock to itself.

On the compute's 2 cores the downloads' Python (HTTP, the Hub client's bookkeeping, checks) took the GIL from the
forwards between torch ops: the same forwards ran 20-38% slower in bf16 beside download threads than alone
(docs/embedder.md). A child process has its own interpreter, so the compute never waits for a lock that a
download holds. (It runs at the parent's priority: niced, it fell behind bf16 forwards on two busy cores.)

One child serves one base's downloads in a run, on its own thread pool: its disk ledger and its 429 gate are shared
by all of them, as they are between threads (the parent tells it what it deletes: full finetunes' weights after
their vectors are stored). Requests and answers cross a pipe as plain data: a
:class:`~hubdelta.embedder.fetch.FetchedModel`, or a :class:`~hubdelta.embedder.plan.Failure` for an exception.

Ending: the parent closes the child when the run is done (a download still running is given
:data:`CLOSE_TIMEOUT_S`, then killed: a half-downloaded file is resumed by the next run). The child exits as soon
as its parent's end of the pipe closes, so a parent killed with SIGKILL leaves no download running. Ctrl-C is for
the parent (the child ignores SIGINT, blocked from before it starts); a child that dies anyway (killed, out of
memory) raises :class:`~hubdelta.kernel.errors.DownloadsLost` in the run, which then gives its claims back unspent
instead of failing the models still to come.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from hubdelta.embedder.disk import disk_ledger
from hubdelta.embedder.fetch import FetchedModel
from hubdelta.embedder.plan import Failure
from hubdelta.embedder.run import Fetch
from hubdelta.kernel.errors import DownloadsLost, one_line
from hubdelta.kernel.log import configure_logging, logging_config

CLOSE_TIMEOUT_S = 30.0  # a download still running at close; below the daemon's stop timeout (120 s)
POLL_S = 0.2  # how often a closing child looks for its parent's end
CANCELLED = Failure("its download was cancelled", transient=True)  # started no more: it goes back to the queue


class FetchFailed(Exception):
    """A download failed in the child: ``failure`` is what it became there."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


class ChildFetcher:
    """Downloads on ``workers`` threads of one child process, at ``nice`` lower CPU priority (Linux).

    ``submit`` answers with a future, as a thread pool would; ``cancel`` starts no more downloads; ``close``
    waits a while for the running ones and ends the child. ``cache_dir``: the download cache whose deletions in
    this process the child's disk ledger must hear of.
    """

    def __init__(self, fetch_one: Fetch, *, workers: int, nice: int, cache_dir: Path | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that holds torch's threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, fetch_one, max(1, workers), nice, logging_config(),
                                                      cache_dir), name="hubdelta-fetch", daemon=True)  # fmt: skip
        with _sigint_blocked():  # a Ctrl-C while the child imports would kill it with a traceback
            self._proc.start()
        child.close()
        self._lock = threading.Lock()
        self._futures: dict[int, Future[FetchedModel]] = {}
        self._next = 0
        self._dead = self._closing = self._closed = False
        self._reader = threading.Thread(target=self._read, name="hubdelta-fetch-reader", daemon=True)
        self._reader.start()
        self._unlisten: Callable[[], None] = lambda: None
        if cache_dir is not None:
            self._unlisten = disk_ledger(cache_dir).listen(self._freed)

    def _freed(self, n: int) -> None:
        self._send(("freed", n))

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def submit(self, repo_id: str, sha: str) -> Future[FetchedModel]:
        future: Future[FetchedModel] = Future()
        with self._lock:
            key, self._next = self._next, self._next + 1
            self._futures[key] = future
        if not self._send(("fetch", key, repo_id, sha)):
            with self._lock:
                self._futures.pop(key, None)
            future.set_exception(DownloadsLost())
        return future

    def _send(self, msg: tuple[Any, ...]) -> bool:
        with self._lock:
            if self._dead:
                return False
            try:
                self._conn.send(msg)
                return True
            except (OSError, ValueError):  # the child is gone
                self._dead = True
                return False

    def _read(self) -> None:
        try:
            while True:
                key, ok, value = self._conn.recv()
                with self._lock:
                    future = self._futures.pop(key, None)
                if future is not None:
                    future.set_result(value) if ok else future.set_exception(FetchFailed(value))
        except BaseException:  # the end of the pipe (EOF, a reset), or an answer that would not load
            pass
        with self._lock:
            self._dead = True
            left, self._futures = self._futures, {}
        for future in left.values():
            if self._closing:  # asked to stop: what had not ended was cancelled
                future.set_exception(FetchFailed(CANCELLED))
            else:
                future.set_exception(DownloadsLost())

    def cancel(self) -> None:
        """Start no more downloads (those running go on)."""
        self._send(("cancel",))

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Cancel what has not started, give what runs ``timeout`` seconds, end the child."""
        if self._closed:
            return
        self._closed = self._closing = True
        self._unlisten()
        self._send(("close",))
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._reader.join()
        self._conn.close()
        self._proc.close()


_MASKS = hasattr(signal, "pthread_sigmask")


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread meanwhile (a child started now inherits the block until it ignores SIGINT)."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if _MASKS else None
    try:
        yield
    finally:
        if before is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _serve(conn: Connection, fetch_one: Fetch, workers: int, nice: int, logging: dict[str, Any],
           cache_dir: Path | None) -> None:  # fmt: skip
    """The child: fetch what the parent asks, answer each as it ends, until closed or orphaned."""
    from huggingface_hub.utils import disable_progress_bars

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _MASKS:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if logging:
        configure_logging(**logging)
    disable_progress_bars()  # the parent's choice does not cross a spawn; bars from 8 threads garble a terminal
    if nice and hasattr(os, "nice"):
        os.nice(nice)  # before any thread starts: every download thread inherits it
    pool = ThreadPoolExecutor(workers, thread_name_prefix="hubdelta-fetch")
    reply = _Replies(conn)
    while True:
        msg = _next(conn)
        if msg[0] == "fetch":
            _, key, repo_id, sha = msg
            try:
                pool.submit(fetch_one, repo_id, sha).add_done_callback(functools.partial(reply.answer, key))
            except RuntimeError:  # cancelled: the pool takes no more
                reply.send(key, False, CANCELLED)
        elif msg[0] == "freed" and cache_dir is not None:
            disk_ledger(cache_dir).freed(msg[1])
        elif msg[0] == "cancel":
            pool.shutdown(wait=False, cancel_futures=True)
        elif msg[0] == "close":
            _close(conn, pool)
            return


def _next(conn: Connection) -> tuple[Any, ...]:
    try:
        msg: tuple[Any, ...] = conn.recv()
        return msg
    except (EOFError, OSError):  # the parent is gone: nothing will read what is downloaded
        os._exit(0)


def _close(conn: Connection, pool: ThreadPoolExecutor) -> None:
    """Let the running downloads end, still watching for the parent's end (it may be killed meanwhile)."""
    pool.shutdown(wait=False, cancel_futures=True)
    ending = threading.Thread(target=pool.shutdown, kwargs={"wait": True})
    ending.start()
    while ending.is_alive():
        if conn.poll(POLL_S):
            _next(conn)  # exits at the parent's end; any other message is moot now
    conn.close()


class _Replies:
    """Answers to the parent, one at a time (several download threads end at once)."""

    def __init__(self, conn: Connection) -> None:
        self.conn, self.lock = conn, threading.Lock()

    def answer(self, key: int, future: Future[FetchedModel]) -> None:
        try:
            self.send(key, True, future.result())
        except CancelledError:
            self.send(key, False, CANCELLED)
        except BaseException as e:
            self.send(key, False, Failure.of(e))

    def send(self, key: int, ok: bool, value: Any) -> None:
        with self.lock:
            try:
                self.conn.send((key, ok, value))
            except (OSError, ValueError):  # the parent is gone
                pass
            except Exception as e:  # the answer would not pickle: the model fails, the run goes on
                self.conn.send((key, False, Failure(f"its download's answer could not be sent: {one_line(e)}")))
