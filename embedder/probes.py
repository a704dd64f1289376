"""Probe sets: the generic prompts whose last-token hidden states make a Delta Activations vector.

The default, :data:`PAPER_PROBES`, is the paper's five Alpaca-style templates (Xu et al. 2025, Appendix C,
IDs 1–5) filled with a task-free instruction, exactly as its reference code does. A probe set is identified
by a version name and a hash of its formatted texts; both go into a :class:`~hubdelta.embedder.space.Space`,
so changing one word of a probe makes a new space instead of silently mixing vectors.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property

HASH_CHARS = 12  # 48 bits: plenty to tell probe sets apart, short enough to read in a space id


@dataclass(frozen=True)
class ProbeSet:
    """A versioned set of probe prompts: templates with ``{task}`` and ``{input}`` slots, and their fillers."""

    version: str  # a human name, e.g. "paper-v1"; the hash, not the name, decides equality of vectors
    templates: tuple[str, ...]
    task: str
    input: str

    def __post_init__(self) -> None:
        if not self.templates:
            raise ValueError("a probe set needs at least one template")
        for t in self.templates:
            if "{task}" not in t or "{input}" not in t:
                raise ValueError(f"template lacks a {{task}} or {{input}} slot: {t!r}")

    @cached_property
    def texts(self) -> tuple[str, ...]:
        """The formatted probes, in template order."""
        return tuple(t.format(task=self.task, input=self.input) for t in self.templates)

    @cached_property
    def hash(self) -> str:
        """A short sha256 of the formatted texts (JSON-encoded, so no two lists of strings collide)."""
        blob = json.dumps(list(self.texts), ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()[:HASH_CHARS]

    def __len__(self) -> int:
        return len(self.templates)


ALPACA_SUFFIX = "\n\n### Instruction:\n{task} Input:{input}\n\n### Response:"

PAPER_PROBES = ProbeSet(
    version="paper-v1",
    templates=(
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        + ALPACA_SUFFIX,
        "The task described below requires a response that completes the request accurately." + ALPACA_SUFFIX,
        "Below is a description of a task. Provide a response that aligns with the requirements." + ALPACA_SUFFIX,
        "The following instruction outlines a task. Generate a response that meets the specified request."
        + ALPACA_SUFFIX,
        "You are given an instruction and input. Write a response that completes the task as requested."
        + ALPACA_SUFFIX,
    ),
    task="Please provide a response.",
    input="Input.",
)
