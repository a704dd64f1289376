"""A readable name for each cluster from its members' tags, repo names and card words (pure).

Each model becomes a set of tokens: lower-cased words of its repo name (without the owner: an owner says who,
not what), of its tags (``key:value`` tags give their value, except bookkeeping ones such as ``license:``,
``base_model:`` and ``region:``) and of its card summary. Stop words, numbers and sizes (``135m``, ``v2``),
words every finetune shares (``lora``, ``adapter``, ``model``, ``safetensors``...) and the words of the base
model's name are dropped.

A token's score in a cluster is ``f_c * log(f_c / f_s)``: ``f_c`` is the share of the cluster's members that
have it, ``f_s`` its share over the whole space. Frequent-in-the-cluster and rare-elsewhere both count; a word
every model has (lift 1) scores 0. A token must be on at least a third of the members (and two of them) to
name a cluster, so one odd member cannot. The name is the best token plus up to two more scoring at least half
as much, joined with " / ", e.g. ``math`` or ``legal / contracts``. When nothing stands out (one cluster
covering the whole space) the most common tokens name it instead.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

MAX_WORDS = 3
MIN_SHARE = 1 / 3  # of the members that must carry a token for it to name their cluster
MIN_MEMBERS = 2
RELATIVE = 0.5  # further words must score at least this fraction of the best one

_SPLIT = re.compile(r"[^a-z0-9]+")
_NUMBERISH = re.compile(r"^v?\d+(\.\d+)?[a-z]?$|^\d")  # 7, 135m, 7b, v2, 1e, 2024abc


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOP_WORDS = _wordset(
    """a an and are as at be by for from has have in into is it its of on or our that the this to was we were
    with without you your not no all any can will using used use based via than then these those which"""
)
# Words any finetune may carry: they tell nothing about what it does.
GENERIC = _wordset(
    """lora qlora dora adapter adapters model models finetune finetuned fine tune tuned tuning trained training
    merge merged mergekit full peft safetensors transformers pytorch gguf ggml awq gptq onnx text generation
    inference endpoints compatible autotrain conversational instruct chat base hf checkpoint checkpoints version
    license apache mit cc by sa nc gpl bsd openrail other unknown en"""
)
# key:value tags that are bookkeeping; other keyed tags (dataset:gsm8k) contribute their value.
DROPPED_TAG_KEYS = frozenset({"license", "base_model", "region", "arxiv", "doi", "endpoints_compatible"})


def words(text: str, ignore: frozenset[str] = frozenset()) -> set[str]:
    """The meaningful lower-case tokens of ``text``."""
    return {
        t
        for t in _SPLIT.split(text.lower())
        if len(t) > 1 and t not in STOP_WORDS and t not in GENERIC and t not in ignore and not _NUMBERISH.match(t)
    }


def base_words(bases: Iterable[str]) -> frozenset[str]:
    """Every token of the base models' repo ids (owner and name): they name the space, not a cluster."""
    out: set[str] = set()
    for base in bases:
        out |= {t for t in _SPLIT.split(base.lower()) if t}
    return frozenset(out)


def model_tokens(repo_id: str, tags: Iterable[str], card: str, ignore: frozenset[str] = frozenset()) -> frozenset[str]:
    """A model's token set: its repo name (owner dropped), tags and card summary."""
    found = words(repo_id.rsplit("/", 1)[-1], ignore)
    for tag in tags:
        key, sep, value = tag.partition(":")
        if not sep:
            found |= words(tag, ignore)
        elif key not in DROPPED_TAG_KEYS:
            found |= words(value, ignore)
    return frozenset(found | words(card, ignore))


def scores(members: Sequence[str], tokens: Mapping[str, frozenset[str]], space: Counter[str]) -> dict[str, float]:
    """Each eligible token's ``f_c * log(f_c / f_s)`` in the cluster ``members``.

    Args:
        members: the cluster's repo ids.
        tokens: every model's tokens (missing repo ids have none).
        space: for each token, how many models of the whole space carry it.
    """
    total = len(tokens) or 1
    inside = Counter(t for m in members for t in tokens.get(m, frozenset()))
    need = max(MIN_MEMBERS, math.ceil(MIN_SHARE * len(members)))
    out = {}
    for token, n in inside.items():
        if n < need:
            continue
        f_c, f_s = n / len(members), space[token] / total
        out[token] = f_c * math.log(f_c / f_s)
    return out


def pick(scored: Mapping[str, float], max_words: int = MAX_WORDS) -> list[str]:
    """The best-scoring tokens (positive, within ``RELATIVE`` of the best), best first; ties alphabetical."""
    ranked = sorted(((s, t) for t, s in scored.items() if s > 1e-9), key=lambda p: (-p[0], p[1]))
    if not ranked:
        return []
    best = ranked[0][0]
    return [t for s, t in ranked[:max_words] if s >= RELATIVE * best]


def common(members: Sequence[str], tokens: Mapping[str, frozenset[str]], max_words: int = MAX_WORDS) -> list[str]:
    """The tokens most of ``members`` share, by count then alphabetically (the fallback name)."""
    inside = Counter(t for m in members for t in tokens.get(m, frozenset()))
    need = max(min(MIN_MEMBERS, len(members)), math.ceil(len(members) / 2))
    ranked = sorted(((n, t) for t, n in inside.items() if n >= need), key=lambda p: (-p[0], p[1]))
    return [t for _, t in ranked[:max_words]]


def cluster_names(clusters: Sequence[Sequence[str]], tokens: Mapping[str, frozenset[str]]) -> list[str]:
    """A name per cluster of one space ("" when its members share no meaningful word).

    Args:
        clusters: each cluster's member repo ids.
        tokens: the token set of every model of the space (clustered or not), by repo id.
    """
    space = Counter(t for ts in tokens.values() for t in ts)
    names = []
    for members in clusters:
        chosen = pick(scores(members, tokens, space)) or common(members, tokens)
        names.append(" / ".join(chosen))
    return names
