"""Synthetic catalogs: many metadata-only repos derived from a few bases, and mutations between crawls.

Entries are plain dicts in the ``catalog.jsonl`` format, so tests can inspect and edit them. Everything here
is a pure function of its arguments and seed except :func:`write_catalog` / :func:`generate_catalog`.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubdelta_dev.devhub import cards
from hubdelta_dev.devhub.entries import CATALOG_FILE, format_time_ms, parse_time_ms

BASE_ORG = "synth-base"
START_MS = parse_time_ms("2024-01-01T00:00:00.000Z")
STEP_MS = 60_000  # one repo created per minute: createdAt values are distinct
MONTH_MS = 30 * 24 * 3600 * 1000
RELATION_MIX = (("adapter", 0.45), ("finetune", 0.30), ("quantized", 0.15), ("merge", 0.10))
NAME_WORD = {"adapter": "lora", "finetune": "ft", "quantized": "GGUF", "merge": "merge"}
LICENSES = ("apache-2.0", "mit", "llama3.1", "cc-by-4.0")
DOMAINS = ("medical", "legal", "code", "math", "chat", "finance", "chemistry", "poetry")
CONFIG = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 2048,
    "num_hidden_layers": 16,
}


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate_catalog` wrote."""

    path: Path
    repos: int  # derived repos, bases excluded
    bases: tuple[str, ...]
    relations: dict[str, int]
    gated: int
    private: int
    seconds: float


@dataclass(frozen=True)
class Mutation:
    """The result of :func:`mutate_entries`: the new entry list and which ids changed how."""

    entries: list[dict[str, Any]]
    added: tuple[str, ...]
    changed: tuple[str, ...]
    dropped: tuple[str, ...]


def base_ids(n_bases: int) -> list[str]:
    """Ids of the synthetic bases: ``synth-base/base-0`` ..."""
    return [f"{BASE_ORG}/base-{i}" for i in range(n_bases)]


def _even(n: int) -> int:
    return n - n % 2


def base_entry(repo_id: str, created_ms: int, rng: random.Random) -> dict[str, Any]:
    """A metadata-only base model: config, one safetensors file, a card without base_model."""
    return {
        "id": repo_id,
        "createdAt": format_time_ms(created_ms),
        "lastModified": format_time_ms(created_ms),
        "downloads": rng.randint(100_000, 5_000_000),
        "likes": rng.randint(500, 5000),
        "trendingScore": rng.randint(50, 500),
        "card": {"license": "apache-2.0", "library_name": "transformers", "pipeline_tag": "text-generation"},
        "config": CONFIG,
        "files": {
            "model.safetensors": _even(rng.randint(2_000_000_000, 3_000_000_000)),
            "tokenizer.json": 2_100_000,
        },
    }


def _pick_relation(rng: random.Random) -> str:
    x, acc = rng.random(), 0.0
    for relation, share in RELATION_MIX:
        acc += share
        if x < acc:
            return relation
    return RELATION_MIX[-1][0]


def _files_for(relation: str, rng: random.Random) -> dict[str, int]:
    if relation == "adapter":
        return {
            "adapter_config.json": 700 + rng.randint(0, 200),
            "adapter_model.safetensors": _even(rng.randint(2 << 20, 200 << 20)),
        }
    if relation == "quantized":
        return {"model-Q4_K_M.gguf": rng.randint(800 << 20, 1600 << 20)}
    files = {"model.safetensors": _even(rng.randint(2_000_000_000, 3_000_000_000))}
    if relation == "merge":
        files["mergekit_config.yml"] = 400 + rng.randint(0, 200)
    return files


def derived_entry(index: int, created_ms: int, bases: Sequence[str], n_orgs: int, rng: random.Random) -> dict[str, Any]:
    """One synthetic child of the bases with a random relation, popularity, gating and visibility."""
    relation = _pick_relation(rng)
    parents = rng.sample(list(bases), 2) if relation == "merge" and len(bases) > 1 else [rng.choice(bases)]
    relation = "finetune" if relation == "merge" and len(parents) < 2 else relation
    domain = rng.choice(DOMAINS)
    card: dict[str, Any] = {
        "base_model": parents if relation == "merge" else parents[0],
        "license": rng.choice(LICENSES),
        "tags": [domain, NAME_WORD[relation].lower()],
        "pipeline_tag": "text-generation",
    }
    if rng.random() < 0.3:  # some cards state the relation, the rest leave it to inference
        card["base_model_relation"] = relation
    downloads = int(rng.paretovariate(1.1) * 5) - 5
    name = f"{parents[0].split('/')[-1]}-{domain}-{NAME_WORD[relation]}-{index:06d}"
    entry: dict[str, Any] = {
        "id": f"org-{rng.randrange(n_orgs):05d}/{name}",
        "createdAt": format_time_ms(created_ms),
        "lastModified": format_time_ms(created_ms + rng.randrange(MONTH_MS)),
        "downloads": downloads,
        "likes": downloads // rng.randint(20, 200),
        "trendingScore": rng.randint(0, 40),
        "library_name": "peft" if relation == "adapter" else "gguf" if relation == "quantized" else "transformers",
        "card": card,
        "files": _files_for(relation, rng),
    }
    if relation in ("finetune", "merge"):
        entry["config"] = CONFIG
    gate = rng.random()
    if gate < 0.05:
        entry["gated"] = "auto" if gate < 0.03 else "manual"
    if rng.random() < 0.02:
        entry["private"] = True
    return entry


def synth_entries(n_repos: int, n_bases: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n_bases`` bases then ``n_repos`` derived repos, spread over many orgs, distinct ``createdAt``.

    Deterministic for a seed. Creation order is shuffled relative to ids, so no order hides in the names.
    """
    if n_bases < 1:
        raise ValueError("n_bases must be >= 1")
    rng = random.Random(seed)
    bases = base_ids(n_bases)
    entries = [base_entry(b, START_MS + i * STEP_MS, rng) for i, b in enumerate(bases)]
    slots = list(range(n_repos))
    rng.shuffle(slots)
    n_orgs = max(10, n_repos // 40)
    for i in range(n_repos):
        created = START_MS + (n_bases + slots[i]) * STEP_MS
        entries.append(derived_entry(i, created, bases, n_orgs, rng))
    return entries


def read_catalog(root: Path) -> list[dict[str, Any]]:
    """The entries of ``<root>/catalog.jsonl`` as dicts (no validation: the server does that)."""
    with (Path(root) / CATALOG_FILE).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_catalog(root: Path, entries: Sequence[dict[str, Any]]) -> Path:
    """Replace ``<root>/catalog.jsonl`` atomically (temp file + ``os.replace``): never seen half-written."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / CATALOG_FILE
    tmp = root / f".{CATALOG_FILE}.{os.getpid()}.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(e, separators=(",", ":")) + "\n" for e in entries)
    os.replace(tmp, path)
    return path


def generate_catalog(root: Path, n_repos: int, n_bases: int, seed: int = 0) -> SynthSummary:
    """Write a synthetic ``catalog.jsonl`` under ``root`` (see :func:`synth_entries`)."""
    started = time.perf_counter()
    entries = synth_entries(n_repos, n_bases, seed)
    path = write_catalog(root, entries)
    relations: dict[str, int] = {}
    for e in entries[n_bases:]:
        lineage = cards.derive_lineage(e["card"], cards.path_facts(e["files"]), e.get("config"))  # as the server
        rel = lineage.relation if lineage else "none"
        relations[rel] = relations.get(rel, 0) + 1
    return SynthSummary(
        path=path,
        repos=n_repos,
        bases=tuple(base_ids(n_bases)),
        relations=relations,
        gated=sum(bool(e.get("gated")) for e in entries),
        private=sum(bool(e.get("private")) for e in entries),
        seconds=round(time.perf_counter() - started, 3),
    )


def mutate_entries(
    entries: Sequence[dict[str, Any]], *, add: int = 0, change: int = 0, drop: int = 0, seed: int = 0
) -> Mutation:
    """A new entry list with ``drop`` repos removed, ``change`` repos given a new sha, ``add`` new repos.

    Bases (``synth-base/*``) are never dropped or changed. Changed repos get ``revision + 1`` (and lose any
    explicit ``sha``) and a later ``lastModified``; added repos are newer than every existing one. The input
    is not modified.

    Raises:
        ValueError: more drops and changes than there are non-base repos.
    """
    rng = random.Random(seed)
    out = [dict(e) for e in entries]
    eligible = [i for i, e in enumerate(out) if not e["id"].startswith(f"{BASE_ORG}/")]
    if drop + change > len(eligible):
        raise ValueError(f"cannot drop {drop} and change {change} of {len(eligible)} non-base repos")
    picked = rng.sample(eligible, drop + change)
    dropped_idx, changed_idx = set(picked[:drop]), picked[drop:]
    latest = max((parse_time_ms(e[k]) for e in out for k in ("createdAt", "lastModified") if k in e), default=START_MS)
    for n, i in enumerate(changed_idx):
        e = out[i]
        e.pop("sha", None)
        e["revision"] = int(e.get("revision", 0)) + 1
        e["lastModified"] = format_time_ms(latest + (n + 1) * 1000)
    dropped = tuple(out[i]["id"] for i in sorted(dropped_idx))
    kept = [e for i, e in enumerate(out) if i not in dropped_idx]
    bases = [e["id"] for e in out if e["id"].startswith(f"{BASE_ORG}/")] or base_ids(1)
    taken = {e["id"] for e in out}
    added: list[str] = []
    n_orgs = max(10, len(out) // 40)
    index = len(out)
    while len(added) < add:
        entry = derived_entry(index, latest + (len(added) + 1) * STEP_MS, bases, n_orgs, rng)
        index += 1
        if entry["id"] not in taken:
            taken.add(entry["id"])
            added.append(entry["id"])
            kept.append(entry)
    return Mutation(kept, tuple(added), tuple(out[i]["id"] for i in changed_idx), dropped)
