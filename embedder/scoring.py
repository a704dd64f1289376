"""Scoring a continuation set: the log-probability of every continuation token under a model, batched.

Each model scores in its own tokenizer: the probe with the tokenizer's special tokens (as the activation
probes are), then the continuation text without them. Rows are right-padded; only continuation positions go
through the LM head, in chunks, so a 262k-token vocabulary (Gemma) never materialises a full logit tensor.
LoRA adapters reuse the activation path's batched hooks on a resident base (:mod:`hubdelta.embedder.lora`).
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from hubdelta.embedder.activations import load_causal_lm, text_config
from hubdelta.embedder.continuations import ContinuationSet
from hubdelta.embedder.lora import lora_hooks, read_adapter, stack_factors
from hubdelta.embedder.meaning import TextScores
from hubdelta.embedder.probes import ProbeSet
from hubdelta.kernel.errors import EmbedError

HEAD_CHUNK = 256  # continuation positions per LM-head matmul: 256 x 262k fp32 logits = 268 MB
ROWS_PER_FORWARD = 40  # (probe, text) rows per forward, before multiplying by the adapters batched together


@dataclass(frozen=True)
class ScoreRows:
    """A continuation set tokenized for one tokenizer: one right-padded row per (probe, text)."""

    input_ids: torch.Tensor  # (R, T)
    attention_mask: torch.Tensor  # (R, T)
    starts: tuple[int, ...]  # index of each row's first continuation token
    lengths: tuple[int, ...]  # continuation tokens per row
    token_ends: tuple[np.ndarray, ...]  # per row: character end offset of each continuation token
    shape: tuple[int, int]  # (P, n)

    @classmethod
    def build(cls, tok: PreTrainedTokenizerBase, probes: ProbeSet, cset: ContinuationSet) -> ScoreRows:
        if not cset.matches(probes):
            raise EmbedError(f"continuation set {cset.hash} was not sampled for probe set {probes.version}")
        if not tok.is_fast:
            raise EmbedError("scoring needs a fast tokenizer (character offsets of tokens)", item=str(tok.name_or_path))
        rows: list[list[int]] = []
        starts, lengths, ends = [], [], []
        for probe, texts in zip(probes.texts, cset.texts, strict=True):
            prompt = tok(probe)["input_ids"]
            for text in texts:
                enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
                ids = list(enc["input_ids"])
                rows.append(prompt + ids)
                starts.append(len(prompt))
                lengths.append(len(ids))
                ends.append(np.array([e for _, e in enc["offset_mapping"]], dtype=np.int64))
        width = max(len(r) for r in rows)
        input_ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return cls(input_ids, mask, tuple(starts), tuple(lengths), tuple(ends), (len(probes), len(cset.texts[0])))

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def _head_logprobs(model: PreTrainedModel, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) for each (hidden state, target) pair, the LM head applied in chunks."""
    head = model.get_output_embeddings()
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    out = torch.empty(targets.shape[0], dtype=torch.float32)
    for i in range(0, targets.shape[0], HEAD_CHUNK):
        logits = head(hidden[i : i + HEAD_CHUNK]).float()  # (c, V)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        lp = logits.log_softmax(-1).gather(1, targets[i : i + HEAD_CHUNK, None])[:, 0]
        out[i : i + HEAD_CHUNK] = lp.cpu()
    return out


def _row_logprobs(model: PreTrainedModel, rows: ScoreRows, index: list[int], k: int) -> list[np.ndarray]:
    """Per-token log p of the continuations of ``rows[index]``, repeated ``k`` times (group ``g`` = adapter g).

    Returns:
        ``k * len(index)`` arrays, grouped by repeat.
    """
    device = next(model.parameters()).device
    ids = rows.input_ids[index].repeat(k, 1).to(device)
    mask = rows.attention_mask[index].repeat(k, 1).to(device)
    width = int(mask.sum(1).max())
    ids, mask = ids[:, :width], mask[:, :width]
    hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    picks_r: list[int] = []
    picks_t: list[int] = []
    targets: list[torch.Tensor] = []
    sizes: list[int] = []
    for g in range(k):
        for j, r in enumerate(index):
            s, n = rows.starts[r], rows.lengths[r]
            row = g * len(index) + j
            picks_r += [row] * n
            picks_t += range(s - 1, s + n - 1)  # position t predicts token t + 1
            targets.append(ids[row, s : s + n])
            sizes.append(n)
    sel = hidden[torch.tensor(picks_r, device=device), torch.tensor(picks_t, device=device)]  # (N, C)
    lp = _head_logprobs(model, sel, torch.cat(targets)).numpy()
    return list(np.split(lp, np.cumsum(sizes)[:-1]))


def score_rows(model: PreTrainedModel, rows: ScoreRows, k: int = 1) -> list[TextScores]:
    """Scores of ``k`` row groups (a plain model: ``k == 1``; inside :func:`lora_hooks`: one per adapter)."""
    per_group: list[list[np.ndarray]] = [[] for _ in range(k)]
    step = max(1, ROWS_PER_FORWARD // k)
    with torch.inference_mode():
        for i in range(0, len(rows), step):
            index = list(range(i, min(i + step, len(rows))))
            lps = _row_logprobs(model, rows, index, k)
            for g in range(k):
                per_group[g] += lps[g * len(index) : (g + 1) * len(index)]
    p, n = rows.shape
    ends = [rows.token_ends[q * n : (q + 1) * n] for q in range(p)]
    return [
        TextScores(tuple(tuple(lps[q * n : (q + 1) * n]) for q in range(p)), tuple(tuple(e) for e in ends))
        for lps in per_group
    ]


class ResidentScorer:
    """A base model and its tokenizer held in memory with a continuation set tokenized once for them.

    The counterpart of :class:`~hubdelta.embedder.activations.ResidentBase` for meaning spaces.
    """

    def __init__(self, base_dir: Path, probes: ProbeSet, cset: ContinuationSet, *, device: str = "cpu") -> None:
        self.base_dir = Path(base_dir)
        self.device = torch.device(device)
        self.config = text_config(self.base_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.base_dir, trust_remote_code=False, local_files_only=True)
        self.rows = ScoreRows.build(self.tokenizer, probes, cset)
        self._model: PreTrainedModel | None = load_causal_lm(self.base_dir, torch.float32, self.device)
        self._base: TextScores | None = None

    def __enter__(self) -> ResidentScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._model = None
        gc.collect()

    @property
    def model(self) -> PreTrainedModel:
        if self._model is None:
            raise EmbedError("the resident base was closed", item=str(self.base_dir))
        return self._model

    def base_scores(self) -> TextScores:
        """The base's own scores (computed on first use, then kept)."""
        if self._base is None:
            self._base = score_rows(self.model, self.rows)[0]
        return self._base

    def adapter_scores(self, adapters: Mapping[str, Path], per_forward: int = 4) -> dict[str, TextScores]:
        """Scores of several LoRA adapters on the resident base, ``per_forward`` adapters batched at a time."""
        out: dict[str, TextScores] = {}
        items = list(adapters.items())
        for i in range(0, len(items), per_forward):
            chunk = items[i : i + per_forward]
            loaded = [read_adapter(key, Path(path), self.model) for key, path in chunk]
            stacked = stack_factors(loaded, torch.float32, self.device)
            with lora_hooks(self.model, stacked, len(chunk)):
                scores = score_rows(self.model, self.rows, len(chunk))
            out.update({key: s for (key, _), s in zip(chunk, scores, strict=True)})
        return out

    def model_scores(self, model_dir: Path, *, item: str | None = None) -> TextScores:
        """Scores of a full finetune of the base (same tokenizer), loaded for this call and then freed."""
        config = text_config(Path(model_dir))
        if config.vocab_size != self.config.vocab_size:
            raise EmbedError(f"its vocabulary of {config.vocab_size} is not the base's {self.config.vocab_size}",
                             item=item or str(model_dir))  # fmt: skip
        model = load_causal_lm(Path(model_dir), torch.float32, self.device)
        try:
            return score_rows(model, self.rows)[0]
        finally:
            del model
            gc.collect()
