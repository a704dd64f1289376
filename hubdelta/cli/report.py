"""``hubdelta report``: new models since the last report, clusters and what changed, as md, HTML and maps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hubdelta.cli._options import JsonOpt, command_line
from hubdelta.cli._output import writable_folder


def report_cmd(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Window for 'new': 90m, 24h, 7d (default: since the last report, or 24h).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for the files (default: <home>/reports/<report id>/).", show_default=False),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write report.md, a self-contained report.html and a map per space, and store the report in the index.

    Example: hubdelta report --since 24h --out ./tonight
    """
    from hubdelta.report.window import parse_duration

    window = parse_duration(since) if since is not None else None  # a bad value fails before any work
    if out is not None:
        writable_folder(out)
    from hubdelta.report.api import run_report
    from hubdelta.report.render import headline

    report = run_report(ctx.obj, since=window, out=out, command=command_line())
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=1))
        return
    since_text = report.since.isoformat(timespec="seconds")
    typer.echo(f"report {report.report_id} (new since {since_text}) in {report.out_dir}")
    typer.echo(f"  {headline(report)}")
    for path in report.files:
        typer.echo(f"  {path}")


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
