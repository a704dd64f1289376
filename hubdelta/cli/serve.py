"""``hubdelta serve``: the index on the web (pages, map, JSON API), read-only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

HOST_HELP = "Address to bind (default: \\[serve] host, 127.0.0.1); any other needs a token."
PORT_HELP = "Port (default: \\[serve] port, 8000)."
TOKEN_HELP = "A file holding the access token (default: \\[serve] token_file): required off loopback."


def serve_cmd(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option("--host", help=HOST_HELP, show_default=False)] = None,
    port: Annotated[int | None, typer.Option("--port", help=PORT_HELP, show_default=False)] = None,
    token_file: Annotated[Path | None, typer.Option("--token-file", help=TOKEN_HELP, show_default=False)] = None,
) -> None:
    """Serve the index in a browser: search, model pages, a map of every space, the reports; and /api (JSON).

    Read-only and lock-free: runs beside the daemon and sees its new vectors and reports without a restart.
    Any host but loopback requires a token (Authorization: Bearer, or the /login form).

    Example: hubdelta serve --port 8000
    """
    from hubdelta.web.serve import binding, run

    b = binding(ctx.obj, host, port, token_file)
    typer.echo(f"serving {b.url} (API: {b.url}/api/docs; Ctrl-C stops)")
    run(ctx.obj, b)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
