"""Typer arguments and options defined once and shared by every command."""

from __future__ import annotations

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
