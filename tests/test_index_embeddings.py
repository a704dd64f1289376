"""Spaces and vectors in the index: exact round trips, one table a space, upserts by repo id."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from hubdelta.index.embeddings import Embedding, SpaceRow, emb_table_name
from hubdelta.index.store import Index
from hubdelta.kernel.errors import StoreError

T = datetime(2026, 3, 1, tzinfo=UTC)


def space(space_id: str = "base-abc123", dim: int = 8, probes: int = 5) -> SpaceRow:
    acts = np.random.default_rng(0).standard_normal((probes, dim)).astype(np.float32)
    return SpaceRow(space_id, {"base": "org/base", "layer": None, "position": "last"}, acts, T)


def vec(seed: int, dim: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def test_spaces_and_vectors_round_trip_exactly(tmp_path: Path) -> None:
    with Index.open(str(tmp_path / "i"), lock_dir=tmp_path, writer="t") as index:
        s = space()
        index.vectors.put_space(s)
        got = index.vectors.spaces()[s.space_id]
        assert got.params == s.params and got.created_at == T and got.dim == 8
        assert np.array_equal(got.base_activations, s.base_activations)
        index.vectors.put(s.space_id, [Embedding("a/x", "1" * 40, vec(1), T), Embedding("b/y", None, vec(2), T)])
        stored = index.vectors.get(s.space_id)
        assert set(stored) == {"a/x", "b/y"} and stored["b/y"].sha is None
        assert np.array_equal(stored["a/x"].vector, vec(1)) and stored["a/x"].vector.dtype == np.float32
        assert emb_table_name(s.space_id) in index.maintenance.stats()


def test_a_new_sha_replaces_the_vector_and_nothing_is_duplicated(tmp_path: Path) -> None:
    with Index.open(str(tmp_path / "i"), lock_dir=tmp_path, writer="t") as index:
        index.vectors.put_space(space())
        for sha, seed in (("a", 1), ("a", 1), ("b", 3)):
            index.vectors.put("base-abc123", [Embedding("a/x", sha, vec(seed), T)])
        stored = index.vectors.get("base-abc123", ["a/x", "never/seen"])
        assert list(stored) == ["a/x"] and stored["a/x"].sha == "b" and np.array_equal(stored["a/x"].vector, vec(3))
        assert index.maintenance.stats()[emb_table_name("base-abc123")].rows == 1


def test_spaces_are_separate_tables(tmp_path: Path) -> None:
    with Index.open(str(tmp_path / "i"), lock_dir=tmp_path, writer="t") as index:
        index.vectors.put_space(space("s-one", dim=8))
        index.vectors.put_space(space("s-two", dim=4))
        index.vectors.put("s-one", [Embedding("a/x", "1", vec(1), T)])
        assert index.vectors.get("s-two") == {} and index.vectors.get("s-unknown") == {}
        with pytest.raises(ValueError, match="dimension 4"):
            index.vectors.put("s-two", [Embedding("a/x", "1", vec(1, dim=8), T)])


@pytest.mark.parametrize("bad", ["Has Spaces", "../x", ""])
def test_space_ids_must_be_slugs(bad: str) -> None:
    with pytest.raises(ValueError):
        emb_table_name(bad)


def test_writes_need_a_writer_and_a_known_space(tmp_path: Path) -> None:
    uri = str(tmp_path / "i")
    with Index.open(uri, lock_dir=tmp_path, writer="t") as index:
        with pytest.raises(StoreError, match="has no space"):
            index.vectors.put("nope", [Embedding("a/x", "1", vec(1), T)])
        index.vectors.put_space(space())
    reader = Index.open(uri)
    with pytest.raises(StoreError, match="read-only"):
        reader.vectors.put("base-abc123", [Embedding("a/x", "1", vec(1), T)])
    assert "base-abc123" in reader.vectors.spaces()
