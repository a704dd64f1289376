"""Scoring batches sized to a memory budget (``[family] memory_gb``): the arithmetic, on real model configs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hubdelta.embedder.score_batching import FLOAT, HEAD_COPIES, MAX_HEAD, Batching, Dims, row_bytes

# SmolLM2-135M and Gemma-3-270M, as their configs give them
SMOL = SimpleNamespace(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                       num_key_value_heads=3, vocab_size=49152)  # fmt: skip
GEMMA = SimpleNamespace(hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
                        num_key_value_heads=1, head_dim=256, vocab_size=262144)  # fmt: skip


@pytest.mark.parametrize("config", [SMOL, GEMMA])
@pytest.mark.parametrize("gb", [0.05, 0.5, 2.0, 40.0])
def test_batches_are_the_largest_that_fit_the_budget(config: SimpleNamespace, gb: float) -> None:
    dims = Dims.of(config)
    budget = gb * 2**30
    b = Batching.fit(dims, prefix=38, width=45, budget_bytes=budget)
    one = row_bytes(dims, 38, 45)
    assert b.rows * one <= budget < (b.rows + 1) * one
    head = dims.vocab * FLOAT * HEAD_COPIES
    assert b.head == MAX_HEAD or b.head * head <= budget < (b.head + 1) * head
    assert b.head * head <= budget


def test_a_budget_too_small_for_one_row_still_scores_one_at_a_time() -> None:
    assert Batching.fit(Dims.of(GEMMA), prefix=38, width=45, budget_bytes=1.0) == Batching(rows=1, head=1)


def test_longer_rows_and_more_heads_cost_more() -> None:
    smol, gemma = Dims.of(SMOL), Dims.of(GEMMA)
    assert gemma.kv_width == 256 and smol.kv_width == 3 * 64  # head_dim from the config, else hidden / heads
    assert row_bytes(smol, 38, 90) > 1.5 * row_bytes(smol, 38, 45) > 1.5 * row_bytes(smol, 0, 30)
    # 2 GB (the default) holds every row of a 20-text probe for 4 adapters at once, on both bases
    for dims in (smol, gemma):
        assert Batching.fit(dims, prefix=38, width=45, budget_bytes=2 * 2**30).rows >= 4 * 20
    # on a 262k vocabulary the head is what the budget bounds first
    assert Batching.fit(gemma, prefix=38, width=45, budget_bytes=2**30).head == 2**30 // (262144 * FLOAT * HEAD_COPIES)


def _cost(groups: list[list[int]], lengths: list[int], overhead: int) -> int:
    return sum(len(g) * max(lengths[i] for i in g) + overhead for g in groups)


def _brute(lengths: list[int], max_rows: int, overhead: int) -> int:
    """The cheapest split of the sorted rows into contiguous groups, by trying every set of cuts."""
    from itertools import combinations, pairwise

    s = sorted(lengths)
    best = None
    for n_cuts in range(len(s)):
        for cuts in combinations(range(1, len(s)), n_cuts):
            bounds = [0, *cuts, len(s)]
            parts = [s[a:b] for a, b in pairwise(bounds)]
            if all(len(p) <= max_rows for p in parts):
                cost = sum(len(p) * p[-1] + overhead for p in parts)
                best = cost if best is None else min(best, cost)
    assert best is not None
    return best


@pytest.mark.parametrize("seed", range(6))
def test_rows_are_cut_into_forwards_of_similar_length_at_the_least_padded_cost(seed: int) -> None:
    import random

    from hubdelta.embedder.scoring import length_chunks

    rng = random.Random(seed)
    lengths = [rng.choice([33, 33, 33, 35, 38, 41, 44, 60]) for _ in range(rng.randint(1, 11))]
    max_rows, overhead = rng.randint(1, 6), rng.choice([0, 16, 64, 500])
    groups = length_chunks(lengths, max_rows, overhead)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))  # every row once
    assert all(1 <= len(g) <= max_rows for g in groups)
    flat = [lengths[i] for g in groups for i in g]
    assert flat == sorted(flat)  # contiguous in length
    assert _cost(groups, lengths, overhead) == _brute(lengths, max_rows, overhead)


def test_one_forward_when_the_lengths_are_even_or_a_cut_would_not_pay() -> None:
    from hubdelta.embedder.scoring import length_chunks

    assert length_chunks([32] * 20, 80) == [list(range(20))]
    assert len(length_chunks([33] * 10 + [44] * 10, 80, overhead=16)) == 2  # 10 x 11 padded positions saved
    assert len(length_chunks([33] * 10 + [44] * 10, 80, overhead=200)) == 1
