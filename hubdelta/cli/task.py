"""``hubdelta task``: the models nearest to a task given by a few examples. Imports torch only to train and embed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from hubdelta.cli._options import JsonOpt, KOpt, RelationOpt, WhereOpt
from hubdelta.cli._output import writable_file, write_atomically


def task_cmd(
    ctx: typer.Context,
    examples: Annotated[
        Path,
        typer.Argument(
            help='A JSONL file: {"instruction", "input", "output"} or {"prompt", "completion"} lines (about 20).',
            show_default=False,
        ),
    ],
    base: Annotated[
        str, typer.Option("--base", help="The base to search under: a repo id, or a local checkpoint folder.")
    ],
    k: KOpt = 10,
    where: WhereOpt = None,
    relation: RelationOpt = None,
    max_examples: Annotated[
        int, typer.Option("--max-examples", help="Train on the first N examples (the paper's few-shot setting: 20).")
    ] = 20,
    save_vector: Annotated[
        Path | None,
        typer.Option("--save-vector", help="Also write the task's vector (.npy), for hubdelta similar --vector."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a few-shot LoRA on EXAMPLES (cached by their hash), embed it, and list the nearest models and cluster.

    The paper's few-shot setting: the first 20 examples, 5 epochs at batch size 1 (~15-30 s on 2 CPU cores the
    first time; a rerun with the same examples reuses the adapter).

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
                           progress=progress)  # fmt: skip

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
