"""``hubdelta track / untrack / tracked / crawl``: which base models to follow, and following them."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.table import Table

from hubdelta.cli._options import JsonOpt, RepoIdArg, command_line
from hubdelta.cli._tables import id_column, print_table

RelationsOpt = Annotated[str, typer.Option("--relations", help="Comma-separated: adapter, finetune, merge, quantized.")]


def track_cmd(
    ctx: typer.Context,
    base: RepoIdArg,
    relations: RelationsOpt = "adapter,finetune,merge,quantized",
    check: Annotated[bool, typer.Option("--check/--no-check", help="Check that the base exists on the Hub.")] = True,
) -> None:
    """Follow a base model's children (by the Hub's base_model tags); quantized ones are recorded, not embedded.

    Example: hubdelta track HuggingFaceTB/SmolLM2-135M-Instruct --relations adapter,finetune,merge
    """
    from hubdelta.crawler.api import parse_relations, track

    tracked = track(ctx.obj, base, parse_relations(relations), check=check, command=command_line())
    typer.echo(f"tracking {tracked.base} ({', '.join(r.value for r in tracked.relations)})")


def untrack_cmd(ctx: typer.Context, base: RepoIdArg) -> None:
    """Stop following a base model; what was recorded stays in the index.

    Example: hubdelta untrack HuggingFaceTB/SmolLM2-135M-Instruct
    """
    from hubdelta.crawler.api import untrack

    untrack(ctx.obj, base, command=command_line())
    typer.echo(f"no longer tracking {base}")


def tracked_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the tracked base models and their crawl state.

    Example: hubdelta tracked --json
    """
    from hubdelta.crawler.api import list_tracked
    from hubdelta.kernel.errors import IndexNotFoundError

    try:
        bases = list_tracked(ctx.obj)
    except IndexNotFoundError:  # a fresh home: nothing tracked, which is what the empty list below says
        bases = []
    rows = [
        {
            "base": t.base,
            "relations": [r.value for r in t.relations],
            "last_crawl": _iso(t.last_crawl),
            "last_full_sync": _iso(t.last_full_sync),
            "cursors": {
                r.value: {"created_at": _iso(c.created_at), "repo_id": c.repo_id} for r, c in t.cursors.items()
            },
        }
        for t in bases
    ]
    if as_json:
        typer.echo(json.dumps({"tracked": rows}, indent=1))
        return
    if not rows:
        typer.echo("no base model is tracked yet: start with hubdelta track <base>, then hubdelta crawl")
        return
    table = Table()
    id_column(table, "base", [t.base for t in bases])
    for header in ("relations", "last crawl", "last full sync"):
        table.add_column(header)
    for t in bases:
        relations = ",".join(r.value for r in t.relations)
        table.add_row(t.base, relations, _iso(t.last_crawl) or "never", _iso(t.last_full_sync) or "never")
    print_table(table)


def crawl_cmd(
    ctx: typer.Context,
    full: Annotated[bool, typer.Option("--full", help="Reconcile: find updated and removed repos too.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Record new (and with --full, updated and removed) children of every tracked base.

    Incremental by default: each listing stops at the first repo already known at the same sha. A full pass
    runs by itself every \\[crawl] full_every_days. Requests stay within \\[crawl] requests per window_s.

    Example: hubdelta crawl --json
    """
    from hubdelta.crawler.api import run_crawl

    if as_json or not sys.stderr.isatty():  # a status line only for a person watching, never in a pipe or a log
        summary = run_crawl(ctx.obj, full=full, command=command_line())
    else:
        summary = _with_status_line(ctx.obj, full)
    totals = {k: summary.total(k) for k in ("new", "updated", "removed", "skipped")}
    doc: dict[str, Any] = {**totals, "requests": summary.requests, "retries": summary.retries,
                           "pages": summary.pages, "seconds": summary.seconds, "errors": summary.errors,
                           "bases": [asdict(b) for b in summary.bases]}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(doc, indent=1))
    else:
        table = Table()
        id_column(table, "base", [b.base for b in summary.bases])
        for header in ("pass", "new", "updated", "removed", "skipped", "pages"):
            table.add_column(header)
        for b in summary.bases:
            kind = "full" if b.full else "incremental"
            table.add_row(
                b.base, kind, *(str(getattr(b, k)) for k in ("new", "updated", "removed", "skipped", "pages"))
            )
        print_table(table)
        typer.echo(f"{summary.requests} requests ({summary.retries} retried) in {summary.seconds:.1f} s")
        for error in summary.errors:
            typer.echo(f"error: {error}", err=True)
    if summary.errors:
        raise typer.Exit(1)


def _with_status_line(settings: Any, full: bool) -> Any:
    """The crawl, with one line on stderr saying which base and relation it lists and what it found so far."""
    from rich.console import Console
    from rich.markup import escape

    from hubdelta.crawler.api import run_crawl

    with Console(stderr=True).status("crawling: reading the tracked bases") as status:

        def show(base: str, relation: Any, counts: Any) -> None:
            status.update(f"crawling {escape(base)} ({relation.value}): {counts.new} new, {counts.updated} updated, "
                          f"{counts.skipped} skipped, {counts.pages} pages")  # fmt: skip

        return run_crawl(settings, full=full, command=command_line(), progress=show)


def _iso(t: Any) -> str | None:
    return t.isoformat() if t is not None else None


def register(app: typer.Typer) -> None:
    app.command("track")(track_cmd)
    app.command("untrack")(untrack_cmd)
    app.command("tracked")(tracked_cmd)
    app.command("crawl")(crawl_cmd)
