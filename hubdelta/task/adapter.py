"""The few-shot LoRA adapter of a task: trained once per (examples, schedule, base), then read from the cache.

How it is trained is a :class:`~hubdelta.task.schedule.TaskSchedule` (``auto`` by default: lr 1e-3, batch 4,
stopped when the task vector is as long as the space's typical one); the LoRA shape is the pool's and the
paper's (r = 8, alpha = 16 on the q, k, v, up, down and gate projections).

Cache: ``<cache>/tasks/<key>/`` holds a normal peft adapter folder (``adapter_config.json``,
``adapter_model.safetensors``), ``task.json`` and the task vector measured along training
(``checkpoints.npz``, plain arrays); the key is a sha256 over the examples used, the training config, how far
it trains (steps, and the length ``auto`` stops at), the base (repo and revision) and :data:`CACHE_VERSION`. A
folder is trained under a temporary name and renamed into place, so a killed run never leaves half an adapter
under a key.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from hubdelta.embedder.training import Example, TrainConfig
from hubdelta.task.schedule import PAPER, TaskSchedule
from hubdelta.task.tracking import Checkpoint, StepProgress, Stop
from hubdelta.task.train_run import train_task

log = structlog.get_logger(__name__)

CACHE_VERSION = 2  # bump when training code changes what a cached adapter would contain (2: schedules, stops)
FEWSHOT = PAPER  # the paper's few-shot setting (hubdelta.task.schedule: ``--schedule paper``)
STALE_TMP_S = 3600  # a temporary folder this old belongs to a killed run
META = "task.json"
CHECKPOINTS = "checkpoints.npz"


@dataclass(frozen=True)
class FewShotAdapter:
    """A task's adapter folder and how it was made."""

    path: Path
    key: str
    cached: bool  # True: read from the cache, nothing trained now
    seconds: float  # training time in this call (0.0 on a cache hit)
    steps: int  # optimizer steps taken (auto: where it stopped)
    first_loss: float
    last_loss: float
    trained_seconds: float  # how long training took when the adapter was made
    checkpoints: tuple[Checkpoint, ...] = ()  # the task vector measured along training


def _local_fingerprint(folder: Path) -> list[list[Any]]:
    """Names, sizes and mtimes of a local base checkpoint's files: its revision is ``local``, so a replaced
    checkpoint must still change the key (hashing 0.5 GB of weights per call would cost seconds)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors"))
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def cache_key(examples: Sequence[Example], cfg: TrainConfig, base_id: str, base_sha: str,
              base_folder: Path | None = None, *, run: dict[str, Any] | None = None) -> str:  # fmt: skip
    """sha256 over the canonical JSON of everything that decides the adapter's weights.

    Args:
        base_folder: given for a local base (revision ``local``): its files' sizes and times join the key.
        run: how far training goes and where it is measured (steps, the space, the length ``auto`` stops at,
            already rounded by the caller to 3 significant digits: a rerun against the same space is a hit, a
            space whose median moved trains anew).
    """
    doc = {
        "version": CACHE_VERSION,
        "examples": [[e.instruction, e.input, e.output] for e in examples],
        "config": cfg.as_dict(),
        "run": run,
        "base": {"repo": base_id, "sha": base_sha,
                 "files": _local_fingerprint(base_folder) if base_folder is not None else None},
    }  # fmt: skip
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _cached(folder: Path, key: str) -> FewShotAdapter | None:
    meta_path = folder / META
    if not (meta_path.is_file() and (folder / "adapter_model.safetensors").is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        return FewShotAdapter(folder, key, True, 0.0, int(meta["steps"]), float(meta["first_loss"]),
                              float(meta["last_loss"]), float(meta["seconds"]), _read_checkpoints(folder))  # fmt: skip
    except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile):
        return None  # unreadable (a truncated checkpoints.npz too): trained again, and replaced


def _write_checkpoints(folder: Path, points: Sequence[Checkpoint]) -> None:
    steps = np.array([p.step for p in points], np.int64)
    vectors = np.stack([p.vector for p in points]).astype(np.float32) if points else np.zeros((0, 0), np.float32)
    np.savez(folder / CHECKPOINTS, steps=steps, vectors=vectors)


def _read_checkpoints(folder: Path) -> tuple[Checkpoint, ...]:
    """The measured checkpoints of a cached adapter (plain arrays: nothing is unpickled)."""
    path = folder / CHECKPOINTS
    if not path.is_file():
        return ()
    with np.load(path, allow_pickle=False) as saved:
        steps, vectors = saved["steps"], saved["vectors"]
    return tuple(Checkpoint(int(s), float(np.linalg.norm(v)), v) for s, v in zip(steps, vectors, strict=True))


def _sweep(root: Path) -> None:
    """Remove temporary folders that killed runs left behind."""
    now = time.time()
    for tmp in root.glob(".tmp-*"):
        try:
            if now - tmp.stat().st_mtime > STALE_TMP_S:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass  # another run removed it


def fewshot_adapter(
    cache_dir: Path,
    examples: Sequence[Example],
    base_folder: Path,
    base_id: str,
    base_sha: str,
    *,
    schedule: TaskSchedule,
    stop: Stop | None = None,
    progress: StepProgress | None = None,
) -> FewShotAdapter:
    """The few-shot adapter of ``examples`` on the base, from ``cache_dir/tasks`` or trained now (CPU).

    Args:
        cache_dir: hubdelta's cache (``settings.cache_dir``).
        examples: the examples to train on, in order.
        base_folder: the base checkpoint (config, safetensors, tokenizer).
        base_id: the base's repo id (named in the adapter's config), ``base_sha`` its revision (``local`` for a
            local folder).
        schedule: how it is trained (:func:`hubdelta.task.schedule.resolve`).
        stop: measure the task vector along training (and, for ``auto``, stop at ``stop.target``).
        progress: called after every optimizer step.
    """
    local = base_sha == "local"
    cfg = schedule.train
    # The measures (and auto's stop) are taken in one space: its id is part of what decides the folder's content.
    run = {"steps": schedule.steps, "rule": schedule.rule, "every": schedule.every,
           "space": stop.space.id if stop else None,
           "target": stop.target if stop and schedule.rule == "norm" else None}  # fmt: skip
    key = cache_key(examples, cfg, base_id, base_sha, base_folder if local else None, run=run)
    root = cache_dir / "tasks"
    final = root / key
    hit = _cached(final, key)
    if hit is not None:
        log.info("task.cache_hit", key=key[:16], path=str(final))
        return hit
    root.mkdir(parents=True, exist_ok=True)
    _sweep(root)
    tmp = root / f".tmp-{key[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        result, points = train_task(tmp, examples, base_folder, base_id, schedule, stop, progress)
        meta = {"key": key, "version": CACHE_VERSION, "base": base_id, "base_sha": base_sha, "run": run,
                "examples": len(examples), "config": cfg.as_dict(), **asdict(result)}  # fmt: skip
        _write_checkpoints(tmp, points)
        (tmp / META).write_text(json.dumps(meta, indent=1))
        if _cached(final, key) is None:  # else another run finished first: same key, same adapter
            if final.exists():  # unreadable: replaced
                shutil.rmtree(final, ignore_errors=True)
            try:
                tmp.replace(final)
            except OSError:  # another run renamed its folder in between
                if _cached(final, key) is None:
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return FewShotAdapter(final, key, False, result.seconds, result.steps, result.first_loss, result.last_loss,
                          result.seconds, tuple(points))  # fmt: skip
