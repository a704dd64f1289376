"""One daemon a home: a second ``hubdelta daemon`` is refused in one line naming the first one's pid, before it
writes anything; the lock dies with its process (``kill -9`` leaves nothing stale)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from hubdelta.daemon.lock import DaemonLock
from hubdelta.daemon.state import load_state
from hubdelta.kernel.errors import DaemonRunningError
from tests.helpers import Processes, start_daemon, stop_daemon, wait_for

# Nothing tracked and nothing queued: the first crawl fails at once and the first embed finds no work; the rest
# is an hour away. What is left is a daemon that holds its home.
IDLE = """
[daemon]
crawl_every_s = 3600
embed_every_s = 3600
compact_every_s = 3600
stop_timeout_s = 30
"""


def test_a_second_lock_on_one_home_names_the_holder_and_the_fix(tmp_path: Path) -> None:
    with DaemonLock(tmp_path):
        with pytest.raises(DaemonRunningError) as e:
            DaemonLock(tmp_path).acquire()
        assert e.value.pid == os.getpid()
        assert f"pid {os.getpid()}" in e.value.one_line() and f"kill {os.getpid()}" in e.value.one_line()
    with DaemonLock(tmp_path):  # released on exit: taken again at once
        pass


def test_a_second_daemon_is_refused_and_a_killed_one_leaves_no_stale_lock(tmp_path: Path, processes: Processes) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "hubdelta.toml").write_text(IDLE)
    first = start_daemon(processes, home, "http://127.0.0.1:9")
    try:
        wait_for("the first daemon serving", lambda: load_state(home).pid == first.pid, timeout=60, proc=first)
        env = {**os.environ, "HUBDELTA_HOME": str(home), "HF_ENDPOINT": "http://127.0.0.1:9"}
        # A process with a timeout: without the lock, a second daemon would serve (and never return) here.
        again = processes.run([sys.executable, "-m", "hubdelta", "daemon"], env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        lines = again.stderr.strip().splitlines()
        assert again.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), again.stderr
        line = lines[0]
        assert "a daemon already runs" in line and f"pid {first.pid}" in line and f"kill {first.pid}" in line
        assert load_state(home).pid == first.pid and first.poll() is None  # its health file is untouched
    finally:
        stop_daemon(first, signal.SIGKILL)
    second = start_daemon(processes, home, "http://127.0.0.1:9")
    try:
        wait_for("a new daemon after kill -9", lambda: load_state(home).pid == second.pid, timeout=60, proc=second)
    finally:
        log = stop_daemon(second)
    assert second.returncode == 0, log[-2000:]
