"""``hubdelta embed`` and ``hubdelta add``: vectors for queued models and for local model folders."""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from hubdelta.cli._options import JsonOpt, command_line


def embed_cmd(
    ctx: typer.Context,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Embed at most N models.")] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu or cuda (default: \\[embed] device).", show_default=False)
    ] = None,
    batch: Annotated[
        int | None, typer.Option("--batch", min=1, help="Adapters per batched forward (default: \\[embed] batch).")
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="[ADDRESS]",
            show_default=False,
            help="Embed on Ray workers. ADDRESS: host:6379, auto or local; none: "
            "RAY_ADDRESS, else the latest cluster started here, else a new local Ray (\\[ray] address).",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Ray workers (default: one per GPU, else per CPU).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compute Delta Activations for queued models; refused or broken models end as failed with a reason.

    Example: hubdelta embed --limit 100 --batch 8      or, on a Ray cluster: hubdelta embed --ray head:6379
    """
    from huggingface_hub.utils import disable_progress_bars

    from hubdelta.embedder.api import ray_options
    from hubdelta.embedder.runtime import keep_freed_memory

    disable_progress_bars()  # several downloads run at once: their per-file bars would garble ours (and logs)
    settings = ctx.obj
    on_ray = ray is not None or workers is not None or settings.ray.enabled
    kwargs: dict[str, Any] = dict(limit=limit, device=device, batch=batch, command=command_line())
    if on_ray:
        kwargs["ray"] = ray_options(settings, address=ray or None, workers=workers)
    else:
        keep_freed_memory()  # this process embeds
    quiet = as_json or not sys.stderr.isatty()
    summary = _run(settings, kwargs, quiet=quiet, on_ray=on_ray)
    doc: dict[str, Any] = asdict(summary)
    doc["failures"] = [{"repo_id": r, "reason": why} for r, why in summary.failures]
    if as_json:
        typer.echo(json.dumps(doc, indent=1))
        raise typer.Exit(summary.exit_code)  # non-zero for a run of errors (EmbedSummary.exit_code)
    typer.echo(
        f"embedded {summary.embedded}, copied {summary.copied}, reused {summary.reused}, failed {summary.failed}, "
        f"skipped {summary.skipped}, "
        f"requeued {summary.requeued}, unchanged {summary.unchanged} in {summary.seconds:.1f} s "
        f"(spaces: {', '.join(summary.spaces) or 'none'})"
    )
    if summary.workers:
        lost = f", {summary.worker_deaths} lost and replaced" if summary.worker_deaths else ""
        typer.echo(f"on {summary.workers} Ray workers{lost}")
    for repo, why in summary.failures:
        typer.echo(f"  failed {repo}: {why}")
    raise typer.Exit(summary.exit_code)


def _run(settings: Any, kwargs: dict[str, Any], *, quiet: bool, on_ray: bool) -> Any:
    """The embed run, then the map layouts and suggested labels of the spaces it wrote to (a failure of either is
    logged, not raised)."""
    from hubdelta.embedder.api import run_embed
    from hubdelta.report import labels
    from hubdelta.report.layout import refresh_after_writes

    # Ray prints its cluster's error messages (a worker died, ...) to stdout: they belong with the logs.
    with contextlib.redirect_stdout(sys.stderr) if on_ray else contextlib.nullcontext():
        summary = run_embed(settings, **kwargs) if quiet else _with_progress(settings, kwargs)
    if summary.embedded or summary.copied:
        refresh_after_writes(settings, kwargs["command"])
        labels.refresh_after_writes(settings, kwargs["command"])
    return summary


def _with_progress(settings: Any, kwargs: dict[str, Any]) -> Any:
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
        task = bar.add_task("", total=kwargs["limit"])

        def advance(outcome: str, record: Any) -> None:
            bar.update(task, advance=1, description=f"{outcome}: {record.repo_id}")

        return run_embed(settings, progress=advance, **kwargs)


def add_cmd(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A local model folder: a LoRA adapter or a full checkpoint.")],
    base: Annotated[str, typer.Option("--base", help="Its base: a repo id on the Hub, or a local checkpoint folder.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Its id in the index (default: local/<folder name>).")
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace the model already in the index under that id.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Embed a local model folder and add it to the index (no Hub needed with a local --base).

    An id already in the index (another folder of the same name, a Hub model) is refused unless --replace.

    Example: hubdelta add ./my-lora --base HuggingFaceTB/SmolLM2-135M-Instruct --name me/my-lora
    """
    from hubdelta.embedder.api import add_local
    from hubdelta.embedder.runtime import keep_freed_memory

    keep_freed_memory()

    from hubdelta.report import labels

    added = add_local(ctx.obj, path, base, name=name, replace=replace, command=command_line())
    labels.refresh_after_writes(ctx.obj, command_line())  # its labels, and its new neighbours'
    if as_json:
        typer.echo(json.dumps(asdict(added), indent=1))
    else:
        typer.echo(f"added {added.repo_id} ({added.kind}) to space {added.space_id} (|delta| = {added.norm:.3f})")


def register(app: typer.Typer) -> None:
    app.command("embed")(embed_cmd)
    app.command("add")(add_cmd)
