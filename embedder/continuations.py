"""The texts a family's meaning space is made of: continuations of the probes, sampled once and then frozen.

A :class:`ContinuationSet` records where its texts came from (reference models and their revisions, sampling
settings, the probe set) and the texts themselves; its :attr:`~ContinuationSet.hash` covers all of it, so a
space that names the hash can never silently be scored on other texts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hubdelta.embedder.probes import ProbeSet

HASH_CHARS = 16
MAX_TEXTS = 4096  # continuations per probe: beyond this one space would take hours per model on a CPU
MAX_NEW_TOKENS = 512


@dataclass(frozen=True)
class Sampling:
    """How continuations are drawn: ``n`` per probe split evenly over the sources, each exactly ``tokens`` long."""

    n: int = 40
    tokens: int = 48
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.n <= MAX_TEXTS:
            raise ValueError(f"n must lie in 1..{MAX_TEXTS}, got {self.n}")
        if not 1 <= self.tokens <= MAX_NEW_TOKENS:
            raise ValueError(f"tokens must lie in 1..{MAX_NEW_TOKENS}, got {self.tokens}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")


@dataclass(frozen=True)
class ContinuationSet:
    """Frozen continuations of each probe (``texts[p][i]``) and everything that produced them."""

    probes: str  # probe-set version
    probes_hash: str
    sources: tuple[str, ...]  # "repo@sha" of each model sampled from, in order
    sampling: Sampling
    texts: tuple[tuple[str, ...], ...] = field(repr=False)

    def __post_init__(self) -> None:
        if not self.texts or any(len(row) != len(self.texts[0]) for row in self.texts):
            raise ValueError("a continuation set needs the same number of texts for every probe")

    @property
    def hash(self) -> str:
        """sha256 over every field (texts included), shortened."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()[:HASH_CHARS]

    def matches(self, probes: ProbeSet) -> bool:
        return (probes.version, probes.hash) == (self.probes, self.probes_hash) and len(self.texts) == len(probes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sources"] = list(self.sources)
        d["texts"] = [list(row) for row in self.texts]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContinuationSet:
        """The inverse of :meth:`to_dict`.

        Raises:
            ValueError: malformed.
        """
        try:
            return cls(
                probes=str(data["probes"]),
                probes_hash=str(data["probes_hash"]),
                sources=tuple(str(s) for s in data["sources"]),
                sampling=Sampling(**data["sampling"]),
                texts=tuple(tuple(str(t) for t in row) for row in data["texts"]),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed continuation set: {e}") from e


def sample_texts(
    model_dir: Path, probes: ProbeSet, n: int, sampling: Sampling, *, seed: int, device: str = "cpu"
) -> list[list[str]]:
    """``n`` continuations of each probe from one local checkpoint: pure sampling (no top-k/top-p), EOS
    suppressed so every continuation is exactly ``sampling.tokens`` tokens of that model's tokenizer.

    Deterministic for a given checkpoint, seed and device (one torch generator seeded per probe).
    """
    import torch
    from transformers import AutoTokenizer

    from hubdelta.embedder.activations import load_causal_lm

    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
    model = load_causal_lm(model_dir, torch.float32, torch.device(device))
    out: list[list[str]] = []
    for p, text in enumerate(probes.texts):
        ids = torch.tensor([tok(text)["input_ids"]], device=device)
        torch.manual_seed(seed * 1_000_003 + p)
        with torch.inference_mode():
            gen = model.generate(  # type: ignore[operator]
                ids.repeat(n, 1),
                attention_mask=torch.ones_like(ids).repeat(n, 1),
                do_sample=True,
                temperature=sampling.temperature,
                top_k=0,
                top_p=1.0,
                min_new_tokens=sampling.tokens,
                max_new_tokens=sampling.tokens,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            )
        out.append(tok.batch_decode(gen[:, ids.shape[1] :], skip_special_tokens=True))
    del model
    return out


def sample_continuations(
    sources: list[tuple[str, str, Path]], probes: ProbeSet, sampling: Sampling, *, device: str = "cpu"
) -> ContinuationSet:
    """Sample a continuation set: ``sampling.n`` texts per probe, split evenly over ``sources``.

    Args:
        sources: (repo id, sha, local folder) of each reference model, in order.

    Raises:
        ValueError: ``n`` does not split evenly over the sources.
    """
    if not sources or sampling.n % len(sources):
        raise ValueError(f"{sampling.n} continuations per probe do not split evenly over {len(sources)} sources")
    per = sampling.n // len(sources)
    rows: list[list[str]] = [[] for _ in probes.texts]
    for i, (_, _, folder) in enumerate(sources):
        texts = sample_texts(folder, probes, per, sampling, seed=sampling.seed * 101 + i, device=device)
        for row, new in zip(rows, texts, strict=True):
            row.extend(new)
    return ContinuationSet(
        probes=probes.version,
        probes_hash=probes.hash,
        sources=tuple(f"{repo}@{sha}" for repo, sha, _ in sources),
        sampling=sampling,
        texts=tuple(tuple(r) for r in rows),
    )
