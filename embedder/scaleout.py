"""``hubdelta embed --ray``: Ray workers embed, this process (the driver) decides and is the only index writer.

Each worker is a Ray actor (:class:`~hubdelta.embedder.ray_worker.EmbedWorker`) holding one resident base, on a
GPU of its own or, without GPUs, on ``cpus_per_worker`` CPUs. The driver groups the queued models by base into
batches, keeps ``inflight`` batches queued on every worker (so a worker never waits for the driver's commit),
and commits each batch as it returns through the same :class:`~hubdelta.embedder.run.Run` and
:class:`~hubdelta.embedder.ledger.SpaceLedger` as the single-process worker: vectors, then statuses. Only the
driver touches LanceDB, so two workers can never upsert the same row.

A worker that dies (its process killed, its node lost) fails the calls it held: the batch it was running goes
to another worker (:mod:`hubdelta.embedder.dispatch` decides, and gives up a model that keeps killing workers),
the batches queued behind it go back in line unblamed, and a replacement worker is started where the cluster
has room. Nothing a dead worker did reached the index, so every model is still embedded exactly once.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

import structlog

from hubdelta.embedder import plan
from hubdelta.embedder.bases import download_base, space_for
from hubdelta.embedder.dispatch import Batch, Dispatcher
from hubdelta.embedder.ledger import EmbedSummary, SpaceLedger, select_queued
from hubdelta.embedder.options import EmbedOptions
from hubdelta.embedder.ray_worker import EmbedWorker, WorkOrder, WorkResult
from hubdelta.embedder.run import ChunkOutput, Progress, Run, revisions
from hubdelta.embedder.space import Space
from hubdelta.index.records import ModelRecord
from hubdelta.index.store import Index
from hubdelta.kernel.errors import HubdeltaError, MissingDependencyError, one_line
from hubdelta.kernel.settings import Settings

log = structlog.get_logger(__name__)

CONFIG_FILES = ["*.json"]  # all the driver needs of a base: its config decides the space


@dataclass(frozen=True)
class RayOptions:
    """Where the workers run and how many (``[ray]`` in hubdelta.toml, ``--ray``/``--workers`` on the CLI)."""

    address: str | None = None  # None: RAY_ADDRESS, else the latest cluster started here, else a new local one
    workers: int | None = None  # None: one per GPU of the cluster, or one per ``cpus_per_worker`` CPUs
    cpus_per_worker: float = 1.0
    inflight: int = 2  # batches queued on a worker at once
    start_timeout_s: float = 300.0  # how long the driver waits for a worker when none is alive


def worker_count(resources: dict[str, float], opts: RayOptions, device: str) -> tuple[int, dict[str, float]]:
    """How many workers, and what each asks of Ray: a GPU each where there are GPUs and the device allows."""
    gpus = int(resources.get("GPU", 0)) if device != "cpu" else 0
    if gpus:
        return opts.workers or gpus, {"num_gpus": 1, "num_cpus": opts.cpus_per_worker}
    if device == "cuda":
        raise HubdeltaError("--device cuda, but the Ray cluster has no GPU", fix="use --device auto or cpu")
    cpus = resources.get("CPU", 0)
    return opts.workers or max(1, int(cpus // opts.cpus_per_worker)), {"num_gpus": 0, "num_cpus": opts.cpus_per_worker}


@dataclass(eq=False)
class _Worker:
    handle: Any
    started: Any  # the describe() call: done once the worker is up
    info: dict[str, Any] = field(default_factory=dict)
    base: str | None = None  # its resident base, once it ran a batch
    calls: deque[Any] = field(default_factory=deque)  # its in-flight calls, oldest (the running one) first

    @property
    def ready(self) -> bool:
        return bool(self.info)

    @property
    def name(self) -> str:
        return str(self.info.get("name", "starting"))


class RayWorkers:
    """Embedding actors on a Ray cluster. Reusable across runs (the daemon keeps one, so bases stay resident).

    Raises:
        MissingDependencyError: ray is not installed.
        HubdeltaError: the cluster cannot be reached.
    """

    def __init__(self, settings: Settings, opts: EmbedOptions, ray_opts: RayOptions) -> None:
        try:
            import ray
        except ImportError:
            raise MissingDependencyError("ray", extra="ray") from None
        self.ray = ray
        self.ray_opts = ray_opts
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            where = ray_opts.address or "RAY_ADDRESS or a new local Ray"
            try:
                ray.init(address=ray_opts.address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)  # fmt: skip
            except (ConnectionError, RuntimeError, ValueError) as e:
                fix = "start the cluster (ray start --head) or check --ray ADDRESS"
                raise HubdeltaError(f"cannot connect to Ray at {where}: {one_line(e)[:200]}", fix=fix) from None
        self.count, resources = worker_count(ray.cluster_resources(), ray_opts, opts.device)
        self._actor: Any = ray.remote(EmbedWorker).options(max_restarts=0, **resources)
        self._settings = settings
        if not resources["num_gpus"]:  # Ray does not hide a node's GPUs from an actor that asked for none
            opts = replace(opts, device="cpu")
        self._worker_opts = opts
        self.workers = [self._start() for _ in range(self.count)]
        self.start_failures = 0
        log.info("ray.workers", count=self.count, address=ray_opts.address, **resources)

    def _start(self) -> _Worker:
        handle = self._actor.remote(self._settings, self._worker_opts)
        return _Worker(handle, handle.describe.remote())

    def starting(self) -> list[Any]:
        return [w.started for w in self.workers if not w.ready]

    def mark_started(self, ref: Any) -> None:
        """A worker's describe() returned; a worker that died on the way up is replaced like any other."""
        w = next(w for w in self.workers if w.started == ref)
        try:
            w.info = self.ray.get(ref)
            log.info("ray.worker_ready", worker=w.name, device=w.info.get("device"), threads=w.info.get("threads"))
        except self.ray.exceptions.RayError as e:
            why = one_line(e)[:300]
            log.warning("ray.worker_start_failed", error=why)
            self.start_failures += 1
            if self.start_failures > 2 * self.count and not any(x.ready for x in self.workers):
                fix = "check that every node runs the same hubdelta and Python (ray status)"
                raise HubdeltaError(f"Ray workers keep failing to start: {why}", fix=fix) from None
            self.lost(w)

    def lost(self, w: _Worker) -> None:
        """``w`` died: start a replacement (it waits for room on the cluster, e.g. a node coming back)."""
        self.ray.kill(w.handle, no_restart=True)
        self.workers[self.workers.index(w)] = self._start()

    def close(self) -> None:
        for w in self.workers:
            self.ray.kill(w.handle, no_restart=True)
        self.workers = []
        if self._owns_ray:
            self.ray.shutdown()

    def __enter__(self) -> RayWorkers:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass
class _Base:
    sha: str
    space: Space
    ledger: SpaceLedger  # its base activations are stored by the first batch back when the space is new


class _Driver:
    """One run: batches out to the workers, results into the index as they come back."""

    def __init__(self, index: Index, opts: EmbedOptions, pool: RayWorkers, run: Run) -> None:
        self.index, self.opts, self.pool, self.run = index, opts, pool, run
        self.ray = pool.ray  # the ray module, imported by the pool
        self.spaces: list[str] = []
        self.deaths = 0  # workers lost mid-run
        self.bases: dict[str, _Base] = {}
        self.records: dict[str, ModelRecord] = {}  # as read, by repo id
        self.claimed: dict[str, ModelRecord] = {}  # claimed in this run (an attempt counted once, however retried)
        self.inflight: dict[Any, tuple[_Worker, Batch]] = {}

    def plan(self, settings: Settings, groups: dict[str, list[ModelRecord]]) -> Dispatcher:
        batches: list[Batch] = []
        for base, records in groups.items():
            try:
                folder, sha = download_base(settings, base, patterns=CONFIG_FILES)
                o = self.opts
                space = space_for(folder, base, sha, layer=o.layer, position=o.position, dtype=o.dtype)
            except Exception as e:  # the base itself: unreachable or malformed; its models stay queued
                self.run.base_failed(base, e)
                continue
            ledger = SpaceLedger(self.index, space, max_attempts=self.opts.max_attempts)
            self.bases[base] = _Base(sha, space, ledger)
            self.spaces.append(space.id)
            reused, todo = ledger.reuse(records)
            self.run.record(reused)
            self.records.update((r.repo_id, r) for r in todo)
            batches += [Batch(base, tuple(r.repo_id for r in c)) for c in plan.chunks(todo, self.opts.batch)]
        return Dispatcher(batches)

    def dispatch(self, dispatcher: Dispatcher) -> None:
        serving: Counter[str | None] = Counter(w.base for w in self.pool.workers if w.ready)
        for w in self.pool.workers:
            while w.ready and len(w.calls) < self.pool.ray_opts.inflight:
                batch = dispatcher.take(w.base, serving)
                if batch is None:
                    return
                if batch.base != w.base:
                    serving[w.base] -= 1
                    serving[batch.base] += 1
                    w.base = batch.base  # it loads this base with its next call
                b = self.bases[batch.base]
                fresh = b.ledger.claim([self.records[r] for r in batch.repo_ids if r not in self.claimed])
                self.claimed.update((r.repo_id, r) for r in fresh)
                items = tuple(revisions(self.records[r] for r in batch.repo_ids))
                ref = w.handle.embed.remote(WorkOrder(batch.base, b.sha, b.space.id, items))
                w.calls.append(ref)
                self.inflight[ref] = (w, batch)

    def settle(self, ref: Any, dispatcher: Dispatcher) -> None:
        """Commit a returned batch, or deal with the worker's death or the base's failure."""
        w, batch = self.inflight[ref]
        errors = self.ray.exceptions
        try:
            result: WorkResult = self.ray.get(ref)
        except (errors.RayActorError, errors.WorkerCrashedError) as e:
            self._died(w, dispatcher, e)
            return
        except errors.RayError as e:  # a bug in the worker, not a model's failure: treated like its base's
            result = WorkResult(ChunkOutput(), None, 0.0, 0.0, w.name, base_error=one_line(e)[:500])
        del self.inflight[ref]
        w.calls.remove(ref)
        if result.base_error or result.base_activations is None:
            self._base_failed(batch, dispatcher, result.base_error or "no base activations")
            return
        b = self.bases[batch.base]
        acts = result.base_activations
        b.ledger.base(lambda: acts)
        claimed = [self.claimed.pop(r) for r in batch.repo_ids]
        self.run.commit(b.ledger, claimed, result.output)
        log.debug("ray.batch", worker=result.worker, models=len(claimed), load_s=result.load_s, embed_s=result.embed_s)

    def _died(self, w: _Worker, dispatcher: Dispatcher, e: BaseException) -> None:
        """``w`` died: its oldest call is the batch it was running; the ones queued behind it are not to blame.

        Every call of ``w`` leaves the in-flight set here, so its other failures are never seen twice.
        """
        batches = [self.inflight.pop(ref)[1] for ref in w.calls if ref in self.inflight]
        w.calls.clear()
        self.deaths += 1
        log.warning("ray.worker_died", worker=w.name, batches=len(batches), error=one_line(e)[:300])
        self.pool.lost(w)
        if not batches:
            return
        for queued in reversed(batches[1:]):
            dispatcher.put_back(queued)
        running = batches[0]
        given_up = dispatcher.lost(running)
        if given_up:
            why = f"a Ray worker died each time it embedded this model ({running.deaths + 1} times)"
            ledger = self.bases[running.base].ledger
            self.run.record(ledger.fail([self.claimed.pop(r) for r in given_up], why))

    def _base_failed(self, batch: Batch, dispatcher: Dispatcher, error: str) -> None:
        """A base a worker could not load: its models go back to how they were read; other bases go on.

        Its batches on other workers are dropped too (their results are never read): the next run tries again.
        """
        dropped = [batch, *dispatcher.drop(batch.base)]
        for ref, (w, other) in list(self.inflight.items()):
            if other.base == batch.base:
                del self.inflight[ref]
                w.calls.remove(ref)
                dropped.append(other)
        ids = [r for b in dropped for r in b.repo_ids]
        self.bases[batch.base].ledger.restore([self.records[r] for r in ids])
        for r in ids:
            self.claimed.pop(r, None)
        self.run.base_failed(batch.base, error)


def embed_queued_ray(
    index: Index,
    settings: Settings,
    opts: EmbedOptions,
    pool: RayWorkers,
    progress: Progress | None = None,
    *,
    only: Sequence[str] | None = None,
    extra_bases: Sequence[str] = (),
    should_stop: Callable[[], bool] = lambda: False,
) -> EmbedSummary:
    """:func:`hubdelta.embedder.worker.embed_queued` on Ray workers: same statuses, same vectors, same order of writes.

    Raises:
        HubdeltaError: no worker came up within ``start_timeout_s`` while models were waiting (they stay queued).
    """
    started = time.perf_counter()
    run = Run(progress=progress, should_stop=should_stop)
    groups = select_queued(index, opts, run.counts, only=only, extra_bases=extra_bases)
    driver = _Driver(index, opts, pool, run)
    dispatcher = driver.plan(settings, groups)
    waiting_since = time.monotonic()
    while True:
        stopped = run.stopping()  # what is in flight is finished; the rest stays queued
        if not stopped:
            driver.dispatch(dispatcher)
        if not driver.inflight and (stopped or dispatcher.pending == 0):
            break
        if driver.inflight or not pool.starting():
            waiting_since = time.monotonic()
        elif time.monotonic() - waiting_since > pool.ray_opts.start_timeout_s:
            raise HubdeltaError(f"no Ray worker came up in {pool.ray_opts.start_timeout_s:.0f} s; "
                                f"{dispatcher.pending} batches stay queued",
                                fix="check the cluster's free CPUs/GPUs (ray status)")  # fmt: skip
        done, _ = driver.ray.wait([*driver.inflight, *pool.starting()], num_returns=1, timeout=1.0)
        for ref in done:
            if ref in driver.inflight:
                driver.settle(ref, dispatcher)
            else:
                pool.mark_started(ref)
    seconds = round(time.perf_counter() - started, 2)
    return EmbedSummary.of(run.counts, spaces=driver.spaces, seconds=seconds, workers=pool.count,
                           worker_deaths=driver.deaths)  # fmt: skip
