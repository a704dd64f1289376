"""kill -9 in the middle of a large put_models: the store keeps either the whole batch or none of it."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from hubdelta.index.store import Index
from tests.index_helpers import records, spawn, wait_for

N = 50_000  # rows per put; each trial overlaps the previous one by half (updates and inserts)
TRIALS = 6


def test_kill_9_during_put_models_is_all_or_nothing(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    uri, lock_dir = str(tmp_path / "index"), str(tmp_path)
    # Trial 0 runs to the end and measures the window to kill into: "ready" (arrow rows built) to "done".
    child = spawn("put", uri, lock_dir, "0", str(N), "trial-0")
    wait_for(child, "ready")
    started = time.perf_counter()
    wait_for(child, "done")
    merge_s = time.perf_counter() - started
    child.kill()
    child.wait()
    reader = Index.open(uri)  # one long-lived reader, watching the writes as they happen
    outcomes = []
    for trial in range(1, TRIALS + 1):
        before_ids = set(reader.repo_ids())
        batch_ids = {r.repo_id for r in records(trial * N // 2, N)}
        allowed = {len(before_ids), len(before_ids | batch_ids)}
        child = spawn("put", uri, lock_dir, str(trial * N // 2), str(N), f"trial-{trial}")
        wait_for(child, "ready")
        deadline = time.perf_counter() + rng.uniform(0, 3 * merge_s)
        seen = set()
        while time.perf_counter() < deadline:  # a reader mid-write sees no partial batch either
            seen.add(reader.count_models())
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert child.stdout is not None
        finished = child.stdout.read().strip() == "done"

        where = f"seed {seed}, trial {trial}, outcomes so far {outcomes}"
        count, marked = reader.count_models(), reader.count_models(f"reason = 'trial-{trial}'")
        assert seen <= allowed, where
        assert count in allowed, where
        assert marked in (0, N), where  # every row of the batch, or none
        assert (marked == N) == (count == max(allowed)), where
        assert marked == N or not finished, where
        ids = reader.repo_ids()
        assert len(ids) == len(set(ids)), where  # no repo twice
        outcomes.append("committed" if marked else "rolled back")

    with Index.open(uri, lock_dir=tmp_path, writer="after the trials") as index:  # the lock is free
        rows = index.count_models()
        stats = index.compact()["models"]
        assert stats.rows == rows == index.count_models()
        # the data files of killed merges were unreferenced leftovers, and compaction removed them
        assert len(list((tmp_path / "index" / "models.lance" / "data").iterdir())) == stats.fragments
    print(f"seed {seed}, merge {merge_s * 1000:.0f} ms: {outcomes}")
