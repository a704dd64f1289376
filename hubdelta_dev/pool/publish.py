"""Publishing built pool models into a devhub root: folders, model cards, catalog metadata, labels."""

from __future__ import annotations

import json
import os
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from hubdelta_dev.pool.base import BASE_REPO_ID
from hubdelta_dev.pool.recipe import ModelSpec

# Files of a built folder that are build records, not repo content.
PRIVATE_FILES = {"training.json", "hubdelta_source.json"}
BASE_CREATED = datetime(2024, 10, 31, 12, 0, tzinfo=UTC)
CHILDREN_FROM = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


def card_text(meta: dict[str, Any], title: str, body: str) -> str:
    """A README.md model card: YAML front matter, then markdown."""
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip()
    return f"---\n{front}\n---\n\n# {title}\n\n{body}\n"


def card_meta(spec: ModelSpec) -> dict[str, Any]:
    """Card metadata the Hub derives tags from (``base_model`` and, where not inferable, the relation)."""
    bases: str | list[str] = spec.bases[0] if len(spec.bases) == 1 else list(spec.bases)
    meta: dict[str, Any] = {"base_model": bases}
    meta["library_name"] = "peft" if spec.kind == "lora" else "transformers"
    meta["license"] = "apache-2.0"
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = ["hubdelta-pool", spec.kind]
    return meta


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def catalog_entries(specs: list[ModelSpec], seed: int, bases: list[str] | None = None) -> list[dict[str, Any]]:
    """Hub metadata for the bases and every pool repo: creation order shuffled so newest-first mixes kinds."""
    rng = random.Random(f"catalog-{seed}")
    order = list(range(len(specs)))
    rng.shuffle(order)
    # A merge must not predate what it merges: place dependents after their inputs.
    position = {specs[i].repo_id: rank for rank, i in enumerate(order)}
    entries = [{"id": base, "createdAt": _iso(BASE_CREATED), "lastModified": _iso(BASE_CREATED),
                "downloads": 250_000, "likes": 180, "library_name": "transformers",
                "pipeline_tag": "text-generation"} for base in bases or [BASE_REPO_ID]]  # fmt: skip
    for spec in specs:
        rank = max([position[spec.repo_id]] + [position[b] + 1 for b in spec.bases if b in position])
        position[spec.repo_id] = rank
        created = CHILDREN_FROM + timedelta(hours=7 * rank, minutes=rng.randrange(60))
        entries.append(
            {
                "id": spec.repo_id,
                "createdAt": _iso(created),
                "lastModified": _iso(created + timedelta(minutes=rng.randrange(1, 600))),
                "downloads": rng.randrange(0, 5000),
                "likes": rng.randrange(0, 40),
            }
        )
    return entries


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link (or copy, across file systems) the repo files of ``src`` into ``dst``."""
    for path in sorted(src.rglob("*")):
        if path.is_dir() or path.name in PRIVATE_FILES:
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def write_text(path: Path, text: str) -> None:
    """Write a file atomically (temp file + rename), so a killed build never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
