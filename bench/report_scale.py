"""Reports at Hub scale: synthetic spaces with planted clusters, reported by ``hubdelta report`` as a user would.

Usage: .venv/bin/python bench/report_scale.py [--sizes 10000,100000,1000000] [--seed 0] [--new 1000] [--twice]

For each size N it makes N vectors of 576 float32 with planted clusters, writes them and their model records into
a real index in a temporary home (batches of 50,000 rows), runs ``hubdelta --home HOME report`` in a child
process and prints: the child's wall seconds and peak RSS (``os.wait4``), the clustering seconds alone (from the
report's ``report space`` log line), clusters found against planted, and the ARI of the stored clusters against
the planted ones. With ``--twice`` it then adds ``--new`` more models and times the second report too (the
nightly case: matched against the first report's clusters).

The planted space: ``min(1000, max(100, N / 200))`` Gaussian clusters with log-normal sizes (at least 5 members)
around random unit directions of a 48-dimensional subspace (finetunes of one base vary in few directions) plus a
shared direction, each member jittered within the subspace (radius 0.15-0.3 by cluster) and in all 576
dimensions (0.3); 5% of the vectors are noise: random directions of the same subspace with the same jitter. The
last ``--new`` rows (in random order with respect to the clusters) are embedded an hour before the report, every
other row three days before, so each report lists ``--new`` new models with their neighbours.

ARI (``sklearn.metrics.adjusted_rand_score``) treats every noise vector, planted or found, as its own singleton
cluster: noise is not a cluster, and a noise vector put into a cluster costs only its own pairs. The ARI over the
planted members alone (noise vectors left out) is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from hubdelta.index.door import open_reader, open_writer
from hubdelta.index.embeddings import Embedding, SpaceRow
from hubdelta.index.records import HubModel, ModelRecord, ModelStatus, Relation
from hubdelta.kernel.settings import Settings, load_settings

DIM, SUBSPACE, NOISE = 576, 48, 0.05
BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"
SPACE = "smollm2-135m-instruct-bench0001"
BATCH = 50_000
SYLLABLES = [a + b for a in "kltmrsvnpg" for b in "aio"]  # 30 syllables: 27,000 three-syllable words


@dataclass(frozen=True)
class Planted:
    vectors: np.ndarray  # (N, DIM) float32
    labels: np.ndarray  # (N,) planted cluster, -1 noise
    words: list[str]  # each cluster's topic word (names, tags, cards)


def planted(n: int, seed: int) -> Planted:
    """The planted space described in the module docstring (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    k = int(min(1000, max(100, n // 200)))
    basis = np.linalg.qr(rng.normal(size=(DIM, SUBSPACE)))[0].T  # (S, DIM), orthonormal rows
    common = rng.normal(size=DIM)
    common /= np.linalg.norm(common)
    directions = rng.normal(size=(k, SUBSPACE))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    centres = 0.5 * common + directions @ basis  # (k, DIM)
    weights = rng.lognormal(0.0, 1.0, k)
    sizes = np.maximum(5, np.floor(weights / weights.sum() * n * (1 - NOISE))).astype(np.int64)
    while sizes.sum() > n * (1 - NOISE):
        sizes[np.argmax(sizes)] -= int(sizes.sum() - n * (1 - NOISE))
    radius = rng.uniform(0.15, 0.3, k) / np.sqrt(SUBSPACE)
    vectors = np.empty((n, DIM), np.float32)
    labels = np.full(n, -1, np.int64)
    start = 0
    for c in range(k):
        m = int(sizes[c])
        inside = radius[c] * rng.normal(size=(m, SUBSPACE)) @ basis
        vectors[start : start + m] = centres[c] + inside + 0.3 * rng.normal(size=(m, DIM)) / np.sqrt(DIM)
        labels[start : start + m] = c
        start += m
    for s in range(start, n, BATCH):  # noise, a batch at a time (1M x 576 float64 temporaries would be 4.6 GB)
        m = min(BATCH, n - s)
        noise = rng.normal(size=(m, SUBSPACE))
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        vectors[s : s + m] = 0.5 * common + noise @ basis + 0.3 * rng.normal(size=(m, DIM)) / np.sqrt(DIM)
    codes = rng.permutation(len(SYLLABLES) ** 3)[:k]
    words = ["".join(SYLLABLES[(c // len(SYLLABLES) ** p) % len(SYLLABLES)] for p in range(3)) for c in codes]
    return Planted(vectors, labels, words)


def repo_ids(n: int, seed: int) -> list[str]:
    """Row i's repo id; ids are shuffled against rows so that repo-id order says nothing about clusters."""
    order = np.random.default_rng(seed + 1).permutation(n)
    return [f"user{int(j) % 5000}/ft-{int(j):07d}" for j in order]


def write_index(settings: Settings, space: Planted, ids: list[str], new: int, fresh: datetime) -> float:
    """Write the space's records and vectors in batches (the last ``new`` embedded at ``fresh``, the rest three
    days before); returns the seconds it took."""
    started = time.perf_counter()
    n = len(ids)
    old = fresh - timedelta(days=3)
    with open_writer(settings, "bench report_scale") as index:
        params = {"base_repo": BASE, "dim": DIM, "position": "last", "dtype": "float32"}
        index.vectors.put_space(SpaceRow(SPACE, params, np.zeros((5, DIM), np.float32), old))
        for start in range(0, n, BATCH):
            rows = range(start, min(n, start + BATCH))
            records, embeddings = [], []
            for i in rows:
                when = fresh if i >= n - new else old
                label = int(space.labels[i])
                word = space.words[label] if label >= 0 else "misc"
                model = HubModel(ids[i], f"{i:040x}", Relation.ADAPTER, (BASE,), created_at=when,
                                 tags=("peft", "lora", f"dataset:{word}-corpus", "license:apache-2.0",
                                       f"base_model:adapter:{BASE}"),
                                 card_summary=f"LoRA adapter trained on {word} examples.")  # fmt: skip
                records.append(ModelRecord(model, ModelStatus.EMBEDDED, attempts=1, first_seen=when, last_seen=when))
                embeddings.append(Embedding(ids[i], model.sha, space.vectors[i], when))
            index.models.put(records)
            index.vectors.put(SPACE, embeddings)
    return time.perf_counter() - started


def run_report(home: Path, out: Path) -> dict[str, object]:
    """``hubdelta report`` in a child process: wall seconds, peak RSS, and its ``report space`` log line."""
    command = [str(Path(sys.executable).parent / "hubdelta"), "--home", str(home), "--log-json", "report",
               "--out", str(out)]  # fmt: skip
    started = time.perf_counter()
    with (out.parent / f"{out.name}.log").open("w+") as log:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        lines = log.read().splitlines()
    if child.returncode != 0:
        raise SystemExit(f"hubdelta report failed ({child.returncode}):\n" + "\n".join(lines[-20:]))
    space = next(json.loads(line) for line in lines if line.startswith("{") and '"report space"' in line)
    return {"wall_s": wall, "peak_rss_gb": usage.ru_maxrss / 2**20, "log": space}


def ari(planted_labels: np.ndarray, ids: list[str], settings: Settings) -> tuple[float, float, int, float]:
    """ARI of the latest stored report's clusters (noise as singletons; and over planted members only)."""
    from sklearn.metrics import adjusted_rand_score

    with open_reader(settings) as index:
        report = index.reports.latest()
    assert report is not None
    clusters = report.clusters.get(SPACE, ())
    row = {r: i for i, r in enumerate(ids)}
    found = np.full(len(ids), -1, np.int64)
    for number, cluster in enumerate(clusters):
        found[[row[m] for m in cluster.members]] = number
    members = planted_labels >= 0
    singles = np.arange(len(ids)) + 1_000_000  # noise: each its own cluster, apart from every real one
    truth = np.where(members, planted_labels, singles)
    got = np.where(found >= 0, found, singles)
    noise = float((found < 0).mean())
    return (
        adjusted_rand_score(truth, got),
        adjusted_rand_score(planted_labels[members], got[members]),
        len(clusters),
        noise,
    )


def bench(n: int, seed: int, new: int, twice: bool, root: Path) -> None:
    home = root / f"home-{n}"
    settings = load_settings({}, home=home)
    space = planted(n, seed)
    ids = repo_ids(n, seed)
    written = write_index(settings, space, ids, new, datetime.now(UTC) - timedelta(hours=1))
    planted_labels, planted_k = space.labels, len(space.words)
    del space  # the child's memory is what is measured, but the machine is shared
    runs = [run_report(home, root / f"report-{n}-1")]
    scores = [ari(planted_labels, ids, settings)]
    if twice:
        more = planted(n + new, seed + 7)  # other rows of the same kind of space
        extra = Planted(more.vectors[n:], more.labels[n:], more.words)
        write_index(settings, extra, [f"late{i % 97}/ft-{i:07d}" for i in range(new)], new, datetime.now(UTC))
        del more, extra
        runs.append(run_report(home, root / f"report-{n}-2"))
    for number, run in enumerate(runs, start=1):
        log = run["log"]
        assert isinstance(log, dict)
        a_all, a_members, k, noise = scores[0]
        print(f"N={n:>9,} report {number}: wall {run['wall_s']:7.1f} s, peak RSS {run['peak_rss_gb']:5.2f} GB, "
              f"clustering {log['cluster']:6.1f} s ({log['method']}), naming {log['name']:5.1f} s, "
              f"neighbours {log['neighbours']:5.1f} s, map {log['map']:5.1f} s; {log['clusters']} clusters "
              f"({planted_k} planted), {log['new']} new", flush=True)  # fmt: skip
        if number == 1:
            print(f"             ARI {a_all:.4f} (noise as singletons), {a_members:.4f} (planted members only); "
                  f"{k} clusters, {noise:.1%} unclustered (planted {NOISE:.0%}); index written in {written:.1f} s",
                  flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated space sizes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--new", type=int, default=1000, help="models new in each report's window")
    parser.add_argument("--twice", action="store_true", help="add --new models and time a second report")
    parser.add_argument("--keep", type=Path, help="keep the homes and reports in this folder")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="report-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            bench(n, args.seed, args.new, args.twice, root)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
