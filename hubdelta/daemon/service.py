"""The daemon: APScheduler 3 runs crawl, embed, report and compaction jobs, one at a time, until SIGTERM.

One worker thread runs every job, so the process is at most one index writer at a time and the jobs never
overlap (each takes and releases the writer lock itself, so a person can still run ``hubdelta report`` between
two jobs). Every job has an explicit id, ``coalesce=True`` (a backlog of missed runs becomes one run) and
``max_instances=1``. The daily jobs (full crawl, report) record the slot they completed; a restart runs a slot
it still owes once, and a slot already done is never run again.

SIGTERM or SIGINT: no new job starts; the running one stops at its next safe point (the embed worker between
chunks: what it claimed is finished and committed, the rest stays queued), the lock is released as its
``with`` block ends, and the process exits 0, or 1 if the job overran ``stop_timeout_s``.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from hubdelta.daemon.slots import latest_slot, missed_slot, parse_hhmm
from hubdelta.daemon.state import DaemonState, StateFile, load_state
from hubdelta.kernel.errors import one_line
from hubdelta.kernel.settings import Settings

if TYPE_CHECKING:
    from hubdelta.embedder.scaleout import RayWorkers

log = structlog.get_logger(__name__)

JOB_IDS = ("crawl", "full_crawl", "embed", "report", "compact")
COMMAND = "hubdelta daemon"


def _now() -> datetime:
    return datetime.now(UTC).astimezone()  # aware, in the host's local zone: daily slots are local times


class Daemon:
    """Build with settings; :meth:`run` blocks until a signal (or :meth:`stop`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        d = settings.daemon
        self.full_crawl_at = parse_hhmm(d.full_crawl_at, "daemon.full_crawl_at")
        self.report_at = parse_hhmm(d.report_at, "daemon.report_at")
        self.stopping = threading.Event()
        self.idle = threading.Event()  # set while no job runs
        self.idle.set()
        self._job_lock = threading.Lock()
        self.state = StateFile(settings.home, load_state(settings.home))
        self._workers: RayWorkers | None = None
        self.scheduler = BackgroundScheduler(executors={"default": ThreadPoolExecutor(max_workers=1)},
                                             job_defaults={"coalesce": True, "max_instances": 1,
                                                           "misfire_grace_time": None})  # fmt: skip

    # ---- the jobs: each a library call ----

    def crawl(self) -> dict[str, Any]:
        from hubdelta.crawler.api import run_crawl

        s = run_crawl(self.settings, command=f"{COMMAND}: crawl")
        return {"new": s.total("new"), "updated": s.total("updated"), "requests": s.requests, "errors": s.errors}

    def full_crawl(self) -> dict[str, Any]:
        from hubdelta.crawler.api import run_crawl

        s = run_crawl(self.settings, full=True, command=f"{COMMAND}: full crawl")
        return {"new": s.total("new"), "updated": s.total("updated"), "removed": s.total("removed")}

    def embed(self) -> dict[str, Any]:
        from hubdelta.embedder.api import run_embed
        from hubdelta.embedder.family import embed_families
        from hubdelta.embedder.runtime import keep_freed_memory

        keep_freed_memory()
        limit = self.settings.daemon.embed_limit
        s = run_embed(self.settings, limit=limit, command=f"{COMMAND}: embed", should_stop=self.stopping.is_set,
                      workers=self._ray_workers())  # fmt: skip
        out = {"embedded": s.embedded, "failed": s.failed, "reused": s.reused, "stopped": s.stopped}
        if s.workers:
            out |= {"workers": s.workers, "worker_deaths": s.worker_deaths}
        if not s.stopped and s.embedded + s.failed < limit:  # families fill from what their bases' spaces hold
            families = embed_families(self.settings, limit=limit, command=f"{COMMAND}: family embed",
                                      should_stop=self.stopping.is_set)  # fmt: skip
            if families:
                out["family_embedded"] = sum(f.embedded for f in families)
                out["stopped"] = out["stopped"] or any(f.stopped for f in families)
        return out

    def _ray_workers(self) -> RayWorkers | None:
        """With ``[ray] enabled``, the daemon's Ray workers: started at the first embed job and kept, so their
        bases stay resident between runs; a job that cannot reach the cluster fails and the next one tries again."""
        if not self.settings.ray.enabled:
            return None
        if self._workers is None:
            from hubdelta.embedder.api import options, ray_options
            from hubdelta.embedder.scaleout import RayWorkers

            opts = options(self.settings, limit=None, device=None, batch=None, on_ray=True)
            self._workers = RayWorkers(self.settings, opts, ray_options(self.settings))
        return self._workers

    def report(self) -> dict[str, Any]:
        from hubdelta.report.api import run_report, summary

        return summary(run_report(self.settings, command=f"{COMMAND}: report"))

    def compact(self) -> dict[str, Any]:
        from hubdelta.index.door import open_writer

        with open_writer(self.settings, f"{COMMAND}: compact") as index:
            return {"compacted": index.maybe_compact(), "ann": index.maintain_ann()}

    # ---- running them ----

    def _run(self, job_id: str, fn: Callable[[], dict[str, Any]], slot_at: Any = None) -> None:
        """Run one job, recording its outcome; a daily job skips a slot it already completed."""
        if self.stopping.is_set():
            return
        with self._job_lock:
            self.idle.clear()
            job = self.state.state.job(job_id)
            slot = latest_slot(_now(), slot_at) if slot_at is not None else None
            try:
                if slot is not None and job.last_slot is not None and job.last_slot >= slot:
                    log.info("daemon.job_skipped", job=job_id, slot=slot.isoformat(), why="slot already done")
                    return
                job.runs += 1
                job.last_start = datetime.now(UTC)
                self.state.save()
                started = time.perf_counter()
                log.info("daemon.job_started", job=job_id)
                try:
                    result = fn()
                except Exception as e:  # a job's failure is recorded; the daemon goes on
                    job.failures += 1
                    job.last_error, job.last_error_at = one_line(e), datetime.now(UTC)
                    log.warning("daemon.job_failed", job=job_id, error=job.last_error)
                else:
                    job.last_success, job.last_result = datetime.now(UTC), result
                    if slot is not None:
                        job.last_slot = slot
                    seconds = round(time.perf_counter() - started, 2)
                    log.info("daemon.job_done", job=job_id, seconds=seconds, **result)
                self.state.save()
            finally:
                self.idle.set()

    def _schedule(self) -> None:
        d = self.settings.daemon
        add = self.scheduler.add_job
        now = _now()
        add(self._run, IntervalTrigger(seconds=d.crawl_every_s), args=("crawl", self.crawl), id="crawl",
            next_run_time=now)  # fmt: skip
        add(self._run, IntervalTrigger(seconds=d.embed_every_s), args=("embed", self.embed), id="embed",
            next_run_time=now + timedelta(seconds=1))  # fmt: skip
        add(self._run, IntervalTrigger(seconds=d.compact_every_s), args=("compact", self.compact), id="compact")
        full = CronTrigger(hour=self.full_crawl_at.hour, minute=self.full_crawl_at.minute)
        add(self._run, full, args=("full_crawl", self.full_crawl, self.full_crawl_at), id="full_crawl")
        if d.report_every_s > 0:
            add(self._run, IntervalTrigger(seconds=d.report_every_s), args=("report", self.report), id="report")
        else:
            report = CronTrigger(hour=self.report_at.hour, minute=self.report_at.minute)
            add(self._run, report, args=("report", self.report, self.report_at), id="report")
        # A restart owes the daily slots it missed while down (once each): catch up after the first crawl.
        state = self.state.state
        owed = [(j, fn, at) for j, fn, at in (("full_crawl", self.full_crawl, self.full_crawl_at),
                                              ("report", self.report, self.report_at))
                if not (j == "report" and d.report_every_s > 0)
                and missed_slot(now, at, state.job(j).last_slot, state.first_started_at)]  # fmt: skip
        for i, (job_id, fn, at) in enumerate(owed):
            when = now + timedelta(seconds=2 + i)
            add(self._run, DateTrigger(when), args=(job_id, fn, at), id=f"{job_id}-catch-up")

    def stop(self, *_: object) -> None:
        """Stop scheduling; the running job ends at its next safe point. Safe from a signal handler."""
        self.stopping.set()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or :meth:`stop`). Returns the exit code."""
        state = self.state.state
        state.pid, state.host = _pid(), socket.gethostname()
        state.started_at, state.stopped_at = datetime.now(UTC), None
        state.first_started_at = state.first_started_at or state.started_at
        self.state.save()
        previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._schedule()
            self.scheduler.start()
            log.info("daemon.started", pid=state.pid, jobs=[j.id for j in self.scheduler.get_jobs()])
            while not self.stopping.wait(0.5):
                pass
            log.info("daemon.stopping", timeout_s=self.settings.daemon.stop_timeout_s)
            self.scheduler.shutdown(wait=False)  # nothing new starts
            finished = self.idle.wait(self.settings.daemon.stop_timeout_s) and self._job_lock.acquire(
                timeout=self.settings.daemon.stop_timeout_s
            )
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._workers is not None and finished:  # an overrunning job still uses them: the exit ends them
            self._workers.close()
        state.stopped_at = datetime.now(UTC)
        self.state.save()
        log.info("daemon.stopped", clean=bool(finished))
        return 0 if finished else 1


def _pid() -> int:
    import os

    return os.getpid()


def daemon_state(settings: Settings) -> DaemonState:
    """The daemon's recorded state, for ``hubdelta status``."""
    return load_state(settings.home)
