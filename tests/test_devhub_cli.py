"""``hubdelta devhub serve`` and ``synth`` through the real Typer app."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hubdelta.cli import app
from tests.helpers import one_line_error

runner = CliRunner()


def test_serve_on_a_missing_root_is_a_one_line_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["devhub", "serve", "--root", str(tmp_path / "nope"), "--port", "0"])
    assert "does not exist" in one_line_error(result)


def test_serve_on_a_malformed_catalog_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "catalog.jsonl").write_text('{"id": "a/b"}\n{"id": 3}\n')
    result = runner.invoke(app, ["devhub", "serve", "--root", str(tmp_path), "--port", "0"])
    assert "catalog.jsonl:2" in one_line_error(result)


def test_serve_on_a_busy_port_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = runner.invoke(app, ["devhub", "serve", "--root", str(tmp_path), "--port", str(port)])
    assert f"cannot listen on 127.0.0.1:{port}" in one_line_error(result)


def test_serve_with_bad_fault_flags_is_a_one_line_error(tmp_path: Path) -> None:
    args = [
        "devhub",
        "serve",
        "--root",
        str(tmp_path),
        "--port",
        "0",
        "--error-rate",
        "0.7",
        "--hang-rate",
        "0.7",
    ]
    assert "sum to" in one_line_error(runner.invoke(app, args))


def test_synth_writes_a_deterministic_catalog(tmp_path: Path) -> None:
    args = ["devhub", "synth", "--root", str(tmp_path / "a"), "--repos", "500", "--bases", "2", "--seed", "4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "500 repos + 2 bases" in result.output
    lines = (tmp_path / "a" / "catalog.jsonl").read_text().splitlines()
    assert len(lines) == 502 and json.loads(lines[0])["id"] == "synth-base/base-0"
    args[3] = str(tmp_path / "b")
    assert runner.invoke(app, args).exit_code == 0
    assert (tmp_path / "b" / "catalog.jsonl").read_text() == "\n".join(lines) + "\n"


@pytest.mark.parametrize("command", ["serve", "synth"])
def test_help_shows_an_example(command: str) -> None:
    result = runner.invoke(app, ["devhub", command, "--help"])
    assert result.exit_code == 0 and f"hubdelta devhub {command} --root" in result.output


def test_build_pool_with_an_unknown_repo_is_a_one_line_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["devhub", "build-pool", "--out", str(tmp_path), "--only", "nope/x"])
    assert "nope/x" in one_line_error(result)
    assert not (tmp_path / "hub").exists()  # refused before any work


def test_a_malformed_config_file_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "hubdelta.toml").write_text("[hub\nendpoint = 3")
    result = runner.invoke(app, ["--home", str(tmp_path), "devhub", "synth", "--root", str(tmp_path / "r")])
    assert "hubdelta.toml" in one_line_error(result)
