"""kill -9 in the middle of a large put_models (the store keeps the whole batch or none of it) and in the middle of
a compaction (the daemon's compact job: nothing is lost, nothing doubled)."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from hubdelta.index.selectors import user_filter
from hubdelta.index.store import Index
from tests.helpers import Processes, expect_line, records, spawn

N = 50_000  # rows per put; each trial overlaps the previous one by half (updates and inserts)
TRIALS = 6


def test_kill_9_during_put_models_is_all_or_nothing(tmp_path: Path, processes: Processes) -> None:
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    uri, lock_dir = str(tmp_path / "index"), str(tmp_path)
    # Trial 0 runs to the end and measures the window to kill into: "ready" (arrow rows built) to "done".
    child = spawn(processes, "put", uri, lock_dir, "0", str(N), "trial-0")
    expect_line(child, "ready")
    started = time.perf_counter()
    expect_line(child, "done")
    merge_s = time.perf_counter() - started
    child.kill()
    child.wait()
    reader = Index.open(uri)  # one long-lived reader, watching the writes as they happen
    outcomes = []
    for trial in range(1, TRIALS + 1):
        before_ids = set(reader.models.ids())
        batch_ids = {r.repo_id for r in records(trial * N // 2, N)}
        allowed = {len(before_ids), len(before_ids | batch_ids)}
        child = spawn(processes, "put", uri, lock_dir, str(trial * N // 2), str(N), f"trial-{trial}")
        expect_line(child, "ready")
        deadline = time.perf_counter() + rng.uniform(0, 3 * merge_s)
        seen = set()
        while time.perf_counter() < deadline:  # a reader mid-write sees no partial batch either
            seen.add(reader.models.count())
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert child.stdout is not None
        finished = child.stdout.read().strip() == "done"

        where = f"seed {seed}, trial {trial}, outcomes so far {outcomes}"
        count, marked = reader.models.count(), reader.models.count(user_filter(f"reason = 'trial-{trial}'"))
        assert seen <= allowed, where
        assert count in allowed, where
        assert marked in (0, N), where  # every row of the batch, or none
        assert (marked == N) == (count == max(allowed)), where
        assert marked == N or not finished, where
        ids = reader.models.ids()
        assert len(ids) == len(set(ids)), where  # no repo twice
        outcomes.append("committed" if marked else "rolled back")

    with Index.open(uri, lock_dir=tmp_path, writer="after the trials") as index:  # the lock is free
        rows = index.models.count()
        stats = index.maintenance.compact()["models"]
        assert stats.rows == rows == index.models.count()
        # the data files of killed merges were unreferenced leftovers, and compaction removed them
        assert len(list((tmp_path / "index" / "models.lance" / "data").iterdir())) == stats.fragments
    print(f"seed {seed}, merge {merge_s * 1000:.0f} ms: {outcomes}")


def test_kill_9_during_compaction_loses_and_doubles_nothing(tmp_path: Path, processes: Processes) -> None:
    from hubdelta.index.compaction import CompactionPolicy

    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    uri, lock_dir = str(tmp_path / "index"), str(tmp_path)
    rows, per_put = 40_000, 1_000
    reader = None
    for trial in range(6):
        # Fragment the table again: many small commits (writers compact nothing on their own here).
        with Index.open(uri, lock_dir=tmp_path, writer="fragment", compaction=CompactionPolicy(auto=False)) as index:
            start = 0 if trial == 0 else rng.randrange(0, rows - 5 * per_put)
            for i in range(start, start + (rows if trial == 0 else 5 * per_put), per_put):
                index.models.put(records(i, per_put))
            fragments = index.maintenance.stats()["models"].fragments
        reader = reader or Index.open(uri)
        child = spawn(processes, "compact", uri, lock_dir)
        expect_line(child, "ready")
        time.sleep(rng.uniform(0.0, 0.1))  # a compaction here takes 50-70 ms: kill within it, or just before
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        where = f"seed {seed}, trial {trial}, {fragments} fragments before"
        ids = reader.models.ids()
        assert len(ids) == rows and len(set(ids)) == rows, where  # a reader sees every row, once
        with Index.open(uri, lock_dir=tmp_path, writer="after the kill") as index:  # opens, lock free
            assert index.models.count() == rows, where
            got = index.models.get([r.repo_id for r in records(0, 50)])
            assert sorted(got) == sorted(r.repo_id for r in records(0, 50)), where
