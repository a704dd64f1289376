"""``hubdelta embed`` and ``hubdelta add``: vectors for queued models and for local model folders."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from hubdelta.cli._options import JsonOpt


def _command() -> str:
    return " ".join(["hubdelta", *sys.argv[1:]])[:200]


def embed_cmd(
    ctx: typer.Context,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Embed at most N models.")] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu or cuda (default: [embed] device).", show_default=False)
    ] = None,
    batch: Annotated[
        int | None, typer.Option("--batch", min=1, help="Adapters per batched forward (default: [embed] batch).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compute Delta Activations for queued models; refused or broken models end as failed with a reason.

    Example: hubdelta embed --limit 100 --batch 8
    """
    from hubdelta.embedder.api import run_embed
    from hubdelta.embedder.runtime import keep_freed_memory

    keep_freed_memory()
    if as_json or not sys.stderr.isatty():
        summary = run_embed(ctx.obj, limit=limit, device=device, batch=batch, command=_command())
    else:
        summary = _with_progress(ctx, limit, device, batch)
    doc: dict[str, Any] = asdict(summary)
    doc["failures"] = [{"repo_id": r, "reason": why} for r, why in summary.failures]
    if as_json:
        typer.echo(json.dumps(doc, indent=1))
        return
    typer.echo(
        f"embedded {summary.embedded}, reused {summary.reused}, failed {summary.failed}, skipped {summary.skipped}, "
        f"requeued {summary.requeued} in {summary.seconds:.1f} s (spaces: {', '.join(summary.spaces) or 'none'})"
    )
    for repo, why in summary.failures:
        typer.echo(f"  failed {repo}: {why}")


def _with_progress(ctx: typer.Context, limit: int | None, device: str | None, batch: int | None) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hubdelta.embedder.api import run_embed

    columns = (
        TextColumn("embedding"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("", total=limit)

        def advance(outcome: str, record: Any) -> None:
            bar.update(task, advance=1, description=f"{outcome}: {record.repo_id}")

        return run_embed(ctx.obj, limit=limit, device=device, batch=batch, progress=advance, command=_command())


def add_cmd(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A local model folder: a LoRA adapter or a full checkpoint.")],
    base: Annotated[str, typer.Option("--base", help="Its base: a repo id on the Hub, or a local checkpoint folder.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Its id in the index (default: local/<folder name>).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Embed a local model folder and add it to the index (no Hub needed with a local --base).

    Example: hubdelta add ./my-lora --base HuggingFaceTB/SmolLM2-135M-Instruct --name me/my-lora
    """
    from hubdelta.embedder.api import add_local
    from hubdelta.embedder.runtime import keep_freed_memory

    keep_freed_memory()

    added = add_local(ctx.obj, path, base, name=name, command=_command())
    if as_json:
        typer.echo(json.dumps(asdict(added), indent=1))
    else:
        typer.echo(f"added {added.repo_id} ({added.kind}) to space {added.space_id} (|delta| = {added.norm:.3f})")


def register(app: typer.Typer) -> None:
    app.command("embed")(embed_cmd)
    app.command("add")(add_cmd)
