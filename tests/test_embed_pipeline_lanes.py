"""Lanes in the pipelined embed run (hubdelta.embedder.pipeline with hubdelta.embedder.lanes): chunks computed
side by side and landed in order, suspects and full models alone, an interrupt on a lane giving its chunk back.
Stand-in runner and downloads on a real index, as in test_embed_pipeline.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hubdelta.embedder import plan
from hubdelta.embedder.fetch import FetchedModel
from hubdelta.embedder.lanes import Lanes
from hubdelta.embedder.options import EmbedOptions
from hubdelta.embedder.safety_records import RepoKind
from hubdelta.index.records import ModelStatus
from hubdelta.index.store import Index
from tests.helpers import records
from tests.test_embed_pipeline import SPACE, C, P, Runner, fetched, ledger_for, run_pipeline
from tests.test_embed_pipeline import index as index  # the fixture: a real index in a fresh home


class Overlap(Runner):
    """Notes, as each chunk starts, the chunks computing at that moment (its own included); each takes a while."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        super().__init__()
        self.lock, self.running, self.beside = threading.Lock(), set[str](), list[tuple[str, ...]]()
        self.interrupt_at, self.sizes = interrupt_at, list[int]()

    def adapters(self, folders: Mapping[str, Path]) -> dict[str, np.ndarray]:
        first = next(iter(folders))
        with self.lock:
            self.running.add(first)
            self.sizes.append(len(folders))
            self.beside.append(tuple(sorted(self.running)))
            n = len(self.beside)
        time.sleep(0.05)
        with self.lock:
            self.running.discard(first)
        if n == self.interrupt_at:
            raise KeyboardInterrupt  # mid-chunk, on a lane: neither computed nor failed
        return super().adapters(folders)


def test_lanes_compute_chunks_side_by_side_and_suspects_alone(index: Index) -> None:
    suspects = [replace(r, status=ModelStatus.EMBEDDING, attempts=1) for r in records(0, 4, base="acme/base")]
    fresh = records(4, 12, base="acme/base")
    ledger = ledger_for(index, suspects + fresh)
    runner = Overlap()
    with Lanes(2, 1) as lanes:
        run = run_pipeline(ledger, suspects + fresh, EmbedOptions(batch=2, commit_every=64, commit_interval_s=3600),
                           runner, lanes=lanes)  # fmt: skip
    assert run.counts.embedded == 16 and ledger.claims == [2, 2, 12]
    suspect_firsts = {suspects[0].repo_id, suspects[2].repo_id}
    assert all(len(b) == 1 for b in runner.beside if set(b) & suspect_firsts)  # a suspect chunk ran alone
    assert max(len(b) for b in runner.beside) == 2  # fresh chunks ran two at a time, never more
    rows = index.models.get([r.repo_id for r in suspects + fresh])
    assert {rows[r.repo_id].status for r in suspects + fresh} == {ModelStatus.EMBEDDED}
    assert set(index.vectors.get(SPACE.id)) == {r.repo_id for r in suspects + fresh}
    assert {rows[r.repo_id].attempts for r in fresh} == {1} and {rows[r.repo_id].attempts for r in suspects} == {2}


@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_chunks_keep_the_order_and_with_lanes_come_in_rounds_of_even_sizes(lanes: int) -> None:
    for n in range(0, 41):
        for size in range(1, 10):
            items = records(0, n, base="acme/base")
            cut = plan.chunks(items, size, lanes)
            assert [r for c in cut for r in c] == items and all(1 <= len(c) <= size for c in cut)
            if lanes == 1:
                assert [len(c) for c in cut] == [min(size, n - i) for i in range(0, n, size)]
            else:
                assert len(cut) % lanes == 0 or len(cut) == n  # no lane left computing a last chunk alone
                assert max(map(len, cut), default=0) - min(map(len, cut), default=0) <= 1
                assert len(cut) < -(-n // size) + lanes  # no more chunks than the rounding needs


def test_a_run_of_fewer_than_two_chunks_is_split_between_the_lanes(index: Index) -> None:
    todo = records(0, 10, base="acme/base")
    ledger = ledger_for(index, todo)
    runner = Overlap()
    with Lanes(2, 1) as lanes:
        run = run_pipeline(ledger, todo, EmbedOptions(batch=8), runner, lanes=lanes)
    assert run.counts.embedded == 10 and runner.sizes == [5, 5]  # cut for one lane: 8, then 2 alone
    assert max(len(b) for b in runner.beside) == 2  # side by side
    assert set(index.vectors.get(SPACE.id)) == {r.repo_id for r in todo}


def test_an_interrupt_on_a_lane_writes_every_chunk_computed_and_gives_the_rest_back(index: Index) -> None:
    todo = records(0, 12, base="acme/base")
    ledger = ledger_for(index, todo)
    runner = Overlap(interrupt_at=2)
    with Lanes(2, 1) as lanes, pytest.raises(KeyboardInterrupt):
        run_pipeline(ledger, todo, EmbedOptions(batch=2, commit_every=12, commit_interval_s=3600), runner, lanes=lanes)
    rows = index.models.get([r.repo_id for r in todo])
    interrupted = {r.repo_id for r in todo[2:4]}  # the second chunk's
    assert {(rows[k].status, rows[k].attempts) for k in interrupted} == {(ModelStatus.QUEUED, 0)}
    done = {k for k, r in rows.items() if r.status == ModelStatus.EMBEDDED}
    assert {r.repo_id for r in todo[:2]} <= done and set(index.vectors.get(SPACE.id)) == done
    assert {(rows[k].status, rows[k].attempts) for k in set(rows) - done} == {(ModelStatus.QUEUED, 0)}


def test_a_chunk_with_a_full_model_computes_alone_on_the_runs_own_thread(index: Index, tmp_path: Path) -> None:
    todo = records(0, 8, base="acme/base")
    full = todo[5].repo_id  # in the third chunk of two
    ledger = ledger_for(index, todo)

    def fetch(repo_id: str, sha: str) -> FetchedModel:
        got = fetched(repo_id, sha)
        snapshot = tmp_path / "cache" / "models--o--n" / "snapshots" / sha
        return replace(got, kind=RepoKind.FULL, path=snapshot) if repo_id == full else got

    class Mixed(Overlap):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[int, tuple[str, ...]]] = []  # the full model's thread, and what ran beside it

        def model(self, folder: Path, item: str) -> np.ndarray:
            with self.lock:
                self.seen.append((threading.get_ident(), tuple(self.running)))
            return 1.0 + np.random.default_rng(7).random((P, C))

    runner = Mixed()
    with Lanes(2, 1) as lanes:
        run = run_pipeline(ledger, todo, EmbedOptions(batch=2, commit_every=8, commit_interval_s=3600), runner,
                           lanes=lanes, fetch=fetch)  # fmt: skip
    assert run.counts.embedded == 8 and runner.seen == [(threading.get_ident(), ())]
    assert max(len(b) for b in runner.beside) == 2  # the adapters' chunks still ran two at a time
