"""The daemon's health, in ``<home>/daemon.json``: what ``hubdelta status`` shows and what a restart resumes from.

Written atomically (a temporary file renamed over the old one) after every job, so a ``kill -9`` leaves the
previous complete state, never half a file.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATE_FILE = "daemon.json"


@dataclass
class JobState:
    """One job's record: when it last ran, succeeded and failed, and the daily slot it last completed."""

    runs: int = 0
    failures: int = 0
    last_start: datetime | None = None
    last_success: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_slot: datetime | None = None
    last_result: dict[str, Any] = field(default_factory=dict)


@dataclass
class DaemonState:
    pid: int | None = None
    host: str = ""
    started_at: datetime | None = None  # this run
    first_started_at: datetime | None = None  # the first run ever: slots before it are not owed
    stopped_at: datetime | None = None  # None while running (or after a kill -9)
    jobs: dict[str, JobState] = field(default_factory=dict)

    def job(self, job_id: str) -> JobState:
        return self.jobs.setdefault(job_id, JobState())

    def running(self) -> bool:
        """Whether the recorded process is alive on this host (a kill -9 leaves stopped_at unset)."""
        if self.pid is None or self.stopped_at is not None or self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, another user's
            return True
        return True


def encode_json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def load_state(home: Path) -> DaemonState:
    """The stored state (a fresh one when there is none or it is unreadable)."""
    path = home / STATE_FILE
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return DaemonState()
    times = ("last_start", "last_success", "last_error_at", "last_slot")
    jobs = {}
    for job_id, j in (raw.get("jobs") or {}).items():
        jobs[job_id] = JobState(**{**j, **{k: _time(j.get(k)) for k in times}})
    return DaemonState(
        pid=raw.get("pid"),
        host=raw.get("host", ""),
        started_at=_time(raw.get("started_at")),
        first_started_at=_time(raw.get("first_started_at")),
        stopped_at=_time(raw.get("stopped_at")),
        jobs=jobs,
    )


class StateFile:
    """The state of a running daemon, saved after each change (changes and saves one at a time, across threads)."""

    def __init__(self, home: Path, state: DaemonState) -> None:
        self.path = home / STATE_FILE
        self.state = state
        self._lock = threading.Lock()

    def update(self, change: Callable[[DaemonState], object]) -> None:
        """Apply ``change`` to the state and save it, while no other thread changes or saves it."""
        with self._lock:
            change(self.state)
            self._write()

    def save(self) -> None:
        with self._lock:
            self._write()

    def _write(self) -> None:
        text = json.dumps(asdict(self.state), indent=1, default=encode_json)
        fd, tmp = tempfile.mkstemp(prefix=".daemon.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def daemon_health(home: Path) -> dict[str, Any] | None:
    """The daemon's pid, uptime and each job's last success and last error, from its state file."""
    state = load_state(home)
    if state.started_at is None:
        return None
    running = state.running()
    uptime = (datetime.now(UTC) - state.started_at).total_seconds() if running else None
    jobs = {
        job_id: {
            "runs": j.runs,
            "failures": j.failures,
            "last_success": j.last_success,
            "last_error": j.last_error,
            "last_error_at": j.last_error_at,
        }
        for job_id, j in sorted(state.jobs.items())
    }
    return {"running": running, "pid": state.pid, "started_at": state.started_at, "stopped_at": state.stopped_at,
            "uptime_s": uptime, "jobs": jobs}  # fmt: skip
