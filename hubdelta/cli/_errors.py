"""The one place that turns errors into a one-line message and an exit code."""

from __future__ import annotations

from typing import Any

import typer
import typer.core

from hubdelta.kernel.errors import HubdeltaError


class HubdeltaGroup(typer.core.TyperGroup):
    """Root command group: a :class:`HubdeltaError` anywhere below becomes ``error: ... (fix: ...)``."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except HubdeltaError as e:
            typer.echo(f"error: {e.one_line()}", err=True)
            raise typer.Exit(e.exit_code) from None
