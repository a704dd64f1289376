"""The single-writer lock against a real second process, and its release by SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from hubdelta.index.lock import LOCK_FILE, WriteLock, read_holder
from hubdelta.index.store import Index
from hubdelta.kernel.errors import IndexLockedError
from tests.helpers import Processes, expect_line, record, spawn


def test_second_writer_is_refused_while_a_process_holds_the_lock(tmp_path: Path, processes: Processes) -> None:
    uri = str(tmp_path / "index")
    with Index.open(uri, lock_dir=tmp_path, writer="setup") as index:
        index.models.put([record(1)])
    holder = spawn(processes, "hold", uri, str(tmp_path), "hubdelta crawl --full")
    try:
        expect_line(holder, "locked")
        with pytest.raises(IndexLockedError) as e:
            Index.open(uri, lock_dir=tmp_path, writer="hubdelta crawl")
        err = e.value
        line = err.one_line()
        assert f"pid {holder.pid} (hubdelta crawl --full)" in line and uri in line
        assert "fix: wait for it to finish or stop it" in line and f"kill {holder.pid}" in line
        assert (err.pid, err.command) == (holder.pid, "hubdelta crawl --full")
        assert err.started_at and err.started_at.startswith(str(time.gmtime().tm_year))

        started = time.monotonic()
        reader = Index.open(uri)  # readers take no lock and do not wait
        assert list(reader.models.get()) == [record(1).repo_id]
        assert time.monotonic() - started < 5

        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        with Index.open(uri, lock_dir=tmp_path, writer="after the kill") as index:  # free at once
            assert index.models.count() == 1
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_lock_excludes_a_second_writer_in_the_same_process(tmp_path: Path) -> None:
    uri = str(tmp_path / "index")
    first = Index.open(uri, lock_dir=tmp_path, writer="first")
    with pytest.raises(IndexLockedError) as e:
        Index.open(uri, lock_dir=tmp_path, writer="second")
    assert e.value.pid == os.getpid() and e.value.command == "first"
    first.close()
    Index.open(uri, lock_dir=tmp_path, writer="second").close()


def test_lock_file_records_the_holder_and_is_cleared_on_release(tmp_path: Path) -> None:
    lock = WriteLock(tmp_path / "deep" / "dir", command="hubdelta crawl", uri="mem://x")
    with lock:
        data = json.loads(lock.path.read_text())
        assert data["pid"] == os.getpid() and data["command"] == "hubdelta crawl" and data["host"]
        assert read_holder(lock.path).command == "hubdelta crawl"
    assert lock.path.name == LOCK_FILE and lock.path.exists()  # kept: deleting it would race
    assert lock.path.read_text() == ""
    assert read_holder(lock.path).pid is None


def test_a_holder_that_has_not_written_yet_still_gives_a_clear_error(tmp_path: Path) -> None:
    """Between another writer's flock and its write, the file is empty: the error says so without a pid."""
    import fcntl

    path = tmp_path / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(IndexLockedError) as e:
            WriteLock(tmp_path, command="w", uri="/x").acquire()
        assert e.value.pid is None
        assert "another process" in e.value.one_line() and str(path) in e.value.one_line()
    finally:
        os.close(fd)


def test_a_failed_open_releases_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hubdelta.index import migrations

    def boom(db: object, uri: str) -> list[str]:
        raise RuntimeError("migration failed")

    monkeypatch.setattr(migrations, "migrate", boom)
    with pytest.raises(RuntimeError):
        Index.open(str(tmp_path / "index"), lock_dir=tmp_path, writer="w")
    WriteLock(tmp_path, command="next", uri="/x").acquire().release()
