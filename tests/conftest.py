"""Shared fixtures: an isolated Hub environment, a tiny devhub root, running devhub servers, the pool, processes;
and the tiers: ``pool`` and ``e2e`` markers applied from the fixtures a test uses (``pytest_collection_modifyitems``).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from huggingface_hub import constants

from hubdelta.kernel.settings import load_settings
from hubdelta_dev.devhub.server import DevhubServer
from hubdelta_dev.pool.build import PoolManifest, build_pool
from tests.helpers import (
    BASE,
    GEMMA_ADAPTERS,
    OTHER_BASE,
    SMOL_ADAPTERS,
    TOKEN,
    PoolIndex,
    Processes,
    TinyRoot,
    pool_cache_dir,
    write_safetensors,
)

# ---- the tiers -------------------------------------------------------------------------------------------------

# The fixtures that need the trained finetune pool (built once per session; a cold build trains for ~10 minutes).
POOL_FIXTURES = frozenset({"pool", "family_pool", "pool_hub", "manifest", "pool_index"})
# The fixtures that start processes: ``processes`` (what a test starts itself: the CLI, the daemon, the index's
# child writer, Chromium, a Python that checks its imports), ``s3`` (moto_server), ``ray_cluster`` (Ray) and
# ``served`` (``hubdelta serve`` over a built index, shared by a test module).
E2E_FIXTURES = frozenset({"processes", "s3", "ray_cluster", "served"})
# A pool test's timeout unless it has its own: the session's pool fixtures (linking the pool; crawling, embedding
# and reporting it for ``pool_index``; exporting Gemma-3 and training its adapters for ``family_pool`` when the
# cache lacks them) are charged to whichever pool test runs first, so no single test's own time bounds it.
POOL_TIMEOUT_S = 600
TESTS = Path(__file__).resolve().parent


# scripts/test.sh runs the pool and e2e tiers on two pytest-xdist workers, a test file to a worker (--dist
# loadfile): tests that must not run beside each other stay in one file — the family tests (the first exports
# Gemma-3 and trains its adapters into the shared cache), the Ray tests (a cluster each, found by process name),
# the hostile corpus (one module fixture: two crawl + embed rounds).


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by the fixtures it uses, directly or through other fixtures: ``pool``, ``e2e``."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & POOL_FIXTURES:
            item.add_marker(pytest.mark.pool)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(POOL_TIMEOUT_S))
        if used & E2E_FIXTURES:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Start processes only through this (``processes.popen``, ``processes.run``): it marks the test ``e2e``, and
    what still runs at the test's end is killed."""
    started = Processes()
    yield started
    started.close()


@pytest.fixture(autouse=True)
def _processes_only_in_e2e_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test module that starts a process in a test not marked ``e2e`` fails: the test would sit in the fast tier.
    (Processes that libraries start for themselves are theirs.)"""
    if request.node.get_closest_marker("e2e") is not None:
        return
    real = subprocess.Popen.__init__

    def guarded(self: subprocess.Popen[bytes], *args: Any, **kwargs: Any) -> None:
        frame = sys._getframe(1)
        while frame.f_back is not None and frame.f_code.co_filename == subprocess.__file__:
            frame = frame.f_back
        caller = Path(frame.f_code.co_filename)
        if caller.parent == TESTS and caller.name.startswith("test_"):
            raise AssertionError(f"{caller.name} starts a process: use the `processes` fixture (it marks tests e2e)")
        real(self, *args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)


# ---- the environment -------------------------------------------------------------------------------------------


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
def _open_hub_gate() -> Iterator[None]:
    """The process-wide rate-limit gate (hubdelta.embedder.hub_retry.GATE) starts open: one test's 429s must not
    hold the next test's requests."""
    from hubdelta.embedder.hub_retry import GATE

    GATE.reset()
    yield
    GATE.reset()


@pytest.fixture(autouse=True)
def _no_read_only_exit() -> Iterator[None]:
    """A read-only query run in-process (CliRunner) sets ``finished_read_only``; left set, a later call of
    ``hubdelta.cli.main`` would end pytest itself with ``os._exit(0)``: the rest of the suite silently unrun."""
    from hubdelta.cli import query

    yield
    query.finished_read_only = False


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


def card(meta: dict[str, Any], title: str = "A test model") -> str:
    import yaml

    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n# {title}\n"


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


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pool")
    build_pool(out, cache_dir=pool_cache_dir(), seed=0)
    return out


@pytest.fixture(scope="session")
def family_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 and Gemma-3 adapters of math and code, from the same cache as ``pool``: both bases (Gemma-3-270M
    exported once from its PyPI GGUF, ~1 minute cold) and the two Gemma adapters (~30 s each cold)."""
    out = tmp_path_factory.mktemp("family-pool")
    build_pool(out, cache_dir=pool_cache_dir(), only={*SMOL_ADAPTERS, *GEMMA_ADAPTERS}, gemma=True)
    return out


@pytest.fixture(scope="session")
def pool_hub(pool: Path) -> Iterator[DevhubServer]:
    with DevhubServer(pool / "hub") as server:
        yield server


@pytest.fixture(scope="session")
def manifest(pool: Path) -> PoolManifest:
    return PoolManifest.load(pool / "manifest.json")


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


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path, dict[str, str | None]]]:
    """``hubdelta serve`` over a built index (tests/web_helpers.py), shared by one test module: read it only.
    Yields the server, the home and the index's repo -> planted domain."""
    from tests.helpers import Processes
    from tests.web_helpers import build_web_index, start_serve

    home = tmp_path_factory.mktemp("served")
    names = build_web_index(home)
    started = Processes()
    try:
        yield start_serve(started, home), home, names
    finally:
        started.close()
