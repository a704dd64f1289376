"""Lanes: chunks computed side by side on one resident base, each lane a thread with its share of the cores.

A forward on a CPU is not all matmuls: between torch's parallel kernels the Python of the model, the hooks and
the dispatcher run on one thread while the other cores wait. On 2 AMD EPYC cores, a chunk of 8 SmolLM2 adapters
in bf16 kept the cores ~84% busy (2.41 s of CPU in 1.43 s); two single-threaded processes, each running such
chunks, computed more adapters a second together with the same CPU time per chunk. Lanes do it in one process,
on one copy of the base: ``hubdelta embed`` hands each chunk to a free lane (:mod:`~hubdelta.embedder.pipeline`),
one lane's Python runs while the other's kernels do, and torch releases the GIL inside its kernels. Measured
(docs/embedder.md, "Lanes"): whole ``embed`` runs of 230 adapters 5-12% faster in fp32, 7-10% in bf16.

Each lane is a thread whose torch intra-op thread count (OpenMP's, per thread) is set once when it starts. The
results do not depend on it: the pool's activations were bit-identical with 1 and 2 intra-op threads in fp32 and
bf16, prepacked or not (oneDNN and MKL split a matmul's rows and columns among threads, never its sums).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.thread import BrokenThreadPool
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

R = TypeVar("R")
START_S = 60.0  # lane threads start in milliseconds; a wait this long means one never will


def auto_lanes(device: torch.device, threads: int) -> int:
    """How many lanes ``[embed] lanes = 0`` gives: two on a CPU with two or more intra-op threads (measured on 2
    cores only: three were no faster than two), else one (a GPU runs one forward at a time)."""
    return 2 if device.type == "cpu" and threads >= 2 else 1


class Lanes:
    """``n`` threads that each run work with ``threads`` torch intra-op threads of their own; with ``n == 1``, the
    work runs in the caller's thread when submitted, as it would without lanes.

    The caller's own intra-op thread count is left as it was, and the default that threads starting later get is
    the caller's count (during the lanes' start, 1 ms or so, it is the lanes').
    """

    def __init__(self, n: int, threads: int) -> None:
        if n < 1 or threads < 1:
            raise ValueError(f"lanes need n >= 1 and threads >= 1, got {n} and {threads}")
        self.n, self.threads = n, threads
        self._pool: ThreadPoolExecutor | None = None
        if n == 1:
            return
        import torch  # here: the pipeline imports this module before torch is needed (its import takes 2-3 s)

        caller = torch.get_num_threads()
        started = threading.Barrier(n + 1, timeout=START_S)
        self._pool = ThreadPoolExecutor(n, "hubdelta-lane", self._start, (started,))
        try:
            for _ in range(n):  # every thread starts now and sets its count once, in its initializer
                self._pool.submit(int)
            started.wait()
        except BaseException as e:  # an interrupt, or a lane that did not start: none is left waiting
            started.abort()
            self._pool.shutdown(wait=False, cancel_futures=True)
            if isinstance(e, threading.BrokenBarrierError | BrokenThreadPool):
                raise RuntimeError(f"{n} lane threads did not start (within {START_S:g} s): {e!r}") from e
            raise
        # torch.set_num_threads also sets the default of threads that start later: the caller's goes back (each
        # lane keeps its own: OpenMP's count is per thread once set).
        torch.set_num_threads(caller)

    def _start(self, started: threading.Barrier) -> None:
        import torch

        # torch sets a thread's count from the process's default on the thread's first parallel work (once); done
        # first, so that putting the caller's default back later does not undo the lane's own count.
        try:
            torch.get_num_threads()
            torch.set_num_threads(self.threads)
        except BaseException:
            started.abort()
            raise
        started.wait()

    def submit(self, work: Callable[..., R], *args: Any) -> Future[R]:
        """``work(*args)`` on a free lane (queued while all are busy); at once in this thread with one lane."""
        if self._pool is not None:
            return self._pool.submit(work, *args)
        done: Future[R] = Future()
        try:
            done.set_result(work(*args))
        except Exception as e:
            done.set_exception(e)
        return done

    def close(self) -> None:
        """Stop the threads, after the work they hold."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> Lanes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def lanes_for(device: torch.device, setting: int) -> Lanes:
    """The lanes of a resident base on ``device``: ``[embed] lanes`` (0: :func:`auto_lanes`), sharing this thread's
    torch intra-op threads."""
    import torch

    threads = torch.get_num_threads()
    n = setting or auto_lanes(device, threads)
    return Lanes(n, max(1, threads // n))
