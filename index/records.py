"""Typed records passed between the crawler, the index and the queries. Pure data: no LanceDB import here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from hubdelta.kernel.errors import UsageError

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is a Hub repo id (owner/name), else a one-line UsageError naming it."""
    if not _REPO_ID.match(repo_id):
        raise UsageError(repo_id, "not a Hub repo id", fix="write it as owner/name, e.g. HuggingFaceTB/SmolLM2-135M")
    return repo_id


class ModelStatus(StrEnum):
    """Where a model is in hubdelta's pipeline."""

    DISCOVERED = "discovered"  # recorded, not queued (e.g. a quantized child)
    QUEUED = "queued"  # waiting for the embedder
    EMBEDDING = "embedding"  # claimed by an embedder
    EMBEDDED = "embedded"
    FAILED = "failed"  # the embedder gave up; see reason
    SKIPPED = "skipped"  # will not be embedded (gated, private, ...); see reason
    REMOVED = "removed"  # gone from the Hub; vectors kept but hidden from queries
    UNCHANGED = "unchanged"  # embedded to a delta of ~0 (no change from base): no vector, hidden from queries


def visible_to_queries(status: ModelStatus) -> bool:
    """Whether the read side may show a model in this status: THE visibility rule of hubdelta.

    A model removed from the Hub keeps its row and its vectors (it may come back, and old reports name it), but
    ``similar``, ``task``, ``report``, ``export`` and ``eval`` leave it out, and no query returns it as a
    neighbour; ``show`` still shows its record, saying it was removed. The stores apply this rule through
    :func:`hubdelta.index.selectors.visible` and ``index.vectors.visible`` / ``index.vectors.nearest``.

    A model with no change from its base (``unchanged``: its delta's norm is ~0, see
    :mod:`hubdelta.embedder.vetting`) is hidden the same way: it has no direction to compare by, so as a
    neighbour it would only show noise with a real-looking score. ``show`` shows it with its status and reason.
    """
    return status not in (ModelStatus.REMOVED, ModelStatus.UNCHANGED)


VISIBLE_STATUSES = frozenset(s for s in ModelStatus if visible_to_queries(s))
HIDDEN_STATUSES = frozenset(ModelStatus) - VISIBLE_STATUSES


class Relation(StrEnum):
    """How a child relates to a base, as the Hub's ``base_model:<relation>:<base>`` tags say."""

    ADAPTER = "adapter"
    FINETUNE = "finetune"
    MERGE = "merge"
    QUANTIZED = "quantized"


# Every relation is followed by default; quantized children are recorded (status discovered) but not queued:
# a quantized copy behaves like its source, so embedding it would mostly add noise and cost.
DEFAULT_RELATIONS = (Relation.ADAPTER, Relation.FINETUNE, Relation.MERGE, Relation.QUANTIZED)
EMBEDDABLE = frozenset({Relation.ADAPTER, Relation.FINETUNE, Relation.MERGE})


@dataclass(frozen=True)
class HubModel:
    """What one listing item says about a repo (the crawler's view of the Hub, before any decision)."""

    repo_id: str
    sha: str | None
    relation: Relation
    base_models: tuple[str, ...]
    created_at: datetime | None = None
    last_modified: datetime | None = None
    tags: tuple[str, ...] = ()
    library: str | None = None
    pipeline_tag: str | None = None
    license: str | None = None
    downloads: int = 0
    likes: int = 0
    gated: str | None = None  # None, "auto" or "manual"
    private: bool = False
    card_summary: str = ""


@dataclass(frozen=True)
class ModelRecord:
    """One row of the ``models`` table: the Hub's view plus hubdelta's status."""

    model: HubModel
    status: ModelStatus
    reason: str = ""
    attempts: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None

    @property
    def repo_id(self) -> str:
        return self.model.repo_id

    def with_status(self, status: ModelStatus, reason: str = "") -> ModelRecord:
        return replace(self, status=status, reason=reason)


@dataclass(frozen=True)
class Cursor:
    """The newest child of one (base, relation) at the end of the last *completed* sweep.

    An incremental crawl may stop at a known repo only at or below this mark: repos above it may have been
    recorded by a sweep that was killed before it reached older new repos.
    """

    created_at: datetime
    repo_id: str


@dataclass(frozen=True)
class TrackedBase:
    """A base model hubdelta follows, and the crawl state of each followed relation."""

    base: str
    relations: tuple[Relation, ...] = DEFAULT_RELATIONS
    cursors: dict[Relation, Cursor] = field(default_factory=dict)
    added_at: datetime | None = None
    last_crawl: datetime | None = None
    last_full_sync: datetime | None = None
