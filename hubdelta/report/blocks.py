"""How many rows one blocked matrix product takes, so that its result stays small whatever the space's size."""

from __future__ import annotations

# Elements of one block's result matrix: 2^24 is 64 MB of float32 (128 MB of float64), whether the block is
# 16 rows against 1M vectors or 1024 rows against 16k.
BLOCK_ELEMENTS = 1 << 24
MAX_ROWS = 4096  # past this, larger blocks buy nothing (the product is compute-bound already)


def rows_per_block(columns: int, elements: int = BLOCK_ELEMENTS, max_rows: int = MAX_ROWS) -> int:
    """Rows of a block whose product against ``columns`` columns has at most ``elements`` entries (at least 1)."""
    return max(1, min(max_rows, elements // max(columns, 1)))
