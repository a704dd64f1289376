"""Neighbours found in the candidates' nearest lists (hubdelta/report/probed.py): against the exact search."""

from __future__ import annotations

import numpy as np
import pytest

from hubdelta.report import probed
from hubdelta.report.labels import SpaceDocs, label_rows
from hubdelta.report.neighbours import nearest
from hubdelta.report.probed import nearest_probed, search


def _clustered(n: int, clusters: int, dim: int = 48, spread: float = 0.5, seed: int = 3) -> np.ndarray:
    """Unit rows in ``clusters`` Gaussian clusters (finetunes of one base sit in families), a few zero rows."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = (centres[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, dim))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[:3] = 0.0  # never matched: their cosine with anything is 0
    return x


def _recall(found: list[list[tuple[int, float]]], exact: list[list[tuple[int, float]]]) -> float:
    shared = [len({r for r, _ in f} & {r for r, _ in e}) / max(1, len(e)) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(shared))


def test_probed_neighbours_are_real_candidates_with_their_exact_cosines_and_recall_the_exact_ones() -> None:
    unit = _clustered(6000, 60)
    candidates = np.flatnonzero(np.random.default_rng(0).random(len(unit)) < 0.5)
    queries = np.arange(len(unit))
    found = nearest_probed(unit, queries, candidates, 10)
    exact = nearest(unit, queries, candidates, 10)
    allowed = set(candidates.tolist())
    for q, near in zip(queries, found, strict=True):
        assert 0 < len(near) <= 10 and q not in {r for r, _ in near} and {r for r, _ in near} <= allowed
        sims = [s for _, s in near]
        assert sims == sorted(sims, reverse=True)
        assert np.allclose(sims, unit[[r for r, _ in near]] @ unit[q], atol=1e-5)  # exact cosines
    assert _recall(found, exact) >= 0.97
    assert found == nearest_probed(unit, queries, candidates, 10)  # deterministic


def test_probing_every_list_is_the_exact_search() -> None:
    unit = _clustered(1500, 20)
    queries, candidates = np.arange(7, 1500, 7), np.arange(1, 1500, 2)  # not the zero rows: all ties
    found = nearest_probed(unit, queries, candidates, 8, lists=6, probes=6)
    exact = nearest(unit, queries, candidates, 8)
    assert [[r for r, _ in f] for f in found] == [[r for r, _ in e] for e in exact]


@pytest.mark.parametrize("k", [1, 5, 40])
def test_few_candidates_and_small_lists_give_every_candidate_once(k: int) -> None:
    unit = _clustered(400, 4)
    found = nearest_probed(unit, [10, 11], [10, 20, 30, 40, 50, 60], k, lists=3, probes=3)
    assert [len(f) for f in found] == [min(k, 5), min(k, 6)]  # query 10 is a candidate, never its own neighbour
    assert all(len({r for r, _ in f}) == len(f) for f in found)
    assert nearest_probed(unit, [10], [], k) == [[]]


def test_search_is_exact_up_to_its_bound_and_probed_above(monkeypatch: pytest.MonkeyPatch) -> None:
    unit = _clustered(3000, 30)
    queries, candidates = np.arange(3000), np.arange(0, 3000, 3)
    assert search(unit, queries, candidates, 10) == nearest(unit, queries, candidates, 10)
    monkeypatch.setattr(probed, "EXACT_PAIRS", 100)
    assert search(unit, queries, candidates, 10) == nearest_probed(unit, queries, candidates, 10)


def test_labels_from_probed_neighbours_match_the_exact_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    unit = _clustered(4000, 40, seed=8)
    families = np.argmax(unit @ _clustered(40, 40, seed=8).T, axis=1)  # a topic word per region of the space
    ids = [f"o/{i:05d}" for i in range(len(unit))]
    docs = {ids[i]: {f"topic{families[i]}": 1.0} for i in range(0, len(unit), 4)}  # a quarter documented
    data = SpaceDocs(ids, unit, [None] * len(ids), docs, frozenset())
    rows = list(range(len(unit)))
    exact = label_rows("s", data, rows)
    monkeypatch.setattr(probed, "EXACT_PAIRS", 0)
    approx = label_rows("s", data, rows)
    assert np.mean([a.top == e.top for a, e in zip(approx, exact, strict=True)]) >= 0.98
    assert all(a.kth <= e.kth + 1e-6 for a, e in zip(approx, exact, strict=True))  # a refresh errs to recompute


def test_copies_tied_at_the_kth_neighbour_are_taken_by_row_number_however_the_search_is_cut() -> None:
    # Eleven copies of one vector (re-uploads reuse their original's vector) among other models: a query's 3
    # nearest are three of the copies, and which three must not depend on chunks, lists or the exact/probed switch.
    # The copies and the query are one axis, so that every product gives them exactly 1.0 in any summation order
    # (cosines of equal rows of other vectors can differ in the last bit between products of other shapes).
    unit = _clustered(400, 8, seed=5)
    copies = np.arange(100, 111)
    unit[[7, *copies]] = np.eye(unit.shape[1], dtype=np.float32)[0]
    candidates = np.arange(3, 400)
    want = [[(100, 1.0), (101, 1.0), (102, 1.0)]]
    assert nearest(unit, [7], candidates, 3) == want
    assert nearest(unit, [7], candidates, 3, elements=5) == want  # cut into chunks of 5 candidates
    assert nearest_probed(unit, [7], candidates, 3, lists=20, probes=20) == want  # every list: the exact answer
    assert nearest_probed(unit, [7], candidates, 3, lists=20, probes=2) == want  # the copies share one list
    shuffled = np.random.default_rng(1).permutation(candidates)  # candidates in any order
    assert nearest(unit, [7], shuffled, 3, elements=7) == want
