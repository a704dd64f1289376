"""Train a task's few-shot LoRA on a fresh copy of the base, measuring its vector along the way (CPU).

The threads adapt to the machine's load (:mod:`hubdelta.task.cpu`); with a :class:`~hubdelta.task.tracking.Stop`
the task vector is measured every few steps, and ``auto`` ends training at the first measure as long as the
space's median vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import structlog

from hubdelta.embedder.training import Example, TrainResult
from hubdelta.task.cpu import OtherLoad, train_threads
from hubdelta.task.schedule import TaskSchedule
from hubdelta.task.tracking import Checkpoint, StepProgress, Stop, Tracker

log = structlog.get_logger(__name__)

LOG_EVERY = 10  # steps between progress events
EXPLAIN_EVERY = 10  # steps between measures when the schedule does not stop by length (paper, light)


def train_task(out: Path, examples: Sequence[Example], base_folder: Path, base_id: str, schedule: TaskSchedule,
               stop: Stop | None, progress: StepProgress | None) -> tuple[TrainResult, list[Checkpoint]]:  # fmt: skip
    """Train, save the adapter to ``out``; the training's result and the measured checkpoints."""
    import torch
    from transformers import AutoTokenizer

    from hubdelta.embedder.training import load_causal_lm, lora_model, save_adapter, train

    cfg = schedule.train
    load = OtherLoad()
    tok = AutoTokenizer.from_pretrained(base_folder, trust_remote_code=False)
    torch.manual_seed(cfg.seed)  # the LoRA A matrices' initialisation
    model = lora_model(load_causal_lm(base_folder), cfg)
    default = torch.get_num_threads()
    tracker = None
    if stop is not None:
        every = schedule.every or EXPLAIN_EVERY
        target = stop.target if schedule.rule == "norm" else None
        tracker = Tracker(model, tok, stop.space, stop.base_acts, every, target)

    def use_threads() -> None:
        threads = train_threads(load.cores(), default)
        if threads != torch.get_num_threads():
            log.info("task.train_threads", threads=threads, why="other processes busy" if threads < default else "idle")
            torch.set_num_threads(threads)

    def on_step(step: int, total: int, loss: float) -> bool:
        if step % LOG_EVERY == 0 or step == total:
            log.info("task.train_progress", step=step, total=total, loss=loss)
            use_threads()
        if progress is not None:
            progress(step, total, loss)
        return tracker is not None and tracker(step, total)

    log.info("task.train_start", examples=len(examples), schedule=schedule.describe())
    use_threads()
    try:
        result = train(model, tok, examples, cfg, on_step=on_step, max_steps=schedule.steps)
    finally:
        torch.set_num_threads(default)
    save_adapter(model, out, base_id)
    log.info("task.trained", steps=result.steps, first_loss=result.first_loss, last_loss=result.last_loss,
             seconds=result.seconds)  # fmt: skip
    return result, list(tracker.checkpoints) if tracker else []
