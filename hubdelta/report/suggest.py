"""Suggested tags and a "behaves like" line for a model from its documented neighbours (pure).

**Evidence.** Each model's descriptive tokens, with a weight (:func:`evidence`):

- its tags (``key:value`` tags give their value; bookkeeping keys such as ``license:``, ``base_model:``,
  ``region:`` are dropped) and its card's ``model_name`` / ``datasets``: weight 1 (the owner said so);
- the words of its repo name (the owner dropped): weight ``NAME_WEIGHT`` = 0.5 (a name hints, a tag states),
  less ``NAME_JUNK``: words a Hub name carries whatever the model does (``my-finetune``, ``test-model-final``,
  ``output``, ``results``, ``new_model``, ``sft``...).

Words that say nothing about behaviour are dropped as :mod:`hubdelta.report.naming` drops them (stop words,
numbers and sizes, ``lora``/``adapter``/``safetensors``/``peft``/``autotrain``/licence names..., the base
model's own words), and so are the space's **common** tokens: those carried by more than half of its models
with any evidence (at least ``COMMON_MIN`` of them), e.g. an organisation's house tag on all of its repos.

**Documented.** A model is documented when it has evidence left after that: a meaningful tag, card field or
name word (a name of junk words alone documents nothing, so ``bob/my-finetune`` never suggests "my"). Names
still count: on the test pool, as on much of the Hub, a name such as ``smollm2-lora-math-2`` is the only
documentation a model has. Only documented models are neighbours here; an undocumented one
(``acme/checkpoint-500`` with only ``safetensors`` and ``license:mit``) never contributes, and a model never
labels itself.

**Scoring.** For a model with documented neighbours ``j`` (its ``k`` nearest by cosine ``c_j``, best ``c_1``;
those of cosine <= 0 say nothing), with weights ``w_j = exp((c_j - c_1) / TAU)`` (the nearest counts 1, one
0.1 less in cosine counts 0.37: a model's close twins outvote the tail of the ``k``, which in a sparse
neighbourhood is other kinds of models) and ``s_j`` the strongest weight of ``j``'s evidence (1 when it has a
tag, 0.5 when only its name speaks)::

    support(t) = sum_j w_j * weight_j(t) / sum_j w_j * s_j         in [0, 1]
    confidence = support(top tag) * (sum_j w_j * c_j / sum_j w_j)   in [0, 1]

Support is the similarity-weighted share of the neighbours' evidence that carries ``t``; confidence is the top
tag's support scaled by how close those neighbours are, so a model between two kinds of neighbours (a
math + code mix) gets a lower one than a model whose neighbours agree. Tags of support >= ``MIN_SUPPORT`` are
suggested (at most ``MAX_TAGS``, best first; ties alphabetical).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hubdelta.index.labels import SuggestedTag
from hubdelta.report import naming

K = 10  # documented neighbours a model is labelled from
TAU = 0.1  # cosine scale of the neighbours' weights (None: linear weights w_j = c_j, the first version's)
NAME_WEIGHT = 0.5
MIN_SUPPORT = 0.25
MAX_TAGS = 5
COMMON_SHARE = 0.5
COMMON_MIN = 3
# Name words that say nothing about behaviour, beyond naming's stop words (which already drop lora, model,
# finetune, merged, checkpoint, numbers and v1/v2): a name made of them only is no documentation.
NAME_JUNK = frozenset(
    str.split(
        """my mine our own test tests testing final output outputs result results new old demo tmp temp try trial
    trials experiment experiments exp run runs ckpt best last latest epoch epochs step steps sample samples sft
    ft dpo save saved copy backup draft wip repo project custom updated update fixed dummy sandbox playground
    hello world foo bar baz first second third"""
    )
)
CARD_KEYS = ("model_name", "datasets")  # of the crawler's card summary; license and language say nothing here
# Stored with each space's labels: a change of any parameter recomputes every label.
RULE = f"v3 k={K} tau={TAU} name={NAME_WEIGHT} min={MIN_SUPPORT} max={MAX_TAGS} common={COMMON_SHARE}/{COMMON_MIN}"

Evidence = Mapping[str, float]  # token -> weight (1 or NAME_WEIGHT)


@dataclass(frozen=True)
class Suggestion:
    """What :func:`suggest` finds for one model."""

    tags: tuple[SuggestedTag, ...]
    behaves_like: str
    confidence: float


NONE = Suggestion((), "", 0.0)


def card_values(card: str) -> str:
    """The text of the crawler's card summary (``key: value; key: value``) under ``CARD_KEYS``."""
    out = []
    for part in card.split("; "):
        key, sep, value = part.partition(": ")
        if sep and key in CARD_KEYS:
            out.append(value)
    return " ".join(out)


def evidence(repo_id: str, tags: Iterable[str], card: str, ignore: frozenset[str] = frozenset()) -> dict[str, float]:
    """A model's weighted tokens (see the module docstring); ``ignore``: the base model's words."""
    stated = set(naming.words(card_values(card), ignore))
    for tag in tags:
        key, sep, value = tag.partition(":")
        if not sep:
            stated |= naming.words(tag, ignore)
        elif key not in naming.DROPPED_TAG_KEYS:
            stated |= naming.words(value, ignore)
    found = dict.fromkeys(naming.words(repo_id.rsplit("/", 1)[-1], ignore | NAME_JUNK), NAME_WEIGHT)
    found.update(dict.fromkeys(stated, 1.0))
    return found


def common_tokens(evidences: Iterable[Evidence]) -> frozenset[str]:
    """Tokens on more than ``COMMON_SHARE`` of the models with any evidence (at least ``COMMON_MIN`` models)."""
    having = [e for e in evidences if e]
    counts = Counter(t for e in having for t in e)
    limit = max(COMMON_MIN, math.floor(COMMON_SHARE * len(having)) + 1)
    return frozenset(t for t, n in counts.items() if n >= limit)


def documented(raw: Mapping[str, Evidence], common: frozenset[str]) -> dict[str, dict[str, float]]:
    """The documented models' evidence without the common tokens, by repo id (undocumented ones left out)."""
    out = {}
    for repo_id, found in raw.items():
        kept = {t: w for t, w in found.items() if t not in common}
        if kept:
            out[repo_id] = kept
    return out


def weights(cosines: Sequence[float], tau: float | None = TAU) -> list[float]:
    """Each neighbour's weight (see the module docstring): ``exp((c_j - max c) / tau)``, or ``c_j`` for None."""
    if tau is None:
        return list(cosines)
    best = max(cosines, default=0.0)
    return [math.exp((c - best) / tau) for c in cosines]


def suggest(
    neighbours: Sequence[tuple[str, float]], docs: Mapping[str, Evidence], tau: float | None = TAU
) -> Suggestion:
    """Suggested tags, "behaves like" and confidence from ``neighbours`` ((repo id, cosine), best first).

    Neighbours without documentation in ``docs`` are ignored, whatever their similarity.
    """
    used = [(r, c, docs[r]) for r, c in neighbours if r in docs and c > 0]
    if not used:
        return NONE
    w = weights([c for _, c, _ in used], tau)
    total = sum(wj * max(found.values()) for wj, (_, _, found) in zip(w, used, strict=True))
    carried: dict[str, float] = {}
    for wj, (_, _, found) in zip(w, used, strict=True):
        for token, weight in found.items():
            carried[token] = carried.get(token, 0.0) + wj * weight
    support = {t: v / total for t, v in carried.items()}
    ranked = sorted(support.items(), key=lambda p: (-p[1], p[0]))
    tags = tuple(SuggestedTag(t, round(s, 4)) for t, s in ranked[:MAX_TAGS] if s >= MIN_SUPPORT)
    if not tags:
        return NONE
    closeness = sum(wj * c for wj, (_, c, _) in zip(w, used, strict=True)) / sum(w)
    confidence = round(min(1.0, max(0.0, tags[0].score * closeness)), 4)
    return Suggestion(tags, behaves_like(tags, used), confidence)


def behaves_like(tags: Sequence[SuggestedTag], used: Sequence[tuple[str, float, Evidence]]) -> str:
    """``behaves like math models; nearest documented: acme/math-2 (0.97)``: the top tag and any other within
    half its support, then the nearest neighbour that carries the top tag."""
    top = tags[0]
    named = [t.tag for t in tags[:2] if t.score >= top.score / 2]
    nearest = next((r, c) for r, c, found in used if top.tag in found)
    return f"behaves like {' / '.join(named)} models; nearest documented: {nearest[0]} ({nearest[1]:.2f})"
