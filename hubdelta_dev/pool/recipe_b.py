"""A second pool of other recipes, so that task search cannot be tuned to the first pool's one recipe.

The first pool (:mod:`hubdelta_dev.pool.recipe`) trains every split adapter the same way (r 8 on all six
projections, lr 1e-3, one epoch at batch 8). Real spaces hold adapters of every recipe, so this pool varies what
a trainer varies: rank and alpha, which modules are adapted, learning rate, epochs and batch size. It uses the
same five domains and the same deterministic example lists (five adapters a domain, so that precision@5 can
reach 1), and the same held-out rule: no model here is trained
on a domain's first ``HELDOUT`` examples, the ones task search is evaluated with.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hubdelta.embedder.training import TrainConfig
from hubdelta_dev.pool.recipe import (
    DOMAIN_NAMES,
    FEWSHOT_SLICE,
    MIXED,
    MIXED_START,
    N_SPLITS,
    ModelSpec,
    Slice,
    split_slice,
)

ORG_B = "hubdelta-pool-b"
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
ALL = (*ATTENTION, *MLP)


@dataclass(frozen=True)
class Recipe:
    """How one adapter of each domain is trained, and its name in the repo ids."""

    name: str
    slice: str  # "1".."3": a disjoint 80-example split; "fewshot": the 20 few-shot examples; "extra": the 40 more
    cfg: TrainConfig
    what: str  # for the card


def recipes(seed: int = 0) -> tuple[Recipe, ...]:
    """One recipe per slice of a domain's examples: each differs from the first pool's in several settings."""
    base = TrainConfig(kind="lora", lora_dropout=0.0, seed=seed)
    attn = replace(base, lora_r=16, lora_alpha=32, lora_targets=ATTENTION, lr=5e-4, epochs=2, batch_size=8)
    mlp = replace(base, lora_r=4, lora_alpha=8, lora_targets=MLP, lr=2e-3, epochs=1, batch_size=4)
    slow = replace(base, lora_r=8, lora_alpha=8, lora_targets=ALL, lr=3e-4, epochs=3, batch_size=16)
    fewshot = replace(base, lora_r=16, lora_alpha=16, lr=2e-3, epochs=4, batch_size=2)
    classic = replace(
        base, lora_r=32, lora_alpha=64, lora_targets=("q_proj", "v_proj"), lr=1e-3, epochs=2, batch_size=4
    )
    return (
        Recipe("r16-attn", "1", attn, "r 16 on the attention projections, lr 5e-4, 2 epochs at batch 8"),
        Recipe("r4-mlp", "2", mlp, "r 4 on the MLP projections, lr 2e-3, 1 epoch at batch 4"),
        Recipe("r8-all-slow", "3", slow, "r 8 (alpha 8) on all seven projections, lr 3e-4, 3 epochs at batch 16"),
        Recipe("fewshot-r16", "fewshot", fewshot, "r 16, the 20 few-shot examples, lr 2e-3, 4 epochs at batch 2"),
        Recipe(
            "r32-qv", "extra", classic, "r 32 on the query and value projections only, lr 1e-3, 2 epochs at batch 4"
        ),
    )


def _slice(domain: str, name: str) -> Slice:
    if name == "fewshot":
        return Slice(domain, *FEWSHOT_SLICE)
    if name == "extra":  # the first pool's mixed adapters' examples: alone here, never mixed
        return Slice(domain, MIXED_START, MIXED_START + MIXED)
    return split_slice(domain, int(name))


def pool_recipe_b(seed: int = 0) -> list[ModelSpec]:
    """Every repo of the second pool: per domain, one adapter of each recipe (25 adapters, all LoRA)."""
    assert N_SPLITS == 3
    specs = []
    for domain in DOMAIN_NAMES:
        for r in recipes(seed):
            data = _slice(domain, r.slice)
            specs.append(
                ModelSpec(f"{ORG_B}/smollm2-{domain}-{r.name}", "lora", domain, (data,), r.cfg,
                          description=f"LoRA adapter on {data.stop - data.start} {domain} examples: {r.what}.")
            )  # fmt: skip
    return specs
