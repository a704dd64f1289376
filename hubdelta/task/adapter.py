"""The few-shot LoRA adapter of a task: trained once per (examples, settings, base), then read from the cache.

The paper's few-shot setting (Delta Activations, A.4): 20 examples, learning rate 3.3e-3, batch size 1,
5 epochs, the same LoRA shape as the models it is compared with (r = 8, alpha = 16 on the q, k, v, up, down and
gate projections: the pool's). On 2 idle CPU cores 100 steps take ~50 s (see :mod:`hubdelta.task.cpu`).

Cache: ``<cache>/tasks/<key>/`` holds a normal peft adapter folder (``adapter_config.json``,
``adapter_model.safetensors``) and ``task.json``; the key is a sha256 over the examples used, the training
config, the base (repo and revision) and :data:`CACHE_VERSION`. A folder is trained under a temporary name
and renamed into place, so a killed run never leaves half an adapter under a key.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

from hubdelta.embedder.training import LORA_TARGETS, Example, TrainConfig, TrainResult
from hubdelta.task.cpu import OtherLoad, train_threads

log = structlog.get_logger(__name__)

CACHE_VERSION = 1  # bump when training code changes what a cached adapter would contain
FEWSHOT = TrainConfig(
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
LOG_EVERY = 10  # steps between progress events
STALE_TMP_S = 3600  # a temporary folder this old belongs to a killed run
META = "task.json"

StepProgress = Callable[[int, int, float], None]  # (steps done, total steps, loss)


@dataclass(frozen=True)
class FewShotAdapter:
    """A task's adapter folder and how it was made."""

    path: Path
    key: str
    cached: bool  # True: read from the cache, nothing trained now
    seconds: float  # training time in this call (0.0 on a cache hit)
    steps: int
    first_loss: float
    last_loss: float
    trained_seconds: float  # how long training took when the adapter was made


def _local_fingerprint(folder: Path) -> list[list[Any]]:
    """Names, sizes and mtimes of a local base checkpoint's files: its revision is ``local``, so a replaced
    checkpoint must still change the key (hashing 0.5 GB of weights per call would cost seconds)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors"))
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def cache_key(examples: Sequence[Example], cfg: TrainConfig, base_id: str, base_sha: str,
              base_folder: Path | None = None) -> str:  # fmt: skip
    """sha256 over the canonical JSON of everything that decides the adapter's weights.

    Args:
        base_folder: given for a local base (revision ``local``): its files' sizes and times join the key.
    """
    doc = {
        "version": CACHE_VERSION,
        "examples": [[e.instruction, e.input, e.output] for e in examples],
        "config": cfg.as_dict(),
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
                              float(meta["last_loss"]), float(meta["seconds"]))  # fmt: skip
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: trained again, and replaced


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
    cfg: TrainConfig = FEWSHOT,
    progress: StepProgress | None = None,
) -> FewShotAdapter:
    """The few-shot adapter of ``examples`` on the base, from ``cache_dir/tasks`` or trained now (CPU).

    Args:
        cache_dir: hubdelta's cache (``settings.cache_dir``).
        examples: the examples to train on, in order.
        base_folder: the base checkpoint (config, safetensors, tokenizer).
        base_id: the base's repo id (named in the adapter's config), ``base_sha`` its revision (``local`` for a
            local folder).
        cfg: the training config (default: the paper's few-shot setting).
        progress: called after every optimizer step.
    """
    local = base_sha == "local"
    key = cache_key(examples, cfg, base_id, base_sha, base_folder if local else None)
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
        result = _train(tmp, examples, base_folder, base_id, cfg, progress)
        meta = {"key": key, "version": CACHE_VERSION, "base": base_id, "base_sha": base_sha,
                "examples": len(examples), "config": cfg.as_dict(), **asdict(result)}  # fmt: skip
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
                          result.seconds)  # fmt: skip


def _train(out: Path, examples: Sequence[Example], base_folder: Path, base_id: str, cfg: TrainConfig,
           progress: StepProgress | None) -> TrainResult:  # fmt: skip
    """Train a LoRA on a fresh copy of the base and save it to ``out``."""
    import torch
    from transformers import AutoTokenizer

    from hubdelta.embedder.training import load_causal_lm, lora_model, save_adapter, train

    load = OtherLoad()
    tok = AutoTokenizer.from_pretrained(base_folder, trust_remote_code=False)
    torch.manual_seed(cfg.seed)  # the LoRA A matrices' initialisation
    model = lora_model(load_causal_lm(base_folder), cfg)
    default = torch.get_num_threads()

    def use_threads() -> None:
        threads = train_threads(load.cores(), default)
        if threads != torch.get_num_threads():
            log.info("task.train_threads", threads=threads, why="other processes busy" if threads < default else "idle")
            torch.set_num_threads(threads)

    def on_step(step: int, total: int, loss: float) -> None:
        if step % LOG_EVERY == 0 or step == total:
            log.info("task.train_progress", step=step, total=total, loss=loss)
            use_threads()
        if progress is not None:
            progress(step, total, loss)

    log.info("task.train_start", examples=len(examples), epochs=cfg.epochs, batch=cfg.batch_size, lr=cfg.lr)
    use_threads()
    try:
        result = train(model, tok, examples, cfg, on_step=on_step)
    finally:
        torch.set_num_threads(default)
    save_adapter(model, out, base_id)
    log.info("task.trained", steps=result.steps, first_loss=result.first_loss, last_loss=result.last_loss,
             seconds=result.seconds)  # fmt: skip
    del model
    return result
