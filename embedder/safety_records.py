"""Typed records of the safety checks: limits, what is known of the base, refusals and download plans."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hubdelta.embedder.safety_header import shown


class RepoKind(StrEnum):
    ADAPTER = "adapter"  # a peft adapter applied to the resident base
    FULL = "full"  # a full set of weights (finetune or merge)


class Rule(StrEnum):
    """Which rule refused a repo (stable ids for tests and reports; the reason says it in words)."""

    PATH = "path"  # unsafe file name
    PICKLE = "pickle"  # pickle-only weights without the opt-in
    CUSTOM_CODE = "custom_code"
    NO_WEIGHTS = "no_weights"
    UNSUPPORTED = "unsupported"  # GGUF, quantized configs, non-LoRA adapters, layer replication
    CONFIG = "config"  # a config that is not a JSON object, or holds impossible values
    BASE = "base"  # built for another base (name, architecture or shapes)
    TARGET = "target"  # an adapter targeting modules the base lacks
    RANK = "rank"
    PARAMS = "params"
    SIZE = "size"
    CORRUPT = "corrupt"  # malformed safetensors
    MISSING = "missing"  # a file named (by an index) but absent
    DISK = "disk"  # not enough disk now: retryable


@dataclass(frozen=True)
class Refusal:
    """A repo (at one sha) that must not be downloaded or loaded, and why, in one line."""

    rule: Rule
    reason: str
    file: str | None = None
    retryable: bool = False  # only the disk budget: the same repo may fit later

    def __str__(self) -> str:
        return self.reason


def refuse(rule: Rule, message: str, file: str | None = None, *, retryable: bool = False) -> Refusal:
    """A refusal whose reason names the file first: ``"<file>: <message>"``, on one line."""
    reason = f"{shown(file)}: {message}" if file is not None else message
    return Refusal(rule, " ".join(reason.split()), file, retryable)


@dataclass(frozen=True)
class Limits:
    """Bounds checked before anything is loaded. Defaults suit a CPU box with ~16 GB of RAM."""

    max_params: int = 2_000_000_000  # a full model; 2e9 fp32 params are 8 GB
    max_adapter_params: int = 500_000_000
    max_adapter_rank: int = 256
    max_file_bytes: int = 10 * 1024**3
    max_total_bytes: int = 20 * 1024**3  # one repo's download
    max_config_bytes: int = 16 * 1024**2  # each JSON config read before deciding
    max_header_bytes: int = 100_000_000  # a safetensors header
    max_tensors: int = 1_000_000
    max_shards: int = 1_000
    max_seq_len: int = 512  # probe tokens per forward (the probes are short; a hostile chat template is not)
    disk_budget_bytes: int = 20 * 1024**3  # the download cache, this download included
    min_free_bytes: int = 1024**3  # left free on the cache's filesystem after the download
    allow_pickle: bool = False  # pickle weights only with this opt-in, and then only torch.load(weights_only=True)
    adapter_types: frozenset[str] = frozenset({"LORA"})

    @classmethod
    def from_embed_settings(cls, embed: Any, **overrides: Any) -> Limits:
        """Limits from ``[embed]`` settings: ``allow_pickle`` and ``disk_budget_gb`` (also the per-repo bound)."""
        budget = int(float(getattr(embed, "disk_budget_gb", 20.0)) * 1e9)
        values: dict[str, Any] = {
            "allow_pickle": bool(getattr(embed, "allow_pickle", False)),
            "disk_budget_bytes": budget,
            "max_total_bytes": budget,
        }
        return cls(**{**values, **overrides})


@dataclass(frozen=True)
class BaseInfo:
    """What the checks know about the tracked base: its id, architecture and weight shapes (from its headers)."""

    repo_id: str
    model_type: str | None = None
    hidden_size: int | None = None
    weight_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    aliases: frozenset[str] = frozenset()  # other ids adapters may name for the same weights

    def names(self) -> frozenset[str]:
        return frozenset(n.lower() for n in {self.repo_id, *self.aliases})

    def modules(self) -> frozenset[str]:
        """Names of modules that hold a ``weight`` (the ones an adapter can target)."""
        return frozenset(k[: -len(".weight")] for k in self.weight_shapes if k.endswith(".weight"))


@dataclass(frozen=True)
class Triage:
    """What the file listing alone says about a repo."""

    kind: RepoKind
    configs: tuple[str, ...]  # JSON files to read before deciding (config, adapter/tokenizer config, index)
    weights: tuple[str, ...]  # weight files known from names alone (empty when an index names the shards)
    index: str | None  # the shard index, when weights are sharded
    extras: tuple[str, ...]  # tokenizer and generation files, downloaded with full models
    pickle: bool


@dataclass(frozen=True)
class Plan:
    """A repo that passed every check, and exactly which files to download."""

    kind: RepoKind
    configs: tuple[str, ...]
    weights: tuple[str, ...]
    extras: tuple[str, ...]
    bytes: int
    params: int | None  # None for pickle weights (no header to read)
    pickle: bool

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(sorted({*self.configs, *self.weights, *self.extras}))
