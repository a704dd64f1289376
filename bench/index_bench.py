"""Time the index at crawl scale: 100k models written in 100 batches of 1000, then the crawler's reads.

Usage: .venv/bin/python bench/index_bench.py [N_ROWS] [DIR]   (defaults: 100000, a temporary directory)

Rows are synthetic but shaped like the Hub's: 1-2 bases each out of 50 (one "big" base holds 40% of the
rows), ~6 tags, a 300-character card summary, four timestamps.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from hubdelta.index import HubModel, Index, ModelRecord, ModelStatus, Relation
from hubdelta.index.selectors import by_status

T = TypeVar("T")
BASES = [f"org{i}/base-{i}" for i in range(50)]
BIG = BASES[0]


def records(start: int, n: int, rng: random.Random) -> list[ModelRecord]:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    out = []
    for i in range(start, start + n):
        base = BIG if rng.random() < 0.4 else rng.choice(BASES[1:])
        bases = (base,) if rng.random() < 0.9 else (base, rng.choice(BASES))
        model = HubModel(
            repo_id=f"user{i % 9973}/model-{i}",
            sha=f"{rng.getrandbits(160):040x}",
            relation=rng.choice(list(Relation)),
            base_models=bases,
            created_at=t0 + timedelta(minutes=i),
            last_modified=t0 + timedelta(minutes=i, hours=3),
            tags=tuple(f"tag-{rng.randrange(200)}" for _ in range(6)),
            library="peft" if i % 2 else "transformers",
            pipeline_tag="text-generation",
            license="apache-2.0",
            downloads=rng.randrange(10**6),
            likes=rng.randrange(1000),
            gated=None if i % 17 else "auto",
            card_summary="x" * 300,
        )
        out.append(ModelRecord(model, ModelStatus.QUEUED, first_seen=t0, last_seen=t0))
    return out


def timed(label: str, fn: Callable[[], T], repeat: int = 3) -> T:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    size = f" ({len(result)} rows)" if isinstance(result, dict | list) else ""
    print(f"{label:48s} {best * 1000:8.1f} ms{size}")
    return result  # type: ignore[return-value]


def main(n_rows: int, folder: Path) -> None:
    rng = random.Random(0)
    uri = str(folder / "index")
    with Index.open(uri, lock_dir=folder, writer="bench/index_bench.py") as index:
        started, compactions = time.perf_counter(), 0
        for start in range(0, n_rows, 1000):
            index.models.put(records(start, min(1000, n_rows - start), rng))
            compactions += index.maintenance.stats()["models"].versions == 1
        elapsed = time.perf_counter() - started
        print(f"{'write ' + str(n_rows) + ' rows in batches of 1000':48s} {elapsed * 1000:8.1f} ms (incl. records)")
        print(f"{'  auto-compactions during the write':48s} {compactions:8d}")
        print(f"{'  stats after':48s} {index.maintenance.stats()['models']}")
        update = records(0, 1000, rng)
        timed("models.put 1000 updates into the full table", lambda: index.models.put(update), repeat=1)
    reader = Index.open(uri)
    timed("models.get() all", reader.models.get)
    ids = [f"user{i % 9973}/model-{i}" for i in range(0, n_rows, max(1, n_rows // 100))]
    timed("models.get(100 ids)", lambda: reader.models.get(ids))
    ids = [f"user{i % 9973}/model-{i}" for i in range(0, n_rows, max(1, n_rows // 1000))]
    timed("models.get(1000 ids)", lambda: reader.models.get(ids))
    timed("models.for_base(small base, ~1.2% of rows)", lambda: reader.models.for_base(BASES[7]))
    timed("models.for_base(big base, ~40% of rows)", lambda: reader.models.for_base(BIG))
    timed("models.count_by_status()", reader.models.count_by_status)
    timed("models.count(by_status(QUEUED))", lambda: reader.models.count(by_status(ModelStatus.QUEUED)))
    timed("maintenance.stats()", reader.maintenance.stats)
    with Index.open(uri, lock_dir=folder, writer="bench compact") as index:
        timed("maintenance.compact() (nothing to merge)", index.maintenance.compact, repeat=1)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    if len(sys.argv) > 2:
        main(n, Path(sys.argv[2]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(n, Path(tmp))
