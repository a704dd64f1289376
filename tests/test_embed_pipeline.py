"""The pipelined embed run (hubdelta.embedder.pipeline) on a real index: downloads ahead within bounds, claims and
results written in groups, a stop gives claims back, suspects of a dead run claimed a chunk at a time.

The runner and the downloads are stand-ins (no model, no network): what is tested here is the order of claims,
computes and writes against a real LanceDB index. The real path (devhub, the resident base, processes killed with
kill -9) is tested in test_embedder_worker.py and measured in bench/pipeline.py and bench/kill9.py.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hubdelta.embedder.fetch import FetchedModel
from hubdelta.embedder.lanes import Lanes
from hubdelta.embedder.ledger import SpaceLedger
from hubdelta.embedder.options import EmbedOptions
from hubdelta.embedder.pipeline import GIL_SWITCH_S, Pipeline, Timings
from hubdelta.embedder.prefetch import DOWNLOAD_NICE, Prefetcher
from hubdelta.embedder.run import Fetch, Run
from hubdelta.embedder.safety_records import RepoKind
from hubdelta.embedder.space import Space
from hubdelta.index.door import open_writer
from hubdelta.index.records import ModelRecord, ModelStatus
from hubdelta.index.store import Index
from hubdelta.kernel.errors import ModelUnavailable
from tests.helpers import Processes, records, settings_for

P, C = 2, 4
SPACE = Space("acme/base", "0" * 40, "paper-v1", "h", dim=C)


def fetched(repo_id: str, sha: str) -> FetchedModel:
    return FetchedModel(repo_id, sha, RepoKind.ADAPTER, Path("/nonexistent") / repo_id, (), (), 0, 0, False)


class Runner:
    """Activations from the repo id alone; remembers what it ran, in order."""

    def __init__(self) -> None:
        self.ran: list[list[str]] = []

    def adapters(self, folders: Mapping[str, Path]) -> dict[str, np.ndarray]:
        self.ran.append(list(folders))
        return {k: 1.0 + np.random.default_rng(abs(hash(k)) % 2**32).random((P, C)) for k in folders}

    def model(self, folder: Path, item: str) -> np.ndarray:
        raise AssertionError("no full models here")


class SpyLedger(SpaceLedger):
    """The real ledger, with the size of every claim noted."""

    claims: list[int]

    def claim(self, records: Sequence[ModelRecord]) -> list[ModelRecord]:
        self.claims.append(len(records))
        return super().claim(records)


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    with open_writer(settings_for(tmp_path / "home", "http://127.0.0.1:9"), "test") as index:
        yield index


def versions(index: Index, table: str) -> int:
    return len(list((Path(index.uri) / f"{table}.lance" / "_versions").glob("*.manifest")))


def ledger_for(index: Index, todo: Sequence[ModelRecord]) -> SpyLedger:
    index.models.put(todo)
    ledger = SpyLedger(index, SPACE, max_attempts=3)
    ledger.claims = []
    ledger.base(lambda: np.ones((P, C), np.float32))
    return ledger


def run_pipeline(ledger: SpaceLedger, todo: Sequence[ModelRecord], flow: EmbedOptions, runner: Runner | None = None,
                 run: Run | None = None, lanes: Lanes | None = None, fetch: Fetch = fetched) -> Run:  # fmt: skip
    run = run or Run()
    flow = replace(flow, download_process=False)  # the stand-in fetch is a closure: downloads on threads here
    with Pipeline(run, ledger, flow, Timings()) as pipeline:
        pipeline.start(todo, fetch)
        pipeline.go(runner or Runner(), lanes)
    return run


def test_prefetch_keeps_a_bounded_window_ahead_and_turns_errors_into_failures() -> None:
    lock, nice, started = threading.Lock(), set(), []
    running = most = 0
    items = [(f"o/m{i}", "sha") for i in range(12)]

    def slow(repo_id: str, sha: str) -> FetchedModel:
        nonlocal running, most
        nice.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        with lock:
            running += 1
            most = max(most, running)
            started.append(repo_id)
        time.sleep(0.02)
        with lock:
            running -= 1
        if repo_id == "o/m5":
            raise ModelUnavailable(repo_id, "the Hub answered 503 after retries", code="http", retryable=True)
        return fetched(repo_id, sha)

    prefetch = Prefetcher(slow, items, workers=3, ahead=4)
    time.sleep(0.2)
    assert len(started) == 4  # nothing past the window before anything is taken
    got, failures = prefetch.take(items[:6])
    assert list(got) == [k for k, _ in items[:6] if k != "o/m5"] and list(failures) == ["o/m5"]
    assert failures["o/m5"].transient and "503" in failures["o/m5"].reason
    rest, _ = prefetch.take(items[6:])
    prefetch.close()
    assert list(rest) == [k for k, _ in items[6:]] and most >= 2  # downloads ran side by side
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert nice == {min(19, mine + DOWNLOAD_NICE)}  # downloads yield the cores to the compute


def test_small_downloads_run_further_ahead_until_what_waits_reaches_the_byte_bound() -> None:
    started: list[str] = []
    lock = threading.Lock()
    items = [(f"o/m{i}", "sha") for i in range(20)]
    size = {k: 100 if i < 12 else 10_000 for i, (k, _) in enumerate(items)}  # adapters, then full finetunes

    def quick(repo_id: str, sha: str) -> FetchedModel:
        with lock:
            started.append(repo_id)
        time.sleep(0.01)
        return replace(fetched(repo_id, sha), bytes=size[repo_id])

    prefetch = Prefetcher(quick, items, workers=2, ahead=2, ahead_bytes=1000)
    time.sleep(0.5)
    # 2 in the window, then 100 bytes each until 1,000 wait to be taken (one more may have started beside the 10th)
    assert len(started) in (10, 11)
    got, _ = prefetch.take(items[:4])
    time.sleep(0.5)
    assert list(got) == [k for k, _ in items[:4]]
    # 400 bytes taken: more start, until the first 10,000-byte download ends (the one beside it may have started)
    assert started[:10] == [k for k, _ in items[:10]] and len(started) in (13, 14)
    rest, _ = prefetch.take(items[4:])
    prefetch.close()
    assert list(rest) == [k for k, _ in items[4:]] and len(started) == 20


def test_a_run_claims_and_writes_in_groups_and_embeds_each_model_once(index: Index) -> None:
    todo = records(0, 21, base="acme/base")
    ledger = ledger_for(index, todo)
    before = {t: versions(index, t) for t in ("models", f"emb_{SPACE.id}")}
    runner = Runner()
    run = run_pipeline(ledger, todo, EmbedOptions(batch=4, commit_every=8, commit_interval_s=3600), runner)
    assert run.counts.embedded == 21 and [len(c) for c in runner.ran] == [4, 4, 4, 4, 4, 1]
    assert ledger.claims == [8, 8, 5]  # whole chunks, about commit_every models a claim
    added = {t: versions(index, t) - before[t] for t in before}
    assert added == {"models": 3 + 3, f"emb_{SPACE.id}": 3}  # 3 claims + 3 status writes; 3 vector writes
    stored = index.vectors.get(SPACE.id)
    rows = index.models.get([r.repo_id for r in todo]).values()
    assert set(stored) == {r.repo_id for r in todo} and {r.status for r in rows} == {ModelStatus.EMBEDDED}
    assert {r.attempts for r in rows} == {1}


class SwitchSpy(Runner):
    """Notes the interpreter's GIL switch interval at each forward; ``fail`` makes the second forward raise."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail, self.seen = fail, list[float]()

    def adapters(self, folders: Mapping[str, Path]) -> dict[str, np.ndarray]:
        self.seen.append(sys.getswitchinterval())
        if self.fail and len(self.seen) == 2:
            raise KeyboardInterrupt
        return super().adapters(folders)


def test_the_gil_changes_hands_quickly_during_a_run_and_as_before_after_it(index: Index) -> None:
    todo = records(0, 8, base="acme/base")
    before = sys.getswitchinterval()
    assert before > GIL_SWITCH_S  # the interpreter's default (5 ms), or the test proves nothing
    spy = SwitchSpy()
    run_pipeline(ledger_for(index, todo), todo, EmbedOptions(batch=4), spy)
    assert spy.seen == [GIL_SWITCH_S, GIL_SWITCH_S] and sys.getswitchinterval() == before
    failing = SwitchSpy(fail=True)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(ledger_for(index, records(8, 16, base="acme/base")), records(8, 16, base="acme/base"),
                     EmbedOptions(batch=4), failing)  # fmt: skip
    assert failing.seen == [GIL_SWITCH_S, GIL_SWITCH_S] and sys.getswitchinterval() == before


def test_results_are_written_when_commit_interval_passes(index: Index) -> None:
    todo = records(0, 8, base="acme/base")
    ledger = ledger_for(index, todo)
    before = versions(index, f"emb_{SPACE.id}")
    run_pipeline(ledger, todo, EmbedOptions(batch=2, commit_every=64, commit_interval_s=1e-9))
    assert ledger.claims == [8] and versions(index, f"emb_{SPACE.id}") - before == 4  # one write a chunk


def test_a_stop_writes_what_was_computed_and_gives_the_other_claims_back(index: Index) -> None:
    todo = records(0, 12, base="acme/base")
    ledger = ledger_for(index, todo)
    runner = Runner()
    run = Run(should_stop=lambda: len(runner.ran) >= 2)
    run_pipeline(ledger, todo, EmbedOptions(batch=3, commit_every=12, commit_interval_s=3600), runner, run)
    rows = index.models.get([r.repo_id for r in todo])
    done = [r for r in todo[:6]]
    assert run.counts.embedded == 6 and run.counts.stopped
    assert all(rows[r.repo_id].status == ModelStatus.EMBEDDED for r in done)
    back = [rows[r.repo_id] for r in todo[6:]]
    assert {(r.status, r.attempts) for r in back} == {(ModelStatus.QUEUED, 0)}  # no attempt spent on them
    assert set(index.vectors.get(SPACE.id)) == {r.repo_id for r in done}


def test_rows_a_dead_run_left_embedding_are_claimed_and_written_a_chunk_at_a_time(index: Index) -> None:
    suspects = [replace(r, status=ModelStatus.EMBEDDING, attempts=1) for r in records(0, 6, base="acme/base")]
    fresh = records(6, 8, base="acme/base")
    ledger = ledger_for(index, suspects + fresh)
    before = versions(index, f"emb_{SPACE.id}")
    runner = Runner()
    run = run_pipeline(ledger, suspects + fresh, EmbedOptions(batch=2, commit_every=64, commit_interval_s=3600), runner)
    assert run.counts.embedded == 14
    assert ledger.claims == [2, 2, 2, 8]  # a suspect chunk's claim blames no more models than a chunk
    assert versions(index, f"emb_{SPACE.id}") - before == 3 + 1  # each suspect chunk written before the next
    rows = index.models.get([r.repo_id for r in suspects + fresh])
    assert {rows[r.repo_id].attempts for r in suspects} == {2} and {rows[r.repo_id].attempts for r in fresh} == {1}


def test_a_failed_download_fails_its_model_alone(index: Index) -> None:
    todo = records(0, 5, base="acme/base")
    ledger = ledger_for(index, todo)
    bad = todo[2].repo_id

    def fetch_one(repo_id: str, sha: str) -> FetchedModel:
        if repo_id == bad:
            raise ModelUnavailable(repo_id, "repository not found", code="not_found", retryable=False)
        return fetched(repo_id, sha)

    run = Run()
    with Pipeline(run, ledger, EmbedOptions(batch=5, download_process=False), Timings()) as pipeline:
        pipeline.start(todo, fetch_one)
        pipeline.go(Runner())
    rows = index.models.get([r.repo_id for r in todo])
    assert run.counts.embedded == 4 and rows[bad].status == ModelStatus.FAILED
    assert "not found" in rows[bad].reason


def test_the_disk_ledger_walks_once_then_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hubdelta.embedder import disk
    from hubdelta.embedder.safety import Limits, Rule

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "blob").write_bytes(b"x" * 1000)
    (cache / "part.incomplete").write_bytes(b"x" * 5000)  # a dead run's partial download: not counted
    walks: list[int] = []
    real = disk.cache_bytes

    def counted(cache_dir: Path) -> int:
        walks.append(1)
        return real(cache_dir)

    monkeypatch.setattr(disk, "cache_bytes", counted)
    ledger, limits = disk.DiskLedger(cache), Limits(disk_budget_bytes=2000, min_free_bytes=0)
    assert ledger.reserve(500, limits) is None
    refused = ledger.reserve(600, limits)  # 1000 cached + 500 in flight + 600 > 2000
    assert refused is not None and refused.rule == Rule.DISK and refused.retryable
    ledger.settle(500, stored=True)  # now 1500 in the cache, by arithmetic
    assert ledger.reserve(501, limits) is not None and ledger.reserve(500, limits) is None
    ledger.settle(500, stored=True)
    ledger.freed(1500)  # release() deleted a full finetune's weights
    assert ledger.reserve(1500, limits) is None and walks == [1]  # one walk so far
    ledger.settle(1500, stored=False)  # failed halfway: what reached the disk is unknown, walk again
    assert ledger.reserve(900, limits) is None and walks == [1, 1]
    heard: list[int] = []
    stop = ledger.listen(heard.append)  # a download process's ledger hears of what this process deletes
    ledger.freed(300)
    stop()
    ledger.freed(200)
    assert heard == [300]


def test_an_interrupted_run_writes_what_it_computed_and_gives_every_other_claim_back(index: Index) -> None:
    todo = records(0, 8, base="acme/base")
    ledger = ledger_for(index, todo)

    class Interrupted(Runner):
        def adapters(self, folders: Mapping[str, Path]) -> dict[str, np.ndarray]:
            if self.ran:
                raise KeyboardInterrupt  # mid-chunk: neither computed nor failed
            return super().adapters(folders)

    with pytest.raises(KeyboardInterrupt):
        run_pipeline(ledger, todo, EmbedOptions(batch=2, commit_every=8, commit_interval_s=3600), Interrupted())
    rows = index.models.get([r.repo_id for r in todo])
    assert {rows[r.repo_id].status for r in todo[:2]} == {ModelStatus.EMBEDDED}
    assert {(rows[r.repo_id].status, rows[r.repo_id].attempts) for r in todo[2:]} == {(ModelStatus.QUEUED, 0)}


def test_a_stop_writes_results_before_waiting_for_a_slow_download(index: Index) -> None:
    todo = records(0, 6, base="acme/base")
    ledger_for(index, todo)  # the rows and the space's base activations
    gate, events = threading.Event(), list[str]()

    def fetch_one(repo_id: str, sha: str) -> FetchedModel:
        if repo_id != todo[0].repo_id and repo_id != todo[1].repo_id:
            gate.wait(30)  # a multi-GB download over a WAN
        return fetched(repo_id, sha)

    class Spy(SpyLedger):
        def commit(self, claimed: Sequence[ModelRecord], out: Any) -> Any:
            events.append("written")
            return super().commit(claimed, out)

    spy = Spy(index, SPACE, max_attempts=3)
    spy.claims = []
    runner = Runner()
    run = Run(should_stop=lambda: len(runner.ran) >= 1)

    def end_download() -> None:
        events.append("download ended")
        gate.set()

    threading.Timer(1.0, end_download).start()
    with Pipeline(run, spy, EmbedOptions(batch=2, commit_every=6, commit_interval_s=3600, download_workers=2,
                                        download_process=False),
                  Timings()) as pipeline:  # fmt: skip
        pipeline.start(todo, fetch_one)
        pipeline.go(runner)
    assert events == ["written", "download ended"]  # the stop did not wait for the download to write
    rows = index.models.get([r.repo_id for r in todo])
    assert {(rows[r.repo_id].status, rows[r.repo_id].attempts) for r in todo[2:]} == {(ModelStatus.QUEUED, 0)}


def test_an_embed_run_reaches_its_downloads_before_importing_torch(tmp_path: Path, processes: Processes) -> None:
    """torch and transformers cost 2-3 s to import on a CPU box: ``hubdelta embed`` imports them after its
    downloads have started (docs/embedder.md), so the modules it runs until then must not pull them in."""
    code = (
        "import sys\n"
        "from hubdelta.cli import app\n"
        "from hubdelta.cli import embed\n"
        "from hubdelta.embedder import api, worker, pipeline, fetch_process, bases\n"
        "from hubdelta.embedder.options import options\n"
        "from hubdelta.kernel.settings import load_settings\n"
        "opts = options(load_settings(), limit=None, device=None, batch=None)\n"
        "cpu = options(load_settings(), limit=None, device='cpu', batch=None)\n"
        "print(opts.device, cpu.device, sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))\n"
    )
    env = {**os.environ, "HUBDELTA_HOME": str(tmp_path)}
    done = processes.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["auto", "cpu", "[]"]  # auto is resolved where the base loads
