"""The face's promises through the real Typer app: a wrong setting or output place is one line with the fix (never
a traceback, never minutes of retries), a fresh home says what to do first, and ``add`` never silently replaces a
model already in the index."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hubdelta.cli import app
from hubdelta.kernel.errors import ConfigError
from hubdelta.kernel.settings import load_settings
from tests.helpers import one_line_error

runner = CliRunner()


def cli(home: Path, *args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["--home", str(home), *args], env={"HF_ENDPOINT": "http://127.0.0.1:9", **(env or {})})


# ---- settings: one line, at once -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "toml", "needle"),
    [
        ({"HF_ENDPOINT": "not-a-url"}, "", "HF_ENDPOINT: 'not-a-url' is not an http(s) URL"),
        ({"HF_ENDPOINT": "ftp://example.org"}, "", "HF_ENDPOINT"),
        ({"HF_ENDPOINT": "https://"}, "", "HF_ENDPOINT"),
        ({"HF_ENDPOINT": ""}, '[hub]\nendpoint = "localhost:8000"\n', "hub.endpoint"),
        ({}, b"[crawl]\nrequests = 10\n# caf\xe9\n", "not UTF-8"),
        ({}, "[crawl\n", "not valid TOML"),
        ({}, "hub = 5\n", "hub: is int, not a table"),
        ({}, 'crawl = "fast"\n', "crawl: is str, not a table"),
    ],
)
def test_bad_settings_are_one_line_errors_at_once(tmp_path: Path, env: dict[str, str], toml: str | bytes,
                                                  needle: str) -> None:  # fmt: skip
    home = tmp_path / "home"
    home.mkdir()
    if toml:
        path = home / "hubdelta.toml"
        path.write_bytes(toml) if isinstance(toml, bytes) else path.write_text(toml)
    started = time.monotonic()
    line = one_line_error(cli(home, "crawl", env=env))  # crawl: the command that used to retry for minutes
    assert needle in line and time.monotonic() - started < 10


def test_a_home_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "not-a-folder"
    file.write_text("x")
    result = runner.invoke(app, ["track", "org/base", "--no-check"], env={"HUBDELTA_HOME": str(file)})
    line = one_line_error(result)
    assert "HUBDELTA_HOME" in line and "is not a folder" in line
    assert "--home" in one_line_error(runner.invoke(app, ["--home", str(file), "status"]))


def test_a_good_endpoint_is_kept_without_its_trailing_slash(tmp_path: Path) -> None:
    settings = load_settings({"HF_ENDPOINT": "http://127.0.0.1:8765/"}, home=tmp_path)
    assert settings.hf_endpoint == "http://127.0.0.1:8765"
    with pytest.raises(ConfigError, match="HF_ENDPOINT"):
        load_settings({"HF_ENDPOINT": "127.0.0.1:8765"}, home=tmp_path)


# ---- output places ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("out", "needle"), [("/proc/hubdelta-report", "cannot write there"),
                                             ("FILE", "is a file, not a folder")])  # fmt: skip
def test_report_to_a_place_it_cannot_write_is_one_line(tmp_path: Path, out: str, needle: str) -> None:
    if out == "FILE":
        out = str(tmp_path / "a-file")
        Path(out).write_text("x")
    line = one_line_error(cli(tmp_path / "home", "report", "--out", out))
    assert needle in line and out in line
    assert not (tmp_path / "home" / "index").exists()  # refused before any work


@pytest.mark.parametrize("option", ["--save-vector", "--plot"])
def test_task_and_eval_check_their_output_before_the_work(tmp_path: Path, option: str) -> None:
    examples = tmp_path / "examples.jsonl"
    examples.write_text('{"prompt": "1+1=", "completion": "2"}\n')
    args = (["task", str(examples), "--base", "org/base", "--save-vector", "/proc/v.npy"] if option == "--save-vector"
            else ["eval", "--labels", str(examples), "--plot", "/proc/map.png"])  # fmt: skip
    line = one_line_error(cli(tmp_path / "home", *args))
    assert f"{option} /proc" in line and "cannot write there" in line


# ---- a fresh home says what to do first ---------------------------------------------------------------------------


def test_a_fresh_home_says_to_track_first(tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    tracked = cli(home, "tracked")
    assert tracked.exit_code == 0 and "hubdelta track" in tracked.output, tracked.output
    assert json.loads(cli(home, "tracked", "--json").stdout) == {"tracked": []}
    assert "hubdelta track <base>" in one_line_error(cli(home, "status"))


# ---- add never replaces silently ----------------------------------------------------------------------------------


def test_add_refuses_an_id_already_in_the_index_unless_replace(tmp_path: Path) -> None:
    from hubdelta_dev.devhub.badrepos import write_bad_repos

    write_bad_repos(tmp_path / "hub")
    lora, base = tmp_path / "hub" / "hostile" / "good-lora", tmp_path / "hub" / "hostile" / "tiny-base"
    first, second = tmp_path / "run-1" / "checkpoint-500", tmp_path / "run-2" / "checkpoint-500"
    shutil.copytree(lora, first)
    shutil.copytree(lora, second)
    home = tmp_path / "home"
    added = cli(home, "add", str(first), "--base", str(base), "--json")
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout)["repo_id"] == "local/checkpoint-500"
    line = one_line_error(cli(home, "add", str(second), "--base", str(base)))  # same folder name
    assert "local/checkpoint-500 is already in the index" in line and str(first) in line and "--replace" in line
    renamed = cli(home, "add", str(second), "--base", str(base), "--name", "me/run-2", "--json")
    assert renamed.exit_code == 0, renamed.output
    assert "--replace" in one_line_error(cli(home, "add", str(first), "--base", str(base), "--name", "me/run-2"))
    replaced = cli(home, "add", str(second), "--base", str(base), "--replace", "--json")
    assert replaced.exit_code == 0, replaced.output
    shown = json.loads(cli(home, "show", "local/checkpoint-500", "--json").stdout)
    assert str(second) in shown["card_summary"]  # the record now describes the second folder


def test_write_atomically_leaves_the_old_file_or_the_new_one(tmp_path: Path) -> None:
    from hubdelta.cli._output import write_atomically

    out = tmp_path / "v.npy"
    write_atomically(out, lambda f: f.write(b"old"), "--out")

    def fail(f: object) -> None:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_atomically(out, fail, "--out")
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["v.npy"]
