"""``hubdelta track / untrack / tracked / crawl`` through the real Typer app: output and one-line errors."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hubdelta.cli import app
from hubdelta_dev.devhub.server import DevhubServer
from tests.helpers import BASE as TINY_BASE
from tests.helpers import Processes, TinyRoot, one_line_error

runner = CliRunner()
BASE = "org/base"


def cli(home: Path, url: str, *args: str):
    return runner.invoke(app, ["--home", str(home), *args], env={"HF_ENDPOINT": url})


def test_track_crawl_tracked_untrack(hub: DevhubServer, tiny: TinyRoot, tmp_path: Path) -> None:
    assert cli(tmp_path, hub.url, "track", TINY_BASE, "--relations", "adapter,merge").exit_code == 0
    result = cli(tmp_path, hub.url, "crawl", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["new"] == len(tiny.adapters | tiny.merges) and doc["errors"] == []
    assert doc["requests"] >= 2 and doc["bases"][0]["full"] is True
    tracked = json.loads(cli(tmp_path, hub.url, "tracked", "--json").stdout)["tracked"]
    assert [t["base"] for t in tracked] == [TINY_BASE] and tracked[0]["relations"] == ["adapter", "merge"]
    assert tracked[0]["last_full_sync"] is not None and set(tracked[0]["cursors"]) <= {"adapter", "merge"}
    table = cli(tmp_path, hub.url, "crawl")
    assert table.exit_code == 0 and "incremental" in table.output and "requests" in table.output
    assert cli(tmp_path, hub.url, "untrack", TINY_BASE).exit_code == 0
    assert "no base model is tracked" in cli(tmp_path, hub.url, "tracked").output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["track", "not-a-repo-id"], "not a Hub repo id"),
        (["track", "org/missing"], "not found"),
        (["track", BASE, "--relations", "adapter,bogus"], "bogus"),
        (["untrack", "org/never"], "is not tracked"),
        (["crawl"], "no base model is tracked"),
    ],
)
def test_errors_are_one_line(hub: DevhubServer, tmp_path: Path, args: list[str], needle: str) -> None:
    assert needle in one_line_error(cli(tmp_path, hub.url, *args))


def test_track_with_the_hub_down_says_how_to_go_on(tmp_path: Path) -> None:
    line = one_line_error(cli(tmp_path, "http://127.0.0.1:9", "track", BASE))
    assert "--no-check" in line
    assert cli(tmp_path, "http://127.0.0.1:9", "track", BASE, "--no-check").exit_code == 0


def test_a_second_writer_gets_the_holder_in_one_line(hub: DevhubServer, tmp_path: Path, processes: Processes) -> None:
    assert cli(tmp_path, hub.url, "track", TINY_BASE).exit_code == 0
    holder = processes.popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom hubdelta.index.store import Index\n"
         f"i = Index.open({str(tmp_path / 'index')!r}, lock_dir=Path({str(tmp_path)!r}), writer='holder crawl')\n"
         "print('ready', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        line = one_line_error(cli(tmp_path, hub.url, "crawl"))
        assert str(holder.pid) in line and "holder crawl" in line
        assert cli(tmp_path, hub.url, "tracked").exit_code == 0  # readers never block
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert cli(tmp_path, hub.url, "crawl").exit_code == 0


def _read_terminal(master: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed its side
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_a_terminal_sees_the_crawl_progress_and_a_pipe_or_json_does_not(
    hub: DevhubServer, tiny: TinyRoot, tmp_path: Path, processes: Processes
) -> None:
    assert cli(tmp_path, hub.url, "track", TINY_BASE, "--relations", "adapter,merge").exit_code == 0
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HUBDELTA_HOME": str(tmp_path), "TERM": "xterm", "COLUMNS": "200"}
    command = [sys.executable, "-m", "hubdelta", "--log-json", "crawl", "--full"]
    master, terminal = pty.openpty()
    proc = processes.popen(command, env=env, stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    seen = _read_terminal(master)
    assert proc.wait(timeout=120) == 0 and proc.stdout is not None
    table = proc.stdout.read().decode()
    status = re.compile(r"crawling " + re.escape(TINY_BASE) + r" \((adapter|merge)\): \d+ new, \d+ updated")
    assert status.search(seen), seen
    assert TINY_BASE in table and "crawling" not in table  # the status line is on stderr only
    for extra in ([], ["--json"]):
        piped = processes.run([*command, *extra], env=env, capture_output=True, text=True)
        assert piped.returncode == 0 and "crawling" not in piped.stderr + piped.stdout, piped.stderr
