"""One daemon a home: ``flock`` on ``<home>/daemon.lock``, held for the daemon's whole life.

Two daemons on one home would double the Hub traffic, interleave their log lines and overwrite each other's
``daemon.json``. The index's writer lock cannot prevent it (each job takes and releases that one), so the daemon
holds this one from before it writes its state until it exits. The kernel releases an ``flock`` when its process
dies, however it dies, so a ``kill -9`` leaves nothing stale. The file's content (JSON: pid, started_at, host) is
only information for the error a second daemon gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from hubdelta.index.lock import read_holder
from hubdelta.kernel.errors import DaemonRunningError, OutputError

LOCK_FILE = "daemon.lock"


class DaemonLock:
    """An exclusive, non-blocking lock on ``<home>/daemon.lock``; a context manager."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> DaemonLock:
        """Take the lock and record who holds it.

        Raises:
            DaemonRunningError: another daemon holds it; names its pid and how to stop it.
            OutputError: the home cannot hold the lock file.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # No O_TRUNC: until flock succeeds the file still describes the running daemon.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(str(self.path), e.strerror or type(e).__name__, option="--home") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = read_holder(self.path)
            raise DaemonRunningError(str(self.home), lock_path=str(self.path), pid=h.pid, started_at=h.started_at,
                                     host=h.host) from None  # fmt: skip
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "command": "hubdelta daemon", "host": socket.gethostname(),
                "started_at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock back; the file stays (deleting it would let two daemons lock two different inodes)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> DaemonLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
