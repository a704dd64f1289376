"""``hubdelta task``: the models nearest to a task given by a few examples. Imports torch only to train and embed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from hubdelta.cli._options import JsonOpt, KOpt, RelationOpt, WhereOpt
from hubdelta.cli._output import writable_file, write_atomically

EXAMPLES_HELP = 'A JSONL file: {"instruction", "input", "output"} or {"prompt", "completion"} lines (about 20).'
ExamplesArg = Annotated[Path, typer.Argument(help=EXAMPLES_HELP, show_default=False)]
BaseOpt = Annotated[
    str, typer.Option("--base", help="The base to search under: a repo id, or a local checkpoint folder.")
]
MaxExamplesOpt = Annotated[
    int, typer.Option("--max-examples", help="Train on the first N examples (the paper's few-shot setting: 20).")
]
SaveVectorOpt = Annotated[
    Path | None,
    typer.Option("--save-vector", help="Also write the task's vector (.npy), for hubdelta similar --vector."),
]
ScheduleOpt = Annotated[
    str,
    typer.Option("--schedule", help="auto: lr 1e-3, batch 4, at most 3 epochs, stopped when the task vector is as long "
                 "as the space's typical vector; paper: the paper's exact 100 steps; light: auto without the stop."),
]  # fmt: skip
StepsOpt = Annotated[
    int | None, typer.Option("--steps", help="Optimizer steps at most (default: the schedule's).", show_default=False)
]
LrOpt = Annotated[
    float | None, typer.Option("--lr", help="Learning rate (default: the schedule's).", show_default=False)
]
SeedOpt = Annotated[int, typer.Option("--seed", help="The LoRA's initialisation and the examples' order.")]
FamilyOpt = Annotated[
    str | None,
    typer.Option("--family", help="Search this family's meaning space (finetunes of every base in it, e.g. of "
                 "another architecture) instead of the base's own space; --base must be one of its bases.",
                 show_default=False),
]  # fmt: skip
ExplainOpt = Annotated[
    bool,
    typer.Option("--explain", help="Also show the vector's length against the space's adapters, the checkpoints "
                 "measured along training and how stable the top-k was across them."),
]  # fmt: skip


def task_cmd(
    ctx: typer.Context,
    examples: ExamplesArg,
    base: BaseOpt,
    k: KOpt = 10,
    where: WhereOpt = None,
    relation: RelationOpt = None,
    max_examples: MaxExamplesOpt = 20,
    schedule: ScheduleOpt = "auto",
    steps: StepsOpt = None,
    lr: LrOpt = None,
    seed: SeedOpt = 0,
    explain: ExplainOpt = False,
    family: FamilyOpt = None,
    save_vector: SaveVectorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a few-shot LoRA on EXAMPLES (cached by their hash), embed it, and list the nearest models and cluster.

    The first 20 examples train a LoRA (lr 1e-3, batch 4, at most 3 epochs) until the task's vector is as long as
    the space's typical vector (--schedule auto; --schedule paper runs the paper's exact 100 steps). ~10-30 s on
    2 CPU cores the first time; a rerun with the same examples and options reuses the adapter.

    With --family, the same adapter is scored on the family's texts and its neighbours are sought among the
    finetunes of all the family's bases (about as long again as training, cached too).

    Example: hubdelta task math.jsonl --base HuggingFaceTB/SmolLM2-135M-Instruct -k 5
    """
    from hubdelta.embedder.runtime import keep_freed_memory
    from hubdelta.task.api import task_search

    keep_freed_memory()
    if save_vector is not None:  # numpy.save's name: .npy appended when missing; checked before the training
        if save_vector.suffix != ".npy":
            save_vector = save_vector.with_name(save_vector.name + ".npy")
        writable_file(save_vector, "--save-vector")

    def run(progress: Any) -> Any:
        return task_search(ctx.obj, examples, base, k=k, where=where, relation=relation, max_examples=max_examples,
                           progress=progress, schedule=schedule, steps=steps, lr=lr, seed=seed,
                           explain=explain, family=family)  # fmt: skip

    # Without a terminal, progress goes to the log (task.train_progress events every 10 steps).
    result = run(None) if as_json or not sys.stderr.isatty() else _with_progress(run)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if save_vector is not None:
        import numpy as np

        write_atomically(save_vector, lambda f: np.save(f, result.vector), "--save-vector")
    if as_json:
        from hubdelta.cli.query import _dump

        _dump(result.to_dict())
        return
    _print(result)
    if result.explain is not None:
        _print_explain(result.explain)


def _print_explain(why: Any) -> None:
    """The --explain block: the vector's length against the space and how the top-k settled along training."""
    ratio = f" = {why.norm_ratio:.2f}x the space's median vector ({why.space_norm:.3g})" if why.norm_ratio else ""
    typer.echo(f"schedule {why.schedule}; stopped after {why.steps} steps; measured in space {why.space_id}")
    typer.echo(f"task vector norm {why.norm:.3g}{ratio}")
    for c in why.checkpoints:
        size = f"{c.norm_ratio:.2f}x" if c.norm_ratio is not None else f"{c.norm:.3g}"
        typer.echo(f"  step {c.step:>4}: length {size:>7}, {c.top_k_shared:.0%} of the final top-k")
    if why.stability is not None:
        typer.echo(f"top-k stability over the second half of training: {why.stability:.0%}")


def _with_progress(run: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.description}"))  # fmt: skip
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("", total=None)

        def advance(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, description=f"loss {loss:.3f}")

        return run(advance)


def _print(result: Any) -> None:
    from hubdelta.cli.query import _neighbors_table

    t = result.training
    made = f"adapter trained in {result.train_seconds:.1f} s ({t.steps} steps, loss {t.first_loss:.3f} → "
    if result.cached:
        made = f"adapter from the cache ({t.steps} steps, loss {t.first_loss:.3f} → "
    made += f"{t.last_loss:.3f})"
    typer.echo(f"{result.task}: {result.examples_used} of {result.examples_total} examples, {made}; "
               f"{result.seconds:.1f} s in all")  # fmt: skip
    title = f"nearest to {result.task} in space {result.space_id}" + (f", where {result.where}" if result.where else "")
    if result.neighbors:
        _neighbors_table(result.neighbors, title)
    else:
        typer.echo(f"{title}: no model matches")
    c = result.cluster
    if c is None:
        typer.echo("nearest cluster: none")
        return
    top = ", ".join(f"{m.repo_id} ({m.score:.2f})" for m in c.top[:5])
    typer.echo(f"nearest cluster: {c.name} ({c.id}, {c.size} models, similarity {c.similarity:.3f}, {c.source}); "
               f"nearest members: {top}")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("task")(task_cmd)
