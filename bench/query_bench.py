"""Cold-start latency of ``hubdelta similar`` on a 100k-model index, side by side with ``import lancedb``.

Builds (once, in ``--home``, default a temp dir) an index of N synthetic models of one base, each with a
576-dim vector in one space (clustered, seeded) and varied metadata; the space gets its ANN index as
``hubdelta embed`` would give it. Then, alternating, it runs fresh processes of

- ``python -c "import lancedb"``                       (the floor every LanceDB program pays),
- ``python -m hubdelta similar REPO --json``           (cold: a new interpreter each time),
- ``python -m hubdelta similar REPO --where ... --json``,

and prints the median and p90 wall time of each over ``--runs`` runs, and each query's excess over the import.
The issue's bar: the excess of ``similar`` stays within 0.5 s. Asserts nothing.

Usage: .venv/bin/python bench/query_bench.py [--n 100000] [--runs 15] [--home DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from hubdelta.index.door import open_writer
from hubdelta.index.embeddings import Embedding, SpaceRow
from hubdelta.index.records import HubModel, ModelRecord, ModelStatus, Relation
from hubdelta.kernel.settings import load_settings

BASE = "bench-org/base-model"
SPACE = "base-model-0bench00"
DIM = 576
BATCH = 10_000
LICENSES = ("apache-2.0", "mit", "llama3.1", "cc-by-nc-4.0", "other")
RELATIONS = (Relation.ADAPTER, Relation.FINETUNE, Relation.MERGE)


def build(home: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(200, DIM)).astype(np.float32)
    settings = load_settings(env={}, home=home)
    now = datetime.now(UTC)
    params = {"base_repo": BASE, "base_sha": "0" * 40, "probes": "paper-v1", "probes_hash": "bench", "dim": DIM,
              "layer": None, "position": "last", "dtype": "float32", "method": "activations"}  # fmt: skip
    started = time.perf_counter()
    with open_writer(settings, "bench/query_bench.py") as index:
        index.vectors.put_space(SpaceRow(SPACE, params, np.zeros((5, DIM), np.float32), now))
        for start in range(0, n, BATCH):
            ids = range(start, min(n, start + BATCH))
            models = [
                HubModel(
                    f"user{i % 5000}/model-{i:06d}",
                    f"{i:040x}",
                    RELATIONS[i % 3],
                    (BASE,),
                    created_at=now - timedelta(minutes=i),
                    license=LICENSES[i % 5],
                    downloads=int(rng.pareto(1.2) * 10),
                    likes=int(rng.pareto(1.5)),
                    card_summary=f"synthetic model {i}",
                )
                for i in ids
            ]
            index.models.put([ModelRecord(m, ModelStatus.EMBEDDED, first_seen=now, last_seen=now) for m in models])
            labels = rng.integers(0, len(centers), len(models))
            vectors = centers[labels] + 0.6 * rng.normal(size=(len(models), DIM)).astype(np.float32)
            rows = [Embedding(m.repo_id, m.sha, v, now) for m, v in zip(models, vectors, strict=True)]
            index.vectors.put(SPACE, rows)
        written = time.perf_counter() - started
        index.maintenance.compact()
        actions = index.vectors.maintain_ann([SPACE])
        status = index.vectors.ann_status(SPACE)
    print(f"built {n:,} models in {written:.1f} s; ANN: {actions} -> {status} in {time.perf_counter() - started:.1f} s")


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--home", type=Path, default=None, help="reuse an index built by an earlier run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp)
        if not (home / "index").exists():
            build(home, args.n)
        repo = "user42/model-000042"
        py = sys.executable
        commands = {
            "import lancedb": [py, "-c", "import lancedb"],
            "hubdelta similar": [py, "-m", "hubdelta", "--home", str(home), "similar", repo, "--json"],
            "similar --where": [
                py,
                "-m",
                "hubdelta",
                "--home",
                str(home),
                "similar",
                repo,
                "--json",
                "--where",
                "license = 'apache-2.0' AND downloads > 5",
            ],
        }
        for command in commands.values():  # warm the page cache: "cold" means a new process, not a cold disk
            timed(command)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):  # interleaved, so drift on a shared machine hits every command alike
            for name, command in commands.items():
                times[name].append(timed(command))
    floor = statistics.median(times["import lancedb"])
    print(f"{'command':<20}{'median s':>10}{'p90 s':>8}{'excess over import lancedb (median)':>38}")
    for name, values in times.items():
        p90 = sorted(values)[int(0.9 * (len(values) - 1))]
        excess = statistics.median(values) - floor
        print(f"{name:<20}{statistics.median(values):>10.3f}{p90:>8.3f}{excess:>38.3f}")


if __name__ == "__main__":
    main()
