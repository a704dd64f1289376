"""``hubdelta embed``'s pipelined run: downloads ahead of the compute, results written in few commits.

The compute on a resident base is fast (a SmolLM2 adapter costs ~0.2 s on a 2-core CPU, milliseconds on a GPU);
everything around it used to run one after another: a chunk's files fetched one repo at a time, then its forward,
then three index commits, then the next chunk. Here three things overlap:

- **downloads** run on a bounded pool of threads (``[embed] download_workers``) at most ``[embed] prefetch``
  chunks ahead of the compute, small repos further while under ``[embed] prefetch_gb`` (:class:`Prefetcher`), so
  disk, memory and the Hub's load stay bounded. They start before torch is imported (worker.py). The threads
  are a child process's (``[embed] download_process``, :mod:`~hubdelta.embedder.fetch_process`), so their
  Python never holds this interpreter's lock against the forwards. They never touch the index, so they never
  hold the writer lock's commits up, and a kill leaves only cached files behind;
- **the compute** takes each chunk as soon as its files are there, up to ``[embed] lanes`` chunks at once on the
  one resident base (:mod:`~hubdelta.embedder.lanes`), their results kept in chunk order;
- **commits** are grouped: fresh models are claimed ``[embed] commit_every`` at a time in one commit, and the
  computed results (vectors first, then statuses) are written when that many are waiting or
  ``[embed] commit_interval_s`` has passed, instead of three commits a chunk.

Crash safety is the ledger's, unchanged in kind: a claim counts an attempt before any of its models is computed;
vectors are written before statuses, so a kill between them leaves vectors the next run reuses. A kill loses at
most the results not yet written (bounded by ``commit_every`` and ``commit_interval_s``), never a written one, and
nothing is embedded twice. Rows a dead run left ``embedding`` without a vector are *suspects* (one of them may be
what killed the run): they are claimed and written a chunk at a time, so the attempt cap
(:func:`hubdelta.embedder.plan.capped`) blames no more models than it did before commits were grouped.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hubdelta.embedder import plan
from hubdelta.embedder.fetch import FetchedModel
from hubdelta.embedder.lanes import Lanes
from hubdelta.embedder.options import EmbedOptions
from hubdelta.embedder.plan import Failure
from hubdelta.embedder.prefetch import Prefetcher
from hubdelta.embedder.run import ChunkOutput, Fetch, Ledger, Run, Runner, revisions, run_fetched
from hubdelta.embedder.safety_records import RepoKind
from hubdelta.index.records import ModelRecord, ModelStatus
from hubdelta.kernel.errors import one_line


@dataclass
class Timings:
    """Where a run's seconds went (its ``--json`` summary's ``timings``): ``compute_s`` (forwards on the resident
    base, files read and checked included; with lanes, the run's wait for them: what they overlap is not
    counted twice), ``wait_s`` (the compute waiting for downloads), ``commit_s`` (index
    writes: claims, vectors, statuses), ``base_s`` (the base's download check, load and activations)."""

    spans: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("compute_s", "wait_s", "commit_s"), 0.0))

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.spans[name] = self.spans.get(name, 0.0) + time.perf_counter() - started

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.spans.items()}


GIL_SWITCH_S = 0.0005  # the interpreter's default is 0.005: see _quick_gil


@contextmanager
def _quick_gil() -> Iterator[None]:
    """Hand the GIL over every 0.5 ms instead of 5 ms while downloads run beside the compute.

    Between two torch ops the compute thread needs the GIL back; when a download thread holds it for Python work
    (HTTP, the Hub client's bookkeeping), the compute waits until the holder is asked to let go, up to the whole
    switch interval, once per op. Measured on 230 adapters over loopback (bench/pipeline.py, docs/embedder.md):
    the run's forwards went 5-8% faster. Thread nice values cannot help here: the wait is on a lock, not a core.
    """
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, GIL_SWITCH_S))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@dataclass(frozen=True)
class _InFlight:
    """A chunk handed to the lanes: its claimed rows and its output to come."""

    claimed: list[ModelRecord]
    output: Future[ChunkOutput]


def _computed(runner: Runner, fetched: Mapping[str, FetchedModel], failures: Mapping[str, Failure],
              claimed: Sequence[ModelRecord]) -> ChunkOutput:  # fmt: skip
    """A chunk's output on a lane: run_fetched contains each model's failure, and here the chunk's own."""
    try:
        return run_fetched(runner, fetched, failures)
    except Exception as e:
        why = Failure(f"its chunk could not be computed: {one_line(e)}", transient=True)
        return ChunkOutput(failures={r.repo_id: why for r in claimed})


@dataclass
class _Writes:
    """Results computed but not yet written, and when the last write was."""

    claimed: list[ModelRecord] = field(default_factory=list)
    outputs: list[ChunkOutput] = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)


class ClaimLedger(Ledger, Protocol):
    """A ledger whose claims can be given back (:meth:`~hubdelta.embedder.ledger.SpaceLedger.restore`)."""

    def restore(self, records: Sequence[ModelRecord]) -> None: ...


def work_chunks(records: Sequence[ModelRecord], batch: int, lanes: int = 1) -> list[tuple[list[ModelRecord], bool]]:
    """The run's chunks in order, each with whether it holds suspects: suspects first, one chunk each, then fresh,
    cut for ``lanes`` (:func:`~hubdelta.embedder.plan.chunks`: the order is the same whatever the lanes)."""
    suspects = [r for r in records if r.status == ModelStatus.EMBEDDING]
    fresh = [r for r in records if r.status != ModelStatus.EMBEDDING]
    return [(c, True) for c in plan.chunks(suspects, batch)] + [(c, False) for c in plan.chunks(fresh, batch, lanes)]


def run_order(records: Sequence[ModelRecord], batch: int) -> list[str]:
    """The repo ids in the order their downloads are submitted (a :class:`~hubdelta.embedder.copies.CopyRegistry`
    decides originals by it)."""
    return [r.repo_id for chunk, _ in work_chunks(records, batch) for r in chunk]


class Pipeline:
    """One base's share of a pipelined run: claim in groups, compute as files arrive, write in groups.

    Use: ``with Pipeline(...) as p: p.start(records, fetch_one)``, load the base (downloads run meanwhile), then
    ``p.go(runner)``. Leaving the ``with`` stops the downloads, whatever happened.

    Args:
        run: the run whose outcomes are counted.
        ledger: where claims and results go (the space's :class:`~hubdelta.embedder.ledger.SpaceLedger`).
        flow: how the stages overlap (``batch``, ``download_workers``, ``prefetch``, ``commit_every``,
            ``commit_interval_s``).
        timings: where the seconds are added.
    """

    def __init__(self, run: Run, ledger: ClaimLedger, flow: EmbedOptions, timings: Timings) -> None:
        self.run, self.ledger, self.flow, self.timings = run, ledger, flow, timings
        self._writes = _Writes()
        self._claimed: dict[str, ModelRecord] = {}  # claimed, not yet computed
        self._read: dict[str, ModelRecord] = {}  # as read, to give a claim back
        self._chunks: list[tuple[list[ModelRecord], bool]] = []
        self._records: list[ModelRecord] = []
        self._prefetch: Prefetcher | None = None

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._prefetch is not None:
            self._prefetch.close()

    def start(self, records: Sequence[ModelRecord], fetch_one: Fetch, cache_dir: Path | None = None) -> None:
        """Order the work (suspects first, a chunk each) and start its downloads (``cache_dir``: where they go, for
        a download process's disk ledger to hear of what this process deletes there)."""
        self._records = list(records)  # cut into chunks in go(), once the lanes are known
        self._read = {r.repo_id: r for r in records}
        items = [item for chunk, _ in work_chunks(records, self.flow.batch) for item in revisions(chunk)]
        self._prefetch = Prefetcher(fetch_one, items, workers=self.flow.download_workers,
                                    ahead=self.flow.prefetch * self.flow.batch,
                                    ahead_bytes=int(self.flow.prefetch_gb * 1e9),
                                    process=self.flow.download_process, cache_dir=cache_dir)  # fmt: skip

    def go(self, runner: Runner, lanes: Lanes | None = None) -> None:
        """Compute every chunk in order, until done or the run is asked to stop. Rows always end settled or back
        in the queue: claimed rows not yet computed when it stops or fails are given back unspent. With ``lanes``
        (:mod:`~hubdelta.embedder.lanes`), up to ``lanes.n`` chunks compute at once; results are kept in order."""
        assert self._prefetch is not None, "start() first"
        lanes = lanes or Lanes(1, 1)
        self._writes = _Writes()  # the write interval counts from here, not from before the base loaded
        self._chunks = work_chunks(self._records, self.flow.batch, lanes.n)  # same order: downloads run as started
        with _quick_gil():
            self._go(runner, self._prefetch, lanes)

    def _go(self, runner: Runner, prefetch: Prefetcher, lanes: Lanes) -> None:
        flight: deque[_InFlight] = deque()
        try:
            for i, (chunk, suspect) in enumerate(self._chunks):
                if self.run.stopping():
                    return
                if chunk[0].repo_id not in self._claimed:
                    self._claim(i)
                alone = self._submit(runner, prefetch, lanes, chunk, flight, suspect=suspect)
                self._land(flight, 0 if alone else lanes.n - 1)
                if suspect or self._due():
                    self._write()
        finally:
            # Results first, then the claims back, then the wait for downloads still running (a multi-GB one
            # must not hold a daemon's stop past its timeout with computed results unwritten).
            prefetch.cancel()
            try:
                self._write()  # what has landed, before waiting for what still computes (an interrupt may come)
                self._land(flight, 0, ending=True)  # the chunks still computing end first: they use the base
                self._write()
            finally:
                self._unclaim()
                prefetch.close()

    def _claim(self, i: int) -> None:
        """Claim chunk ``i`` alone (suspects), or whole fresh chunks from ``i`` on until ``commit_every`` models."""
        group = list(self._chunks[i][0])
        if not self._chunks[i][1]:
            for chunk, _ in self._chunks[i + 1 :]:
                if len(group) + len(chunk) > max(self.flow.commit_every, self.flow.batch):
                    break
                group += chunk
        with self.timings.timed("commit_s"):
            claimed = self.ledger.claim(group)
        self._claimed.update({r.repo_id: r for r in claimed})

    def _submit(self, runner: Runner, prefetch: Prefetcher, lanes: Lanes, chunk: Sequence[ModelRecord],
                flight: deque[_InFlight], *, suspect: bool) -> bool:  # fmt: skip
        """Start computing ``chunk`` (claimed) once its files are there, on a lane; its claims stay held until it
        lands. A chunk of suspects or with a full model computes alone, here, on all of this thread's cores: a
        kill during it blames no other chunk, and full models load one at a time anyway. Returns whether alone."""
        claimed = [self._claimed[r.repo_id] for r in chunk]
        items = revisions(claimed)
        if self._writes.claimed and self._late() and not prefetch.ready(items):
            self._write()  # about to wait for downloads: what is computed is not left unwritten meanwhile
        with self.timings.timed("wait_s"):
            fetched, failures = prefetch.take(items)
        alone = suspect or any(f.kind != RepoKind.ADAPTER and f.copy_of is None for f in fetched.values())
        if alone:
            self._land(flight, 0)
        with self.timings.timed("compute_s"):  # all of it where it runs here; else the hand-over to a lane
            output = (Lanes(1, 1) if alone else lanes).submit(_computed, runner, fetched, failures, claimed)
        flight.append(_InFlight(claimed, output))
        return alone

    def _land(self, flight: deque[_InFlight], keep: int, *, ending: bool = False) -> None:
        """Keep the results of the oldest chunks in flight, waiting for them, until at most ``keep`` remain. A
        chunk whose compute raised (an interrupt on its lane) raises here, or, for a run ``ending`` already, is
        passed over: its rows stay claimed, to be given back."""
        while len(flight) > keep:
            landing = flight[0]
            with self.timings.timed("compute_s"):
                error = landing.output.exception()  # waits; interrupted here, the chunk is still in flight
            flight.popleft()
            if error is not None:
                if ending:
                    continue
                raise error
            out = landing.output.result()
            self._writes.claimed.extend(landing.claimed)
            self._writes.outputs.append(out)
            for r in landing.claimed:  # only now: an interruption before this leaves them claimed, so given back
                del self._claimed[r.repo_id]

    def _late(self) -> bool:
        return time.monotonic() - self._writes.since >= self.flow.commit_interval_s

    def _due(self) -> bool:
        waiting = len(self._writes.claimed)
        return waiting >= self.flow.commit_every or (waiting > 0 and self._late())

    def _write(self) -> None:
        """Write what was computed: its vectors, then its statuses (:meth:`Run.commit`)."""
        writes, self._writes = self._writes, _Writes()
        if writes.claimed:
            with self.timings.timed("commit_s"):
                self.run.commit(self.ledger, writes.claimed, ChunkOutput.merged(writes.outputs))

    def _unclaim(self) -> None:
        """Claimed rows never computed go back as they were read: no attempt was spent on them."""
        if self._claimed:
            self.ledger.restore([self._read[k] for k in self._claimed])
            self._claimed.clear()
