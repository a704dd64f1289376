"""Model cards: YAML front matter in, lineage and Hub-style tags out. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

RELATIONS = ("adapter", "merge", "quantized", "finetune")
ADAPTER_FILES = ("adapter_config.json",)
QUANTIZED_SUFFIXES = (".gguf", ".ggml", ".exl2")
QUANTIZED_CARD_KEYS = ("quantization_config", "quantized_by")


@dataclass(frozen=True)
class Lineage:
    """Where a model comes from: its direct bases and how it was derived from them."""

    relation: str  # one of RELATIONS
    bases: tuple[str, ...]


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """Split a README into its YAML front matter (a dict) and the body after it.

    Args:
        text: the README text; front matter is a leading block between two ``---`` lines.

    Returns:
        ``(metadata, body)``; ``({}, text)`` when there is no front matter.

    Raises:
        ValueError: the front matter is not valid YAML or not a mapping.
    """
    text = text.removeprefix("\ufeff")
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return {}, text
    for i in range(1, len(lines)):
        if lines[i].strip() == "---":
            block, body = "".join(lines[1:i]), "".join(lines[i + 1 :])
            break
    else:
        raise ValueError("front matter starts with '---' but has no closing '---' line")
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError as e:
        raise ValueError(f"front matter is not valid YAML ({e})".replace("\n", " ")) from e
    if data is None:
        return {}, body
    if not isinstance(data, dict):
        raise ValueError(f"front matter must be a mapping, got {type(data).__name__}")
    return data, body


def render_card(card: Mapping[str, Any], text: str = "") -> str:
    """Render a README with ``card`` as YAML front matter followed by ``text``."""
    body = text if text else f"# {card.get('model_name', 'Model card')}\n"
    if not card:
        return body
    front = yaml.safe_dump(dict(card), sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n{body}"


def card_bases(card: Mapping[str, Any]) -> tuple[str, ...]:
    """The card's ``base_model`` as a tuple of ids (a string or a list; anything else is ignored)."""
    raw = card.get("base_model")
    items = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    out: list[str] = []
    for item in items:
        if isinstance(item, str) and item.strip() and item.strip() not in out:
            out.append(item.strip())
    return tuple(out)


@dataclass(frozen=True)
class PathFacts:
    """What a repo's file names say, computed once per repo."""

    adapter: bool  # an adapter_config.json anywhere
    safetensors: bool
    gguf: bool
    quantized_files: bool  # GGUF-like formats
    config: bool  # a top-level config.json


def path_facts(paths: Iterable[str]) -> PathFacts:
    """Scan file paths once for the facts lineage and tags depend on."""
    adapter = safetensors = gguf = quantized = config = False
    for p in paths:
        low = p.lower()
        adapter = adapter or low.rsplit("/", 1)[-1] in ADAPTER_FILES
        safetensors = safetensors or low.endswith(".safetensors")
        gguf = gguf or low.endswith(".gguf")
        quantized = quantized or low.endswith(QUANTIZED_SUFFIXES)
        config = config or p == "config.json"
    return PathFacts(adapter, safetensors, gguf, quantized, config)


def is_quantized(card: Mapping[str, Any], facts: PathFacts, config: Mapping[str, Any] | None) -> bool:
    """Whether the repo holds a quantized model: GGUF-like files, or quantization in the card or config."""
    if facts.quantized_files or any(card.get(k) for k in QUANTIZED_CARD_KEYS):
        return True
    return bool(config and config.get("quantization_config"))


def derive_lineage(
    card: Mapping[str, Any], facts: PathFacts, config: Mapping[str, Any] | None = None
) -> Lineage | None:
    """Derive the relation to the card's bases the way the Hub does.

    An explicit, valid ``base_model_relation`` wins. Otherwise: adapter files ⇒ adapter; several bases ⇒
    merge;
    quantized formats ⇒ quantized; else finetune.

    Returns:
        None when the card names no base model.
    """
    bases = card_bases(card)
    if not bases:
        return None
    explicit = card.get("base_model_relation")
    if isinstance(explicit, str) and explicit in RELATIONS:
        return Lineage(explicit, bases)
    if facts.adapter:
        relation = "adapter"
    elif len(bases) > 1:
        relation = "merge"
    elif is_quantized(card, facts, config):
        relation = "quantized"
    else:
        relation = "finetune"
    return Lineage(relation, bases)


def infer_library(facts: PathFacts, lineage: Lineage | None) -> str | None:
    """A library name when neither catalog nor card sets one (peft for adapters, gguf, transformers)."""
    if facts.adapter or (lineage is not None and lineage.relation == "adapter"):
        return "peft"
    if facts.gguf:
        return "gguf"
    return "transformers" if facts.config else None


_SCALARS = (str, int, float)


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v if isinstance(v, str) else str(v) for v in value if isinstance(v, _SCALARS)]
    return []


def derive_tags(
    card: Mapping[str, Any],
    facts: PathFacts,
    lineage: Lineage | None,
    library_name: str | None,
    pipeline_tag: str | None,
) -> tuple[str, ...]:
    """The repo's tags in the Hub's style, deduplicated, in a stable order."""
    tags: list[str] = []
    if library_name:
        tags.append(library_name)
    if facts.safetensors:
        tags.append("safetensors")
    if facts.gguf:
        tags.append("gguf")
    if lineage is not None and lineage.relation == "adapter":
        tags.append("peft")
    tags.extend(t for t in _as_list(card.get("tags")) if t)
    if pipeline_tag:
        tags.append(pipeline_tag)
    tags.extend(_as_list(card.get("language")))  # the Hub lists language codes as bare tags ("en")
    if lineage is not None:
        tags.extend(f"base_model:{b}" for b in lineage.bases)
        tags.extend(f"base_model:{lineage.relation}:{b}" for b in lineage.bases)
    tags.extend(f"license:{lic}" for lic in _as_list(card.get("license")))
    tags.append("region:us")
    return tuple(dict.fromkeys(tags))
