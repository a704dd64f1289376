"""``hubdelta eval``: does a space group models by what they were trained for? Scores against a label file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from hubdelta.cli._options import JsonOpt


def _cell(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.3f}"


def eval_cmd(
    ctx: typer.Context,
    labels: Annotated[Path, typer.Option("--labels", help="CSV of repo_id,label rows (a header is optional).")],
    space: Annotated[
        str | None,
        typer.Option(
            "--space", help="Space id (default: the one holding the most labelled repos).", show_default=False
        ),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also write a t-SNE map coloured by label (PNG).", show_default=False)
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Silhouette (cosine) by label, leave-one-out nearest-neighbour label accuracy and an optional t-SNE map.

    Example: hubdelta eval --labels pool/labels.csv --plot eval.png
    """
    from hubdelta.cli._output import writable_file
    from hubdelta.evaluation.api import evaluate

    if plot is not None:
        writable_file(plot, "--plot")  # before the work, not in a traceback after it
    result = evaluate(ctx.obj, labels, space=space, plot=plot)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=1, allow_nan=False))
        return
    from rich.console import Console
    from rich.table import Table

    s = result.scores
    console = Console()
    console.print(f"space {result.space_id}: {s.n} labelled models in {len(s.per_label)} labels")
    console.print(f"  silhouette (cosine)     {s.silhouette:.3f}  (1: tight and apart; 0: no structure)")
    console.print(f"  nearest-neighbour acc.  {s.nn_accuracy:.3f}  (chance {s.nn_chance:.3f})")
    if result.cross_base is not None:
        c = result.cross_base
        bases = f"{c['bases']:.0f} bases"
        console.print(f"  across bases: NN acc.   {c['accuracy']:.3f}  (chance {c['chance']:.3f}; {bases})")
    table = Table("label", "models", "NN acc.", "mean cos within")
    for row in s.per_label:
        table.add_row(row.label, str(row.count), f"{row.nn_accuracy:.2f}", _cell(row.mean_cosine))
    console.print(table)
    if result.missing:
        shown = ", ".join(result.missing[:5]) + (", …" if len(result.missing) > 5 else "")
        console.print(f"{len(result.missing)} labelled repos have no vector in this space: {shown}")
    if result.removed:
        shown = ", ".join(result.removed[:5]) + (", …" if len(result.removed) > 5 else "")
        console.print(f"{len(result.removed)} labelled repos were removed from the Hub and are not scored: {shown}")
    for other, n in result.other_spaces.items():
        console.print(f"space {other} also holds {n} labelled repos (--space {other})")
    if result.plot:
        console.print(f"map: {result.plot}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
