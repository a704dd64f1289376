"""``hubdelta retry``: put failed models back in the queue, so that the next ``hubdelta embed`` tries them again."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Annotated

import typer

from hubdelta.cli._options import JsonOpt


def retry_cmd(
    ctx: typer.Context,
    repos: Annotated[
        list[str] | None,
        typer.Argument(metavar="REPO", help="Only these repo ids (default: every failed model).", show_default=False),
    ] = None,
    reason: Annotated[
        str | None,
        typer.Option("--reason", help="Only models whose reason contains this text (any case), e.g. 'HTTP 5'."),
    ] = None,
    skipped: Annotated[
        bool, typer.Option("--skipped", help="Skipped models too (gated ones, once HF_TOKEN may download them).")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be requeued; change nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Put failed models back in the queue (attempts reset); the next hubdelta embed tries them again.

    Example: hubdelta retry --reason "HTTP 5"      or: hubdelta retry owner/name --dry-run
    """
    from hubdelta.embedder.api import retry_models

    command = " ".join(["hubdelta", *sys.argv[1:]])[:200]
    done = retry_models(ctx.obj, repos or [], reason=reason, skipped=skipped, dry_run=dry_run, command=command)
    if as_json:
        typer.echo(json.dumps({"count": len(done.requeued), **asdict(done)}, indent=1))
        return
    verb = "would requeue" if dry_run else "requeued"
    typer.echo(f"{verb} {len(done.requeued)} model{'' if len(done.requeued) == 1 else 's'}")
    for row in done.requeued:
        typer.echo(f"  {row['repo_id']} ({row['status']}: {row['reason'] or 'no reason'})")
    for repo in done.missed:
        typer.echo(f"  {repo}: not requeued (unknown, or not failed: see hubdelta show {repo})")


def register(app: typer.Typer) -> None:
    app.command("retry")(retry_cmd)
