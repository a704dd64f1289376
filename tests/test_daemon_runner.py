"""The daemon's core in-process: APScheduler 3 running fake jobs that block on events, on a fixed clock.

Every stop here is requested while a job is known to be running (the job has signalled that it started and cannot
finish before the test lets it), so each case tests what it names. The real process, SIGTERM and ``kill -9`` with
real jobs, is in test_daemon.py.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any

import pytest

from hubdelta.daemon.runner import Job, JobRunner, local_now
from hubdelta.daemon.service import Daemon
from hubdelta.daemon.state import STATE_FILE, DaemonState, load_state
from tests.helpers import settings_for

# A fixed "now" in the past: jobs due "now" run at once, and daily slots are known (06:00 today is done).
NOW = datetime(2026, 11, 26, 7, 0).astimezone()
SIX = clock(6, 0)


class FakeJob:
    """A job that signals ``started``, then waits until ``release`` is set and returns ``result``.

    A cooperative one (``stop_on``: the runner's ``stopping``) returns at once when the runner stops, with
    ``stopped: True``, like the embed job between chunks.
    """

    def __init__(self, result: dict[str, Any] | None = None, *, released: bool = False) -> None:
        self.result = result if result is not None else {"done": 1}
        self.started, self.release, self.finished = threading.Event(), threading.Event(), threading.Event()
        self.stop_on: threading.Event | None = None
        self.calls = 0
        if released:
            self.release.set()

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        self.started.set()
        waits_for = self.stop_on or self.release
        assert waits_for.wait(30), "the test never let the job finish"
        self.finished.set()
        return {**self.result, "stopped": True} if self.stop_on else self.result


def history(runner: JobRunner, first_started: datetime, **last_slots: datetime) -> None:
    """Give the runner's state a past: its first start, and the daily slots its jobs last completed."""

    def change(state: DaemonState) -> None:
        state.first_started_at = first_started
        for job_id, slot in last_slots.items():
            state.job(job_id).last_slot = slot

    runner.state.update(change)


@pytest.fixture
def run() -> Iterator[Callable[[JobRunner], Future[int]]]:
    """``run(runner)`` serves it in a thread; at the end every runner is stopped and every fake job released, so no
    scheduler thread outlives the test."""
    pool = ThreadPoolExecutor(max_workers=4)
    runners: list[JobRunner] = []

    def start(runner: JobRunner) -> Future[int]:
        runners.append(runner)
        return pool.submit(runner.serve)

    yield start
    for runner in runners:
        runner.stop()
        for job in runner.jobs.values():
            if isinstance(job.run, FakeJob):
                job.run.release.set()
    pool.shutdown(wait=True)


def on_disk(home: Path) -> dict[str, Any]:
    """The state file as a restarted daemon (or ``hubdelta status``) reads it: it must be complete JSON."""
    return json.loads((home / STATE_FILE).read_text())


def test_jobs_run_one_at_a_time_and_each_outcome_is_recorded(tmp_path: Path, run) -> None:
    first, second = FakeJob({"new": 3}), FakeJob({"embedded": 2})
    runner = JobRunner(tmp_path, [Job("crawl", first, every_s=3600, first_after_s=0),
                                  Job("embed", second, every_s=3600, first_after_s=0)], stop_timeout_s=10)  # fmt: skip
    served = run(runner)
    assert first.started.wait(10) or second.started.wait(1)
    running, waiting = (first, second) if first.started.is_set() else (second, first)
    assert not waiting.started.wait(0.5)  # one worker: the other job waits for the first
    running.release.set()
    assert waiting.started.wait(10)
    waiting.release.set()
    assert waiting.finished.wait(10)
    runner.stop()
    assert served.result(timeout=10) == 0
    state = load_state(tmp_path)
    assert state.jobs["crawl"].runs == state.jobs["embed"].runs == 1
    assert (state.jobs["crawl"].last_result, state.jobs["embed"].last_result) == ({"new": 3}, {"embedded": 2})
    assert state.stopped_at is not None and all(state.stopped_at >= j.last_success for j in state.jobs.values())


@pytest.mark.parametrize("cooperative", [False, True], ids=["job-finishes", "job-stops-at-a-safe-point"])
def test_a_stop_during_a_job_records_its_outcome_then_stops_and_starts_nothing(
    tmp_path: Path, run, cooperative: bool
) -> None:
    """Like SIGTERM during a crawl or a report (they finish) or an embed (it stops between chunks)."""
    job, queued = FakeJob({"embedded": 1}), FakeJob(released=True)
    jobs = [Job("embed", job, every_s=3600, first_after_s=0), Job("report", queued, every_s=0.2, first_after_s=0.1)]
    runner = JobRunner(tmp_path, jobs, stop_timeout_s=10)
    job.stop_on = runner.stopping if cooperative else None
    served = run(runner)
    assert job.started.wait(10)
    during = on_disk(tmp_path)["jobs"]["embed"]  # what a kill -9 now would leave: the start, complete
    assert during["runs"] == 1 and during["last_start"] and during["last_success"] is None
    runner.stop()  # the job is running: it cannot have finished, it waits for the test (or for this stop)
    if not cooperative:
        assert not served.done() and not job.finished.wait(0.5)  # the daemon waits for the job...
        job.release.set()  # ...which finishes
    assert served.result(timeout=10) == 0
    assert job.finished.is_set() and queued.calls == 0  # the report, due every 0.2 s, never started
    state = load_state(tmp_path)
    embed = state.jobs["embed"]
    assert embed.runs == 1 and embed.failures == 0
    assert embed.last_result == ({"embedded": 1, "stopped": True} if cooperative else {"embedded": 1})
    assert state.stopped_at is not None and embed.last_success is not None and state.stopped_at >= embed.last_success
    assert "report" not in state.jobs


def test_a_job_that_overruns_the_stop_timeout_gives_1_and_is_recorded_when_it_ends(tmp_path: Path, run) -> None:
    job = FakeJob({"new": 5})
    runner = JobRunner(tmp_path, [Job("crawl", job, every_s=3600, first_after_s=0)], stop_timeout_s=0.3)
    served = run(runner)
    assert job.started.wait(10)
    runner.stop()
    assert served.result(timeout=10) == 1  # no longer than stop_timeout_s (the CLI then exits 1 at once)
    state = on_disk(tmp_path)
    assert state["stopped_at"] and state["jobs"]["crawl"]["last_success"] is None
    job.release.set()
    deadline = time.monotonic() + 10
    while on_disk(tmp_path)["jobs"]["crawl"]["last_success"] is None:  # the overrunning job's end is saved too
        assert time.monotonic() < deadline, on_disk(tmp_path)
        time.sleep(0.05)
    assert on_disk(tmp_path)["jobs"]["crawl"]["last_result"] == {"new": 5}


def test_a_job_handed_over_after_the_stop_never_begins_and_nothing_waits_forever(tmp_path: Path, run) -> None:
    job = FakeJob()
    runner = JobRunner(tmp_path, [Job("compact", job, every_s=3600)], stop_timeout_s=10)
    served = run(runner)
    time.sleep(0.2)  # serving: nothing is due for an hour
    runner.stop()
    assert served.result(timeout=10) == 0
    done = threading.Thread(target=runner.run_job, args=("compact",))  # as if the worker took it up now
    done.start()
    done.join(timeout=5)
    assert not done.is_alive() and job.calls == 0  # the lock was given back, and the stop wins
    assert "compact" not in load_state(tmp_path).jobs


def test_a_failing_job_is_recorded_and_the_next_one_runs(tmp_path: Path) -> None:
    def broken() -> dict[str, Any]:
        raise OSError("index locked by pid 7\nsecond line")

    good = FakeJob({"n": 1}, released=True)
    runner = JobRunner(tmp_path, [Job("crawl", broken, every_s=60), Job("embed", good, every_s=60)],
                       stop_timeout_s=1, clock=lambda: NOW)  # fmt: skip
    runner.run_job("crawl")
    runner.run_job("embed")
    state = load_state(tmp_path)
    crawl = state.jobs["crawl"]
    assert (crawl.runs, crawl.failures, crawl.last_success) == (1, 1, None)
    assert crawl.last_error is not None and "index locked by pid 7" in crawl.last_error and "\n" not in crawl.last_error
    assert crawl.last_error_at == NOW and state.jobs["embed"].last_success == NOW


def test_a_result_json_cannot_hold_fails_that_job_only_and_a_clashing_key_is_logged(tmp_path: Path) -> None:
    odd = FakeJob({"handle": object()}, released=True)  # not JSON: it must not poison every later save
    clash = FakeJob({"job": "not me", "seconds": -1, "n": 2}, released=True)
    runner = JobRunner(tmp_path, [Job("report", odd, every_s=60), Job("embed", clash, every_s=60)],
                       stop_timeout_s=1, clock=lambda: NOW)  # fmt: skip
    runner.run_job("report")
    runner.run_job("embed")
    jobs = on_disk(tmp_path)["jobs"]  # the file is still complete JSON, saved after both jobs
    assert (jobs["report"]["failures"], jobs["report"]["last_success"]) == (1, None)
    assert "object" in jobs["report"]["last_error"]
    assert jobs["embed"]["runs"] == 1 and jobs["embed"]["last_result"]["n"] == 2


def test_a_daily_job_runs_each_slot_once_on_the_clock(tmp_path: Path) -> None:
    now = [NOW]
    job = FakeJob(released=True)
    runner = JobRunner(tmp_path, [Job("report", job, daily_at=SIX)], stop_timeout_s=1, clock=lambda: now[0])
    runner.run_job("report")
    runner.run_job("report")  # the same slot (today 06:00): skipped
    assert job.calls == 1 and load_state(tmp_path).jobs["report"].last_slot == NOW.replace(hour=6)
    now[0] = NOW + timedelta(hours=22)  # 05:00 tomorrow: still today's slot
    runner.run_job("report")
    now[0] = NOW + timedelta(hours=23, minutes=1)  # 06:01 tomorrow: a new slot
    runner.run_job("report")
    assert job.calls == 2 and load_state(tmp_path).jobs["report"].last_slot == NOW.replace(hour=6) + timedelta(days=1)


def test_killed_during_a_daily_job_the_restart_owes_its_slot_once(tmp_path: Path, run) -> None:
    """A kill -9 mid-job leaves the state saved at the job's start: a restart runs the slot, then never again."""
    old, home = tmp_path / "old", tmp_path / "restarted"
    old.mkdir(), home.mkdir()
    first = FakeJob()
    runner = JobRunner(old, [Job("full_crawl", first, daily_at=SIX)], stop_timeout_s=10, clock=lambda: NOW,
                       catch_up_after_s=0)  # fmt: skip
    history(runner, NOW - timedelta(days=30))
    run(runner)
    assert first.started.wait(10)  # the catch-up of today's 06:00 slot runs
    killed = (old / STATE_FILE).read_text()  # the file as kill -9 leaves it now
    (home / STATE_FILE).write_text(killed)
    state = load_state(home)
    assert state.jobs["full_crawl"].runs == 1 and state.jobs["full_crawl"].last_slot is None
    assert state.stopped_at is None and state.pid is not None
    second = FakeJob(released=True)
    restarted = JobRunner(home, [Job("full_crawl", second, daily_at=SIX)], stop_timeout_s=1, clock=lambda: NOW)
    assert "full_crawl-catch-up" in restarted.schedule(NOW)
    restarted.run_job("full_crawl")
    assert second.calls == 1 and load_state(home).jobs["full_crawl"].last_slot == NOW.replace(hour=6)
    again = JobRunner(home, [Job("full_crawl", second, daily_at=SIX)], stop_timeout_s=1, clock=lambda: NOW)
    assert again.schedule(NOW) == ["full_crawl"]  # nothing owed any more


def test_a_new_install_owes_nothing_and_a_missed_yesterday_is_owed_once(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    fresh = JobRunner(tmp_path / "a", [Job("report", FakeJob(), daily_at=SIX)], stop_timeout_s=1)
    history(fresh, NOW - timedelta(minutes=30))
    assert fresh.schedule(NOW) == ["report"]  # installed after today's slot
    behind = JobRunner(tmp_path / "b", [Job("report", FakeJob(), daily_at=SIX)], stop_timeout_s=1,
                       catch_up_after_s=2)  # fmt: skip
    history(behind, NOW - timedelta(days=9), report=NOW.replace(hour=6) - timedelta(days=2))
    assert behind.schedule(NOW) == ["report", "report-catch-up"]
    catch_up = behind.scheduler.get_job("report-catch-up")
    assert catch_up.trigger.run_date == NOW + timedelta(seconds=2)


def test_the_daemon_schedules_its_jobs_from_the_settings(tmp_path: Path) -> None:
    toml = '[daemon]\ncrawl_every_s = 60\nembed_every_s = 5\ncompact_every_s = 600\nfull_crawl_at = "02:30"\n'
    daemon = Daemon(settings_for(tmp_path / "daily", "http://127.0.0.1:9", toml), clock=lambda: NOW)
    jobs = daemon.runner.jobs
    assert {k: (j.every_s, j.first_after_s, j.daily_at) for k, j in jobs.items()} == {
        "crawl": (60, 0, None),
        "embed": (5, 1, None),
        "compact": (600, None, None),
        "full_crawl": (None, None, clock(2, 30)),
        "report": (None, None, clock(6, 0)),
    }
    assert jobs["crawl"].run == daemon.crawl and jobs["report"].run == daemon.report
    every = Daemon(settings_for(tmp_path / "every", "http://127.0.0.1:9", "[daemon]\nreport_every_s = 4\n"))
    assert (every.runner.jobs["report"].every_s, every.runner.jobs["report"].daily_at) == (4, None)
    assert every.runner.clock is local_now


def test_a_job_waiting_for_the_running_one_does_not_start_after_a_stop(tmp_path: Path) -> None:
    running, waiting = FakeJob(), FakeJob(released=True)
    runner = JobRunner(tmp_path, [Job("crawl", running, every_s=60), Job("report", waiting, every_s=60)],
                       stop_timeout_s=1)  # fmt: skip
    threads = [threading.Thread(target=runner.run_job, args=(job_id,)) for job_id in ("crawl", "report")]
    threads[0].start()
    assert running.started.wait(10)
    threads[1].start()  # asks for the lock the crawl holds
    time.sleep(0.2)
    runner.stop()
    running.release.set()
    for thread in threads:
        thread.join(timeout=10)
    assert running.calls == 1 and waiting.calls == 0 and set(load_state(tmp_path).jobs) == {"crawl"}


def test_log_lines_from_the_main_thread_and_a_job_never_merge(capsys: pytest.CaptureFixture[str]) -> None:
    """The daemon logs from two threads (its own and the job's): every line must stay one JSON event."""
    import structlog

    from hubdelta.kernel.log import configure_logging

    configure_logging(json=True)
    log = structlog.get_logger("test")
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=lambda n=n: [log.info("daemon.tick", thread=n, i=i) for i in range(2000)])
                   for n in range(2)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4000 and all(json.loads(line)["event"] == "daemon.tick" for line in lines)
