"""Typed results of queries: what ``hubdelta similar/show/status/export`` print and the Python API returns.

Field names here are the stable JSON field names documented in the README: add fields, never rename them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from hubdelta.index.labels import ModelLabels
from hubdelta.index.records import ModelRecord

CARD_CHARS = 100  # a table cell, not the card


@dataclass(frozen=True)
class Neighbor:
    """One model near the query, with what a person needs to judge it at a glance."""

    rank: int
    repo_id: str
    score: float  # cosine similarity to the query, in [-1, 1]
    relation: str
    base: str
    downloads: int
    likes: int
    license: str | None
    cluster: str | None  # the cluster of the latest report, once reports exist
    card: str  # the card's first lines, shortened
    labels: ModelLabels | None = None  # its suggested labels in this space (None: not labelled yet)
    copies: tuple[str, ...] = ()  # the other models of its copy group in this answer (collapsed into this row)

    @classmethod
    def of(
        cls,
        rank: int,
        score: float,
        record: ModelRecord | None,
        repo_id: str,
        cluster: str | None = None,
        copies: tuple[str, ...] = (),
        labels: ModelLabels | None = None,
    ) -> Neighbor:
        """A neighbour from its index record (``None`` for a vector whose record is gone: shown bare)."""
        if record is None:
            return cls(rank, repo_id, score, "", "", 0, 0, None, cluster, "", labels, copies)
        m = record.model
        card = " ".join(m.card_summary.split())
        card = card if len(card) <= CARD_CHARS else card[: CARD_CHARS - 1] + "…"
        base = m.base_models[0] if m.base_models else ""
        return cls(rank, repo_id, score, m.relation.value, base, m.downloads, m.likes, m.license, cluster, card,
                   labels, copies)  # fmt: skip


@dataclass(frozen=True)
class Similar:
    """The answer of ``similar``: the query as understood, then the neighbours, best first."""

    query: str  # the repo id, or "vector:<file>" for a vector query
    space_id: str
    k: int
    where: str | None
    relation: str | None
    neighbors: list[Neighbor]
    other_spaces: list[str] = field(default_factory=list)  # spaces the query repo also has a vector in

    def __iter__(self) -> Iterator[Neighbor]:
        return iter(self.neighbors)

    def __len__(self) -> int:
        return len(self.neighbors)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VectorInfo:
    """A model's vector in one space, as ``show`` lists it."""

    space_id: str
    sha: str | None
    embedded_at: datetime | None
    norm: float


@dataclass(frozen=True)
class SpaceStatus:
    """One space in ``status``."""

    space_id: str
    base: str
    dim: int
    vectors: int
    layer: str
    position: str
    dtype: str
    ann_index: str | None  # None: exact search
    unindexed: int
    method: str = "activations"  # or "meaning (<recipe>)" for a family space


@dataclass(frozen=True)
class Status:
    """The index at a glance."""

    index: str
    models: int
    by_status: dict[str, int]
    queue: int  # queued + embedding
    tracked: int
    last_crawl: datetime | None
    last_report: datetime | None
    spaces: list[SpaceStatus]
    index_bytes: int | None  # None: the index is on object storage, where it is not measured
    cache_bytes: int
    daemon: dict[str, Any] | None = None  # {running, pid, started_at, uptime_s, jobs: {id: {...}}}; None: never ran
