"""A task's examples: JSONL lines parsed into Alpaca records, with a line-numbered error for every bad line.

Pure (no model, no index). Each non-blank line is one JSON object, in either shape:

- ``{"instruction": ..., "input": ..., "output": ...}`` (``input`` may be absent or null: empty);
- ``{"prompt": ..., "completion": ...}`` (the prompt becomes the instruction, with an empty input).

Other keys are ignored; lines may mix the two shapes. The paper's few-shot setting uses 20 examples: the first
``max_examples`` (20) are used, and fewer are accepted down to :data:`MIN_EXAMPLES`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubdelta.embedder.training import Example
from hubdelta.kernel.errors import UsageError

MAX_BYTES = 10 << 20  # 10 MiB: a few-shot task needs a few KB
MAX_LINES = 10_000
MIN_EXAMPLES = 5  # below this a LoRA learns the examples, not the task
PAPER_EXAMPLES = 20  # the paper's few-shot setting (Delta Activations, A.4)
MAX_EXAMPLES = 200  # training time grows linearly: 200 examples x 5 epochs is ~10 minutes on 2 CPU cores

PROMPT = ("prompt", "completion")
SHAPE_FIX = 'one JSON object a line: {"instruction": "...", "output": "..."} or {"prompt": "...", "completion": "..."}'


@dataclass(frozen=True)
class Chosen:
    """The examples a task trains on, out of those its file holds, and what a person should know about it."""

    examples: tuple[Example, ...]
    total: int  # examples in the file
    notes: tuple[str, ...]  # e.g. "using the first 20 of 24 examples"


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _text(obj: dict[str, Any], key: str, where: str, *, optional: bool = False) -> str:
    if key not in obj or (optional and obj[key] is None):
        if optional:
            return ""
        raise UsageError(where, f'missing "{key}"', fix=SHAPE_FIX)
    value = obj[key]
    if not isinstance(value, str):
        raise UsageError(where, f'"{key}" is {_kind(value)}, not a string', fix=f'make "{key}" a JSON string')
    if not optional and not value.strip():
        raise UsageError(where, f'"{key}" is empty', fix=f'give "{key}" some text, or delete the line')
    return value


def parse_line(text: str, where: str) -> Example:
    """One JSONL line (not blank) as an :class:`Example`; ``where`` (``FILE:LINE``) names it in errors.

    Raises:
        UsageError: not JSON, not an object, neither shape, both shapes, a missing, empty or non-string field.
    """
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(where, f"not valid JSON ({e.msg} at column {e.colno})", fix=SHAPE_FIX) from None
    if not isinstance(obj, dict):
        raise UsageError(where, f"is {_kind(obj)}, not a JSON object", fix=SHAPE_FIX)
    alpaca = any(k in obj for k in ("instruction", "output"))
    prompt = any(k in obj for k in PROMPT)
    if alpaca and prompt:
        raise UsageError(where, 'mixes "instruction"/"output" with "prompt"/"completion" keys',
                         fix="use one shape per line")  # fmt: skip
    if prompt:
        return Example(_text(obj, "prompt", where), "", _text(obj, "completion", where))
    if alpaca:
        return Example(_text(obj, "instruction", where), _text(obj, "input", where, optional=True),
                       _text(obj, "output", where))  # fmt: skip
    keys = ", ".join(f'"{k}"' for k in list(obj)[:5]) or "none"
    raise UsageError(where, f"has neither instruction/output nor prompt/completion keys (keys: {keys})",
                     fix=SHAPE_FIX)  # fmt: skip


def parse_lines(lines: Iterable[bytes], name: str) -> list[Example]:
    """Every example of a JSONL file's lines (1-based line numbers in errors; blank lines skipped).

    Raises:
        UsageError: a bad line (``NAME:LINE: what (fix: how)``), more than :data:`MAX_LINES` lines, or no example.
    """
    examples = []
    for number, raw in enumerate(lines, 1):
        where = f"{name}:{number}"
        if number > MAX_LINES:
            raise UsageError(name, f"has more than {MAX_LINES:,} lines",
                             fix=f"a task needs about {PAPER_EXAMPLES} examples: keep the first ones")  # fmt: skip
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise UsageError(where, f"is not UTF-8 text (byte {e.start + 1})", fix="save the file as UTF-8") from None
        if text.strip():
            examples.append(parse_line(text, where))
    if not examples:
        raise UsageError(name, "holds no examples", fix=SHAPE_FIX)
    return examples


def read_examples(path: Path) -> list[Example]:
    """The examples of a JSONL file (at most :data:`MAX_BYTES`).

    Raises:
        UsageError: missing, not a file, too big, or a bad line.
    """
    name = str(path)
    if not path.exists():
        raise UsageError(name, "no such file", fix=f"give a JSONL file of about {PAPER_EXAMPLES} examples")
    if not path.is_file():
        raise UsageError(name, "is not a file", fix=f"give a JSONL file of about {PAPER_EXAMPLES} examples")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise UsageError(name, f"is {size / (1 << 20):.1f} MiB, over the {MAX_BYTES >> 20} MiB limit",
                         fix=f"a task needs about {PAPER_EXAMPLES} examples: keep the first ones")  # fmt: skip
    return parse_lines(path.read_bytes().splitlines(), name)


def choose(examples: list[Example], name: str, max_examples: int = PAPER_EXAMPLES) -> Chosen:
    """The first ``max_examples`` examples, with a note when the count differs from the paper's 20.

    Raises:
        UsageError: ``max_examples`` out of range, or fewer than :data:`MIN_EXAMPLES` examples.
    """
    if not MIN_EXAMPLES <= max_examples <= MAX_EXAMPLES:
        raise UsageError("--max-examples", f"{max_examples} is outside {MIN_EXAMPLES}..{MAX_EXAMPLES}",
                         fix=f"use the paper's {PAPER_EXAMPLES}")  # fmt: skip
    total = len(examples)
    if total < MIN_EXAMPLES:
        raise UsageError(name, f"holds {total} example{'s' * (total != 1)}; a task needs at least {MIN_EXAMPLES}",
                         fix=f"add examples: the paper uses {PAPER_EXAMPLES}")  # fmt: skip
    used = examples[:max_examples]
    notes = []
    if total > len(used):
        why = "the paper's few-shot setting" if max_examples == PAPER_EXAMPLES else "--max-examples"
        notes.append(f"{name} holds {total} examples: using the first {len(used)} ({why}; change with --max-examples)")
    if len(used) < PAPER_EXAMPLES:
        notes.append(f"training on {len(used)} examples, fewer than the paper's {PAPER_EXAMPLES}: "
                     "the task's vector may be noisier")  # fmt: skip
    return Chosen(tuple(used), total, tuple(notes))


def load(path: Path, max_examples: int = PAPER_EXAMPLES) -> Chosen:
    """Read and choose a task's examples (see :func:`read_examples` and :func:`choose`)."""
    if not MIN_EXAMPLES <= max_examples <= MAX_EXAMPLES:
        choose([], str(path), max_examples)  # refuses the option before reading anything
    return choose(read_examples(path), str(path), max_examples)


def check_lengths(lengths: Sequence[int], name: str, context: int, train_len: int) -> tuple[str, ...]:
    """Refuse an example longer than the base's context; note the ones training will cut.

    Args:
        lengths: each chosen example's tokens (prompt, response and end token), in order.
        context: the base's context length (``max_position_embeddings``).
        train_len: tokens per example that training keeps (``TrainConfig.max_len``).

    Raises:
        UsageError: an example is longer than ``context``.
    """
    for i, n in enumerate(lengths, 1):
        if n > context:
            raise UsageError(name, f"example {i} is {n:,} tokens, longer than the base's context of {context:,}",
                             fix="shorten it, or leave it out: a task is shown by short examples")  # fmt: skip
    cut = sum(n > train_len for n in lengths)
    if not cut:
        return ()
    return (f"{cut} of {len(lengths)} examples are longer than {train_len} tokens: training reads their first "
            f"{train_len}",)  # fmt: skip
