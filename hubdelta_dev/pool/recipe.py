"""What the pool contains: a pure function of the seed, so the same seed always describes the same pool."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from hubdelta.embedder.training import TrainConfig
from hubdelta_dev.pool.base import BASE_REPO_ID, GEMMA_REPO_ID

ORG = "hubdelta-pool"
DOMAIN_NAMES = ("math", "code", "legal", "medical", "chemistry")
HELDOUT = 24  # per domain: evaluation only, never trained on
FEWSHOT = 20  # the paper's few-shot setting: 20 held-out examples
SPLIT = 80  # examples in each of the three disjoint training splits
MIXED = 40  # examples of each domain in a mixed-domain adapter
N_SPLITS = 3


@dataclass(frozen=True)
class Slice:
    """A contiguous range of one domain's deterministic example list."""

    domain: str
    start: int
    stop: int


# Layout of every domain's example list: [heldout | fewshot | split 1 | split 2 | split 3 | mixed pool].
HELDOUT_SLICE = (0, HELDOUT)
FEWSHOT_SLICE = (HELDOUT, HELDOUT + FEWSHOT)
SPLITS_START = HELDOUT + FEWSHOT
MIXED_START = SPLITS_START + N_SPLITS * SPLIT
EXAMPLES_PER_DOMAIN = MIXED_START + MIXED


def split_slice(domain: str, split: int) -> Slice:
    """Training split ``split`` (1-based) of ``domain``."""
    start = SPLITS_START + (split - 1) * SPLIT
    return Slice(domain, start, start + SPLIT)


def heldout_slice(domain: str) -> Slice:
    return Slice(domain, *HELDOUT_SLICE)


@dataclass(frozen=True)
class ModelSpec:
    """One repo of the pool: how it is made and what its card says."""

    repo_id: str
    kind: Literal["lora", "full", "merge"]
    label: str  # the domain, or "a+b" for mixed ones
    data: tuple[Slice, ...] = ()
    train: TrainConfig | None = None
    bases: tuple[str, ...] = (BASE_REPO_ID,)
    merge_weights: tuple[float, ...] = ()  # task-arithmetic weights over bases[1:] (kind == "merge")
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)


GEMMA_SPLITS = 2  # Gemma-3-270M twins of splits 1 and 2: a second architecture for family spaces


def pool_recipe(seed: int = 0, *, gemma: bool = False) -> list[ModelSpec]:
    """Every repo of the pool, in build order (a merge comes after the models it merges).

    With ``gemma``, LoRA adapters of Gemma-3-270M on the same domains and splits follow the SmolLM2 models.
    """
    lora = TrainConfig(kind="lora", lr=1e-3, epochs=1, batch_size=8, seed=seed, lora_dropout=0.0)
    # The paper's few-shot setting (A.4) trains 20 examples for several epochs; small batches keep the
    # number of optimizer steps comparable to a split adapter.
    fewshot = replace(lora, epochs=3, batch_size=4)
    full = TrainConfig(kind="full", lr=1e-4, epochs=1, batch_size=8, seed=seed)
    specs = _domain_adapters(lora, fewshot, seed) + _mixes_finetunes_merges(lora, full)
    if gemma:
        specs += gemma_recipe(lora)
    return specs


def _domain_adapters(lora: TrainConfig, fewshot: TrainConfig, seed: int) -> list[ModelSpec]:
    """Per domain: an adapter on each disjoint split, then the few-shot one."""
    specs: list[ModelSpec] = []
    for domain in DOMAIN_NAMES:
        for split in range(1, N_SPLITS + 1):
            specs.append(
                ModelSpec(
                    f"{ORG}/smollm2-lora-{domain}-{split}",
                    "lora",
                    domain,
                    (split_slice(domain, split),),
                    replace(lora, seed=seed * 1000 + split),
                    description=f"LoRA adapter on {SPLIT} {domain} examples (disjoint split {split}).",
                )
            )
        specs.append(
            ModelSpec(
                f"{ORG}/smollm2-lora-{domain}-fewshot",
                "lora",
                domain,
                (Slice(domain, *FEWSHOT_SLICE),),
                fewshot,
                description=f"Few-shot LoRA adapter: {FEWSHOT} held-out {domain} examples, 3 epochs.",
            )
        )
    return specs


def _mixes_finetunes_merges(lora: TrainConfig, full: TrainConfig) -> list[ModelSpec]:
    """Two mixed-domain adapters, two full finetunes, and two merges of earlier models."""
    specs: list[ModelSpec] = []
    for a, b in (("math", "code"), ("legal", "medical")):
        specs.append(
            ModelSpec(
                f"{ORG}/smollm2-lora-mix-{a}-{b}",
                "lora",
                f"{a}+{b}",
                (Slice(a, MIXED_START, MIXED_START + MIXED), Slice(b, MIXED_START, MIXED_START + MIXED)),
                lora,
                description=f"LoRA adapter trained on a mix of {MIXED} {a} and {MIXED} {b} examples.",
            )
        )
    for domain in ("math", "code"):
        specs.append(
            ModelSpec(
                f"{ORG}/smollm2-full-{domain}",
                "full",
                domain,
                (split_slice(domain, 1),),
                full,
                description=f"Full finetune (all weights) on {SPLIT} {domain} examples (split 1).",
            )
        )
    specs.append(
        ModelSpec(
            f"{ORG}/smollm2-merge-math-code",
            "merge",
            "math+code",
            bases=(BASE_REPO_ID, f"{ORG}/smollm2-full-math", f"{ORG}/smollm2-full-code"),
            merge_weights=(0.5, 0.5),
            description="Task-arithmetic merge: base + 0.5·(math − base) + 0.5·(code − base).",
        )
    )
    specs.append(
        ModelSpec(
            f"{ORG}/smollm2-merge-legal-adapter",
            "merge",
            "legal",
            bases=(BASE_REPO_ID, f"{ORG}/smollm2-lora-legal-1"),
            merge_weights=(1.0,),
            description="The legal split-1 LoRA adapter merged into the base weights.",
        )
    )
    return specs


def gemma_recipe(lora: TrainConfig) -> list[ModelSpec]:
    """Gemma-3-270M adapters trained on exactly the data of their SmolLM2 twins, with the same settings."""
    return [
        ModelSpec(
            f"{ORG}/gemma3-lora-{domain}-{split}",
            "lora",
            domain,
            (split_slice(domain, split),),
            replace(lora, seed=lora.seed * 1000 + split),
            bases=(GEMMA_REPO_ID,),
            description=f"LoRA adapter of Gemma-3-270M on {SPLIT} {domain} examples (disjoint split {split}).",
        )
        for domain in DOMAIN_NAMES
        for split in range(1, GEMMA_SPLITS + 1)
    ]
