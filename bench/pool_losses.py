"""Print how much each pool model changed the base: held-out response loss on its domain(s), base vs model.

Usage: .venv/bin/python bench/pool_losses.py POOL_DIR   (a directory written by `hubdelta devhub build-pool`)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hubdelta_dev.pool.evaluate import evaluate_pool


def main(pool_dir: Path) -> None:
    started = time.perf_counter()
    rows = evaluate_pool(pool_dir, lambda repo: pool_dir / "hub" / repo)
    print(f"{'repo':46s} {'domain':10s} {'base':>7s} {'model':>7s} {'change':>7s}")
    for r in rows:
        print(f"{r.repo_id:46s} {r.domain:10s} {r.base_loss:7.3f} {r.loss:7.3f} {r.loss / r.base_loss - 1:+7.1%}")
    better = sum(r.loss < r.base_loss for r in rows)
    print(f"{better}/{len(rows)} (model, domain) pairs below the base; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
