"""``hubdelta embed --ray``: Ray workers embed, this process (the driver) decides and is the only index writer.

Each worker is a Ray actor (:class:`~hubdelta.embedder.ray_worker.EmbedWorker`) holding one resident base, on a
GPU of its own or, without GPUs, on ``cpus_per_worker`` CPUs. The driver groups the queued models by base into
batches, keeps ``inflight`` batches queued on every worker (so a worker never waits for the driver's commit),
and commits each batch as it returns, in the single-process worker's order: vectors, then statuses. Only the
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
from hubdelta.embedder.activations import space_for
from hubdelta.embedder.dispatch import Batch, Dispatcher
from hubdelta.embedder.ray_worker import EmbedWorker, WorkOrder, WorkResult
from hubdelta.embedder.space import Space
from hubdelta.embedder.worker import (
    ChunkOutput,
    EmbedOptions,
    EmbedSummary,
    Progress,
    _Run,
    download_base,
    select_queued,
)
from hubdelta.index.embeddings import SpaceRow
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
    row: SpaceRow | None = None


class _Driver:
    """One run: batches out to the workers, results into the index as they come back."""

    def __init__(self, index: Index, settings: Settings, opts: EmbedOptions, pool: RayWorkers,
                 summary: EmbedSummary, progress: Progress | None) -> None:  # fmt: skip
        self.index, self.opts, self.pool, self.summary, self.progress = index, opts, pool, summary, progress
        self.ray = pool.ray  # the ray module, imported by the pool
        self.run = _Run(index, settings, opts, summary)
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
                self.summary.failures.append((base, f"base not loaded: {one_line(e)}"))
                log.warning("embed.base_failed", base=base, error=one_line(e))
                continue
            self.bases[base] = _Base(sha, space, self.index.spaces().get(space.id))
            self.summary.spaces.append(space.id)
            todo = self.run.reuse(space, records, self.progress)
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
                fresh = [plan.claim([self.records[r]])[0] for r in batch.repo_ids if r not in self.claimed]
                self.index.put_models(fresh)
                self.claimed.update((r.repo_id, r) for r in fresh)
                b = self.bases[batch.base]
                items = tuple((r, self.records[r].model.sha or "main") for r in batch.repo_ids)
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
        if b.row is None:
            acts = result.base_activations
            b.row = self.run.space_row(b.space, lambda: acts)
        claimed = [self.claimed.pop(r) for r in batch.repo_ids]
        self.run.commit(b.space.id, b.row, claimed, result.output, self.progress)
        log.debug("ray.batch", worker=result.worker, models=len(claimed), load_s=result.load_s, embed_s=result.embed_s)

    def _died(self, w: _Worker, dispatcher: Dispatcher, e: BaseException) -> None:
        """``w`` died: its oldest call is the batch it was running; the ones queued behind it are not to blame.

        Every call of ``w`` leaves the in-flight set here, so its other failures are never seen twice.
        """
        batches = [self.inflight.pop(ref)[1] for ref in w.calls if ref in self.inflight]
        w.calls.clear()
        self.summary.worker_deaths += 1
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
            failed = [plan.failed(self.claimed.pop(r), why, transient=False, max_attempts=0) for r in given_up]
            self.index.put_models(failed)
            for r in failed:
                self.run.count(r, self.progress)

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
        self.index.put_models([self.records[r] for r in ids])
        for r in ids:
            self.claimed.pop(r, None)
        self.summary.failures.append((batch.base, f"base not loaded: {error}"))
        log.warning("embed.base_failed", base=batch.base, error=error)


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
    summary = EmbedSummary(workers=pool.count)
    groups = select_queued(index, opts, summary, only=only, extra_bases=extra_bases)
    driver = _Driver(index, settings, opts, pool, summary, progress)
    dispatcher = driver.plan(settings, groups)
    waiting_since = time.monotonic()
    while True:
        if not summary.stopped and should_stop():  # what is in flight is finished; the rest stays queued
            summary.stopped = True
        if not summary.stopped:
            driver.dispatch(dispatcher)
        if not driver.inflight and (summary.stopped or dispatcher.pending == 0):
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
    summary.seconds = round(time.perf_counter() - started, 2)
    return summary
