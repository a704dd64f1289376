"""Families in the index: their definitions, the frozen continuation sets of their meaning spaces, the cached
profiles of their bases, and each model's status per family space.

A model has one status in ``models`` (its base's activation space, the crawl-driven queue). A family space is
filled afterwards from models already embedded there, so its own per-model state lives in ``space_members``:
a row per (space, repo) at the sha it was scored at, ``embedded`` or ``failed`` with a reason. A model is
pending in a family space while it has no row at its current sha.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np
import pyarrow as pa

from hubdelta.index.schema import STRINGS, TIMESTAMP, datetimes, utc

FAMILIES = "families"
CONTINUATIONS = "continuations"
MEANING_BASES = "meaning_bases"
SPACE_MEMBERS = "space_members"

FAMILIES_SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("bases", STRINGS, nullable=False),
        pa.field("references", STRINGS, nullable=False),  # sampled from (default: every base)
        pa.field("options", pa.string(), nullable=False),  # JSON: sampling and recipe
        pa.field("space_id", pa.string()),  # set once its continuations are sampled
        pa.field("created_at", TIMESTAMP),
    ]
)
CONTINUATIONS_SCHEMA = pa.schema(
    [
        pa.field("hash", pa.string(), nullable=False),
        pa.field("doc", pa.string(), nullable=False),  # ContinuationSet.to_dict() as JSON
        pa.field("created_at", TIMESTAMP),
    ]
)
MEANING_BASES_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # "<space id> <base repo>"
        pa.field("space_id", pa.string(), nullable=False),
        pa.field("base", pa.string(), nullable=False),
        pa.field("sha", pa.string(), nullable=False),
        pa.field("profile", pa.list_(pa.float32()), nullable=False),
        pa.field("created_at", TIMESTAMP),
    ]
)
SPACE_MEMBERS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # "<space id> <repo id>"
        pa.field("space_id", pa.string(), nullable=False),
        pa.field("repo_id", pa.string(), nullable=False),
        pa.field("sha", pa.string()),
        pa.field("base", pa.string(), nullable=False),  # the base it is scored against
        pa.field("status", pa.string(), nullable=False),  # a MemberStatus value: embedded | failed
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.list_(pa.float32())),  # its own vector, before per-base centring (embedded only)
        pa.field("updated_at", TIMESTAMP),
    ]
)
FAMILY_SCHEMAS = {
    FAMILIES: FAMILIES_SCHEMA,
    CONTINUATIONS: CONTINUATIONS_SCHEMA,
    MEANING_BASES: MEANING_BASES_SCHEMA,
    SPACE_MEMBERS: SPACE_MEMBERS_SCHEMA,
}


@dataclass(frozen=True)
class Family:
    """Several tracked bases whose finetunes share one meaning space."""

    name: str
    bases: tuple[str, ...]
    references: tuple[str, ...] = ()  # the models continuations are sampled from; empty: every base
    options: dict[str, Any] = field(default_factory=dict)  # n, tokens, temperature, seed, recipe
    space_id: str | None = None
    created_at: datetime | None = None

    @property
    def samplers(self) -> tuple[str, ...]:
        return self.references or self.bases


@dataclass(frozen=True)
class BaseProfile:
    """A base's own scores of a meaning space's texts, cached: every finetune's delta subtracts them."""

    space_id: str
    base: str
    sha: str
    profile: np.ndarray  # float32, flattened
    created_at: datetime | None = None


class MemberStatus(StrEnum):
    """A model's state in one family space (stored as its value in ``space_members.status``)."""

    EMBEDDED = "embedded"  # scored: its raw vector is stored
    FAILED = "failed"  # could not be scored at this sha; see reason


@dataclass(frozen=True)
class Member:
    """A model's state in one family space, and its vector before per-base centring.

    The members table is the truth of a family space: its ``emb_`` table holds vectors derived from these
    (each base's mean subtracted), rewritten whenever a base's membership changes.
    """

    space_id: str
    repo_id: str
    sha: str | None
    base: str
    status: MemberStatus
    reason: str = ""
    raw: np.ndarray | None = field(default=None, repr=False)
    updated_at: datetime | None = None


def families_to_table(rows: Sequence[Family]) -> pa.Table:
    return pa.table(
        {
            "name": [r.name for r in rows],
            "bases": [list(r.bases) for r in rows],
            "references": [list(r.references) for r in rows],
            "options": [json.dumps(r.options, sort_keys=True) for r in rows],
            "space_id": [r.space_id for r in rows],
            "created_at": [utc(r.created_at, "created_at") for r in rows],
        },
        schema=FAMILIES_SCHEMA,
    )


def families_from_table(table: pa.Table) -> list[Family]:
    cols, created = table.to_pydict(), datetimes(table["created_at"])
    return [
        Family(
            cols["name"][i],
            tuple(cols["bases"][i]),
            tuple(cols["references"][i]),
            json.loads(cols["options"][i]),
            cols["space_id"][i],
            created[i],
        )
        for i in range(table.num_rows)
    ]


def profiles_to_table(rows: Sequence[BaseProfile]) -> pa.Table:
    return pa.table(
        {
            "key": [f"{r.space_id} {r.base}" for r in rows],
            "space_id": [r.space_id for r in rows],
            "base": [r.base for r in rows],
            "sha": [r.sha for r in rows],
            "profile": [np.asarray(r.profile, np.float32).ravel() for r in rows],
            "created_at": [utc(r.created_at, "created_at") for r in rows],
        },
        schema=MEANING_BASES_SCHEMA,
    )


def profiles_from_table(table: pa.Table) -> list[BaseProfile]:
    cols, created = table.to_pydict(), datetimes(table["created_at"])
    return [
        BaseProfile(
            cols["space_id"][i], cols["base"][i], cols["sha"][i], np.asarray(cols["profile"][i], np.float32), created[i]
        )
        for i in range(table.num_rows)
    ]


def members_to_table(rows: Sequence[Member]) -> pa.Table:
    return pa.table(
        {
            "key": [f"{r.space_id} {r.repo_id}" for r in rows],
            "space_id": [r.space_id for r in rows],
            "repo_id": [r.repo_id for r in rows],
            "sha": [r.sha for r in rows],
            "base": [r.base for r in rows],
            "status": [MemberStatus(r.status).value for r in rows],
            "reason": [r.reason for r in rows],
            "raw": [None if r.raw is None else np.asarray(r.raw, np.float32).ravel() for r in rows],
            "updated_at": [utc(r.updated_at, "updated_at") for r in rows],
        },
        schema=SPACE_MEMBERS_SCHEMA,
    )


def members_from_table(table: pa.Table) -> list[Member]:
    cols, updated = table.to_pydict(), datetimes(table["updated_at"])
    return [
        Member(
            space_id=cols["space_id"][i],
            repo_id=cols["repo_id"][i],
            sha=cols["sha"][i],
            base=cols["base"][i],
            status=MemberStatus(cols["status"][i]),
            reason=cols["reason"][i],
            raw=None if cols["raw"][i] is None else np.asarray(cols["raw"][i], np.float32),
            updated_at=updated[i],
        )
        for i in range(table.num_rows)
    ]
