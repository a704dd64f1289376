"""How a task's few-shot adapter is trained, and which point of its training becomes the task's vector.

A task vector's *direction* is what finds models. The paper's few-shot schedule (lr 3.3e-3, batch 1, 100 steps)
found the task's domain as top-1 for 10 of 15 (domain, seed) trials on the first pool: trained one example a
step, far past the space's models, the direction is the last examples', not the task's. Four examples a step at
lr 1e-3 found it for 15 of 15 on both pools of docs/evaluation.md ("Task search on two pools"), whatever the
seed. So the default, ``auto``, trains at that rate and batch for at most 3 epochs, measures the task vector
after every step (one probe forward), and stops at the first measure as long as the space's typical vector
(the median norm of its vectors): a space of lightly trained adapters stops the task early, and training no
further than the space's own models costs fewer steps.

Named schedules (``--schedule``): ``auto`` (the default), ``paper`` (the paper's exact few-shot setting: lr
3.3e-3, batch 1, 5 epochs, the last step's adapter), ``light`` (lr 1e-3, batch 4, 3 epochs, the last step's:
``auto`` without the stop). ``--steps`` and ``--lr`` change any of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from hubdelta.embedder.training import LORA_TARGETS, TrainConfig
from hubdelta.kernel.errors import UsageError

Rule = Literal["last", "norm"]

PAPER = TrainConfig(
    kind="lora",
    lr=3.3e-3,  # the paper's few-shot learning rate
    epochs=5,
    batch_size=1,
    lora_r=8,
    lora_alpha=16,
    lora_dropout=0.0,
    lora_targets=LORA_TARGETS,
    seed=0,
    bf16=False,  # at batch 1 autocast costs more than it saves: 0.5 s a step in fp32, 0.7 s in bf16 (2 cores)
)
LIGHT = replace(PAPER, lr=1e-3, batch_size=4, epochs=3)
SCHEDULES = ("auto", "paper", "light")
DEFAULT = "auto"
CHECK_EVERY = 1  # auto: steps between two measures (each costs one probe forward, ~0.1 s)
MAX_STEPS = 1000
MAX_LR = 0.1


@dataclass(frozen=True)
class TaskSchedule:
    """A resolved schedule: the training, how many steps at most, and how the vector is chosen."""

    name: str  # as asked: "auto", "paper", "light"
    train: TrainConfig
    steps: int  # optimizer steps at most (the epochs' steps unless --steps)
    rule: Rule  # "last": the last step's adapter; "norm": stop at the first measure as long as the space's median
    every: int  # steps between two measures ("norm"); 0: measured every EXPLAIN_EVERY steps, for --explain only

    def describe(self) -> str:
        """One line for a person: the schedule as it will run."""
        t = self.train
        stop = "until its vector is as long as the space's median vector" if self.rule == "norm" else "to the end"
        return f"{self.name}: lr {t.lr:g}, batch {t.batch_size}, up to {self.steps} steps, seed {t.seed}, {stop}"


def steps_of(cfg: TrainConfig, n_examples: int) -> int:
    """Optimizer steps ``cfg``'s epochs make over ``n_examples`` examples."""
    return cfg.epochs * math.ceil(n_examples / cfg.batch_size)


def resolve(name: str | None, n_examples: int, *, steps: int | None = None, lr: float | None = None,
            seed: int = 0) -> TaskSchedule:  # fmt: skip
    """The schedule ``name`` (default ``auto``) for ``n_examples`` examples, with the explicit overrides.

    Raises:
        UsageError: an unknown schedule, or a step count, learning rate or seed out of range.
    """
    name = DEFAULT if name is None else name
    if name not in SCHEDULES:
        raise UsageError("--schedule", f"unknown schedule {name!r}", fix=f"use one of: {', '.join(SCHEDULES)}")
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise UsageError("--steps", f"{steps} is outside 1..{MAX_STEPS}", fix="use e.g. --steps 100 (the paper's)")
    if lr is not None and not (math.isfinite(lr) and 0 < lr <= MAX_LR):
        raise UsageError("--lr", f"{lr:g} is outside (0, {MAX_LR:g}]", fix="use e.g. --lr 3.3e-3 (the paper's)")
    if not 0 <= seed < 2**31:
        raise UsageError("--seed", f"{seed} is outside 0..{2**31 - 1}", fix="use e.g. --seed 0")
    train = replace(PAPER if name == "paper" else LIGHT, seed=seed)
    if lr is not None:
        train = replace(train, lr=lr)
    total = steps if steps is not None else steps_of(train, n_examples)
    if steps is not None:  # enough epochs to make the steps; training stops at the last one
        train = replace(train, epochs=math.ceil(steps / math.ceil(n_examples / train.batch_size)))
    rule: Rule = "norm" if name == "auto" else "last"
    return TaskSchedule(name, train, total, rule, CHECK_EVERY if rule == "norm" else 0)
