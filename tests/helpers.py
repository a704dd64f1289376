"""What several test modules share (test modules import only this module and never each other): constants of the
tiny devhub root, settings for a home, one-line errors, index records, planted report vectors, and the processes
a test starts (the index's child writer below, the ``hubdelta daemon``), always through :class:`Processes`.

``python -m tests.helpers MODE ...`` is a child process that writes to an index. Each mode prints one line when it
reaches its point, then sleeps until killed:
    hold URI LOCK_DIR COMMAND              open as writer, print "locked"
    put URI LOCK_DIR START N MARKER        put N records from START; print "ready" when put_models has its
                                           arrow rows (just before Lance's merge), "done" after the commit
    compact URI LOCK_DIR                   open as writer, print "ready", compact every table, print "done"
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from hubdelta.embedder.safety_records import BaseInfo
from hubdelta.index.records import HubModel, ModelRecord, ModelStatus, Relation
from hubdelta.kernel.settings import Settings, load_settings
from hubdelta_dev.devhub import badrepos
from hubdelta_dev.devhub.badrepos import BASE_ID, base_shapes, lora_shapes

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_devhub_test_token"  # the one token the test servers accept
BASE = "acme/base-7m"  # the tiny root's base
OTHER_BASE = "acme/base-other"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
# The family pool (conftest's ``family_pool``): adapters of two domains on SmolLM2 and on Gemma-3.
SMOL_ADAPTERS = tuple(f"hubdelta-pool/smollm2-lora-{d}-{s}" for d in ("math", "code") for s in (1, 2))
GEMMA_ADAPTERS = ("hubdelta-pool/gemma3-lora-math-1", "hubdelta-pool/gemma3-lora-code-1")


# ---- settings, errors, the tiny root, the pool -------------------------------------------------------------------


def settings_for(home: Path, url: str, toml: str = "") -> Settings:
    """Settings for ``home`` (created) against the Hub at ``url``, with ``toml`` as its hubdelta.toml."""
    home.mkdir(parents=True, exist_ok=True)
    if toml:
        (home / "hubdelta.toml").write_text(toml)
    return load_settings({"HF_ENDPOINT": url}, home=home)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_line_error(result: Any) -> str:
    """The one error line of a failed CliRunner result (asserting it is one line that names the fix)."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and "(fix: " in lines[0]
    return lines[0]


def write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]]) -> int:
    """Write a safetensors file of F32 zeros with the ``safetensors`` package; returns the parameter count."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.zeros(shape, dtype=np.float32) for k, shape in shapes.items()}, str(path))
    return sum(int(np.prod(s)) for s in shapes.values())


@dataclass(frozen=True)
class TinyRoot:
    """A devhub root with one repo of every kind, and what devhub must say about it (conftest's ``tiny``)."""

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


def pool_cache_dir() -> Path:
    """Trained pool models are cached across test runs (a cold build trains for ~10 minutes)."""
    return Path(os.environ.get("HUBDELTA_TEST_CACHE", Path.home() / ".cache" / "hubdelta-test")) / "pool"


@dataclass(frozen=True)
class PoolIndex:
    """A home whose index holds the whole pool crawled, embedded in the default space and reported once."""

    home: Path
    settings: Settings
    hub_url: str
    pool: Path


# ---- index records ---------------------------------------------------------------------------------------------


def record(
    i: int, *, base: str = "acme/base", status: ModelStatus = ModelStatus.QUEUED, **model: object
) -> ModelRecord:
    """A plausible record number ``i``; keyword arguments override HubModel fields."""
    fields: dict[str, object] = {
        "repo_id": f"user{i % 7}/model-{i}",
        "sha": f"{i:040x}",
        "relation": Relation.ADAPTER,
        "base_models": (base,),
        "created_at": T0 + timedelta(minutes=i),
        "last_modified": T0 + timedelta(minutes=i, hours=1),
        "tags": ("peft", f"tag-{i % 5}"),
        "library": "peft",
        "pipeline_tag": "text-generation",
        "license": "apache-2.0",
        "downloads": i * 3,
        "likes": i % 11,
        "card_summary": f"model {i}",
    }
    fields.update(model)
    return ModelRecord(HubModel(**fields), status, first_seen=T0, last_seen=T0)  # type: ignore[arg-type]


def records(start: int, n: int, **kwargs: Any) -> list[ModelRecord]:
    return [record(i, **kwargs) for i in range(start, start + n)]


# ---- planted report vectors ------------------------------------------------------------------------------------

REPORT_BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"
REPORT_SPACE = "smollm2-135m-instruct-0123abcd"
REPORT_DIM = 32


def pool_tags(repo_id: str) -> tuple[str, ...]:
    kind = "lora" if "-lora-" in repo_id else "full"
    return ("peft", "safetensors", "hubdelta-pool", kind, f"base_model:adapter:{REPORT_BASE}", "license:apache-2.0",
            "region:us")  # fmt: skip


def pool_card(repo_id: str) -> str:
    parts = repo_id.rsplit("/", 1)[-1].split("-")
    return f"LoRA adapter on 64 {parts[2]} examples (disjoint split 1)." if len(parts) > 2 else "A merge."


def pool_names(domain: str, splits: list[object]) -> dict[str, str | None]:
    return {f"hubdelta-pool/smollm2-lora-{domain}-{s}": domain for s in splits}


class PlantedPool:
    """Planted domains in a REPORT_DIM-dimensional space; each model a noisy copy of its domain's direction."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(7)
        common = 1.5 * self.rng.normal(size=REPORT_DIM)  # what every finetune of the base shares
        self.centres = {d: common + self.rng.normal(size=REPORT_DIM) for d in ("math", "code", "legal", "chemistry")}

    def vector(self, domain: str | None) -> np.ndarray:
        centre = self.centres[domain] if domain else 3 * self.rng.normal(size=REPORT_DIM)
        return (centre + 0.2 * self.rng.normal(size=REPORT_DIM)).astype(np.float32)

    def put(self, settings: Settings, names: dict[str, str | None], when: datetime) -> None:
        from hubdelta.index.door import open_writer
        from hubdelta.index.embeddings import Embedding, SpaceRow

        recs, vectors = [], []
        for i, (repo_id, domain) in enumerate(names.items()):
            m = HubModel(repo_id, f"{i:040x}", Relation.ADAPTER, (REPORT_BASE,), created_at=when,
                         tags=pool_tags(repo_id), card_summary=pool_card(repo_id))  # fmt: skip
            recs.append(ModelRecord(m, ModelStatus.EMBEDDED, attempts=1, first_seen=when, last_seen=when))
            vectors.append(Embedding(repo_id, m.sha, self.vector(domain), when))
        with open_writer(settings, "test") as index:
            index.models.put(recs)
            if REPORT_SPACE not in index.vectors.spaces():
                params = {"base_repo": REPORT_BASE, "dim": REPORT_DIM, "position": "last", "dtype": "float32"}
                index.vectors.put_space(SpaceRow(REPORT_SPACE, params, np.zeros((5, REPORT_DIM), np.float32), when))
            index.vectors.put(REPORT_SPACE, vectors)


# ---- processes -------------------------------------------------------------------------------------------------


class Processes:
    """The processes one test starts: only through this (the ``processes`` fixture, which marks the test ``e2e``),
    and whatever still runs at the test's end is killed."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[Any]] = []

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc: subprocess.Popen[Any] = subprocess.Popen(list(args), **kwargs)
        self.started.append(proc)
        return proc

    def run(self, args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        kwargs.setdefault("timeout", 300)
        return subprocess.run(list(args), **kwargs)

    def close(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def spawn(processes: Processes, *args: str) -> subprocess.Popen[str]:
    """Start an index child (``python -m tests.helpers``) in one of the modes of this module's docstring."""
    return processes.popen([sys.executable, "-m", "tests.helpers", *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                           text=True)  # fmt: skip


def expect_line(proc: subprocess.Popen[str], line: str) -> None:
    """Block until the child prints ``line``; fail if it prints anything else or exits first."""
    assert proc.stdout is not None
    got = proc.stdout.readline().strip()
    assert got == line, f"child printed {got!r} (exit {proc.poll()}), expected {line!r}"


def start_daemon(processes: Processes, home: Path, url: str) -> subprocess.Popen[Any]:
    """``hubdelta daemon`` as a process, logging to ``<home>/daemon-<n>.log`` (``proc.log``).

    A file, not a pipe: a daemon writing into a pipe nobody reads blocks once the pipe's 64 KiB are full.
    """
    env = {**os.environ, "HF_ENDPOINT": url, "HUBDELTA_HOME": str(home)}
    log = home / f"daemon-{len(list(home.glob('daemon-*.log')))}.log"
    with log.open("w") as sink:
        proc = processes.popen([sys.executable, "-m", "hubdelta", "--log-json", "daemon"], env=env,
                               stdout=subprocess.DEVNULL, stderr=sink)  # fmt: skip
    proc.log = log  # type: ignore[attr-defined]
    return proc


def stop_daemon(proc: subprocess.Popen[Any], sig: int = 15, timeout: float = 120) -> str:
    """Signal the daemon (SIGTERM unless ``sig``), wait for it, and return its log."""
    proc.send_signal(sig)
    proc.wait(timeout=timeout)
    return Path(proc.log).read_text()  # type: ignore[attr-defined]


def wait_for(
    what: str, check: Callable[[], bool], timeout: float = 240, proc: subprocess.Popen[Any] | None = None
) -> None:
    """Poll ``check`` every 0.5 s; fail after ``timeout`` or when ``proc`` (a daemon) exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            log = Path(proc.log).read_text()[-3000:] if getattr(proc, "log", None) else ""  # type: ignore[attr-defined]
            raise AssertionError(f"the daemon exited ({proc.returncode}) before: {what}\n{log}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for: {what}")


def statuses(home: Path, url: str) -> dict[str, str]:
    """repo id -> status of every model in the index of ``home``."""
    from hubdelta.index.door import open_reader

    with open_reader(settings_for(home, url)) as index:
        return {k: r.status.value for k, r in index.models.get().items()}


def vectors(home: Path, url: str) -> dict[str, int]:
    """repo id -> how many vectors it has, over every space."""
    from hubdelta.index.door import open_reader

    with open_reader(settings_for(home, url)) as index:
        counts: dict[str, int] = {}
        for space in index.vectors.spaces():
            for repo in index.vectors.get(space):
                counts[repo] = counts.get(repo, 0) + 1
        return counts


def drained(home: Path, url: str) -> bool:
    """Whether the index has models and none is queued or being embedded."""
    try:
        got = statuses(home, url)
    except Exception:  # the index does not exist yet, or a write is under way
        return False
    return bool(got) and not any(s in ("queued", "embedding") for s in got.values())


# ---- the index child -------------------------------------------------------------------------------------------


def _child(argv: list[str]) -> None:
    import pyarrow as pa

    from hubdelta.index import models_store
    from hubdelta.index.store import Index

    mode, uri, lock_dir, *rest = argv
    if mode == "hold":
        index = Index.open(uri, lock_dir=Path(lock_dir), writer=rest[0])
        print("locked", flush=True)
    elif mode == "compact":
        index = Index.open(uri, lock_dir=Path(lock_dir), writer="compact")
        print("ready", flush=True)
        index.maintenance.compact()
        print("done", flush=True)
    else:
        start, n, marker = int(rest[0]), int(rest[1]), rest[2]
        index = Index.open(uri, lock_dir=Path(lock_dir), writer=f"put {marker}")
        batch = [r.with_status(ModelStatus.QUEUED, reason=marker) for r in records(start, n)]
        convert = models_store.models_to_table

        def announce(recs: Sequence[ModelRecord]) -> pa.Table:
            table = convert(recs)
            print("ready", flush=True)  # the rows are arrow now: what follows is Lance's merge and commit
            return table

        models_store.models_to_table = announce  # type: ignore[assignment]
        index.models.put(batch)
        print("done", flush=True)
    time.sleep(600)
    index.close()


if __name__ == "__main__":
    _child(sys.argv[1:])


# --- listings for the safety rules (a tiny llama base, as devhub's bad-repo corpus writes it) ---------------

SAFETY_BASE = BaseInfo(BASE_ID, "llama", 16, {**base_shapes(), "lm_head.weight": (64, 16)})  # tied head, as from disk
LORA_CFG = json.loads(badrepos.adapter_config())
FULL_CFG = json.loads(badrepos.full_config())


def safetensors_header(shapes: Mapping[str, tuple[int, ...]]) -> tuple[dict[str, Any], int]:
    """A valid header for ``shapes`` (F32, contiguous) and the size of the file holding it."""
    header: dict[str, Any] = {}
    pos = 0
    for name, shape in shapes.items():
        n = 4
        for d in shape:
            n *= d
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [pos, pos + n]}
        pos += n
    return header, 8 + len(json.dumps(header)) + pos


def adapter_files(cfg: dict[str, Any] | None = None, shapes: Mapping[str, tuple[int, ...]] | None = None) -> tuple:
    header, size = safetensors_header(lora_shapes(4) if shapes is None else shapes)
    files = {"adapter_config.json": 300, "adapter_model.safetensors": size, "README.md": 10}
    configs = {"adapter_config.json": {**LORA_CFG, **(cfg or {})}}
    return files, configs, {"adapter_model.safetensors": header}


def full_files(cfg: dict[str, Any] | None = None, extra: dict[str, int] | None = None) -> tuple:
    header, size = safetensors_header(base_shapes())
    files = {"config.json": 500, "model.safetensors": size, "tokenizer.json": 2000, **(extra or {})}
    return files, {"config.json": {**FULL_CFG, **(cfg or {})}}, {"model.safetensors": header}


def _settled(settings: Settings) -> int:
    from hubdelta.index.door import open_reader
    from hubdelta.index.records import ModelStatus

    try:
        with open_reader(settings) as index:
            counts = index.models.count_by_status()
    except Exception:  # the first run has not migrated the index yet
        return -1
    return counts[ModelStatus.EMBEDDED] + counts[ModelStatus.UNCHANGED]


def kill_after_progress(proc: subprocess.Popen[bytes], settings: Settings, rng: random.Random) -> int:
    """Kill ``proc`` a random moment (0-1.5 s) after its first commit of results: mid-run, whatever the machine's
    speed (a fixed delay missed the run on a quiet machine). Returns 1 if it was killed."""
    before = max(0, _settled(settings))
    while proc.poll() is None:
        time.sleep(0.2)
        if _settled(settings) > before:
            time.sleep(rng.uniform(0.0, 1.5))
            break
    if proc.poll() is not None:
        return 0
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return 1
