"""The finetune pool: a reproducible recipe, served by devhub, of models that really learned their domain."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, snapshot_download

from hubdelta.embedder.packed import kernel_dtype
from hubdelta.embedder.training import TrainConfig, as_trained_here
from hubdelta_dev.devhub.server import DevhubServer
from hubdelta_dev.pool.base import BASE_REPO_ID
from hubdelta_dev.pool.build import PoolManifest, _as_trained_here, build_pool
from hubdelta_dev.pool.domains import domain_examples
from hubdelta_dev.pool.evaluate import evaluate_pool
from hubdelta_dev.pool.recipe import (
    DOMAIN_NAMES,
    EXAMPLES_PER_DOMAIN,
    FEWSHOT_SLICE,
    MIXED,
    MIXED_START,
    N_SPLITS,
    heldout_slice,
    pool_recipe,
    split_slice,
)
from hubdelta_dev.pool.recipe_b import pool_recipe_b
from tests.helpers import pool_cache_dir


def test_recipe_slices_are_disjoint_and_in_range() -> None:
    for domain in DOMAIN_NAMES:
        ranges = [(heldout_slice(domain).start, heldout_slice(domain).stop), FEWSHOT_SLICE]
        ranges += [(split_slice(domain, s).start, split_slice(domain, s).stop) for s in range(1, N_SPLITS + 1)]
        ranges.append((MIXED_START, MIXED_START + MIXED))
        covered = [i for a, b in ranges for i in range(a, b)]
        assert len(covered) == len(set(covered)) == EXAMPLES_PER_DOMAIN


@pytest.mark.parametrize("domain", DOMAIN_NAMES)
def test_domain_data_is_deterministic_distinct_and_seeded(domain: str) -> None:
    first = domain_examples(domain, EXAMPLES_PER_DOMAIN, seed=0)
    assert first == domain_examples(domain, EXAMPLES_PER_DOMAIN, seed=0)
    assert len({(e.instruction, e.input) for e in first}) == EXAMPLES_PER_DOMAIN
    assert all(e.output.strip() for e in first)
    assert first != domain_examples(domain, EXAMPLES_PER_DOMAIN, seed=1)


def test_recipe_has_the_required_kinds() -> None:
    specs = pool_recipe(0)
    loras = [s for s in specs if s.kind == "lora"]
    assert {s.label for s in loras if "+" not in s.label} == set(DOMAIN_NAMES)
    assert len([s for s in loras if s.repo_id.endswith("fewshot")]) == len(DOMAIN_NAMES)
    assert len([s for s in loras if "+" in s.label]) >= 2
    assert len([s for s in specs if s.kind == "full"]) >= 2
    assert len([s for s in specs if s.kind == "merge"]) >= 1
    for s in loras:
        assert s.train is not None and (s.train.lora_r, s.train.lora_alpha) == (8, 16)
        assert set(s.train.lora_targets) == {
            "q_proj",
            "k_proj",
            "v_proj",
            "up_proj",
            "down_proj",
            "gate_proj",
        }


def test_the_second_pool_varies_every_recipe_and_keeps_the_held_out_examples_out() -> None:
    first = {s.train for s in pool_recipe(0) if s.kind == "lora" and s.train is not None}
    specs = pool_recipe_b(0)
    assert len(specs) == 5 * len(DOMAIN_NAMES) and {s.kind for s in specs} == {"lora"}
    assert {s.label for s in specs} == set(DOMAIN_NAMES)
    recipes = {s.train for s in specs if s.train is not None}
    assert len(recipes) == 5 and not recipes & first
    fields = ("lora_r", "lora_alpha", "lora_targets", "lr", "epochs", "batch_size")
    for cfg in recipes:  # each differs from every first-pool recipe in at least two of these settings
        assert all(sum(getattr(cfg, f) != getattr(old, f) for f in fields) >= 2 for old in first), cfg
    for s in specs:
        held = heldout_slice(s.label)
        assert all(d.stop <= held.start or d.start >= held.stop for d in s.data), s.repo_id


def test_devhub_lists_exactly_the_pool_children_by_relation(pool_hub: DevhubServer, manifest: PoolManifest) -> None:
    api = HfApi(endpoint=pool_hub.url)
    by_kind = {"adapter": "lora", "finetune": "full", "merge": "merge"}
    for relation, kind in by_kind.items():
        listed = [m.id for m in api.list_models(filter=f"base_model:{relation}:{BASE_REPO_ID}")]
        assert len(listed) == len(set(listed))
        assert set(listed) == {r.repo_id for r in manifest.repos if r.kind == kind}, relation


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_snapshot_download_of_an_adapter_gives_the_pool_files(
    pool: Path, pool_hub: DevhubServer, tmp_path: Path
) -> None:
    repo = "hubdelta-pool/smollm2-lora-code-2"
    local = Path(snapshot_download(repo, endpoint=pool_hub.url, cache_dir=tmp_path))
    expected = {p.name: _sha256(p) for p in (pool / "hub" / repo).iterdir()}
    assert {p.name: _sha256(p) for p in local.iterdir()} == expected
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(expected)


def test_rebuild_with_a_warm_cache_retrains_nothing(pool: Path, manifest: PoolManifest, tmp_path: Path) -> None:
    models = pool_cache_dir() / "models"
    before = {p.name: p.stat().st_mtime_ns for p in models.iterdir()}
    again = build_pool(tmp_path / "again", cache_dir=pool_cache_dir(), seed=0)
    assert [r.key for r in again.repos] == [r.key for r in manifest.repos]
    assert {p.name: p.stat().st_mtime_ns for p in models.iterdir()} == before
    adapter = "hubdelta-pool/smollm2-lora-math-1/adapter_model.safetensors"
    assert _sha256(tmp_path / "again" / "hub" / adapter) == _sha256(pool / "hub" / adapter)


def test_training_settings_say_what_this_cpu_runs() -> None:
    """bf16 autocast where the CPU has bf16 kernels, fp32 elsewhere (199 s against ~8 s a step on AVX2 only); the
    specs the pool is built and keyed from carry the settings that really make the weights."""
    bf16_here = kernel_dtype(torch.device("cpu"), torch.bfloat16) == torch.bfloat16
    asked = TrainConfig(bf16=True)
    assert as_trained_here(asked).bf16 == bf16_here and as_trained_here(replace(asked, bf16=False)).bf16 is False
    specs = [s for s in pool_recipe(0) if s.train is not None]
    assert specs and all(s.train.bf16 for s in specs if s.train is not None)  # the recipe asks for bf16
    assert all(_as_trained_here(s).train == replace(s.train, bf16=bf16_here) for s in specs if s.train is not None)


@pytest.mark.parametrize("domain", DOMAIN_NAMES)
def test_every_finetune_lowers_heldout_loss_on_its_own_domain(
    pool: Path, pool_hub: DevhubServer, manifest: PoolManifest, domain: str, tmp_path: Path
) -> None:
    # One domain per test (not one session fixture for all): each stays well inside the per-test timeout.
    expected = {r.repo_id for r in manifest.repos if domain in r.label.split("+")}
    assert len(expected) >= N_SPLITS + 1  # three splits and a few-shot adapter at least
    fetch = lambda repo: Path(snapshot_download(repo, endpoint=pool_hub.url, cache_dir=tmp_path))  # noqa: E731
    rows = evaluate_pool(pool, fetch, repos=expected, domain=domain)
    assert {r.repo_id for r in rows} == expected and {r.domain for r in rows} == {domain}
    worse = [(r.repo_id, round(r.loss, 3), round(r.base_loss, 3)) for r in rows if not r.loss < r.base_loss]
    assert not worse, f"models not better than the base on held-out {domain}: {worse}"
