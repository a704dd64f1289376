"""Time the embedder's numeric core on the real pool, fp32 vs bf16, and how close bf16 vectors are to fp32 ones.

Prints (asserts nothing): load time, base activations, adapter batches of 1/4/8 (seconds per adapter), one
full finetune, then the cosine of each adapter's bf16 delta vector to its fp32 one.

Usage: .venv/bin/python bench/embed_core.py POOL_DIR [THREADS]
    POOL_DIR: a directory written by `hubdelta devhub build-pool`; THREADS: torch threads (default: torch's).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch

from hubdelta.embedder.activations import ResidentBase, space_for
from hubdelta.embedder.delta import delta_vector
from hubdelta.pool.base import BASE_REPO_ID

T = TypeVar("T")
BATCHES = (1, 4, 8)
FULL = "hubdelta-pool/smollm2-full-math"


def timed(fn: Callable[[], T], repeats: int = 1) -> tuple[T, float]:
    """The result of ``fn`` and its best wall time over ``repeats`` runs (after none: first runs count)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    assert result is not None
    return result, best


def run(hub: Path, dtype: str, adapters: dict[str, Path]) -> dict[str, torch.Tensor]:
    """Print the timings for one dtype; return the delta vector of every adapter in the batch of 8."""
    base_dir = hub / BASE_REPO_ID
    space = space_for(base_dir, BASE_REPO_ID, "bench", dtype=dtype)
    resident, load_s = timed(lambda: ResidentBase(base_dir, space))
    base, base_s = timed(resident.base_activations, repeats=3)
    print(f"[{dtype}] load {load_s:.2f} s; base activations {base_s:.2f} s ({len(resident.batch)} probes)")
    names = list(adapters)
    resident.adapter_activations({names[0]: adapters[names[0]]})  # warm-up: peft's first wrap is slower
    vectors: dict[str, torch.Tensor] = {}
    for n in BATCHES:
        chunk = {k: adapters[k] for k in names[:n]}
        acts, s = timed(partial(resident.adapter_activations, chunk), repeats=2 if n < max(BATCHES) else 1)
        print(f"[{dtype}] {n} adapter(s) in one batch: {s:.2f} s, {s / n:.2f} s per adapter")
        vectors = {k: delta_vector(a, base) for k, a in acts.items()}
    _, full_s = timed(lambda: resident.model_activations(hub / FULL))
    print(f"[{dtype}] full finetune (load + forward + free): {full_s:.2f} s")
    resident.close()
    return vectors


def main(pool_dir: Path, threads: int | None = None) -> None:
    if threads:
        torch.set_num_threads(threads)
    hub = pool_dir / "hub"
    loras = sorted(p.parent for p in hub.glob("hubdelta-pool/*/adapter_config.json"))
    # Spread over domains: every third adapter, so the 8 are not all one domain's splits.
    picked = (loras[::3] + [p for p in loras if p not in loras[::3]])[: max(BATCHES)]
    adapters = {f"{p.parent.name}/{p.name}": p for p in picked}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; adapters: {', '.join(adapters)}")
    fp32 = run(hub, "float32", adapters)
    bf16 = run(hub, "bfloat16", adapters)
    print("bf16 vs fp32 delta vectors (cosine, relative L2 error):")
    for key in fp32:
        a, b = fp32[key], bf16[key]
        cos = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
        print(f"  {key:46s} cos {cos:.6f}  rel {((a - b).norm() / a.norm()).item():.4f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)
