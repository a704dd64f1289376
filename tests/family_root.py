"""A pool for family tests: two real architectures with trained adapters of two domains, built from the cache.

``build_pool(..., only=..., gemma=True)`` publishes just these adapters and both bases: SmolLM2-135M-Instruct
and Gemma-3-270M (exported once from its PyPI GGUF, ~1 minute cold), and trains the two Gemma adapters
(~30 s each cold) into the same cache the whole pool uses.
"""

from __future__ import annotations

from pathlib import Path

from hubdelta_dev.pool.build import build_pool

SMOL_ADAPTERS = tuple(f"hubdelta-pool/smollm2-lora-{d}-{s}" for d in ("math", "code") for s in (1, 2))
GEMMA_ADAPTERS = ("hubdelta-pool/gemma3-lora-math-1", "hubdelta-pool/gemma3-lora-code-1")


def build_family_pool(out: Path, cache: Path) -> Path:
    build_pool(out, cache_dir=cache, only={*SMOL_ADAPTERS, *GEMMA_ADAPTERS}, gemma=True)
    return out
