"""``hubdelta daemon``: the long-running service (crawl, embed, report, compaction on a schedule)."""

from __future__ import annotations

import os
import sys

import typer


def daemon_cmd(ctx: typer.Context) -> None:
    """Run crawl, embed, the nightly report and compaction on the \\[daemon] schedule until SIGTERM or Ctrl-C.

    Logs one JSON event per job and per model (with --log-json, or when not on a TTY). State and health:
    <home>/daemon.json, shown by hubdelta status.

    Example: hubdelta --log-json daemon
    """
    from huggingface_hub.utils import disable_progress_bars

    from hubdelta.daemon.service import Daemon

    disable_progress_bars()  # per-file bars of parallel downloads are noise in a service's log
    code = Daemon(ctx.obj).run()
    if code:  # a job overran stop_timeout_s and its thread would hold the exit: leave now, as a kill -9 would
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("daemon")(daemon_cmd)
