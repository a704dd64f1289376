"""One daemon a home: ``flock`` on ``<home>/daemon.lock``, held for the daemon's whole life.

Two daemons on one home would double the Hub traffic, interleave their log lines and overwrite each other's
``daemon.json``. The index's writer lock cannot prevent it (each job takes and releases that one), so the daemon
holds this one from before it writes its state until it exits. The kernel releases an ``flock`` when its process
dies, however it dies, so a ``kill -9`` leaves nothing stale. The file's content (JSON: pid, started_at, host) is
only information for the error a second daemon gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from hubdelta.index.lock import FileLock, holder_info
from hubdelta.kernel.errors import DaemonRunningError, OutputError

LOCK_FILE = "daemon.lock"


class DaemonLock(FileLock):
    """An exclusive, non-blocking lock on ``<home>/daemon.lock``; a context manager."""

    def __init__(self, home: Path) -> None:
        super().__init__(home / LOCK_FILE, lambda: holder_info("hubdelta daemon"))
        self.home = home

    def acquire(self) -> Self:
        """Take the lock and record who holds it.

        Raises:
            DaemonRunningError: another daemon holds it; names its pid and how to stop it.
            OutputError: the home cannot hold the lock file.
        """
        try:
            h = self.try_acquire()
        except OSError as e:
            raise OutputError(str(self.path), e.strerror or type(e).__name__, option="--home") from None
        if h is not None:
            raise DaemonRunningError(str(self.home), lock_path=str(self.path), pid=h.pid, started_at=h.started_at,
                                     host=h.host)  # fmt: skip
        return self
