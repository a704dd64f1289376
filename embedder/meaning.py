"""Delta Meaning: how a finetune changes the likelihood of shared texts, comparable across architectures.

A family space fixes a :class:`~hubdelta.embedder.continuations.ContinuationSet`: for each probe ``x``, texts
``s_1 … s_n`` sampled once from reference models and then frozen. Every model ``f`` scores every text in its own
tokenizer, giving log-probabilities of the text's tokens given the probe. This module turns those token
log-probabilities into a model's *profile* and two profiles into a delta vector; it is pure numpy.

The paper's recipe (Xu et al. 2025, A.5) is ``inv-ppl``: per text the inverse perplexity ``exp(mean log p)``,
the delta ``profile(f) − profile(base(f))`` averaged over probes. Variants, all named by one recipe string:

- ``unit``: ``text`` (one number per sampled text) or ``word`` (one per whitespace-delimited word: token
  log-probabilities summed up to each word's end, so two tokenizers that cut the same text differently still
  describe the same words);
- ``score``: ``invppl`` (``exp`` of the mean log p) or ``loglik`` (the mean log p itself; summed per word);
- ``pool``: ``mean`` over probes (the paper) or ``concat`` (probes side by side, for ``word`` always);
- ``centre``: subtract the delta's own mean (a finetune that is more or less sure of *everything* is not a
  different behaviour) and scale it to unit length;
- ``per_base``: subtract, from each model's vector, the mean vector of the family space's models of the same
  base (:func:`centre_by_base`), then scale to unit length again. Whatever finetuning does to *any* adapter of
  one architecture (learning the answer format, its tokenizer's quirks) is shared by all of that base's models
  and by none of the other's; removing it leaves what differs between finetunes. It depends on the population
  (a base with mostly math finetunes moves its centre towards math), so it is applied only from
  :data:`CENTRE_MIN` models of a base on, and recomputed as models join.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hubdelta.kernel.recipe import Recipe

WORD = re.compile(r"\s*\S+")
ZERO_NORM = 1e-6  # per component: a centred delta smaller than this is no change
CENTRE_MIN = 4  # models of a base in a family space before their base's mean is subtracted


def word_ends(text: str) -> list[int]:
    """Character offsets where each word (leading whitespace + non-space run) of ``text`` ends."""
    return [m.end() for m in WORD.finditer(text)]


def word_logprobs(token_lp: np.ndarray, token_ends: np.ndarray | Sequence[int], ends: Sequence[int]) -> np.ndarray:
    """Sum token log-probabilities into words: each token counts for the word in which it ends.

    Args:
        token_lp: ``(T,)`` log p of each token of one text.
        token_ends: the character offset where each token ends in the text (non-decreasing).
        ends: :func:`word_ends` of the text.

    Returns:
        ``(W,)`` one log p per word; a word no token ends in gets 0 (its tokens count for the next word).
    """
    out = np.zeros(len(ends), dtype=np.float64)
    if not ends:
        return out
    idx = np.searchsorted(np.asarray(ends), np.asarray(token_ends, dtype=np.int64), side="left")
    idx = np.minimum(idx, len(ends) - 1)  # trailing whitespace tokens count for the last word
    np.add.at(out, idx, token_lp.astype(np.float64))
    return out


@dataclass(frozen=True)
class TextScores:
    """One model's scores of a continuation set: per probe, per text, its tokens' log p and where they end."""

    token_lp: tuple[tuple[np.ndarray, ...], ...]  # [probe][text] (T,)
    token_ends: tuple[tuple[np.ndarray, ...], ...]  # [probe][text] (T,) character end offsets

    def profile(self, texts: Sequence[Sequence[str]], recipe: Recipe) -> np.ndarray:
        """The model's profile under ``recipe``: ``(P, n)`` for the text unit, ``(W,)`` words for the word unit."""
        if recipe.unit == "text":
            mean = np.array([[lp.mean() if lp.size else 0.0 for lp in row] for row in self.token_lp])
            return np.exp(mean) if recipe.score == "invppl" else mean
        words = [
            word_logprobs(lp, ends, word_ends(text))
            for lps, ends_row, row in zip(self.token_lp, self.token_ends, texts, strict=True)
            for lp, ends, text in zip(lps, ends_row, row, strict=True)
        ]
        flat = np.concatenate(words) if words else np.zeros(0)
        return np.exp(flat) if recipe.score == "invppl" else flat


def meaning_vector(profile: np.ndarray, base_profile: np.ndarray, recipe: Recipe) -> np.ndarray:
    """The delta vector of a model whose profile is ``profile`` against its own base's ``base_profile``.

    Returns:
        float32; ``(n,)`` for ``text``/``mean``, ``(P·n,)`` for ``text``/``concat``, ``(W,)`` for ``word``.
    """
    if profile.shape != base_profile.shape:
        raise ValueError(f"profile shape {profile.shape} is not the base's {base_profile.shape}")
    delta = (profile - base_profile).astype(np.float64)
    vec = delta.mean(axis=0) if recipe.pool == "mean" and delta.ndim == 2 else delta.reshape(-1)
    if recipe.centre:
        vec = vec - vec.mean()
        norm = float(np.linalg.norm(vec))
        # Below float32 resolution of the scores, what is left is rounding: unit length would amplify noise.
        vec = vec / norm if norm > ZERO_NORM * np.sqrt(vec.size) else np.zeros_like(vec)
    return vec.astype(np.float32)


def vector_dim(recipe: Recipe, texts: Sequence[Sequence[str]]) -> int:
    """The length of a meaning vector for ``texts`` under ``recipe``."""
    if recipe.unit == "word":
        return sum(len(word_ends(t)) for row in texts for t in row)
    n = len(texts[0]) if texts else 0
    return n if recipe.pool == "mean" else n * len(texts)


def base_centres(
    raw: dict[str, np.ndarray], base_of: dict[str, str], min_models: int = CENTRE_MIN
) -> dict[str, np.ndarray | None]:
    """Each base's mean vector (``Recipe.per_base``); None for a base with fewer than ``min_models`` vectors (its
    mean would be mostly the models themselves)."""
    groups: dict[str, list[str]] = {}
    for key in raw:
        groups.setdefault(base_of[key], []).append(key)
    return {
        b: np.asarray(np.mean([raw[k] for k in keys], axis=0, dtype=np.float64)) if len(keys) >= min_models else None
        for b, keys in groups.items()
    }


def centred(vec: np.ndarray, centre: np.ndarray | None) -> np.ndarray:
    """``vec`` minus its base's centre, at unit length (float32); as it is without a centre."""
    if centre is None:
        return np.asarray(vec, np.float32)
    v = vec.astype(np.float64) - centre
    norm = float(np.linalg.norm(v))
    return (v / norm if norm > ZERO_NORM * np.sqrt(v.size) else np.zeros_like(v)).astype(np.float32)


def centre_by_base(
    raw: dict[str, np.ndarray], base_of: dict[str, str], min_models: int = CENTRE_MIN
) -> dict[str, np.ndarray]:
    """Per-base centring (``Recipe.per_base``): each vector minus its base's mean, at unit length.

    A base with fewer than ``min_models`` vectors keeps them as they are (:func:`base_centres`).

    Returns:
        float32 vectors by key, in ``raw``'s order.
    """
    centres = base_centres(raw, base_of, min_models)
    return {key: centred(vec, centres[base_of[key]]) for key, vec in raw.items()}
