"""What a web client may ask, checked and turned into typed values: filters become index selectors (never SQL),
a posted vector becomes one bounded float array."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from hubdelta.index import records
from hubdelta.index.records import Relation
from hubdelta.index.selectors import Selector, by_metadata
from hubdelta.kernel.errors import UsageError

K_MAX = 100
TEXT_MAX = 200  # a repo id, a tag, a license: far longer than any real one
LIST_MAX = 20  # values of one repeatable filter
DIM_MAX = 65_536  # the widest hidden state of any model the index could hold

Text = Annotated[str, Field(max_length=TEXT_MAX)]


class Filters(BaseModel):
    """Structured model filters, the same for ``GET /api/similar`` and a posted query."""

    model_config = ConfigDict(extra="forbid")

    relation: Relation | None = None
    license: list[Text] = Field(default_factory=list, max_length=LIST_MAX)
    tag: list[Text] = Field(default_factory=list, max_length=LIST_MAX)
    min_downloads: int = Field(default=0, ge=0, le=10**12)
    min_likes: int = Field(default=0, ge=0, le=10**9)
    created_after: datetime | None = None

    def selector(self) -> Selector | None:
        """The index selector of these filters (None: no metadata filter; the relation is passed apart)."""
        if not (self.license or self.tag or self.min_downloads or self.min_likes or self.created_after):
            return None
        after = _utc(self.created_after)
        return by_metadata(licenses=self.license or None, tags=self.tag, min_downloads=self.min_downloads,
                           min_likes=self.min_likes, created_after=after)  # fmt: skip

    def described(self) -> dict[str, Any]:
        """The filters that were given, for the answer."""
        return self.model_dump(mode="json", exclude_defaults=True)


def _utc(when: datetime | None) -> datetime | None:
    """``when`` in UTC (a bare date or time is read as UTC), within the years the Hub can hold.

    Raises:
        UsageError: before 1970 or after 9999 once in UTC (Lance's timestamps could not hold it).
    """
    if when is None:
        return None
    try:
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except OverflowError:
        when = None
    if when is None or not 1970 <= when.year <= 9999:
        raise UsageError("created_after", "is outside 1970-9999", fix="give a date such as 2025-01-31")
    return when


def filters_query(
    relation: Annotated[Relation | None, Query(description="adapter, finetune, merge or quantized")] = None,
    license: Annotated[list[Text] | None, Query(description="repeatable: any of these licenses")] = None,
    tag: Annotated[list[Text] | None, Query(description="repeatable: every one of these tags")] = None,
    min_downloads: Annotated[int, Query(ge=0, le=10**12)] = 0,
    min_likes: Annotated[int, Query(ge=0, le=10**9)] = 0,
    created_after: Annotated[datetime | None, Query(description="ISO date or time (UTC if no zone)")] = None,
) -> Filters:
    """``Filters`` from query parameters (a FastAPI dependency)."""
    for name, values in (("license", license), ("tag", tag)):
        if values and len(values) > LIST_MAX:
            raise UsageError(name, f"{len(values)} values", fix=f"give at most {LIST_MAX}")
    return Filters(relation=relation, license=license or [], tag=tag or [], min_downloads=min_downloads,
                   min_likes=min_likes, created_after=created_after)  # fmt: skip


class VectorQuery(Filters):
    """``POST /api/similar``: search with a vector (e.g. one ``hubdelta embed`` computed elsewhere)."""

    vector: list[float] = Field(min_length=1, max_length=DIM_MAX)
    space: Text | None = None
    k: int = Field(default=10, ge=1, le=K_MAX)

    def array(self) -> np.ndarray:
        return np.asarray(self.vector, dtype=np.float32)


def check_repo_id(repo: str) -> str:
    """A Hub repo id (``owner/name``: the index's rule), else a 400 naming it."""
    if len(repo) > TEXT_MAX:
        raise UsageError("repo", f"is {len(repo)} characters long", fix="give a repo id, owner/name")
    return records.check_repo_id(repo)
