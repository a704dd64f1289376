"""Scoring a continuation set: the log-probability of every continuation token under a model, batched.

Each model scores in its own tokenizer: the probe with the tokenizer's special tokens (as the activation
probes are), then the continuation text without them. The probe's tokens are the same for all of its texts, so
they run through the decoder once per forward and the texts attend to their cached keys and values: a text row
costs its own tokens only (the probes are ~37 tokens, as long as a 32-token text). Rows are right-padded; only
continuation positions go through the LM head, in chunks, so a 262k-token vocabulary (Gemma) never materialises
a full logit tensor. Forwards and head chunks are sized to a memory budget (:mod:`.score_batching`).
LoRA adapters reuse the activation path's batched hooks on a resident base (:mod:`hubdelta.embedder.lora`).
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from hubdelta.embedder.activations import load_causal_lm, text_config, torch_device
from hubdelta.embedder.continuations import ContinuationSet
from hubdelta.embedder.lora import lora_hooks, read_adapter, stack_factors
from hubdelta.embedder.meaning import TextScores
from hubdelta.embedder.probes import ProbeSet
from hubdelta.embedder.score_batching import Batching, Dims
from hubdelta.kernel.errors import EmbedError

# A forward's fixed cost in text tokens (the prefix cache copied, every layer's kernels launched): what a cut
# between rows of different lengths must save in padding to pay for itself.
FORWARD_OVERHEAD = 64
DEFAULT_MEMORY_GB = 2.0  # activations of one scoring forward (``[family] memory_gb``), weights not included


@dataclass(frozen=True)
class ScoreRows:
    """A continuation set tokenized for one tokenizer, split where the probe ends.

    Every text of one probe shares the probe's tokens, so they run through the decoder once per forward (a key/value
    cache) and each row carries only the probe's last token (whose output predicts the text's first token) and the
    text. Rows of one probe are contiguous, probe by probe.
    """

    prefixes: tuple[torch.Tensor, ...]  # per probe: its tokens but the last, (L_q - 1,)
    tails: torch.Tensor  # (R, W): the probe's last token, then the text's tokens; right-padded
    mask: torch.Tensor  # (R, W)
    lengths: tuple[int, ...]  # text tokens per row
    token_ends: tuple[np.ndarray, ...]  # per row: character end offset of each text token
    shape: tuple[int, int]  # (P, n)

    @classmethod
    def build(cls, tok: PreTrainedTokenizerBase, probes: ProbeSet, cset: ContinuationSet) -> ScoreRows:
        if not cset.matches(probes):
            raise EmbedError(f"continuation set {cset.hash} was not sampled for probe set {probes.version}")
        if not tok.is_fast:
            raise EmbedError("scoring needs a fast tokenizer (character offsets of tokens)", item=str(tok.name_or_path))
        prefixes: list[torch.Tensor] = []
        rows: list[list[int]] = []
        lengths, ends = [], []
        for q, (probe, texts) in enumerate(zip(probes.texts, cset.texts, strict=True)):
            prompt = list(tok(probe)["input_ids"])
            if not prompt:
                raise EmbedError(f"probe {q} has no tokens in this tokenizer", item=str(tok.name_or_path))
            prefixes.append(torch.tensor(prompt[:-1], dtype=torch.long))
            for text in texts:
                enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
                rows.append(prompt[-1:] + list(enc["input_ids"]))
                lengths.append(len(enc["input_ids"]))
                ends.append(np.array([e for _, e in enc["offset_mapping"]], dtype=np.int64))
        width = max(len(r) for r in rows)
        tails = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            tails[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        shape = (len(probes), len(cset.texts[0]))
        return cls(tuple(prefixes), tails, mask, tuple(lengths), tuple(ends), shape)

    def __len__(self) -> int:
        return int(self.tails.shape[0])

    def batching(self, config: Any, memory_gb: float) -> Batching:
        """Batches that fit ``memory_gb`` of activations for a model of ``config`` (:mod:`.score_batching`)."""
        prefix = max(int(p.shape[0]) for p in self.prefixes)
        return Batching.fit(Dims.of(config), prefix=prefix, width=int(self.tails.shape[1]),
                            budget_bytes=memory_gb * 2**30)  # fmt: skip

    def of_probe(self, q: int) -> list[int]:
        n = self.shape[1]
        return list(range(q * n, (q + 1) * n))


def _head_logprobs(model: PreTrainedModel, hidden: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
    """log p(target) for each (hidden state, target) pair, the LM head applied ``chunk`` positions at a time."""
    head = model.get_output_embeddings()
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    out = torch.empty(targets.shape[0], dtype=torch.float32)
    for i in range(0, targets.shape[0], chunk):
        logits = head(hidden[i : i + chunk]).float()  # (c, V)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        # log p = logit - logsumexp: no (c, V) log-softmax tensor is written, only read
        lp = logits.gather(1, targets[i : i + chunk, None])[:, 0] - torch.logsumexp(logits, -1)
        out[i : i + chunk] = lp.cpu()
    return out


def _prefix_cache(model: PreTrainedModel, prefix: torch.Tensor, k: int) -> DynamicCache | None:
    """The key/value cache of ``prefix`` repeated for ``k`` row groups (None for an empty prefix)."""
    if prefix.numel() == 0:
        return None
    device = next(model.parameters()).device
    cache = DynamicCache(config=model.config)
    model.get_decoder()(input_ids=prefix.to(device).repeat(k, 1), cache=cache, use_cache=True)
    return cache


def _row_logprobs(
    model: PreTrainedModel, rows: ScoreRows, index: list[int], k: int, cache: DynamicCache | None, chunk: int
) -> list[np.ndarray]:
    """Per-token log p of the texts of ``rows[index]`` (one probe's rows, whose prefix is in ``cache``, made for
    ``k`` groups), repeated ``k`` times (group ``g`` = adapter g).

    Returns:
        ``k * len(index)`` arrays, grouped by repeat.
    """
    device = next(model.parameters()).device
    ids = rows.tails[index].repeat(k, 1).to(device)
    mask = rows.mask[index].repeat(k, 1).to(device)
    width = int(mask.sum(1).max())
    ids, mask = ids[:, :width], mask[:, :width]
    past = 0
    if cache is not None:
        past = cache.get_seq_length()
        cache = copy.deepcopy(cache)  # the forward appends the texts' keys: the prefix's stay clean for the next
        cache.batch_repeat_interleave(len(index))  # group-major, as the rows are
        mask = torch.cat([torch.ones((mask.shape[0], past), dtype=mask.dtype, device=device), mask], 1)
    positions = torch.arange(past, past + width, device=device)
    hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=positions.expand(ids.shape[0], -1),
                                 cache=cache, use_cache=cache is not None).last_hidden_state  # fmt: skip
    picks_r: list[int] = []
    picks_t: list[int] = []
    sizes: list[int] = []
    for row in range(ids.shape[0]):
        n = rows.lengths[index[row % len(index)]]
        picks_r += [row] * n
        picks_t += range(n)  # position t (the probe's last token, then the text) predicts token t + 1
        sizes.append(n)
    r_idx = torch.tensor(picks_r, dtype=torch.long, device=device)
    t_idx = torch.tensor(picks_t, dtype=torch.long, device=device)
    lp = _head_logprobs(model, hidden[r_idx, t_idx], ids[r_idx, t_idx + 1], chunk).numpy()
    return list(np.split(lp, np.cumsum(sizes)[:-1]))


def length_chunks(lengths: Sequence[int], max_rows: int, overhead: int = FORWARD_OVERHEAD) -> list[list[int]]:
    """Rows grouped into forwards of similar length: fewer padded positions, at ``overhead`` tokens a forward.

    The rows (indices into ``lengths``) are sorted by length and cut into contiguous groups of at most
    ``max_rows``, choosing the cuts that minimise ``Σ (rows × longest + overhead)`` (a small dynamic programme;
    a forward of K adapters repeats each row K times, so its caller divides the overhead by K).
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = [0] + [2**62] * len(order)  # best[j]: the cheapest cover of order[:j]
    cut = [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        for i in range(max(0, j - max_rows), j):
            cost = best[i] + (j - i) * lengths[order[j - 1]] + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], len(order)
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def score_rows(
    model: PreTrainedModel, rows: ScoreRows, k: int = 1, *, memory_gb: float = DEFAULT_MEMORY_GB
) -> list[TextScores]:
    """Scores of ``k`` row groups (a plain model: ``k == 1``; inside :func:`lora_hooks`: one per adapter), in
    forwards sized to ``memory_gb`` of activations, each over rows of one probe and similar length."""
    batching = rows.batching(model.config.get_text_config(), memory_gb)
    step = max(1, batching.rows // k)
    per_group: list[dict[int, np.ndarray]] = [{} for _ in range(k)]
    with torch.inference_mode():
        for q, prefix in enumerate(rows.prefixes):
            cache = _prefix_cache(model, prefix, k)
            of_q = rows.of_probe(q)
            for part in length_chunks([rows.lengths[r] for r in of_q], step, max(1, FORWARD_OVERHEAD // k)):
                index = [of_q[i] for i in part]
                lps = _row_logprobs(model, rows, index, k, cache, batching.head)
                for g in range(k):
                    per_group[g].update(zip(index, lps[g * len(index) : (g + 1) * len(index)], strict=True))
    p, n = rows.shape
    ends = [rows.token_ends[q * n : (q + 1) * n] for q in range(p)]
    spans = [range(q * n, (q + 1) * n) for q in range(p)]
    return [TextScores(tuple(tuple(lps[r] for r in span) for span in spans), tuple(tuple(e) for e in ends))
            for lps in per_group]  # fmt: skip


class ResidentScorer:
    """A base model and its tokenizer held in memory with a continuation set tokenized once for them.

    The counterpart of :class:`~hubdelta.embedder.activations.ResidentBase` for meaning spaces.
    """

    def __init__(self, base_dir: Path, probes: ProbeSet, cset: ContinuationSet, *, device: str = "cpu",
                 memory_gb: float = DEFAULT_MEMORY_GB) -> None:  # fmt: skip
        self.base_dir = Path(base_dir)
        self.device = torch_device(device)
        self.memory_gb = memory_gb
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
            self._base = score_rows(self.model, self.rows, memory_gb=self.memory_gb)[0]
        return self._base

    def adapter_scores(self, adapters: Mapping[str, Path], per_forward: int = 4) -> dict[str, TextScores]:
        """Scores of several LoRA adapters on the resident base, ``per_forward`` adapters batched at a time (fewer
        where one row of each would not fit the memory budget)."""
        out: dict[str, TextScores] = {}
        items = list(adapters.items())
        per_forward = max(1, min(per_forward, self.rows.batching(self.config, self.memory_gb).rows))
        for i in range(0, len(items), per_forward):
            chunk = items[i : i + per_forward]
            loaded = [read_adapter(key, Path(path), self.model) for key, path in chunk]
            stacked = stack_factors(loaded, torch.float32, self.device)
            with lora_hooks(self.model, stacked, len(chunk)):
                scores = score_rows(self.model, self.rows, len(chunk), memory_gb=self.memory_gb)
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
            return score_rows(model, self.rows, memory_gb=self.memory_gb)[0]
        finally:
            del model
            gc.collect()
