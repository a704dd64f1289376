"""Typed results of ``hubdelta task``: what the CLI prints and :func:`hubdelta.task.api.task_search` returns.

Field names of :meth:`TaskResult.to_dict` are the stable JSON field names documented in the README: add fields,
never rename them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hubdelta.query.records import Neighbor


@dataclass(frozen=True)
class ClusterMember:
    """A member of the task's nearest cluster and its cosine to the task."""

    repo_id: str
    score: float


@dataclass(frozen=True)
class TaskCluster:
    """The cluster whose centroid (unit mean of its members' unit vectors) is nearest to the task's vector."""

    id: str
    name: str
    similarity: float  # cosine of the task's vector to the centroid
    members: tuple[str, ...]  # every member, sorted
    top: tuple[ClusterMember, ...]  # the members nearest to the task, best first
    source: str  # "report <id>" (the latest report's clusters) or "computed now" (no report of this space yet)

    @property
    def size(self) -> int:
        return len(self.members)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "similarity": self.similarity, "size": self.size,
                "source": self.source, "top_members": [asdict(m) for m in self.top]}  # fmt: skip


@dataclass(frozen=True)
class Training:
    """How the task's adapter was trained (when it was made: also for a cached one)."""

    steps: int
    first_loss: float
    last_loss: float
    seconds: float


@dataclass(frozen=True)
class CheckpointView:
    """The task vector at one step of training (``--explain``), against the space's adapters."""

    step: int
    norm: float
    norm_ratio: float | None  # over the space's median vector norm
    top_k_shared: float  # the share of the final top-k that this checkpoint's own top-k holds too


@dataclass(frozen=True)
class TaskExplain:
    """Why the task vector is what it is (``hubdelta task --explain``), measured in the base's activation space."""

    space_id: str  # where the measures were taken (the base's activation space, also when a family was searched)
    schedule: str  # the schedule as it ran (TaskSchedule.describe())
    space_norm: float | None  # the median norm of the space's vectors: the length auto stops at
    norm: float  # the task vector's norm
    norm_ratio: float | None  # norm / space_norm
    steps: int  # optimizer steps taken (auto: where it stopped)
    checkpoints: tuple[CheckpointView, ...]  # measured along training, in step order
    stability: float | None  # mean top_k_shared over the checkpoints of the second half of training

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TaskResult:
    """The answer of ``hubdelta task``: the task as understood, its neighbours (best first) and nearest cluster."""

    task: str  # "task:<file name>"
    base: str
    space_id: str
    examples_file: str
    examples_total: int  # in the file
    examples_used: int  # trained on (the first ones)
    key: str  # the adapter's cache key
    adapter: Path  # the cached adapter folder (a normal peft adapter: hubdelta add can embed it too)
    cached: bool  # the adapter came from the cache: nothing was trained
    train_seconds: float  # spent training in this call (0.0 when cached)
    training: Training
    seconds: float  # the whole call
    k: int
    where: str | None
    relation: str | None
    neighbors: list[Neighbor]
    cluster: TaskCluster | None
    notes: tuple[str, ...] = ()  # what a person should know (fewer examples than the paper's, no clusters yet)
    schedule: str = ""  # the schedule as it ran (TaskSchedule.describe())
    explain: TaskExplain | None = None  # with --explain
    vector: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False, compare=False)
    family: str | None = None  # the family whose meaning space was searched (None: the base's activation space)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``hubdelta task --json`` (without the vector)."""
        return {
            "task": self.task,
            "base": self.base,
            "space_id": self.space_id,
            "examples": {"file": self.examples_file, "total": self.examples_total, "used": self.examples_used},
            "key": self.key,
            "adapter": str(self.adapter),
            "cached": self.cached,
            "train_seconds": self.train_seconds,
            "training": asdict(self.training),
            "seconds": self.seconds,
            "norm": float(np.linalg.norm(self.vector)),
            "k": self.k,
            "where": self.where,
            "relation": self.relation,
            "neighbors": [asdict(n) for n in self.neighbors],
            "cluster": self.cluster.to_dict() if self.cluster else None,
            "notes": list(self.notes),
            "schedule": self.schedule,
            "family": self.family,
            **({"explain": self.explain.to_dict()} if self.explain else {}),
        }
