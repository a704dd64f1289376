"""The task vector measured while its adapter trains, so that ``auto`` can stop when it is long enough.

Every few optimizer steps the training model (the base with its LoRA, in eval mode) runs the space's probes once
and its delta against the space's stored base activations is taken, as ``hubdelta embed`` takes it. It is the
same computation as the embedder's, through peft's layers instead of the embedder's hooks, in fp32: in an fp32
space the two differ by float rounding only (tests/test_task.py checks within 2%); in a bfloat16 space the
embedder's matmuls on the difference to the base round more. Either is good enough to decide when to stop.
The vector the search uses is still the saved adapter's, embedded by the embedder itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hubdelta.embedder.probes import PAPER_PROBES
from hubdelta.embedder.space import Space
from hubdelta.kernel.errors import EmbedError

StepProgress = Callable[[int, int, float], None]  # (steps done, total steps, loss)


@dataclass(frozen=True)
class Stop:
    """What measuring the task vector along training needs: the space, its stored base activations (those every
    vector in it was computed against) and the length ``auto`` stops at (None: measure, never stop)."""

    space: Space
    base_acts: np.ndarray  # (P, C)
    target: float | None


@dataclass(frozen=True)
class Checkpoint:
    """The task vector at one step of training, measured on the training model."""

    step: int
    norm: float
    vector: np.ndarray = field(repr=False, compare=False)


def should_stop(norm: float, target: float | None) -> bool:
    """``auto``'s rule: stop at the first checkpoint whose vector is at least as long as the space's typical one."""
    return target is not None and norm >= target


def typical_norm(norms: np.ndarray) -> float | None:
    """The space's typical vector length: the median norm of its vectors (None for an empty space)."""
    finite = norms[np.isfinite(norms) & (norms > 0)]
    return float(np.median(finite)) if finite.size else None


class Tracker:
    """Measures the training model's task vector every ``every`` steps and says when to stop."""

    def __init__(self, model: Any, tokenizer: Any, space: Space, base_acts: np.ndarray, every: int,
                 target: float | None) -> None:  # fmt: skip
        from hubdelta.embedder.activations import probe_batch

        if not space.matches(PAPER_PROBES):
            raise EmbedError("the space's probes are not the paper's: task search cannot measure in it", item=space.id)
        self.model, self.space, self.every, self.target = model, space, every, target
        self.batch = probe_batch(tokenizer, PAPER_PROBES)
        self.base_acts = base_acts.astype(np.float32)  # (P, C)
        self.checkpoints: list[Checkpoint] = []

    def measure(self, step: int) -> Checkpoint:
        """The task vector now (the model is put back in training mode after)."""

        from hubdelta.embedder.activations import probe_activations

        self.model.eval()
        try:
            acts = probe_activations(self.model.get_base_model(), self.batch, self.space).numpy()  # (P, C)
        finally:
            self.model.train()
        vector = (acts - self.base_acts).mean(axis=0)  # (C,)
        point = Checkpoint(step, float(np.linalg.norm(vector)), vector)
        self.checkpoints.append(point)
        return point

    def __call__(self, step: int, total: int) -> bool:
        """After optimizer step ``step``: True when training should stop here."""
        if self.every <= 0 or (step % self.every and step != total):
            return False
        return should_stop(self.measure(step).norm, self.target)
