"""hubdelta.index.ann: the maintenance decision, exact and ANN search against numpy, unindexed rows, filters."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import cast

import lancedb
import numpy as np
import pytest
from lancedb.query import LanceVectorQueryBuilder
from lancedb.table import Table

from hubdelta.index.ann import AnnSettings, AnnStatus, ann_status, decide, maintain, nearest
from hubdelta.index.embeddings import Embedding, emb_table_name, embeddings_to_table

DIM = 32
K = 10


def clustered(n: int, rng: np.random.Generator, clusters: int = 40) -> np.ndarray:
    """Unnormalised vectors around ``clusters`` centres, norms varying ~4x (cosine must not care)."""
    centres = rng.standard_normal((clusters, DIM))
    c = rng.integers(0, clusters, n)
    v = centres[c] + rng.uniform(0.2, 0.6, (n, 1)) * rng.standard_normal((n, DIM))
    return (v * rng.uniform(0.5, 2.0, (n, 1))).astype(np.float32)


def ids(start: int, n: int) -> list[str]:
    return [f"user{i % 7}/model-{i}" for i in range(start, start + n)]


def make_table(path: Path, vectors: np.ndarray, repo_ids: list[str]) -> Table:
    rows = [Embedding(r, f"{i:040x}", v) for i, (r, v) in enumerate(zip(repo_ids, vectors, strict=True))]
    return lancedb.connect(path).create_table(emb_table_name("test"), data=embeddings_to_table(rows, DIM))


def add(table: Table, vectors: np.ndarray, repo_ids: list[str]) -> None:
    table.add(embeddings_to_table([Embedding(r, None, v) for r, v in zip(repo_ids, vectors, strict=True)], DIM))


def exact(vectors: np.ndarray, repo_ids: list[str], q: np.ndarray, k: int) -> list[tuple[str, float]]:
    sims = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    order = np.argsort(-sims)[:k]
    return [(repo_ids[i], float(sims[i])) for i in order]


def index_only(table: Table, q: np.ndarray) -> list[str]:
    """The top K that LanceDB finds with ``fast_search``: in the index alone, skipping unindexed rows."""
    query = cast(LanceVectorQueryBuilder, table.search(q)).distance_type("cosine").fast_search()
    found: list[str] = query.select(["repo_id", "_distance"]).limit(K).to_arrow()["repo_id"].to_pylist()
    return found


# ---- decide ----

S = AnnSettings(threshold=1000, optimize_fraction=0.1, optimize_rows=500)


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (AnnStatus(rows=0, indexed_rows=0, unindexed_rows=0, index_type=None), "none"),
        (AnnStatus(rows=999, indexed_rows=0, unindexed_rows=999, index_type=None), "none"),
        (AnnStatus(rows=1000, indexed_rows=0, unindexed_rows=1000, index_type=None), "build"),
        (AnnStatus(rows=10**6, indexed_rows=0, unindexed_rows=10**6, index_type=None), "build"),
        (AnnStatus(rows=1000, indexed_rows=1000, unindexed_rows=0, index_type=S.index_type), "ok"),
        # 10% of the indexed rows: not more than the fraction yet; one more row is
        (AnnStatus(rows=1100, indexed_rows=1000, unindexed_rows=100, index_type=S.index_type), "ok"),
        (AnnStatus(rows=1101, indexed_rows=1000, unindexed_rows=101, index_type=S.index_type), "optimize"),
        # a big table: the fixed count (500) comes before 10% (100k)
        (AnnStatus(rows=10**6 + 500, indexed_rows=10**6, unindexed_rows=500, index_type=S.index_type), "ok"),
        (AnnStatus(rows=10**6 + 501, indexed_rows=10**6, unindexed_rows=501, index_type=S.index_type), "optimize"),
        # an index on a table that shrank below the threshold is kept
        (AnnStatus(rows=10, indexed_rows=10, unindexed_rows=0, index_type=S.index_type), "ok"),
        # an index of another type than the settings ask for is rebuilt (above the threshold only)
        (AnnStatus(rows=5000, indexed_rows=5000, unindexed_rows=0, index_type="IVF_HNSW_PQ"), "build"),
        (AnnStatus(rows=500, indexed_rows=500, unindexed_rows=0, index_type="IVF_HNSW_PQ"), "ok"),
    ],
)
def test_decide(status: AnnStatus, action: str) -> None:
    assert decide(status, S) == action


def test_num_partitions_rule() -> None:
    s = AnnSettings()
    assert s.num_partitions(1_000_000) == 1000  # sqrt(n)
    assert s.num_partitions(20_000) == 20_000 // 256  # capped: 256 training rows a partition
    assert s.num_partitions(10) == 1
    assert s.num_sub_vectors(576) == 576 // s.sub_vector_dim
    assert s.num_sub_vectors(577) == 1


# ---- exact search below the threshold ----


def test_below_threshold_is_exact_and_unindexed(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((2000, DIM)).astype(np.float32) * rng.uniform(0.1, 10, (2000, 1)).astype(np.float32)
    repo_ids = ids(0, 2000)
    table = make_table(tmp_path, vectors, repo_ids)
    settings = AnnSettings()  # threshold 20k: no index for 2000 rows

    assert maintain(table, settings) == "none"
    assert ann_status(table) == AnnStatus(rows=2000, indexed_rows=0, unindexed_rows=2000, index_type=None)
    for q in rng.standard_normal((5, DIM)).astype(np.float32):
        got = nearest(table, q, K, settings)
        want = exact(vectors, repo_ids, q, K)
        assert [r for r, _ in got] == [r for r, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    assert nearest(table, vectors[3], 1, settings)[0][0] == repo_ids[3]
    assert len(nearest(table, vectors[3], 5000, settings)) == 2000
    assert nearest(table, vectors[3], 0, settings) == []


# ---- the ANN index ----

N = 4000
SMALL = AnnSettings(threshold=N, nprobes=8, optimize_rows=50)  # 4000 rows -> 15 partitions, 8 probed


@pytest.fixture
def indexed(tmp_path: Path) -> tuple[Table, np.ndarray, list[str], np.random.Generator]:
    rng = np.random.default_rng(2)
    vectors, repo_ids = clustered(N, rng), ids(0, N)
    table = make_table(tmp_path, vectors, repo_ids)
    assert maintain(table, SMALL) == "build"
    return table, vectors, repo_ids, rng


def test_maintain_builds_an_index_with_good_recall(
    indexed: tuple[Table, np.ndarray, list[str], np.random.Generator],
) -> None:
    table, vectors, repo_ids, rng = indexed
    assert ann_status(table) == AnnStatus(rows=N, indexed_rows=N, unindexed_rows=0, index_type=SMALL.index_type)
    assert maintain(table, SMALL) == "ok"

    queries = clustered(50, rng)
    hits = 0
    for q in queries:
        got = nearest(table, q, K, SMALL)
        want = dict(exact(vectors, repo_ids, q, K))
        hits += len(want.keys() & {r for r, _ in got})
        assert len(got) == K
        sims = [s for _, s in got]
        assert sims == sorted(sims, reverse=True)
        for r, s in got:  # re-ranked: the similarity is the exact cosine, whichever rows were found
            i = int(r.rsplit("-", 1)[1])
            assert s == pytest.approx(float(vectors[i] @ q / np.linalg.norm(vectors[i]) / np.linalg.norm(q)), abs=1e-4)
    assert hits / (len(queries) * K) >= 0.9


def test_rows_added_after_the_build_are_found_then_folded_in(
    indexed: tuple[Table, np.ndarray, list[str], np.random.Generator],
) -> None:
    table, _, _, rng = indexed
    new = clustered(60, rng)
    new_ids = [*ids(N, 59), "o'brien/it's-new"]
    add(table, new, new_ids)
    assert ann_status(table) == AnnStatus(N + 60, N, 60, SMALL.index_type)

    # The new rows are outside the index: LanceDB's fast_search (index only) misses them, nearest() must not.
    assert new_ids[-1] not in index_only(table, new[-1])
    for i in (0, 17, 59):
        repo, sim = nearest(table, new[i], K, SMALL)[0]
        assert repo == new_ids[i]
        assert sim == pytest.approx(1.0, abs=1e-5)

    assert maintain(table, SMALL) == "optimize"  # 60 unindexed > optimize_rows 50
    assert ann_status(table) == AnnStatus(N + 60, N + 60, 0, SMALL.index_type)
    assert maintain(table, SMALL) == "ok"
    assert new_ids[-1] in index_only(table, new[-1])  # now in the index itself
    for i in (0, 17, 59):
        assert nearest(table, new[i], K, SMALL)[0][0] == new_ids[i]


@pytest.mark.parametrize("exact_only_max", [10_000, 0], ids=["exact-among-only", "prefiltered-index"])
def test_only_restricts_results_and_quotes_ids(
    indexed: tuple[Table, np.ndarray, list[str], np.random.Generator], exact_only_max: int
) -> None:
    table, vectors, repo_ids, rng = indexed
    quoted = ["o'brien/model", "it''s/x'"]
    extra = clustered(2, rng)
    add(table, extra, quoted)
    all_vectors, all_ids = np.concatenate([vectors, extra]), [*repo_ids, *quoted]
    settings = replace(SMALL, exact_only_max=exact_only_max, nprobes=1)  # 1 probe: ~2 allowed rows in it
    allowed = [repo_ids[i] for i in rng.choice(N, 30, replace=False)] + [*quoted, "nobody/unknown"]
    q = clustered(1, rng)[0]

    got = nearest(table, q, K, settings, only=allowed)
    assert len(got) == K  # 32 known allowed rows: a prefilter must not starve the probed partitions
    assert {r for r, _ in got} <= set(allowed)
    if exact_only_max:
        keep = [i for i, r in enumerate(all_ids) if r in set(allowed)]
        want = exact(all_vectors[keep], [all_ids[i] for i in keep], q, K)
        assert [r for r, _ in got] == [r for r, _ in want]

    got = nearest(table, q, K, settings, only=[*quoted, quoted[0]])  # a repeated id is asked for once
    want = exact(extra, quoted, q, K)
    assert [r for r, _ in got] == [r for r, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    assert nearest(table, q, K, settings, only=[]) == []
    assert nearest(table, q, K, settings, only=["nobody/unknown"]) == []


@pytest.mark.parametrize("exact_only_max", [10_000, 0], ids=["exact-among-only", "prefiltered-index"])
def test_zero_stored_vectors_are_never_returned(tmp_path: Path, exact_only_max: int) -> None:
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((5, DIM)).astype(np.float32)
    vectors[2] = 0.0
    repo_ids = ids(0, 5)
    table = make_table(tmp_path, vectors, repo_ids)
    settings = AnnSettings(exact_only_max=exact_only_max)
    q = rng.standard_normal(DIM).astype(np.float32)
    want = [r for r, _ in exact(np.delete(vectors, 2, axis=0), [*repo_ids[:2], *repo_ids[3:]], q, K)]
    assert [r for r, _ in nearest(table, q, K, settings)] == want
    assert [r for r, _ in nearest(table, q, K, settings, only=repo_ids)] == want
    assert nearest(table, q, K, settings, only=[repo_ids[2]]) == []


# ---- bad queries ----


def test_zero_and_malformed_queries_raise(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    table = make_table(tmp_path, rng.standard_normal((10, DIM)).astype(np.float32), ids(0, 10))
    with pytest.raises(ValueError, match="all zeros"):
        nearest(table, np.zeros(DIM, np.float32), K, AnnSettings())
    with pytest.raises(ValueError, match="dimension 32"):
        nearest(table, np.ones(DIM + 1, np.float32), K, AnnSettings())
    with pytest.raises(ValueError, match="NaN"):
        nearest(table, np.full(DIM, np.nan, np.float32), K, AnnSettings())
    with pytest.raises(ValueError, match="k must be"):
        nearest(table, np.ones(DIM, np.float32), -1, AnnSettings())
