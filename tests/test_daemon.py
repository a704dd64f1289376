"""``hubdelta daemon`` as a real process against devhub, on a schedule of seconds: it discovers, embeds and reports;
SIGTERM stops it cleanly; ``kill -9`` mid-embedding and a restart lose and duplicate nothing. (Stopping during each
kind of job, overrunning the stop timeout, daily slots and catch-up: in-process, test_daemon_runner.py.)"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from pathlib import Path

import pytest

from hubdelta.crawler.api import track
from hubdelta.daemon.slots import latest_slot, missed_slot, parse_hhmm
from hubdelta.daemon.state import load_state
from hubdelta.index.door import open_writer
from hubdelta.index.records import ModelStatus
from hubdelta.kernel.errors import ConfigError
from hubdelta_dev.devhub.badrepos import BASE_ID, write_bad_repos
from hubdelta_dev.devhub.server import DevhubServer
from tests.helpers import (
    Processes,
    drained,
    settings_for,
    start_daemon,
    statuses,
    stop_daemon,
    vectors,
    wait_for,
)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "last_done", "started", "owed"),
    [
        (at(26, 7), None, at(1, 0), at(26, 6)),  # never done, installed long ago: today's 06:00 is owed
        (at(26, 7), at(26, 6), at(1, 0), None),  # done
        (at(26, 5), at(25, 6), at(1, 0), None),  # before today's slot: yesterday's was done
        (at(26, 5), at(24, 6), at(1, 0), at(25, 6)),  # yesterday's was missed: owed once, not two
        (at(26, 7), None, at(26, 6, 30), None),  # installed after today's slot: nothing owed yet
    ],
)
def test_missed_slot(
    now: datetime, last_done: datetime | None, started: datetime | None, owed: datetime | None
) -> None:
    assert missed_slot(now, clock(6, 0), last_done, started) == owed


def test_latest_slot_and_times_of_day() -> None:
    assert latest_slot(at(26, 6), clock(6, 0)) == at(26, 6)  # the slot itself counts as reached
    assert latest_slot(at(26, 5, 59), clock(6, 0)) == at(25, 6)
    assert parse_hhmm("6:05", "x") == clock(6, 5)
    for bad in ("25:00", "6pm", "06:60", ""):
        with pytest.raises(ConfigError, match="time of day"):
            parse_hhmm(bad, "daemon.report_at")


# ---- the process -------------------------------------------------------------------------------------------------

FAST = """
[daemon]
crawl_every_s = 2
embed_every_s = 1
embed_limit = 4
report_every_s = 4
compact_every_s = 3
stop_timeout_s = 60

[embed]
batch = 2
"""


@pytest.fixture
def corpus(tmp_path: Path) -> Iterator[tuple[DevhubServer, dict, Path]]:
    expected = {r.repo_id: r for r in write_bad_repos(tmp_path / "hub")}
    with DevhubServer(tmp_path / "hub") as hub:
        home = tmp_path / "home"
        track(settings_for(home, hub.url, FAST), BASE_ID)
        yield hub, expected, home


def test_the_daemon_discovers_embeds_reports_and_stops_on_sigterm(corpus, processes: Processes) -> None:
    hub, expected, home = corpus
    proc = start_daemon(processes, home, hub.url)
    try:
        wait_for("every model embedded or failed", lambda: drained(home, hub.url), proc=proc)
        wait_for("a report after the embedding", lambda: _reported_after_embed(home), proc=proc)
    finally:
        started = time.monotonic()
        err = stop_daemon(proc)
    assert proc.returncode == 0, err[-2000:]
    assert time.monotonic() - started < 60
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "daemon.started" in names and names[-1] == "daemon.stopped" and events[-1]["clean"] is True
    per_model = {e["repo"] for e in events if e["event"] == "embed.model"}
    plan = {r for r, b in expected.items() if b.outcome == "plan"}
    assert plan <= per_model  # one structured event per model embedded (and per failure)
    got = statuses(home, hub.url)
    assert {r for r in plan if got[r] == "embedded"} == plan
    state = load_state(home)
    assert state.stopped_at is not None and not state.running()
    for job in ("crawl", "embed", "report", "compact"):
        assert state.jobs[job].last_success is not None, (job, state.jobs[job])
    assert (home / "reports").is_dir() and any((home / "reports").glob("*/report.html"))
    # The lock is free: a writer opens at once.
    with open_writer(settings_for(home, hub.url), "test"):
        pass


def _reported_after_embed(home: Path) -> bool:
    state = load_state(home)
    report, embed = state.jobs.get("report"), state.jobs.get("embed")
    return bool(report and embed and report.last_success and embed.last_success
                and report.last_success > embed.last_success)  # fmt: skip


def test_kill_9_during_embedding_then_restart_embeds_each_model_once(corpus, processes: Processes) -> None:
    hub, expected, home = corpus
    proc = start_daemon(processes, home, hub.url)
    try:
        wait_for("the first models embedded", lambda: len(vectors_or_empty(home, hub.url)) >= 1, proc=proc)
    finally:
        stop_daemon(proc, signal.SIGKILL)
    left = statuses(home, hub.url)
    assert any(s in ("queued", "embedding") for s in left.values()), left  # killed with work left
    proc = start_daemon(processes, home, hub.url)
    try:
        wait_for("every model embedded or failed after the restart", lambda: drained(home, hub.url), proc=proc)
    finally:
        stop_daemon(proc)
    assert proc.returncode == 0
    plan = {r for r, b in expected.items() if b.outcome == "plan"}
    counts = vectors(home, hub.url)
    assert {r: counts.get(r, 0) for r in plan} == dict.fromkeys(plan, 1)  # each exactly once
    assert all(statuses(home, hub.url)[r] == ModelStatus.EMBEDDED.value for r in plan)


def vectors_or_empty(home: Path, url: str) -> dict[str, int]:
    try:
        return vectors(home, url)
    except Exception:
        return {}


def test_status_shows_the_daemon_and_its_jobs(corpus) -> None:
    from typer.testing import CliRunner

    from hubdelta.cli import app
    from hubdelta.daemon.state import DaemonState, JobState, StateFile

    hub, _, home = corpus
    now = datetime.now(UTC)
    jobs = {
        "crawl": JobState(runs=5, last_success=now),
        "embed": JobState(runs=2, failures=1, last_error="index locked", last_error_at=now),
    }
    state = DaemonState(pid=os.getpid(), host=os.uname().nodename, started_at=now - timedelta(hours=2),
                        first_started_at=now - timedelta(days=3), jobs=jobs)  # fmt: skip
    StateFile(home, state).save()
    result = CliRunner().invoke(app, ["--home", str(home), "status", "--json"], env={"HF_ENDPOINT": hub.url})
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)["daemon"]
    assert d["running"] is True and d["pid"] == os.getpid() and 7000 < d["uptime_s"] < 7300
    assert d["jobs"]["embed"]["last_error"] == "index locked" and d["jobs"]["crawl"]["runs"] == 5
    text = CliRunner().invoke(app, ["--home", str(home), "status"], env={"HF_ENDPOINT": hub.url})
    assert "daemon     running" in text.output and "last error" in text.output
