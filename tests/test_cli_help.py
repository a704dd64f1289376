"""Every command and sub-command of ``hubdelta`` (the devhub group too) has ``--help`` with an example."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from hubdelta.cli import app


def command_paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The path of ``command`` and of every command under it, walking groups (Typer's own click: duck-typed)."""
    paths = [path]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        paths += command_paths(sub, (*path, name))
    return paths


PATHS = command_paths(typer.main.get_command(app))


def test_the_walk_reaches_every_group_and_leaf() -> None:
    assert {("devhub",), ("devhub", "serve"), ("similar",), ("daemon",), ("family",)} <= set(PATHS)
    assert len(PATHS) > 20


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "hubdelta")
def test_help_shows_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    examples = [line.strip(" │") for line in result.output.splitlines() if "Example:" in line]
    assert examples, f"`hubdelta {' '.join(path)} --help` shows no Example: line\n{result.output}"
    assert all("hubdelta" in line for line in examples), examples  # an example is a command line


def _texts(command: Any) -> list[str]:
    """The raw help texts of a command and its options (what rich markup would be applied to)."""
    texts = [command.help or ""]
    texts += [getattr(p, "help", None) or "" for p in command.params]
    return texts


def _command(path: tuple[str, ...]) -> Any:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "hubdelta")
def test_help_shows_every_bracketed_word(path: tuple[str, ...]) -> None:
    """``[crawl]`` and ``[daemon]`` name toml sections: rich markup must not take them for style tags and drop them."""
    bracketed = {m for text in _texts(_command(path)) for m in re.findall(r"\\?\[[a-z#/@][^\[\]]*\]", text)}
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.replace("│", " ").split())
    for word in sorted(bracketed):
        assert word.lstrip("\\") in flat, f"`hubdelta {' '.join(path)} --help` drops {word}\n{result.output}"
