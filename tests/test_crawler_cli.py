"""``hubdelta track / untrack / tracked / crawl`` through the real Typer app: output and one-line errors."""

from __future__ import annotations

import json
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
