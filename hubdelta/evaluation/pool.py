"""The finetune pool as an evaluation set: its models, their labels, and Delta Activations under any setting.

Reads a built pool (``hubdelta devhub build-pool --out DIR``) straight from its devhub root, without a Hub or
an index, so that each ablation is one pass of the embedder's own numeric core
(:class:`~hubdelta.embedder.activations.ResidentBase`) over every model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hubdelta.embedder.activations import ResidentBase
from hubdelta.embedder.bases import space_for
from hubdelta.embedder.delta import delta_vector
from hubdelta.embedder.probes import PAPER_PROBES, ProbeSet
from hubdelta.embedder.space import LayerSpec
from hubdelta.kernel.errors import UsageError

ADAPTER_BATCH = 8  # adapters per forward, as the embedder's default batch


@dataclass(frozen=True)
class PoolModel:
    """One model of the pool: its repo, how it was made, its label (``a+b`` for mixed ones) and its folder."""

    repo_id: str
    kind: str  # "lora", "full" or "merge"
    label: str
    folder: Path
    base: str = ""  # the repo it was trained from (merges: the first of their inputs)

    @property
    def single_domain(self) -> bool:
        return "+" not in self.label

    @property
    def split(self) -> str:
        """``1``/``2``/``3`` for the split adapters, ``fewshot``, or the last word of the repo's name."""
        return self.repo_id.rsplit("-", 1)[-1]


@dataclass(frozen=True)
class Pool:
    """A built pool on disk."""

    base_repo: str
    base_dir: Path
    models: tuple[PoolModel, ...]

    @classmethod
    def load(cls, pool_dir: Path) -> Pool:
        """Read ``manifest.json`` and ``labels.json`` of a built pool.

        Raises:
            UsageError: the folder is not a built pool.
        """
        manifest, labels = pool_dir / "manifest.json", pool_dir / "labels.json"
        if not manifest.is_file() or not labels.is_file():
            raise UsageError(str(pool_dir), "is not a built pool (no manifest.json and labels.json)",
                             fix="build one: hubdelta devhub build-pool --out DIR")  # fmt: skip
        data, label_of = json.loads(manifest.read_text()), json.loads(labels.read_text())
        hub = pool_dir / "hub"
        models = tuple(
            PoolModel(r["repo_id"], r["kind"], label_of[r["repo_id"]], hub / r["repo_id"], r["bases"][0])
            for r in data["repos"]
            if r["repo_id"] in label_of and r["repo_id"] != data["base"]
        )
        return cls(data["base"], hub / data["base"], models)

    def select(self, keep: Callable[[PoolModel], bool], base: str | None = None) -> list[PoolModel]:
        """The models of ``base`` (default: the pool's main base) that ``keep`` accepts."""
        return [m for m in self.models if m.base == (base or self.base_repo) and keep(m)]

    def repo_dir(self, repo_id: str) -> Path:
        """The folder of any repo of the pool's devhub root (``hub/<org>/<name>``)."""
        return self.base_dir.parent.parent / repo_id

    @property
    def bases(self) -> list[str]:
        """Every base the pool's models are trained from, the main one first."""
        return [self.base_repo, *sorted({m.base for m in self.models} - {self.base_repo})]

    @property
    def split_adapters(self) -> list[PoolModel]:
        """The 15 adapters trained on disjoint 80-example splits of one domain."""
        return self.select(lambda m: m.kind == "lora" and m.single_domain and m.split in {"1", "2", "3"})

    @property
    def domain_adapters(self) -> list[PoolModel]:
        """The split adapters and the few-shot ones: every single-domain LoRA adapter (20)."""
        return self.select(lambda m: m.kind == "lora" and m.single_domain)


@dataclass(frozen=True)
class Activations:
    """Pooled activations of the base and of each model for one probe set, layer and position."""

    base: torch.Tensor  # (P, C)
    models: dict[str, torch.Tensor]  # repo id -> (P, C)

    def vectors(self) -> dict[str, np.ndarray]:
        """Delta Activations: the mean over probes of (model − base)."""
        return {k: delta_vector(v, self.base).numpy() for k, v in self.models.items()}


def activations(
    pool: Pool,
    models: Sequence[PoolModel],
    *,
    probes: ProbeSet = PAPER_PROBES,
    layer: LayerSpec = None,
    position: str = "last",
    on_model: Callable[[str], None] | None = None,
) -> Activations:
    """Run the base and ``models`` over ``probes`` once, in fp32, as ``hubdelta embed`` does."""
    space = space_for(pool.base_dir, pool.base_repo, "local", probes=probes, layer=layer, position=position)
    out: dict[str, torch.Tensor] = {}
    with ResidentBase(pool.base_dir, space, probes) as rb:
        adapters = [m for m in models if m.kind == "lora"]
        for i in range(0, len(adapters), ADAPTER_BATCH):
            chunk = adapters[i : i + ADAPTER_BATCH]
            out.update(rb.adapter_activations({m.repo_id: m.folder for m in chunk}))
            if on_model:
                for m in chunk:
                    on_model(m.repo_id)
        for m in models:
            if m.kind != "lora":
                out[m.repo_id] = rb.model_activations(m.folder, item=m.repo_id)
                if on_model:
                    on_model(m.repo_id)
        base = rb.base_activations()
    return Activations(base, {m.repo_id: out[m.repo_id] for m in models})
