"""Records for index tests, and a child process that writes to an index (``python -m tests.index_helpers``).

Child modes (each prints one line when it reaches its point, then sleeps until killed):
    hold URI LOCK_DIR COMMAND              open as writer, print "locked"
    put URI LOCK_DIR START N MARKER        put N records from START; print "ready" when put_models has its
                                           arrow rows (just before Lance's merge), "done" after the commit
    compact URI LOCK_DIR                   open as writer, print "ready", compact every table, print "done"
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from hubdelta.index import HubModel, Index, ModelRecord, ModelStatus, Relation, store

REPO_ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


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


def records(start: int, n: int, **kwargs: object) -> list[ModelRecord]:
    return [record(i, **kwargs) for i in range(start, start + n)]  # type: ignore[arg-type]


def spawn(*args: str) -> subprocess.Popen[str]:
    """Start a child in one of the modes above."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.index_helpers", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_for(proc: subprocess.Popen[str], line: str) -> None:
    """Block until the child prints ``line``; fail if it exits first."""
    assert proc.stdout is not None
    got = proc.stdout.readline().strip()
    assert got == line, f"child printed {got!r} (exit {proc.poll()}), expected {line!r}"


def _child(argv: list[str]) -> None:
    mode, uri, lock_dir, *rest = argv
    if mode == "hold":
        index = Index.open(uri, lock_dir=Path(lock_dir), writer=rest[0])
        print("locked", flush=True)
    elif mode == "compact":
        index = Index.open(uri, lock_dir=Path(lock_dir), writer="compact")
        print("ready", flush=True)
        index.compact()
        print("done", flush=True)
    else:
        start, n, marker = int(rest[0]), int(rest[1]), rest[2]
        index = Index.open(uri, lock_dir=Path(lock_dir), writer=f"put {marker}")
        batch = [r.with_status(ModelStatus.QUEUED, reason=marker) for r in records(start, n)]
        convert = store.models_to_table

        def announce(recs: Sequence[ModelRecord]) -> pa.Table:
            table = convert(recs)
            print("ready", flush=True)  # the rows are arrow now: what follows is Lance's merge and commit
            return table

        store.models_to_table = announce  # type: ignore[assignment]
        index.put_models(batch)
        print("done", flush=True)
    time.sleep(600)
    index.close()


if __name__ == "__main__":
    _child(sys.argv[1:])
