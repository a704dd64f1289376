"""The Ray driver's pure decisions: which batch a free worker takes, what a worker's death does to its batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubdelta.cli._options import optional_values
from hubdelta.embedder.dispatch import MAX_DEATHS, Batch, Dispatcher
from hubdelta.embedder.scaleout import RayOptions, worker_count
from hubdelta.kernel.errors import ConfigError, HubdeltaError
from hubdelta.kernel.settings import load_settings


def _batches(base: str, n: int, size: int = 2) -> list[Batch]:
    return [Batch(base, tuple(f"{base}/m{i * size + j}" for j in range(size))) for i in range(n)]


def test_a_worker_keeps_to_its_resident_base_while_that_base_has_work() -> None:
    d = Dispatcher([*_batches("a", 2), *_batches("b", 3)])
    assert d.take("a", {"a": 1, "b": 1}) == _batches("a", 2)[0]
    assert d.take("a", {"a": 1, "b": 1}) == _batches("a", 2)[1]
    # a's work is done: the worker moves to b rather than idle
    assert d.take("a", {"a": 1, "b": 1}) == _batches("b", 3)[0]
    assert d.pending == 2


def test_a_new_worker_goes_where_the_fewest_workers_are() -> None:
    d = Dispatcher([*_batches("a", 4), *_batches("b", 1)])
    # nobody serves b yet: the second worker loads b though a has more work left
    assert d.take(None, {"a": 1}).base == "b"  # type: ignore[union-attr]
    # with both served equally, the base with the most work left wins
    assert d.take(None, {"a": 1, "b": 1}).base == "a"  # type: ignore[union-attr]
    assert d.take("b", {"a": 1, "b": 1}).base == "a"  # type: ignore[union-attr]


def test_nothing_left_gives_none() -> None:
    d = Dispatcher(_batches("a", 1))
    assert d.take(None, {}) is not None
    assert d.take(None, {}) is None
    assert d.take("a", {"a": 1}) is None
    assert d.pending == 0


def test_a_dead_workers_batch_is_retried_first_then_split_then_given_up() -> None:
    first, second = _batches("a", 2, size=3)
    d = Dispatcher([first, second])
    running = d.take("a", {})
    assert running == first
    assert d.lost(running) == ()  # retried intact, first in line
    retried = d.take("a", {})
    assert retried is not None and retried.repo_ids == first.repo_ids and retried.deaths == 1
    assert MAX_DEATHS == 2
    assert d.lost(retried) == ()  # second death: split into single models, still first in line
    singles = [d.take("a", {}) for _ in range(3)]
    assert [s.repo_ids for s in singles if s] == [(r,) for r in first.repo_ids]
    assert d.take("a", {}) == second
    poison = singles[1]
    assert poison is not None
    assert d.lost(poison) == ()
    again = d.take("a", {})
    assert again is not None and again.repo_ids == poison.repo_ids
    assert d.lost(again) == poison.repo_ids  # a single model that killed two workers is given up
    assert d.pending == 0


def test_put_back_requeues_first_in_line_without_blame() -> None:
    a0, a1 = _batches("a", 2)
    d = Dispatcher([a0, a1])
    taken = d.take("a", {})
    assert taken is not None
    d.put_back(taken)
    assert d.take("a", {}) == a0  # same batch, deaths still 0


def test_drop_removes_a_bases_pending_batches() -> None:
    d = Dispatcher([*_batches("a", 2), *_batches("b", 1)])
    assert len(d.drop("a")) == 2
    assert d.drop("missing") == []
    assert d.pending == 1


def test_worker_count_one_per_gpu_else_per_cpu_slot() -> None:
    assert worker_count({"CPU": 16.0, "GPU": 4.0}, RayOptions(), "auto") == (4, {"num_gpus": 1, "num_cpus": 1.0})
    assert worker_count({"CPU": 16.0, "GPU": 4.0}, RayOptions(workers=2), "cuda")[0] == 2
    # --device cpu on a GPU cluster: CPU slots
    assert worker_count({"CPU": 16.0, "GPU": 4.0}, RayOptions(cpus_per_worker=4), "cpu") == (
        4,
        {"num_gpus": 0, "num_cpus": 4},
    )
    assert worker_count({"CPU": 2.0}, RayOptions(), "auto") == (2, {"num_gpus": 0, "num_cpus": 1.0})
    assert worker_count({"CPU": 1.0}, RayOptions(cpus_per_worker=4), "auto")[0] == 1  # at least one
    with pytest.raises(HubdeltaError, match="no GPU"):
        worker_count({"CPU": 2.0}, RayOptions(), "cuda")


def test_bare_ray_option_gets_an_empty_value() -> None:
    assert optional_values(["hubdelta", "embed", "--ray"]) == ["hubdelta", "embed", "--ray="]
    assert optional_values(["embed", "--ray", "--limit", "3"]) == ["embed", "--ray=", "--limit", "3"]
    assert optional_values(["embed", "--ray", "head:6379"]) == ["embed", "--ray", "head:6379"]
    assert optional_values(["embed", "--limit", "3"]) == ["embed", "--limit", "3"]


def test_ray_settings(tmp_path: Path) -> None:
    (tmp_path / "hubdelta.toml").write_text('[ray]\nenabled = true\naddress = "head:6379"\nworkers = 0\n')
    s = load_settings({}, home=tmp_path)
    assert s.ray.enabled and s.ray.address == "head:6379" and s.ray.workers == 0
    (tmp_path / "hubdelta.toml").write_text("[ray]\ncpus_per_worker = 0\n")
    with pytest.raises(ConfigError, match="must be positive"):
        load_settings({}, home=tmp_path)
    (tmp_path / "hubdelta.toml").write_text("[ray]\nnodes = 3\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings({}, home=tmp_path)
