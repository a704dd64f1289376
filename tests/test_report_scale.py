"""Reports at Hub scale, small: the sampled clustering above a lowered threshold, the density map, bounded
neighbours, sparse matching and the index's matrix read. bench/report_scale.py measures the real sizes."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import HDBSCAN
from sklearn.metrics import adjusted_rand_score

from hubdelta.index.door import open_reader, open_writer
from hubdelta.index.embeddings import Embedding, SpaceRow, permute_rows
from hubdelta.index.records import HubModel, ModelRecord, ModelStatus, Relation
from hubdelta.kernel.settings import Settings
from hubdelta.report import match
from hubdelta.report.api import run_report
from hubdelta.report.build import ReportParams
from hubdelta.report.cluster import EXACT, SAMPLED, ClusterParams, cluster_unit, normalise, reduce, renumber
from hubdelta.report.map import SCATTER_MAX, map_figure
from hubdelta.report.neighbours import nearest
from hubdelta.report.records import MapLayer, Report, SpaceMap
from hubdelta.report.render import render
from tests.helpers import settings_for

LOW = ClusterParams(exact_max=1000, sample_size=800)  # the sampled path from 1,001 live vectors


def planted(seed: int, n: int = 3000, k: int = 20, dim: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``k`` clusters in a 16-d subspace (log-normal sizes) plus 5% scattered noise, shuffled; and their labels."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, 16)))[0].T  # (16, dim)
    centres = 0.5 * rng.normal(size=dim) / np.sqrt(dim) + rng.normal(size=(k, 16)) @ basis / 4
    weights = rng.lognormal(0, 0.7, k)
    sizes = np.maximum(10, (weights / weights.sum() * n * 0.9).astype(int))
    labels = np.concatenate([np.repeat(np.arange(k), sizes), np.full(max(0, n - sizes.sum()), -1)])
    x = centres[np.maximum(labels, 0)] + 0.03 * rng.normal(size=(len(labels), 16)) @ basis
    noise = labels < 0
    x[noise] = rng.normal(size=(noise.sum(), 16)) @ basis / 4
    x += 0.01 * rng.normal(size=x.shape)
    order = rng.permutation(len(labels))
    return x[order].astype(np.float32), labels[order]


def singletons(labels: np.ndarray) -> np.ndarray:
    """Noise as one singleton cluster per vector (as bench/report_scale.py scores it)."""
    return np.where(labels >= 0, labels, 10**6 + np.arange(len(labels)))


# ---- clustering -----------------------------------------------------------------------------------------------


def test_the_sampled_path_recovers_planted_clusters_deterministically() -> None:
    x, truth = planted(1)
    unit = normalise(x).astype(np.float32)
    labels, method = cluster_unit(unit, LOW)
    assert method == SAMPLED
    assert adjusted_rand_score(singletons(truth), singletons(labels)) > 0.95
    again, _ = cluster_unit(unit.copy(), LOW)
    assert np.array_equal(labels, again)  # same input, same labels
    assert np.array_equal(labels, renumber(labels))  # numbered by first row, as the exact path
    other, _ = cluster_unit(unit, replace(LOW, sample_seed=5))
    assert adjusted_rand_score(labels, other) > 0.9  # another sample finds the same clusters


def test_zero_vectors_stay_noise_on_the_sampled_path() -> None:
    x, _ = planted(2)
    x[::97] = 0
    labels, method = cluster_unit(normalise(x).astype(np.float32), LOW)
    assert method == SAMPLED and (labels[::97] == -1).all() and labels.max() >= 10


def test_small_spaces_still_get_exact_hdbscan() -> None:
    x, _ = planted(3, n=600, k=8)
    unit = normalise(x)
    labels, method = cluster_unit(unit, LOW)
    direct = HDBSCAN(min_cluster_size=3, min_samples=2, copy=True).fit_predict(reduce(unit, 50))
    assert method == EXACT and np.array_equal(labels, renumber(direct))
    as32, _ = cluster_unit(unit.astype(np.float32), ClusterParams())
    assert ClusterParams().method(600) == EXACT and adjusted_rand_score(labels, as32) == 1.0


def test_a_space_wider_than_it_is_long_is_reduced_through_its_gram_matrix_to_the_same_coordinates() -> None:
    # A family space: 20 meaning vectors of 8,261 values (the (C, C) covariance took minutes there).
    rng = np.random.default_rng(1)
    unit = normalise(rng.standard_normal((20, 8261)))
    wide = reduce(unit, 50)
    u, s, _ = np.linalg.svd(unit - unit.mean(axis=0), full_matrices=False)
    by_svd = u * s  # the rows on the principal components, by another route
    assert wide.shape == (20, 20)
    signs = np.sign((wide * by_svd).sum(axis=0))  # each component is defined up to its sign
    assert np.allclose(wide[:, :19] * signs[:19], by_svd[:, :19], atol=1e-8)  # the 20th is the null one
    pairs = np.linalg.norm(wide[:, None] - wide[None], axis=2)
    assert np.allclose(pairs, np.linalg.norm(unit[:, None] - unit[None], axis=2), atol=1e-8)  # distances kept


def test_the_clustering_method_and_its_parameters_are_in_the_report_params() -> None:
    params = ReportParams(clustering=LOW).to_dict()["clustering"]
    assert params["exact_max"] == 1000 and params["sample_size"] == 800 and params["sample_seed"] == 0
    assert {"reach_factor", "looseness", "max_rounds"} <= set(params) and "sampled-hdbscan" in params["method"]


# ---- neighbours --------------------------------------------------------------------------------------------------


def brute(unit: np.ndarray, queries: list[int], candidates: list[int], k: int) -> list[list[tuple[int, float]]]:
    out = []
    for q in queries:
        scored = sorted((-float(unit[q] @ unit[c]), c) for c in candidates if c != q)[:k]
        out.append([(c, -s) for s, c in scored])
    return out


@pytest.mark.parametrize("elements", [1 << 22, 64])  # one chunk of candidates; 16 at a time
def test_neighbours_are_exact_whatever_the_chunks(elements: int) -> None:
    rng = np.random.default_rng(0)
    unit = normalise(rng.normal(size=(400, 24)))
    queries, candidates = [3, 17, 250, 399], [*range(0, 400, 2), 17]
    found = nearest(unit, queries, candidates, 5, elements=elements)
    expected = brute(unit, queries, candidates, 5)
    assert [[r for r, _ in f] for f in found] == [[r for r, _ in e] for e in expected]
    assert np.allclose([s for f in found for _, s in f], [s for e in expected for _, s in e])


def test_neighbours_at_large_n_hold_float32_blocks_not_a_row_per_candidate() -> None:
    rng = np.random.default_rng(1)
    unit = normalise(rng.normal(size=(300_000, 16))).astype(np.float32)  # 19 MB
    queries = list(range(0, 300_000, 293))  # 1,024 queries: one row of float64 per candidate would be 2.5 GB
    tracemalloc.start()
    found = nearest(unit, queries, np.arange(300_000), 3)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 150 * 2**20, peak  # one 16 MB float32 product, what ranks it, one chunk of candidates
    sims = unit[queries[:2]] @ unit.T
    sims[0, queries[0]] = sims[1, queries[1]] = -np.inf
    assert [r for r, _ in found[0]] == np.argsort(-sims[0], kind="stable")[:3].tolist()
    assert [r for r, _ in found[1]] == np.argsort(-sims[1], kind="stable")[:3].tolist()


# ---- matching ----------------------------------------------------------------------------------------------------


def test_sparse_matching_equals_every_pair() -> None:
    rng = np.random.default_rng(4)
    people = [f"u/m{i}" for i in range(300)]
    previous = {f"c{i}": frozenset(rng.choice(people, rng.integers(3, 40), replace=False)) for i in range(1, 30)}
    current = [frozenset(rng.choice(people, rng.integers(3, 40), replace=False)) for _ in range(30)]
    current += [previous["c3"] | {"u/new"}, previous["c7"] - {sorted(previous["c7"])[0]}]
    for threshold in (0.5, 0.2, 0.0):
        dense = sorted(
            ((match.jaccard(a, b), i, pid) for i, a in enumerate(current) for pid, b in previous.items()),
            key=lambda p: (-p[0], p[1], match.id_order(p[2])),
        )
        sparse = sorted(match._scored_pairs(current, previous, threshold),
                        key=lambda p: (-p[0], p[1], match.id_order(p[2])))  # fmt: skip
        assert [p for p in sparse if p[0] >= threshold] == [p for p in dense if p[0] >= threshold]
    assert match.match(current, previous)[30].previous == "c3"


# ---- the map -----------------------------------------------------------------------------------------------------


def test_the_map_of_a_large_space_is_a_density_with_every_new_model_on_top() -> None:
    rng = np.random.default_rng(5)
    n = SCATTER_MAX + 5000
    xy = np.concatenate([rng.normal(size=(n // 2, 2)), rng.normal(size=(n - n // 2, 2)) + 6]).astype(np.float32)
    cluster = np.where(np.arange(n) < n // 2, 0, 1)
    cluster[::50] = -1
    new = np.zeros(n, dtype=bool)
    new[rng.choice(n, 700, replace=False)] = True
    layer = MapLayer(xy, cluster, ("c1", "c2"), new)
    fig = map_figure(SpaceMap("s", "big", (), {"c1": "math", "c2": "legal"}, layer))
    (ax,) = fig.axes
    assert len(ax.images) == 1  # the density, not 25,000 markers
    assert ax.images[0].get_array().count() > 1000  # cells with models in them
    stars = [c for c in ax.collections if str(c.get_label()).startswith("new since last report")]
    assert len(stars) == 1 and len(stars[0].get_offsets()) == 700
    assert np.allclose(np.asarray(stars[0].get_offsets()), xy[new])
    labels = {t.get_text() for t in ax.texts}
    assert {"math", "legal"} <= labels
    marked = sum(len(c.get_offsets()) for c in ax.collections if c is not stars[0])
    assert marked < 10  # the clusters' markers, no point per model


def test_a_small_map_still_draws_every_point() -> None:
    layer = MapLayer(
        np.array([[0, 0], [1, 1], [2, 0]], float), np.array([0, 0, -1]), ("c1",), np.array([0, 1, 0], bool)
    )
    fig = map_figure(SpaceMap("s", "small", (), {"c1": "math"}, layer))
    (ax,) = fig.axes
    assert not ax.images and sum(len(c.get_offsets()) for c in ax.collections) == 4  # 2 + 1 noise + 1 star


# ---- the index read and a report above the threshold -------------------------------------------------------------


def test_permute_rows_reorders_in_place() -> None:
    rng = np.random.default_rng(6)
    matrix = rng.normal(size=(50, 3))
    order = rng.permutation(50).tolist()
    expected = matrix[order]
    permute_rows(matrix, order)
    assert np.array_equal(matrix, expected)


BASE = "acme/base-1b"
SPACE = "acme-base-1b-scale0001"
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def put_space(tmp_path: Path, x: np.ndarray, truth: np.ndarray) -> tuple[Settings, list[str]]:
    settings = settings_for(tmp_path / "home", "http://127.0.0.1:9")
    ids = [f"u{i % 13}/ft-{i:05d}" for i in range(len(x))]
    words = [f"topic{chr(97 + c % 26)}{chr(97 + c // 26)}" for c in range(int(truth.max()) + 1)]
    when = [T0 - timedelta(days=2) if i % 100 else T0 + timedelta(hours=1) for i in range(len(x))]
    records = []
    for i, r in enumerate(ids):
        word = words[truth[i]] if truth[i] >= 0 else "misc"
        m = HubModel(r, f"{i:040x}", Relation.ADAPTER, (BASE,), tags=(f"dataset:{word}",), card_summary=word)
        status = ModelStatus.REMOVED if i == 5 else ModelStatus.EMBEDDED
        records.append(ModelRecord(m, status, first_seen=when[i], last_seen=when[i]))
    with open_writer(settings, "test") as index:
        index.models.put(records)
        index.vectors.put_space(SpaceRow(SPACE, {"base_repo": BASE}, np.zeros((2, x.shape[1]), np.float32), T0))
        index.vectors.put(SPACE, [Embedding(r, None, x[i], when[i]) for i, r in enumerate(ids)])
    return settings, ids


def test_the_matrix_read_is_the_visible_vectors_sorted(tmp_path: Path) -> None:
    x, truth = planted(7, n=400, k=5)
    settings, ids = put_space(tmp_path, x, truth)
    with open_reader(settings) as index:
        matrix = index.vectors.visible_matrix(SPACE, batch_size=64)
        visible = index.vectors.visible(SPACE)
        batches = list(index.models.column_batches(["repo_id", "first_seen", "tags"], batch_size=100))
    assert matrix.repo_ids == sorted(visible) and ids[5] not in matrix.repo_ids  # a removed model is hidden
    assert np.array_equal(matrix.vectors, np.stack([visible[r].vector for r in matrix.repo_ids]))
    assert matrix.embedded_at == [visible[r].embedded_at for r in matrix.repo_ids]
    assert len(batches) == 4 and sum(len(b["repo_id"]) for b in batches) == 400
    assert batches[0]["first_seen"][0].tzinfo is not None and isinstance(batches[0]["tags"][0], tuple)


def test_a_report_above_the_threshold_clusters_by_samples_and_names_clusters(tmp_path: Path) -> None:
    x, truth = planted(8)
    settings, ids = put_space(tmp_path, x, truth)
    report = run_report(settings, command="test", now=T0 + timedelta(hours=2), params=ReportParams(clustering=LOW))
    (space,) = report.spaces
    assert space.method == SAMPLED and space.vectors == len(ids) - 1
    assert report.params["clustering"]["exact_max"] == 1000 and report.to_dict()["spaces"][0]["method"] == SAMPLED
    with open_reader(settings) as index:
        stored = index.reports.latest()
    assert stored is not None and stored.summary["spaces"][SPACE]["method"] == SAMPLED
    row = {r: i for i, r in enumerate(ids)}
    found = np.full(len(ids), -1)
    for number, c in enumerate(report.clusters):
        found[[row[m] for m in c.members]] = number
    keep = np.arange(len(ids)) != 5
    assert adjusted_rand_score(singletons(truth[keep]), singletons(found[keep])) > 0.95
    named = [c.name for c in report.clusters if c.size >= 20]
    assert all(n.startswith("topic") for n in named), named
    assert len(report.new_models) == len([i for i in range(len(ids)) if i % 100 == 0 and i != 5])
    assert all(len(m.neighbors) == 5 and m.neighbors[0].relation == "adapter" for m in report.new_models)
    assert report.out_dir is not None and (report.out_dir / f"map-{SPACE}.png").is_file()


def test_a_large_space_map_is_written_with_the_report_files(tmp_path: Path) -> None:
    n = SCATTER_MAX + 1
    layer = MapLayer(np.random.default_rng(9).normal(size=(n, 2)), np.zeros(n, np.int64), ("c1",), np.arange(n) < 3)
    space_map = SpaceMap("big", "big", (), {"c1": "math"}, layer)
    report = Report("r", T0, T0, (), (), (), (), (), maps=(space_map,))
    files = render(report, tmp_path / "out")
    assert {p.name for p in files} == {"report.md", "report.html", "map-big.png"}
    assert "map-big.png" in (tmp_path / "out" / "report.md").read_text()
