"""Tables that never cut a repo id: the least telling columns go first, and a table whose narrowest form is wider
than the terminal is printed at that width (the terminal wraps the line; ``…smollm2-lora-math…`` would hide
which of math-1 and math-2 it was)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


def table_width(widths: Sequence[int]) -> int:
    """Characters a rich table of these column widths takes: one space of padding each side and a rule each."""
    return sum(w + 3 for w in widths) + 1


def fit_columns(widths: Mapping[str, int], available: int, drop_order: Sequence[str]) -> list[str]:
    """The columns to show, in order: ``drop_order``'s columns leave, first ones first, until the rest fit."""
    keep = list(widths)
    for name in drop_order:
        if table_width([widths[c] for c in keep]) <= available:
            break
        if name in keep:
            keep.remove(name)
    return keep


def print_table(table: Table) -> None:
    """Print ``table`` on stdout, wider than the terminal (or a pipe's 80 columns) only where its narrowest
    rendering needs it: rich would otherwise squeeze no-wrap columns and cut their cells."""
    console = Console()
    narrowest = Measurement.get(console, console.options.update_width(10_000), table).minimum
    if narrowest > console.width:
        console = Console(width=narrowest)
    console.print(table)


def id_column(table: Table, header: str, values: Sequence[str]) -> None:
    """Add a column of ids (repo ids, space ids): never wrapped, never cut."""
    table.add_column(header, no_wrap=True, overflow="fold", min_width=max([len(header), *map(len, values)]))
