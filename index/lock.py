"""The single-writer lock: ``flock`` on ``<lock_dir>/index.lock``.

The kernel releases an ``flock`` when its process dies, however it dies, so ``kill -9`` never leaves a stale
lock and nothing has to guess whether a recorded pid is still alive. The file's content (JSON: pid, command,
started_at, host) is only information for the error a second writer gets. The lock lives in a local
directory, so it also guards an index on object storage, for writers on this host.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from hubdelta.kernel.errors import IndexLockedError

LOCK_FILE = "index.lock"


@dataclass(frozen=True)
class LockHolder:
    """What the current holder wrote into the lock file (any field may be missing)."""

    pid: int | None = None
    command: str | None = None
    started_at: str | None = None
    host: str | None = None


def read_holder(path: Path) -> LockHolder:
    """Parse a lock file; an empty or garbled one (a holder between ``flock`` and its write) gives blanks."""
    try:
        data: Any = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return LockHolder()
    if not isinstance(data, dict):
        return LockHolder()
    pid = data.get("pid")
    return LockHolder(
        pid=pid if isinstance(pid, int) else None,
        command=data.get("command"),
        started_at=data.get("started_at"),
        host=data.get("host"),
    )


def holder_info(command: str, **extra: str) -> dict[str, Any]:
    """What a holder writes into its lock file: who it is, for the error the next one gets."""
    return {"pid": os.getpid(), "command": command, "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": socket.gethostname(), **extra}  # fmt: skip


class FileLock:
    """An exclusive, non-blocking, process-lifetime ``flock`` on ``path`` that records who holds it.

    Two ``FileLock`` objects in one process also exclude each other: ``flock`` locks belong to open file
    descriptions, and each acquire opens the file anew. A context manager; subclasses say what a busy lock raises.
    """

    def __init__(self, path: Path, info: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self.info = info
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> LockHolder | None:
        """Take the lock and write ``info()`` into its file: None; or, when another process holds it, what that
        holder wrote (the lock is not taken).

        Raises:
            OSError: the lock file cannot be created or opened.
        """
        if self._fd is not None:
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # No O_TRUNC: until flock succeeds the file still describes the current holder.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return read_holder(self.path)
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(self.info()).encode(), 0)
        except BaseException:  # a lock nobody can name would block every later holder of this file
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        self._fd = fd
        return None

    def release(self) -> None:
        """Give the lock back. The file stays: deleting it would let two holders lock two different inodes."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def acquire(self) -> Self:
        """Take the lock; subclasses raise their own error (with the fix) when another process holds it.

        Raises:
            BlockingIOError: another process holds it.
        """
        holder = self.try_acquire()
        if holder is not None:
            raise BlockingIOError(f"{self.path} is held by pid {holder.pid}")
        return self

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class WriteLock(FileLock):
    """The index's single-writer lock on ``<lock_dir>/index.lock``."""

    def __init__(self, lock_dir: Path, *, command: str, uri: str) -> None:
        super().__init__(Path(lock_dir) / LOCK_FILE, lambda: holder_info(command, uri=uri))
        self.command = command
        self.uri = uri

    def acquire(self) -> Self:
        """Take the lock and record who holds it.

        Raises:
            IndexLockedError: another writer holds it; names its pid, command and start time.
        """
        h = self.try_acquire()
        if h is not None:
            raise IndexLockedError(self.uri, lock_path=str(self.path), pid=h.pid, command=h.command,
                                   started_at=h.started_at, host=h.host)  # fmt: skip
        return self
