"""``hubdelta layout``: recompute the stored map layouts (``hubdelta serve``'s maps) whose vectors changed."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from hubdelta.cli._options import JsonOpt, command_line


def layout_cmd(
    ctx: typer.Context,
    space: Annotated[
        list[str] | None,
        typer.Option("--space", help="Only this space (repeatable; default: every space).", show_default=False),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute even the layouts that are current.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Recompute each space's map layout whose vectors or latest report changed, and store it in the index.

    Embed runs and reports do this themselves; run it after one of them said a layout could not be refreshed.

    Example: hubdelta layout --space smollm2-135m-instruct-0a1b2c3d
    """
    from hubdelta.report.layout import refresh_layouts

    done = refresh_layouts(ctx.obj, space or None, force=force, command=command_line())
    if as_json:
        typer.echo(json.dumps({"computed": done.computed, "unchanged": done.unchanged}, indent=1))
        return
    if not done.computed and not done.unchanged:
        typer.echo("no spaces yet: embed some models first")
    for space_id, n in done.computed.items():
        typer.echo(f"{space_id}: {n} points (recomputed)")
    for space_id, n in done.unchanged.items():
        typer.echo(f"{space_id}: {n} points (current)")


def register(app: typer.Typer) -> None:
    app.command("layout")(layout_cmd)
