"""The daemon's core, apart from what its jobs do: APScheduler 3 runs the given jobs one at a time until stopped.

One worker thread and one lock: the jobs never overlap, so the process is at most one index writer at a time (each
job takes and releases the writer lock itself, so a person can still run ``hubdelta report`` between two jobs).
Every job has an explicit id, ``coalesce=True`` (a backlog of missed runs becomes one run) and ``max_instances=1``.
A daily job records the slot it completed; a restart runs a slot it still owes once, and never a slot already done.

Stopping (:meth:`JobRunner.stop`, safe from a signal handler): no job starts any more, and a job that had been
handed to the worker but not begun never begins; the running one ends at its next safe point (the jobs read
:attr:`JobRunner.stopping`), its outcome is recorded, then ``stopped_at``. :meth:`JobRunner.serve` returns 0, or 1
if the running job overran ``stop_timeout_s`` (it is still running then: its record is saved when it ends).

Jobs and the clock are injected, so tests drive all of it with fake jobs and a fixed "now" (daily slots, catch-up).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from hubdelta.daemon.slots import latest_slot, missed_slot
from hubdelta.daemon.state import DaemonState, StateFile, encode_json, load_state
from hubdelta.kernel.errors import one_line

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


def local_now() -> datetime:
    """Now, aware, in the host's local zone: daily slots are local times."""
    return datetime.now(UTC).astimezone()


@dataclass(frozen=True)
class Job:
    """A job: ``run`` does the work and returns what is logged and recorded as its last result.

    Either every ``every_s`` seconds (the first run ``first_after_s`` after the start, or one interval after it
    when None) or daily at ``daily_at``, local time (such a job records its slot and is owed one it missed).
    """

    id: str
    run: Callable[[], dict[str, Any]]
    every_s: float | None = None
    first_after_s: float | None = None
    daily_at: clock_time | None = None

    def trigger(self) -> BaseTrigger:
        if self.daily_at is not None:
            return CronTrigger(hour=self.daily_at.hour, minute=self.daily_at.minute)
        assert self.every_s is not None, f"job {self.id}: neither every_s nor daily_at"
        return IntervalTrigger(seconds=self.every_s)


class JobRunner:
    """Runs ``jobs`` on their schedules from :meth:`serve` until :meth:`stop`; state in ``<home>/daemon.json``."""

    def __init__(
        self,
        home: Path,
        jobs: Sequence[Job],
        *,
        stop_timeout_s: float,
        clock: Clock = local_now,
        catch_up_after_s: float = 2.0,
    ) -> None:
        self.jobs = {job.id: job for job in jobs}
        self.stop_timeout_s = stop_timeout_s
        self.clock = clock
        self.catch_up_after_s = catch_up_after_s  # owed daily slots run this long after the start (one at a time)
        self.stopping = threading.Event()
        self._running = threading.Lock()  # held while a job runs
        self.state = StateFile(home, load_state(home))
        self.scheduler = BackgroundScheduler(executors={"default": ThreadPoolExecutor(max_workers=1)},
                                             job_defaults={"coalesce": True, "max_instances": 1,
                                                           "misfire_grace_time": None})  # fmt: skip

    def _utc(self) -> datetime:
        return self.clock().astimezone(UTC)

    def run_job(self, job_id: str) -> None:
        """Run one job now unless stopping, recording its outcome; a daily job skips a slot it already completed."""
        job = self.jobs[job_id]
        with self._running:
            if self.stopping.is_set():  # checked under the lock: a stop that came while this waited wins
                return
            record = self.state.state.job(job_id)
            slot = latest_slot(self.clock(), job.daily_at) if job.daily_at is not None else None
            if slot is not None and record.last_slot is not None and record.last_slot >= slot:
                log.info("daemon.job_skipped", job=job_id, slot=slot.isoformat(), why="slot already done")
                return
            self.state.update(lambda s: _started(s, job_id, self._utc()))
            started = time.perf_counter()
            log.info("daemon.job_started", job=job_id)
            try:
                # The result goes into daemon.json: a value JSON cannot hold fails the job here, not every save.
                result = json.loads(json.dumps(job.run(), default=encode_json))
            except Exception as e:  # a job's failure is recorded; the daemon goes on
                error = one_line(e)
                self.state.update(lambda s: _failed(s, job_id, error, self._utc()))
                log.warning("daemon.job_failed", job=job_id, error=error)
                return
            self.state.update(lambda s: _succeeded(s, job_id, result, slot, self._utc()))
            fields = {k: v for k, v in result.items() if k not in ("job", "seconds", "event")}  # ours win a clash
            log.info("daemon.job_done", job=job_id, seconds=round(time.perf_counter() - started, 2), **fields)

    def schedule(self, now: datetime) -> list[str]:
        """Add every job to the scheduler as of ``now``, and the daily slots owed; returns the scheduled ids."""
        add = self.scheduler.add_job
        for job in self.jobs.values():
            first = {} if job.first_after_s is None else {"next_run_time": now + timedelta(seconds=job.first_after_s)}
            add(self.run_job, job.trigger(), args=(job.id,), id=job.id, **first)
        # A restart owes the daily slots it missed while down (once each): catch up after the first jobs.
        state = self.state.state
        owed = [job for job in self.jobs.values() if job.daily_at is not None
                and missed_slot(now, job.daily_at, state.job(job.id).last_slot, state.first_started_at)]  # fmt: skip
        for i, job in enumerate(owed):
            when = now + timedelta(seconds=self.catch_up_after_s + i)
            add(self.run_job, DateTrigger(when), args=(job.id,), id=f"{job.id}-catch-up")
        return [j.id for j in self.scheduler.get_jobs()]

    def stop(self, *_: object) -> None:
        """Stop: no job starts any more; the running one ends at its next safe point. Safe from a signal handler."""
        self.stopping.set()

    def serve(self) -> int:
        """Run the jobs until :meth:`stop`. Returns 0, or 1 if the running job overran ``stop_timeout_s``."""
        self.state.update(lambda s: _serving(s, self._utc()))
        finished = False
        try:
            ids = self.schedule(self.clock())
            self.scheduler.start()
            log.info("daemon.started", pid=self.state.state.pid, jobs=ids)
            while not self.stopping.wait(0.5):  # a timed wait: the main thread must run signal handlers
                pass
            log.info("daemon.stopping", timeout_s=self.stop_timeout_s)
            self.scheduler.shutdown(wait=False)  # nothing new is handed to the worker
            finished = self._running.acquire(timeout=self.stop_timeout_s)
            if finished:  # a job handed over before the shutdown takes the lock next, sees `stopping` and returns
                self._running.release()
        finally:
            self.state.update(lambda s: setattr(s, "stopped_at", self._utc()))
        log.info("daemon.stopped", clean=finished)
        return 0 if finished else 1


def _serving(state: DaemonState, now: datetime) -> None:
    state.pid, state.host = os.getpid(), socket.gethostname()
    state.started_at, state.stopped_at = now, None
    state.first_started_at = state.first_started_at or now


def _started(state: DaemonState, job_id: str, now: datetime) -> None:
    record = state.job(job_id)
    record.runs += 1
    record.last_start = now


def _failed(state: DaemonState, job_id: str, error: str, now: datetime) -> None:
    record = state.job(job_id)
    record.failures += 1
    record.last_error, record.last_error_at = error, now


def _succeeded(state: DaemonState, job_id: str, result: dict[str, Any], slot: datetime | None, now: datetime) -> None:
    record = state.job(job_id)
    record.last_success, record.last_result = now, result
    if slot is not None:
        record.last_slot = slot
