"""The ``hubdelta`` command: one Typer app, one module per command group."""

from __future__ import annotations

import gc
import os
import sys
from typing import Annotated

import typer

from hubdelta.cli import crawl as crawl_commands
from hubdelta.cli import daemon as daemon_commands
from hubdelta.cli import embed as embed_commands
from hubdelta.cli import evaluate as evaluate_commands
from hubdelta.cli import family as family_commands
from hubdelta.cli import labels as labels_commands
from hubdelta.cli import layout as layout_commands
from hubdelta.cli import merge as merge_commands
from hubdelta.cli import query as query_commands
from hubdelta.cli import report as report_commands
from hubdelta.cli import retry as retry_commands
from hubdelta.cli import serve as serve_commands
from hubdelta.cli import task as task_commands
from hubdelta.cli._errors import HubdeltaGroup
from hubdelta.cli._options import ConfigOpt, HomeOpt, optional_values
from hubdelta.cli.devhub import devhub_app
from hubdelta.kernel.log import configure_logging
from hubdelta.kernel.settings import load_settings
from hubdelta.kernel.version import hubdelta_version

app = typer.Typer(
    name="hubdelta",
    cls=HubdeltaGroup,
    help="Find Hugging Face Hub finetunes that behave alike.\n\nExample: hubdelta devhub serve --root pool/hub",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(devhub_app, name="devhub")
crawl_commands.register(app)
daemon_commands.register(app)
embed_commands.register(app)
evaluate_commands.register(app)
family_commands.register(app)
labels_commands.register(app)
layout_commands.register(app)
merge_commands.register(app)
query_commands.register(app)
report_commands.register(app)
retry_commands.register(app)
serve_commands.register(app)
task_commands.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hubdelta {hubdelta_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    home: HomeOpt = None,
    config: ConfigOpt = None,
    log_json: Annotated[
        bool | None, typer.Option("--log-json/--log-console", help="Log format (default: JSON unless a TTY).")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Read the settings once and configure logging; every command finds them in ``ctx.obj``."""
    settings = load_settings(home=home, config_file=config, log_json=log_json)
    configure_logging(json=settings.log_json if log_json is not None else None, level=settings.log_level)
    ctx.obj = settings


def main() -> None:
    """Console-script entry point.

    A read-only query (``similar``, ``show``, ``status``) that succeeded ends with ``os._exit`` once its output is
    flushed: tearing down the interpreter after LanceDB's runtime has started costs ~0.2 s, a third of what a
    query may take, and such a command has nothing left to write or release.

    Every other command exits normally (atexit handlers run; reference counting frees and finalizes as usual), but
    with the heap frozen (``gc.freeze``): the interpreter's last collections would walk every object torch and
    transformers made, ~0.9 s at the end of each ``hubdelta embed`` here, for the few reference cycles a finished
    command leaves, which the process's end reclaims anyway. Nothing here writes through a cycle's finalizer.
    """
    sys.argv = optional_values(sys.argv)
    try:
        app()
    except SystemExit as e:
        if query_commands.finished_read_only and e.code in (0, None):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        gc.freeze()
        raise
