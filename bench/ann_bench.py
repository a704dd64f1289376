"""Recall and latency of ``hubdelta.index.ann.nearest`` at scale, against exact numpy brute force.

Usage: .venv/bin/python bench/ann_bench.py [--sizes 100000,1000000] [--dim 576] [--queries 200] [--k 10]
       [--out DIR] [--nprobes 10,20,40] [--refine 1,2,5] [--flat-queries 10] [--append 20000]
       [--index-type IVF_SQ] [--partition-factor 1.0]

For each size N: writes N synthetic vectors to an ``emb_`` table (the index's schema) in batches of 100k,
builds the vector index with ``maintain``, then for Q held-out queries measures recall@k of ``nearest``
against the exact cosine top-k (numpy, computed batch by batch while writing) and its warm p50 / p95 latency,
for every (nprobes, refine_factor) in the grid; and the p50 of an exact flat scan of the same table
(``bypass_vector_index``) over ``--flat-queries`` queries (0 skips it). Prints a table; asserts nothing.

The data is a seeded Gaussian mixture shaped like behaviour vectors: 64 "base" directions, a few thousand
clusters around them (finetunes of one base on one task) of log-normal sizes and spreads varying 4x, so some
neighbourhoods are tight and some diffuse. Queries are fresh draws from the mixture, not table rows.

Without --out the data goes to a temporary directory that is removed at the end (1M x 576 is ~2.4 GB, ~6 GB
after --append's optimize, which keeps the older versions).

Measured on 2 cores shared with other jobs (lancedb 0.40, defaults IVF_SQ, sqrt(n) partitions, nprobes 20,
refine_factor 3), with ``--sizes 100000,1000000 --nprobes 5,10,15,20,30 --refine 1,2,3,5 --flat-queries 10
--append 20000``:

    n     write   build   flat p50   recall@10 / p50 / p95 at 20, 3   20k unindexed: p50, optimize, p50 after
    100k  0.4 s   5 s     217 ms     1.000 / 3.9 ms / 5.0 ms          45 ms, 1.8 s, 8 ms
    1M    4.5 s   53 s    1.99 s     1.000 / 5.4 ms / 7.0 ms          41 ms, 22 s, 9-12 ms (6 ms after a rebuild)

At 1M recall@10 by nprobes (refine 2): 5: 0.93, 10: 0.98, 15: 0.996, 20: 1.000; refine 1 caps it at 0.94.
Other index types at 1M, 20 probes: IVF_HNSW_SQ built in 202 s, recall 0.98 at refine 3, p50 8 ms; IVF_PQ
(72 sub-vectors) built in 130 s, recall 0.61 / 0.76 / 0.89 at refine 5 / 10 / 20.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.query import LanceVectorQueryBuilder
from lancedb.table import Table

from hubdelta.index.ann import AnnSettings, ann_status, maintain, nearest
from hubdelta.index.embeddings import emb_schema, emb_table_name

BATCH = 100_000
BASES = 64


@dataclass(frozen=True)
class Mixture:
    """Cluster centres, their draw weights and spreads."""

    centres: np.ndarray  # (C, dim) float32
    weights: np.ndarray  # (C,) summing to 1
    spreads: np.ndarray  # (C,) per-dimension noise sigma, relative to a centre's per-dimension scale 1

    @classmethod
    def make(cls, clusters: int, dim: int, rng: np.random.Generator) -> Mixture:
        bases = rng.standard_normal((BASES, dim))
        centres = bases[rng.integers(0, BASES, clusters)] + 0.3 * rng.standard_normal((clusters, dim))
        weights = rng.lognormal(0.0, 1.0, clusters)
        return cls(
            centres.astype(np.float32),
            weights / weights.sum(),
            rng.uniform(0.25, 1.0, clusters).astype(np.float32),
        )

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        c = rng.choice(len(self.weights), size=n, p=self.weights)
        noise = rng.standard_normal((n, self.centres.shape[1]), dtype=np.float32)
        return self.centres[c] + self.spreads[c, None] * noise


def normalised(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class ExactTopK:
    """The exact cosine top-k of each query over rows seen so far, merged batch by batch."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.q = normalised(queries)
        self.k = k
        self.sims = np.full((len(queries), 0), -np.inf, np.float32)
        self.rows = np.zeros((len(queries), 0), np.int64)

    def add(self, vectors: np.ndarray, first_row: int) -> None:
        sims = self.q @ normalised(vectors).T  # (Q, batch)
        kk = min(self.k, sims.shape[1])
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        all_sims = np.concatenate([self.sims, np.take_along_axis(sims, top, axis=1)], axis=1)
        all_rows = np.concatenate([self.rows, top + first_row], axis=1)
        keep = np.argsort(-all_sims, axis=1)[:, : self.k]
        self.sims = np.take_along_axis(all_sims, keep, axis=1)
        self.rows = np.take_along_axis(all_rows, keep, axis=1)


def repo_id(row: int) -> str:
    return f"user{row % 9973}/model-{row}"


def batch_table(vectors: np.ndarray, first_row: int) -> pa.Table:
    n, dim = vectors.shape
    return pa.table(
        {
            "repo_id": pa.array([repo_id(first_row + i) for i in range(n)], pa.string()),
            "sha": pa.array([f"{first_row + i:040x}" for i in range(n)], pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), dim),
            "embedded_at": pa.nulls(n, emb_schema(dim).field("embedded_at").type),
        },
        schema=emb_schema(dim),
    )


def write(table: Table, n: int, mixture: Mixture, truth: ExactTopK, rng: np.random.Generator) -> float:
    """Write ``n`` rows in batches; returns seconds spent in ``table.add`` only."""
    spent = 0.0
    for start in range(0, n, BATCH):
        vectors = mixture.draw(min(BATCH, n - start), rng)
        truth.add(vectors, start)
        data = batch_table(vectors, start)
        started = time.perf_counter()
        table.add(data)
        spent += time.perf_counter() - started
    return spent


def timed_queries(fn: object, queries: np.ndarray) -> tuple[list[list[str]], np.ndarray]:
    """Run ``fn(query)`` for each query (after one warm-up pass); returns ids and per-query seconds."""
    assert callable(fn)
    for q in queries[: min(len(queries), 20)]:
        fn(q)  # warm the page cache and LanceDB's index cache
    ids, times = [], []
    for q in queries:
        started = time.perf_counter()
        ids.append(fn(q))
        times.append(time.perf_counter() - started)
    return ids, np.array(times)


def recall(found: list[list[str]], truth: ExactTopK) -> float:
    hits = sum(len(set(f) & {repo_id(int(r)) for r in rows}) for f, rows in zip(found, truth.rows, strict=True))
    return hits / truth.rows.size


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def sweep(table: Any, queries: np.ndarray, truth: ExactTopK, settings: AnnSettings, args: argparse.Namespace) -> None:
    """Recall and latency over the grid of nprobes x refine_factor."""
    print(f"{'nprobes':>8} {'refine':>7} {'recall@' + str(args.k):>10} {'p50 ms':>8} {'p95 ms':>8}")
    for nprobes in ints(args.nprobes):
        for refine in ints(args.refine):
            s = replace(settings, nprobes=nprobes, refine_factor=refine)
            found, t = timed_queries(lambda q, s=s: [r for r, _ in nearest(table, q, args.k, s)], queries)
            p50, p95 = np.percentile(t, [50, 95]) * 1000
            print(f"{nprobes:8d} {refine:7d} {recall(found, truth):10.3f} {p50:8.1f} {p95:8.1f}")


def run_size(n: int, args: argparse.Namespace, folder: Path) -> None:
    rng = np.random.default_rng(args.seed)
    mixture = Mixture.make(args.clusters, args.dim, rng)
    queries = mixture.draw(args.queries, rng)
    truth = ExactTopK(queries, args.k)
    db = lancedb.connect(folder / f"n{n}")
    table = db.create_table(emb_table_name("bench"), schema=emb_schema(args.dim), mode="overwrite")
    print(f"\n== {n:,} vectors x {args.dim} dims, {args.clusters} clusters, {args.queries} queries, k={args.k}")
    seconds = write(table, n, mixture, truth, rng)
    print(f"write (table.add, {BATCH:,}-row batches)   {seconds:8.1f} s")

    settings = AnnSettings(index_type=args.index_type, partition_factor=args.partition_factor)
    if args.sub_vector_dim:
        settings = replace(settings, sub_vector_dim=args.sub_vector_dim)
    started = time.perf_counter()
    action = maintain(table, settings)
    built = time.perf_counter() - started
    status = ann_status(table)
    print(f"maintain -> {action!r}                      {built:8.1f} s")
    print(
        f"index {status.index_type}: {settings.num_partitions(n)} partitions"
        + (f", {settings.num_sub_vectors(args.dim)} sub-vectors" if status.index_type == "IVF_PQ" else "")
        + f"; indexed {status.indexed_rows:,}, unindexed {status.unindexed_rows:,}"
    )

    if args.flat_queries:
        flat = queries[: args.flat_queries]

        def exact(q: np.ndarray) -> list[str]:
            query = cast(LanceVectorQueryBuilder, table.search(q)).distance_type("cosine")
            query = query.select(["repo_id", "_distance"]).limit(args.k)
            ids: list[str] = query.bypass_vector_index().to_arrow()["repo_id"].to_pylist()
            return ids

        _, t = timed_queries(exact, flat)
        print(f"exact flat scan (bypass_vector_index, {len(flat)} queries): p50 {np.median(t) * 1000:.1f} ms")

    sweep(table, queries, truth, settings, args)

    if args.append:
        # Rows written after the build are scanned flat by every query until maintain() folds them in.
        def measure(label: str) -> None:
            found, t = timed_queries(lambda q: [r for r, _ in nearest(table, q, args.k, settings)], queries)
            p50, p95 = np.percentile(t, [50, 95]) * 1000
            print(f"{label:44s} recall {recall(found, truth):.3f}  p50 {p50:6.1f} ms  p95 {p95:6.1f} ms")

        vectors = mixture.draw(args.append, rng)
        truth.add(vectors, n)
        table.add(batch_table(vectors, n))
        print(f"appended {args.append:,} rows; defaults nprobes={settings.nprobes} refine={settings.refine_factor}:")
        measure(f"  {ann_status(table).unindexed_rows:,} unindexed rows")
        started = time.perf_counter()
        action = maintain(table, settings)
        print(f"  maintain -> {action!r} {time.perf_counter() - started:8.1f} s; {ann_status(table)}")
        measure("  after maintain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="one size (ignored when --sizes is given)")
    parser.add_argument("--sizes", default="", help="comma-separated sizes, e.g. 100000,1000000")
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep the data here (default: a temp dir, removed)")
    parser.add_argument("--index-type", default=AnnSettings.index_type, choices=["IVF_PQ", "IVF_SQ", "IVF_HNSW_SQ"])
    parser.add_argument("--partition-factor", type=float, default=AnnSettings.partition_factor)
    parser.add_argument("--sub-vector-dim", type=int, default=0, help="IVF_PQ dims per sub-vector (0: default)")
    parser.add_argument("--nprobes", default=str(AnnSettings.nprobes), help="comma-separated grid")
    parser.add_argument("--refine", default=str(AnnSettings.refine_factor), help="comma-separated grid")
    parser.add_argument("--append", type=int, default=0, help="then append this many rows, measure, maintain")
    parser.add_argument("--flat-queries", type=int, default=10, help="queries for the flat-scan p50 (0: skip)")
    args = parser.parse_args()

    sizes = ints(args.sizes) or [args.n]
    folder = args.out or Path(tempfile.mkdtemp(prefix="ann_bench_"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for n in sizes:
            run_size(n, args, folder)
    finally:
        if args.out is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
