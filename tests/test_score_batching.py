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
