"""``hubdelta merge-plan``: which models of a space to merge, and (``--apply``) the merge. Loads torch only to apply."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hubdelta.cli._options import JsonOpt, WhereOpt


def merge_plan_cmd(
    ctx: typer.Context,
    space: Annotated[str | None, typer.Option("--space", help="Space id (default: the only one).")] = None,
    anchor: Annotated[
        str | None, typer.Option("--anchor", help="The model to build the set around (default: the medoid).")
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Models in the set, the anchor included.")] = 3,
    where: WhereOpt = None,
    apply: Annotated[
        Path | None, typer.Option("--apply", help="Merge the set into this new folder (hubdelta add embeds it).")
    ] = None,
    method: Annotated[str | None, typer.Option("--method", help="With --apply: linear (default) or ties.")] = None,
    density: Annotated[
        float | None, typer.Option("--density", help="With --method ties: the fraction kept (default 0.2).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Propose models to merge: an anchor plus the models most dispersed from it and each other in the space.

    Example: hubdelta merge-plan --space <space> --anchor hubdelta-pool/smollm2-lora-math-1 -k 3 --apply merged
    """
    from hubdelta.kernel.errors import UsageError
    from hubdelta.merge.api import merge_plan
    from hubdelta.merge.combine import DEFAULT_DENSITY, check_method

    settings = ctx.obj
    if apply is None:
        for option, value in (("--method", method), ("--density", density)):
            if value is not None:  # it would be silently ignored: only a merge has a method
                raise UsageError(option, f"{option} applies only to a merge", fix="add --apply OUT, or leave it out")
    method = method if method is not None else "linear"
    density = density if density is not None else DEFAULT_DENSITY
    if apply is not None:  # refused before any work: a bad method or an OUT that exists or cannot be written
        from hubdelta.merge.apply import check_out

        check_method(method, density)
        check_out(apply)
    plan = merge_plan(settings, space=space, anchor=anchor, k=k, where=where)
    applied = None
    if apply is not None:
        from hubdelta.merge.apply import apply_plan

        applied = apply_plan(settings, plan, apply, method=method, density=density)
    if as_json:
        from hubdelta.query.serialize import dumps

        doc = plan.to_dict()
        if applied is not None:
            doc["applied"] = applied.to_dict()
        typer.echo(dumps(doc))
        return
    _print_plan(plan)
    if applied is not None:
        typer.echo(f"merged ({applied.method}, {applied.kind}) into {applied.out}: "
                   f"{', '.join(f'{n} {b:,} B' for n, b in applied.files.items())}")  # fmt: skip
        typer.echo(f"next: hubdelta add {applied.out} --base {applied.base}")


def _print_plan(plan: object) -> None:
    from rich.table import Table

    from hubdelta.cli._tables import print_table
    from hubdelta.merge.plan import MergePlan

    assert isinstance(plan, MergePlan)
    typer.echo(f"merge plan in {plan.space_id} (base {plan.base}): {len(plan.members)} of {plan.candidates} "
               f"mergeable models; anchor {plan.anchor_rule}")  # fmt: skip
    table = Table(title_justify="left")
    for name in ("#", "repo", "relation", "cluster", "why"):
        table.add_column(name, no_wrap=name != "why")
    for i, m in enumerate(plan.members):
        table.add_row(str(i), m.repo_id, m.relation or "", m.cluster or "", m.reason)
    print_table(table)
    head = "    " + " ".join(f"{i:>6}" for i in range(len(plan.cosines)))
    typer.echo("pairwise cosines:\n" + head)
    for i, row in enumerate(plan.cosines):
        typer.echo(f"{i:>3} " + " ".join(f"{x:6.3f}" for x in row))
    typer.echo(
        f"mean pairwise cosine {plan.mean_cosine:.3f}; clusters covered {len(plan.clusters_covered)} of "
        f"{plan.clusters_total}" + (f" ({', '.join(plan.clusters_covered)})" if plan.clusters_covered else "")
    )
    if plan.excluded:
        typer.echo("left out: " + "; ".join(f"{n} {why}" for why, n in sorted(plan.excluded.items())))


def register(app: typer.Typer) -> None:
    app.command("merge-plan")(merge_plan_cmd)
