"""``hubdelta family ...``: families of bases whose finetunes share one Delta Meaning space."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any

import typer

from hubdelta.cli._options import JsonOpt, command_line

family_app = typer.Typer(
    help="Families: several bases (any architectures) whose finetunes share one Delta Meaning space.\n\n"
    "Example: hubdelta family create small --base HuggingFaceTB/SmolLM2-135M-Instruct --base google/gemma-3-270m",
    no_args_is_help=True,
)
NameArg = Annotated[str, typer.Argument(help="The family's name, e.g. llama-3.", show_default=False)]


def _status_doc(status: Any) -> dict[str, Any]:
    f = status.family
    return {"name": f.name, "bases": list(f.bases), "references": list(f.samplers), "options": f.options,
            "space_id": status.space_id, "vectors": status.vectors,
            "per_base": [asdict(b) for b in status.per_base]}  # fmt: skip


def _emit(status: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(_status_doc(status), indent=1))
    else:
        _print_status(status)


def _print_status(status: Any) -> None:
    f = status.family
    o = f.options
    typer.echo(f"{f.name}: space {status.space_id or '(made by the first hubdelta family embed)'}, "
               f"{status.vectors} vectors")  # fmt: skip
    typer.echo(f"  texts: {o.get('n')} per probe x {o.get('tokens')} tokens from {', '.join(f.samplers)}; "
               f"recipe {o.get('recipe')}")  # fmt: skip
    for b in status.per_base:
        typer.echo(f"  {b.base}: {b.embedded}/{b.members} embedded, {b.failed} failed, {b.pending} pending")


@family_app.command("create")
def create_cmd(
    ctx: typer.Context,
    name: NameArg,
    base: Annotated[list[str], typer.Option("--base", help="A base repo id (repeat for each; tracked if not yet).")],
    reference: Annotated[
        list[str] | None,
        typer.Option("--reference", help="Sample texts from this model (repeatable; default: every base)."),
    ] = None,
    n: Annotated[int | None, typer.Option("--n", min=1, help="Texts per probe (default: \\[family] n).")] = None,
    tokens: Annotated[
        int | None, typer.Option("--tokens", min=1, help="Tokens per text (default: \\[family] tokens).")
    ] = None,
    recipe: Annotated[
        str | None, typer.Option("--recipe", help="default, paper, or e.g. text-loglik-concat-centred.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Define a family. Its continuations are sampled, and its space made, by the first `family embed`.

    Example: hubdelta family create small --base HuggingFaceTB/SmolLM2-135M-Instruct --base google/gemma-3-270m
    """
    from hubdelta.crawler.api import track
    from hubdelta.embedder.family import create_family, show_family

    def track_base(repo_id: str) -> None:
        track(ctx.obj, repo_id, command=f"hubdelta family create {name}")

    create_family(ctx.obj, name, base, track_base=track_base, references=reference, n=n, tokens=tokens, recipe=recipe)
    _emit(show_family(ctx.obj, name), as_json)


@family_app.command("list")
def list_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every family, its space and how many of its models are in it.

    Example: hubdelta family list --json
    """
    from hubdelta.embedder.family import list_families

    statuses = list_families(ctx.obj)
    if as_json:
        typer.echo(json.dumps([_status_doc(s) for s in statuses], indent=1))
        return
    if not statuses:
        typer.echo("no families (hubdelta family create NAME --base A --base B)")
    for s in statuses:
        _print_status(s)


@family_app.command("show")
def show_cmd(ctx: typer.Context, name: NameArg, as_json: JsonOpt = False) -> None:
    """One family: bases, texts, recipe, and per base how many models are embedded, failed or pending.

    Example: hubdelta family show small
    """
    from hubdelta.embedder.family import show_family

    _emit(show_family(ctx.obj, name), as_json)


@family_app.command("remove")
def remove_cmd(ctx: typer.Context, name: NameArg) -> None:
    """Forget a family (its space and vectors stay searchable with --space).

    Example: hubdelta family remove small
    """
    from hubdelta.embedder.family import remove_family

    family = remove_family(ctx.obj, name)
    typer.echo(f"removed family {family.name}; space {family.space_id or '-'} kept")


@family_app.command("embed")
def embed_cmd(
    ctx: typer.Context,
    name: Annotated[list[str] | None, typer.Argument(help="Families to fill (default: all).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Score at most N models a family.")] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu or cuda (default: \\[embed] device).")
    ] = None,
    batch: Annotated[int | None, typer.Option("--batch", min=1, help="Adapters scored together.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Put each family's models (already embedded in their base's space) into the family's meaning space.

    The first run samples the family's texts from its reference models and freezes them in the index.

    Example: hubdelta family embed small
    """
    from hubdelta.embedder.family import embed_families
    from hubdelta.embedder.runtime import keep_freed_memory

    keep_freed_memory()

    def progress(outcome: str, repo: str) -> None:
        if not as_json:
            typer.echo(f"  {outcome}: {repo}", err=True)

    summaries = embed_families(ctx.obj, name or None, limit=limit, device=device, batch=batch, progress=progress,
                               command=command_line())  # fmt: skip
    if as_json:
        typer.echo(json.dumps([asdict(s) for s in summaries], indent=1))
        return
    for s in summaries:
        made = " (texts sampled, space created)" if s.sampled else ""
        typer.echo(f"{s.family}: embedded {s.embedded}, failed {s.failed}, pending {s.pending} "
                   f"in {s.seconds:.1f} s; space {s.space_id}{made}")  # fmt: skip
        for repo, why in s.failures:
            typer.echo(f"  failed {repo}: {why}")


def register(app: typer.Typer) -> None:
    app.add_typer(family_app, name="family")
