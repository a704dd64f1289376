"""Families in the index (see :mod:`hubdelta.index.families`): their definitions, the frozen continuation sets
of their meaning spaces, the cached profiles of their bases, and each model's state per family space."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from hubdelta.index.families import (
    CONTINUATIONS,
    FAMILIES,
    FAMILY_SCHEMAS,
    MEANING_BASES,
    SPACE_MEMBERS,
    BaseProfile,
    Family,
    Member,
    families_from_table,
    families_to_table,
    members_from_table,
    members_to_table,
    profiles_from_table,
    profiles_to_table,
)
from hubdelta.index.schema import sql_string
from hubdelta.index.tables import Tables


class FamiliesStore:
    """``index.families``: families, continuation sets, base profiles and space members."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    def all(self) -> dict[str, Family]:
        """Every family, by name."""
        return {f.name: f for f in families_from_table(self._t.scan(FAMILIES))}

    def put(self, family: Family) -> None:
        """Insert or replace a family (keyed by name) in one commit."""
        self._t.upsert(FAMILIES, "name", families_to_table([family]))

    def delete(self, name: str) -> bool:
        """Forget a family (its space and vectors stay, like a removed base's). Returns whether it existed."""
        return self._t.delete_key(FAMILIES, "name", name)

    def continuation_set(self, hash_: str) -> dict[str, Any] | None:
        """The stored continuation set with this hash, as ``ContinuationSet.to_dict()`` (None if absent)."""
        rows = self._t.scan(CONTINUATIONS, f"hash = {sql_string(hash_)}").to_pylist()
        return json.loads(rows[0]["doc"]) if rows else None

    def put_continuation_set(self, hash_: str, doc: dict[str, Any]) -> None:
        """Store a continuation set under its hash (the same hash again is the same set: a no-op)."""
        data = pa.table({"hash": [hash_], "doc": [json.dumps(doc, ensure_ascii=False, sort_keys=True)],
                         "created_at": [datetime.now(UTC)]}, schema=FAMILY_SCHEMAS[CONTINUATIONS])  # fmt: skip
        self._t.insert_new(CONTINUATIONS, "hash", data)

    def base_profiles(self, space_id: str) -> dict[str, BaseProfile]:
        """The cached base profiles of a meaning space, by base repo."""
        table = self._t.scan(MEANING_BASES, f"space_id = {sql_string(space_id)}")
        return {p.base: p for p in profiles_from_table(table)}

    def put_base_profile(self, profile: BaseProfile) -> None:
        """Insert or replace a base's profile in a meaning space (keyed by space and base) in one commit."""
        self._t.upsert(MEANING_BASES, "key", profiles_to_table([profile]))

    def members(self, space_id: str) -> dict[str, Member]:
        """Each model's state in a family space, by repo id."""
        table = self._t.scan(SPACE_MEMBERS, f"space_id = {sql_string(space_id)}")
        return {m.repo_id: m for m in members_from_table(table)}

    def put_members(self, members: Sequence[Member]) -> None:
        """Insert or replace member states (keyed by space and repo) in one commit."""
        if members:
            self._t.upsert(SPACE_MEMBERS, "key", members_to_table(members))
