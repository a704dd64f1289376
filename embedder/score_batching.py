"""How many scoring rows and LM-head positions fit a memory budget (``[family] memory_gb``): pure arithmetic.

A scoring forward holds, besides the weights, activations that grow with its rows: the hidden states and MLP
intermediates of one layer at a time (inference keeps no earlier layer's), the attention scores if the
attention kernel materialises them, and the key/value cache of the probe prefix and of the texts. The LM head
holds ``positions × vocabulary`` logits and as much again while it reduces them. Both are sized to the budget
here, the same way on CUDA and on CPU, so a GPU box with a set budget never runs out of memory on a long
continuation set and a small CPU machine never pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FLOAT = 4  # scoring runs in float32
ACTIVATION_COPIES = 8  # hidden-sized tensors alive at once in a decoder layer (residual, norm, q, o, mlp out, ...)
HEAD_COPIES = 2  # the logits, and the temporary of their log-sum-exp
MAX_HEAD = 4096  # positions per head matmul: beyond this a bigger matmul is no faster, only hungrier


@dataclass(frozen=True)
class Dims:
    """The sizes of a decoder that decide its activation memory (from its text config)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_width: int  # key/value heads x head dim
    vocab: int

    @classmethod
    def of(cls, config: Any) -> Dims:
        heads = int(config.num_attention_heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        kv = int(getattr(config, "num_key_value_heads", None) or heads)
        return cls(int(config.hidden_size), int(config.intermediate_size), int(config.num_hidden_layers), heads,
                   kv * head_dim, int(config.vocab_size))  # fmt: skip


@dataclass(frozen=True)
class Batching:
    """Rows per decoder forward (all adapters of the forward together) and positions per LM-head matmul."""

    rows: int
    head: int

    @classmethod
    def fit(cls, dims: Dims, *, prefix: int, width: int, budget_bytes: float) -> Batching:
        """The largest batches whose estimated activations stay within ``budget_bytes`` (at least one row).

        Args:
            prefix: tokens of the longest probe prefix (cached once per forward's rows).
            width: tokens of the longest text row (what each row runs through the decoder).
        """
        return cls(max(1, int(budget_bytes // row_bytes(dims, prefix, width))),
                   max(1, min(MAX_HEAD, int(budget_bytes // (dims.vocab * FLOAT * HEAD_COPIES)))))  # fmt: skip


def row_bytes(dims: Dims, prefix: int, width: int) -> int:
    """Estimated peak activation bytes of one row in a scoring forward."""
    per_token = ACTIVATION_COPIES * dims.hidden + 3 * dims.intermediate + dims.heads * (prefix + width)
    cache = dims.layers * 2 * dims.kv_width * (prefix + width)
    return FLOAT * (width * per_token + cache)
