"""Typer arguments and options defined once and shared by every command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="State directory (default: $HUBDELTA_HOME or ~/.hubdelta).", show_default=False),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="A hubdelta.toml (default: <home>/hubdelta.toml if present).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")]
RootOpt = Annotated[
    Path,
    typer.Option("--root", help="devhub root: <root>/<org>/<name>/ folders and an optional catalog.jsonl."),
]
HostOpt = Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")]
PortOpt = Annotated[int, typer.Option("--port", help="Port to bind (0 picks a free one and prints it).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed; same seed, same output.")]
RepoIdArg = Annotated[str, typer.Argument(help="A Hub repo id, owner/name.", show_default=False)]
KOpt = Annotated[int, typer.Option("-k", "--k", min=1, help="How many neighbours.")]
WhereOpt = Annotated[
    str | None,
    typer.Option("--where", help="SQL over model metadata, e.g. \"license = 'mit' AND downloads > 100\"."),
]
RelationOpt = Annotated[
    str | None, typer.Option("--relation", help="Only adapter, finetune, merge or quantized models.")
]


def optional_values(argv: list[str], options: tuple[str, ...] = ("--ray",)) -> list[str]:
    """``--ray`` may come without its value (Typer options always take one): a bare one becomes ``--ray=``."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg in options and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out[i] = f"{arg}="
    return out


def command_line() -> str:
    """This process's command line as the writer lock records it (``hubdelta crawl --full``), at most 200 chars."""
    return " ".join(["hubdelta", *sys.argv[1:]])[:200]
