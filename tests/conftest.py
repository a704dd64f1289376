"""Shared fixtures: an isolated Hub environment, a tiny devhub root, running devhub servers."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from huggingface_hub import constants

from hubdelta.kernel.settings import Settings, load_settings
from hubdelta_dev.devhub.server import DevhubServer
from hubdelta_dev.pool.build import PoolManifest, build_pool

TOKEN = "hf_devhub_test_token"  # the one token the test servers accept
BASE = "acme/base-7m"
OTHER_BASE = "acme/base-other"


@pytest.fixture(autouse=True)
def _isolated_hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every Hub and hubdelta state dir at a temp dir; never offline, never a stray token or telemetry.

    huggingface_hub reads its environment once at import, so its constants are patched too.
    """
    hf_home = tmp_path / "hf_home"
    for name, value in {
        "HF_HOME": hf_home,
        "HF_HUB_CACHE": hf_home / "hub",
        "HUBDELTA_HOME": tmp_path / "hubdelta_home",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }.items():
        monkeypatch.setenv(name, str(value))
    for name in (
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(hf_home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo ``configure_logging`` after CLI tests: it binds structlog and stdlib handlers to captured streams
    that are closed when the test ends, and server threads of later tests would log into them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]]) -> int:
    """Write a safetensors file of F32 zeros with the ``safetensors`` package; returns the parameter count."""
    import numpy as np
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.zeros(shape, dtype=np.float32) for k, shape in shapes.items()}, str(path))
    return sum(int(np.prod(s)) for s in shapes.values())


def card(meta: dict[str, Any], title: str = "A test model") -> str:
    import yaml

    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n# {title}\n"


@dataclass(frozen=True)
class TinyRoot:
    """A devhub root with one repo of every kind, and what devhub must say about it."""

    path: Path
    adapters: frozenset[str]  # public adapters of BASE
    finetunes: frozenset[str]
    merges: frozenset[str]
    quantized: frozenset[str]
    gated: str
    private: str
    virtual: str  # a catalog-only repo
    public: frozenset[str]  # every repo an anonymous caller lists
    base_params: int
    catalog: dict[str, dict[str, Any]]


def _files(root: Path, repo_id: str, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        f = root / repo_id / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(content if isinstance(content, bytes) else content.encode())


CONFIG = json.dumps({"model_type": "llama", "hidden_size": 16})
ADAPTER_CONFIG = json.dumps({"peft_type": "LORA", "r": 8, "base_model_name_or_path": BASE})


def build_tiny_root(root: Path) -> TinyRoot:
    """Write the tiny root: bases, adapters, finetunes, a merge, a quantized, gated, private, virtual repo."""
    base_meta = {"license": "apache-2.0", "library_name": "transformers", "pipeline_tag": "text-generation"}
    _files(root, BASE, {"README.md": card(base_meta, "Base"), "config.json": CONFIG, "tokenizer.json": "{}"})
    base_params = write_safetensors(root / BASE / "model.safetensors", {"w": (16, 8), "b": (8,)})
    _files(root, OTHER_BASE, {"README.md": card(base_meta), "config.json": CONFIG})
    write_safetensors(root / OTHER_BASE / "model.safetensors", {"w": (4, 4)})
    lora = {
        "README.md": card({"base_model": BASE, "tags": ["medical"]}),
        "adapter_config.json": ADAPTER_CONFIG,
    }
    _files(root, "alice/base-lora", {**lora, "sub/dir/notes.txt": "n" * 300, ".hidden": "x", ".git/HEAD": "x"})
    write_safetensors(root / "alice/base-lora/adapter_model.safetensors", {"lora_A": (8, 16), "lora_B": (8, 8)})
    _files(root, "alice/base-lora-2", {**lora, "README.md": card({"base_model": BASE, "library_name": "peft"})})
    _files(
        root,
        "bob/base-ft",
        {"README.md": card({"base_model": BASE, "license": "mit"}), "config.json": CONFIG},
    )
    write_safetensors(root / "bob/base-ft/model.safetensors", {"w": (16, 8), "b": (8,)})
    _files(root, "carol/merged", {"README.md": card({"base_model": [BASE, OTHER_BASE]}), "config.json": CONFIG})
    _files(root, "dave/base-gguf", {"README.md": card({"base_model": BASE}), "model-Q4_K_M.gguf": b"GGUF" * 64})
    explicit = card({"base_model": BASE, "base_model_relation": "finetune"})
    _files(root, "erin/explicit-ft", {"README.md": explicit, "adapter_config.json": ADAPTER_CONFIG})
    _files(root, "frank/other-lora", {"README.md": card({"base_model": OTHER_BASE}), "adapter_config.json": "{}"})
    _files(root, "acme/gated-model", {"README.md": card({"base_model": BASE}), "config.json": CONFIG})
    _files(root, "acme/secret", {"README.md": card({"base_model": BASE}), "adapter_config.json": "{}"})
    catalog = _tiny_catalog(root)
    every = frozenset(catalog)
    return TinyRoot(
        path=root,
        adapters=frozenset({"alice/base-lora", "alice/base-lora-2", "virt/meta-only"}),
        finetunes=frozenset({"bob/base-ft", "erin/explicit-ft", "acme/gated-model"}),
        merges=frozenset({"carol/merged"}),
        quantized=frozenset({"dave/base-gguf"}),
        gated="acme/gated-model",
        private="acme/secret",
        virtual="virt/meta-only",
        public=every - {"acme/secret"},
        base_params=base_params,
        catalog=catalog,
    )


def _tiny_catalog(root: Path) -> dict[str, dict[str, Any]]:
    """catalog.jsonl of the tiny root: metadata for each folder, gating, privacy, one catalog-only repo."""
    ids = sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in root.glob("*/*/README.md"))
    catalog: dict[str, dict[str, Any]] = {}
    for i, repo_id in enumerate([*ids, "virt/meta-only"]):
        # Distinct values per repo and a different order per key, so every sort is observable.
        catalog[repo_id] = {
            "id": repo_id,
            "createdAt": f"2024-05-{1 + i:02d}T12:00:00.000Z",
            "lastModified": f"2024-06-{28 - 2 * i:02d}T08:30:00.000Z",
            "downloads": (i * 37) % 101 + i,
            "likes": (i * 53) % 97 + 2 * i,
            "trendingScore": (i * 7) % 13 * 100 + i,
        }
    catalog["acme/gated-model"]["gated"] = "manual"
    catalog["acme/secret"]["private"] = True
    catalog["virt/meta-only"].update(
        card={"base_model": BASE, "license": "mit", "tags": ["virtual"]},
        card_text="# Virtual\n\nOnly in the catalog.\n",
        files={"adapter_config.json": 300, "adapter_model.safetensors": 4096},
    )
    (root / "catalog.jsonl").write_text("".join(json.dumps(e) + "\n" for e in catalog.values()))
    return catalog


@pytest.fixture
def tiny(tmp_path: Path) -> TinyRoot:
    return build_tiny_root(tmp_path / "hub")


@pytest.fixture
def serve() -> Iterator[Callable[..., DevhubServer]]:
    """A factory: ``serve(root, **DevhubServer kwargs)`` starts a server that stops after the test."""
    started: list[DevhubServer] = []

    def _serve(root: Path, **kwargs: Any) -> DevhubServer:
        kwargs.setdefault("tokens", [TOKEN])
        server = DevhubServer(root, **kwargs).start()
        started.append(server)
        return server

    yield _serve
    for server in started:
        server.stop()


@pytest.fixture
def hub(tiny: TinyRoot, serve: Callable[..., DevhubServer]) -> DevhubServer:
    """A server over the tiny root, checking for changes every 0.1 s."""
    return serve(tiny.path, check_interval_s=0.1)


# --- the finetune pool (built once per session from a cache) -------------------------------------------


def pool_cache_dir() -> Path:
    """Trained pool models are cached across test runs (a cold build trains for ~10 minutes)."""
    return Path(os.environ.get("HUBDELTA_TEST_CACHE", Path.home() / ".cache" / "hubdelta-test")) / "pool"


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pool")
    build_pool(out, cache_dir=pool_cache_dir(), seed=0)
    return out


@pytest.fixture(scope="session")
def family_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 and Gemma-3 adapters of math and code (tests/family_root.py), from the same cache as ``pool``."""
    from tests.family_root import build_family_pool

    return build_family_pool(tmp_path_factory.mktemp("family-pool"), pool_cache_dir())


@pytest.fixture(scope="session")
def pool_hub(pool: Path) -> Iterator[DevhubServer]:
    with DevhubServer(pool / "hub") as server:
        yield server


@pytest.fixture(scope="session")
def manifest(pool: Path) -> PoolManifest:
    return PoolManifest.load(pool / "manifest.json")


@dataclass(frozen=True)
class PoolIndex:
    """A home whose index holds the whole pool crawled, embedded in the default space and reported once."""

    home: Path
    settings: Settings
    hub_url: str
    pool: Path


@pytest.fixture(scope="session")
def pool_index(pool: Path, pool_hub: DevhubServer, tmp_path_factory: pytest.TempPathFactory) -> PoolIndex:
    """Shared by every test that only reads an embedded pool (eval, task): never write to it."""
    from hubdelta.crawler.api import run_crawl, track
    from hubdelta.embedder.api import run_embed
    from hubdelta.report.api import run_report
    from hubdelta_dev.pool.base import BASE_REPO_ID

    home = tmp_path_factory.mktemp("pool-index")
    settings = load_settings({"HF_ENDPOINT": pool_hub.url}, home=home)
    track(settings, BASE_REPO_ID)
    run_crawl(settings)
    summary = run_embed(settings)
    assert summary.failed == 0 and len(summary.spaces) == 1, summary
    run_report(settings)
    return PoolIndex(home, settings, pool_hub.url, pool)
