"""Training LoRA adapters (the paper's setting) and full finetunes on CPU: `hubdelta task` and the dev pool.

Loss is on the response only (Alpaca-style template). Only response positions go through the LM head: on
SmolLM2 the head is ~20% of the FLOPs per token and the prompt's logits would be thrown away anyway.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = structlog.get_logger(__name__)

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "up_proj", "down_proj", "gate_proj")
IGNORE = -100


@dataclass(frozen=True)
class Example:
    """One Alpaca-style training record."""

    instruction: str
    input: str
    output: str


def format_prompt(ex: Example) -> str:
    """The Alpaca-style prompt, up to and including the response header."""
    return f"### Instruction:\n{ex.instruction}\n\n### Input:\n{ex.input}\n\n### Response:\n"


@dataclass(frozen=True)
class TrainConfig:
    """How one finetune is trained. Every field goes into the cache key."""

    kind: Literal["lora", "full"] = "lora"
    lr: float = 1e-3  # high for LoRA because CPU budgets allow ~10-20 steps
    epochs: int = 1
    batch_size: int = 8
    max_len: int = 128  # tokens per example; longer responses are cut
    seed: int = 0
    bf16: bool = True  # autocast matmuls to bf16 (weights stay fp32): ~1.7x faster with AVX-512 BF16; where the
    # CPU has no bf16 kernels, as_trained_here() turns it off
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = LORA_TARGETS
    weight_decay: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What a training run reports (stored in the pool manifest)."""

    steps: int
    examples: int
    first_loss: float
    last_loss: float
    seconds: float
    losses: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T), IGNORE outside responses


def encode(tok: PreTrainedTokenizerBase, ex: Example, max_len: int) -> tuple[list[int], list[int]]:
    """Token ids and labels: the prompt is masked, the response and its end token are learned."""
    prompt = tok(format_prompt(ex), add_special_tokens=False)["input_ids"]
    response = tok(ex.output, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = (prompt + response)[:max_len]
    labels = ([IGNORE] * len(prompt) + response)[:max_len]
    return ids, labels


def collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> Batch:
    """Right-pad a list of (ids, labels) into tensors."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(rows):
        n = len(row_ids)
        ids[i, :n] = torch.tensor(row_ids)
        labels[i, :n] = torch.tensor(row_labels)
        mask[i, :n] = 1
    return Batch(ids, mask, labels)


def batches(
    rows: Sequence[tuple[list[int], list[int]]], batch_size: int, rng: random.Random, pad_id: int
) -> Iterator[Batch]:
    """Shuffled batches of similar length (less padding), in a shuffled order."""
    order = sorted(rng.sample(range(len(rows)), len(rows)), key=lambda i: len(rows[i][0]))
    groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(groups)
    for g in groups:
        yield collate([rows[i] for i in g], pad_id)


def response_loss(model: PreTrainedModel, batch: Batch) -> torch.Tensor:
    """Mean next-token cross-entropy over response tokens, applying the LM head to those positions only."""
    import torch.nn.functional as F

    hidden = model.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask)[0]  # (B, T, C)
    targets = batch.labels[:, 1:]  # (B, T-1): position t predicts token t+1
    keep = targets != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])  # (N, V), N = response tokens
    return F.cross_entropy(logits.float(), targets[keep])


def _lr_at(step: int, total: int, peak: float) -> float:
    """One warm-up step, then linear decay to 10% of the peak."""
    if step == 0:
        return peak * 0.3
    return peak * (1.0 - 0.9 * step / max(1, total - 1))


StepCallback = Callable[[int, int, float], bool | None]  # (steps done, total, this step's loss) -> stop now?


def _every_batch(rows: list[Any], cfg: TrainConfig, rng: random.Random, pad_id: int, total: int) -> Iterator[Any]:
    """The epochs' batches in order, ``total`` of them at most."""
    made = 0
    for _ in range(cfg.epochs):
        for batch in batches(rows, cfg.batch_size, rng, pad_id):
            if made == total:
                return
            made += 1
            yield batch


def as_trained_here(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` as this machine runs it: bf16 autocast only where the CPU has bf16 matmul kernels.

    Without them (AVX2 only) a SmolLM2 LoRA step of 8 × 128 tokens took 199 s under bf16 autocast against 6.5-11 s
    in fp32 (2-core Zen 3 EPYC, 2026-12-07). The settings then say fp32, so that whatever keys or records them (a
    pool's cache key and manifest) says how the weights were really made.
    """
    import torch

    from hubdelta.embedder.packed import kernel_dtype

    if cfg.bf16 and kernel_dtype(torch.device("cpu"), torch.bfloat16) != torch.bfloat16:
        return replace(cfg, bf16=False)
    return cfg


def train(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    data: Sequence[Example],
    cfg: TrainConfig,
    on_step: StepCallback | None = None,
    max_steps: int | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data``; returns the loss curve.

    The model is a plain causal LM (full finetune) or a peft model with trainable adapters (LoRA).
    ``on_step`` is called after every optimizer step; returning True ends training there (the learning rate
    still decays over the whole schedule, so the steps taken are the schedule's first ones). ``max_steps`` cuts
    the schedule itself: the rate then decays over that many steps.
    """
    import time

    import torch

    cfg = as_trained_here(cfg)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    rows = [encode(tok, ex, cfg.max_len) for ex in data]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * math.ceil(len(rows) / cfg.batch_size)
    total = total if max_steps is None else min(total, max_steps)
    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    step = 0
    for batch in _every_batch(rows, cfg, rng, tok.pad_token_id, total):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, total, cfg.lr)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = response_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
        step += 1
        if on_step is not None and on_step(step, total, losses[-1]):
            break  # the caller has what it needs (task search: the vector reached its length)
    model.eval()
    seconds = time.perf_counter() - started
    log.debug("trained", kind=cfg.kind, steps=step, first=losses[0], last=losses[-1], seconds=round(seconds, 1))
    return TrainResult(step, len(rows), losses[0], losses[-1], round(seconds, 2), losses)


def heldout_loss(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, data: Sequence[Example], max_len: int = 128
) -> float:
    """Token-weighted mean response loss of ``model`` on ``data`` (fp32, no gradients)."""
    import torch

    rows = [encode(tok, ex, max_len) for ex in data]
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rows), 16):
            batch = collate(rows[i : i + 16], tok.pad_token_id)
            n = int((batch.labels[:, 1:] != IGNORE).sum())
            total += response_loss(model, batch).item() * n
            count += n
    return total / count


def load_causal_lm(path: Path) -> PreTrainedModel:
    """Load a local safetensors checkpoint in fp32 (never remote code)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, trust_remote_code=False, use_safetensors=True
    )


def lora_model(base: PreTrainedModel, cfg: TrainConfig) -> Any:
    """Wrap a fresh base in a trainable LoRA adapter with the paper's targets."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, lora)


def save_adapter(model: object, out: Path, base_id: str) -> None:
    """A peft model's adapter as safetensors in ``out``, naming ``base_id`` as its base (not a cache path)."""
    import json

    model.save_pretrained(out, safe_serialization=True)  # type: ignore[attr-defined]
    (out / "README.md").unlink(missing_ok=True)  # peft writes a template card; callers write their own
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base_id  # not the local cache path it was trained from
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
