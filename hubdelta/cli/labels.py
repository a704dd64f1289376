"""``hubdelta labels``: recompute the suggested labels (tags and "behaves like" from documented neighbours) of
the spaces whose vectors changed; ``show``, ``similar --json``, the report and the web API read them."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from hubdelta.cli._options import JsonOpt, command_line


def labels_cmd(
    ctx: typer.Context,
    space: Annotated[
        list[str] | None,
        typer.Option("--space", help="Only this space (repeatable; default: every space).", show_default=False),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute every label, even current ones.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Suggest tags and a "behaves like" line for every model from its documented neighbours, and store them.

    Incremental: only the models embedded since the last run and those whose neighbours changed are labelled
    again. Embed runs, hubdelta add and reports do this themselves; run it after one said labels could not be
    refreshed, or with --force after changing hubdelta.

    Example: hubdelta labels --space smollm2-135m-instruct-0a1b2c3d
    """
    from hubdelta.report.labels import refresh_labels

    done = refresh_labels(ctx.obj, space or None, force=force, command=command_line())
    if as_json:
        typer.echo(json.dumps({"computed": done.computed, "unchanged": done.unchanged, "whole": done.full}, indent=1))
        return
    if not done.computed and not done.unchanged:
        typer.echo("no spaces yet: embed some models first")
    for space_id, n in done.computed.items():
        how = "every model" if done.full[space_id] else "the changed neighbourhoods"
        typer.echo(f"{space_id}: {n} models labelled ({how})")
    for space_id, n in done.unchanged.items():
        typer.echo(f"{space_id}: {n} models (current)")


def register(app: typer.Typer) -> None:
    app.command("labels")(labels_cmd)
