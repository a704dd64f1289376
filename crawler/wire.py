"""One listing item (the Hub's JSON for one repo) → a :class:`HubModel`, with a rule for every field. Pure.

Repos are untrusted, and so is what the Hub says about them: a card's YAML is the owner's, and the Hub passes it
through as ``cardData``. huggingface_hub's ``ModelInfo`` raises on some of it (``ModelCardData`` on ``tags: 2024``
or ``ignore_metadata_errors: false``; its date parser on a date it cannot read), which would end a whole page. So
the crawler reads the wire fields itself, each with a rule, and one repo's bad value never costs more than that
repo:

- a bad field the record can do without is dropped (a date it cannot read or that is implausible becomes
  unknown, a count is clamped to the index's int64 column, an over-long tag or name is left out) and the repo
  is recorded as usual; each drop is one note, which the crawl logs and counts (``repaired``);
- a bad value the record depends on (a ``sha`` that is not a commit id: it keys every vector) makes a
  ``problem``: the repo is recorded ``skipped`` with ``listing metadata: <field> <rule>`` as its reason;
- an item without a usable repo id cannot be recorded at all: it is ``unreadable`` (logged and counted).

The card is read as plain data, and only for the summary and a license the tags lack: lineage comes from the
tags the Hub derives, and when those are unusable, from the listing itself (it was listed under its base).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hubdelta.crawler.decide import plausible_date
from hubdelta.index.records import HubModel, Relation

INT64_MAX = 2**63 - 1  # the models table's downloads / likes columns
MAX_TAGS = 1000
MAX_TAG_CHARS = 256
MAX_NAME_CHARS = 200  # library, pipeline tag, license, gated
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_SUMMARY_KEYS = ("model_name", "datasets", "language", "license")
_GATED = ("auto", "manual")


@dataclass(frozen=True)
class Listed:
    """A listing item as a record: ``problem`` non-empty means record it skipped with that reason."""

    model: HubModel
    notes: tuple[str, ...] = ()  # fields dropped or clamped, one line each
    problem: str = ""


@dataclass(frozen=True)
class Unreadable:
    """A listing item with no usable repo id: nothing to record it under."""

    what: str


def text(value: str) -> str:
    """``value`` as storable UTF-8: JSON may carry lone surrogates, which no UTF-8 column accepts."""
    return value.encode("utf-8", "replace").decode("utf-8")


def read_item(item: Any, relation: Relation, base: str | None, now: datetime) -> Listed | Unreadable:
    """Read one item of ``GET /api/models`` (or ``/api/models/<id>``); never raises on the item's content.

    Args:
        item: the decoded JSON object.
        relation: the relation it was listed under.
        base: the base it was listed under (the lineage when its tags are unusable); None when not listed.
        now: the crawl's clock, for the plausibility of dates.
    """
    if not isinstance(item, Mapping):
        return Unreadable(f"a listing item that is a JSON {type(item).__name__}, not an object")
    repo_id = item.get("id")
    if not isinstance(repo_id, str) or len(repo_id) > 200 or not _REPO_ID.fullmatch(repo_id):
        return Unreadable(f"a listing item whose id {text(repr(repo_id))[:80]} is not a Hub repo id")
    notes: list[str] = []
    try:
        return _read(repo_id, item, relation, base, now, notes)
    except Exception as e:  # a rule this module lacks must still cost one repo only
        first = text(str(e)).splitlines()[0][:160] if str(e) else ""
        model = HubModel(repo_id, None, relation, (base,) if base and base != repo_id else ())
        return Listed(model, tuple(notes), f"listing metadata unreadable ({type(e).__name__}: {first})")


def _read(
    repo_id: str, item: Mapping[str, Any], relation: Relation, base: str | None, now: datetime, notes: list[str]
) -> Listed:
    problem = ""
    sha = item.get("sha")
    if sha is not None and not (isinstance(sha, str) and _SHA.match(sha)):
        problem, sha = "listing metadata: sha is not a 40-hex commit id", None
    tags = _tags(item.get("tags"), notes)
    bases = tuple(b for b in _bases_from_tags(tags or []) if b != repo_id)  # never its own base
    if tags is None:
        bases = (base,) if base and base != repo_id else ()
    card = item.get("cardData")
    if card is not None and not isinstance(card, Mapping):
        notes.append(f"cardData is a {type(card).__name__}, not a mapping: card ignored")
        card = None
    card = card or {}
    license_tag = next((t.split(":", 1)[1] for t in tags or () if t.startswith("license:")), None)
    gated = item.get("gated")
    if gated not in (None, False, *_GATED):
        notes.append(f"gated is {text(repr(gated))[:40]}, not false/auto/manual: treated as gated")
        gated = "manual"
    model = HubModel(
        repo_id=repo_id,
        sha=sha,
        relation=relation,
        base_models=bases,
        created_at=_date(item, "createdAt", now, notes),
        last_modified=_date(item, "lastModified", now, notes),
        tags=tuple(tags or ()),
        library=_name(item, "library_name", notes),
        pipeline_tag=_name(item, "pipeline_tag", notes),
        license=license_tag or _card_license(card),
        downloads=_count(item, "downloads", notes),
        likes=_count(item, "likes", notes),
        gated=gated or None,
        private=_private(item.get("private"), notes),
        card_summary=_summary(card),
    )
    return Listed(model, tuple(notes), problem)


def _tags(value: Any, notes: list[str]) -> list[str] | None:
    if value is None:
        return []
    if not isinstance(value, list):
        notes.append(f"tags is a {type(value).__name__}, not a list: lineage taken from the listing")
        return None
    good = [text(t) for t in value if isinstance(t, str) and 0 < len(t) <= MAX_TAG_CHARS]
    if len(good) != len(value) or len(good) > MAX_TAGS:
        notes.append(f"tags: {len(value) - len(good)} not short strings dropped, {MAX_TAGS} kept at most")
    return list(dict.fromkeys(good))[:MAX_TAGS]


def _bases_from_tags(tags: list[str]) -> tuple[str, ...]:
    relations = {r.value for r in Relation}
    bases = []
    for tag in tags:
        parts = tag.split(":", 2)
        if len(parts) == 3 and parts[0] == "base_model" and parts[1] in relations and parts[2] not in bases:
            bases.append(parts[2])
    return tuple(bases)


def _date(item: Mapping[str, Any], key: str, now: datetime, notes: list[str]) -> datetime | None:
    raw = item.get(key)
    if raw is None:
        return None
    try:
        t = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        t = None
    if t is not None and t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    if not plausible_date(t, now):
        notes.append(f"{key} {text(repr(raw))[:40]} is not a plausible date: treated as unknown")
        return None
    return t


def _count(item: Mapping[str, Any], key: str, notes: list[str]) -> int:
    raw = item.get(key)
    if raw is None:
        return 0
    if not isinstance(raw, int) or isinstance(raw, bool):
        notes.append(f"{key} is a {type(raw).__name__}, not an integer: recorded as 0")
        return 0
    if not 0 <= raw <= INT64_MAX:
        notes.append(f"{key} {raw if raw < 0 else 'over 2**63-1'} is out of range: clamped")
    return min(max(raw, 0), INT64_MAX)


def _name(item: Mapping[str, Any], key: str, notes: list[str]) -> str | None:
    raw = item.get(key)
    if raw is None or (isinstance(raw, str) and 0 < len(raw) <= MAX_NAME_CHARS):
        return text(raw) if raw else None
    notes.append(f"{key} is not a short string: dropped")
    return None


def _private(raw: Any, notes: list[str]) -> bool:
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    notes.append(f"private is a {type(raw).__name__}, not a boolean: treated as private")
    return True


def _card_license(card: Mapping[str, Any]) -> str | None:
    value = card.get("license")
    value = value[0] if isinstance(value, list) and value else value
    return text(value)[:MAX_NAME_CHARS] if isinstance(value, str) and value else None


def _summary(card: Mapping[str, Any]) -> str:
    parts = []
    for key in _SUMMARY_KEYS:
        value = card.get(key)
        if isinstance(value, list):
            value = ", ".join(v for v in value[:5] if isinstance(v, str))
        if isinstance(value, str) and value:  # nested values are the owner's: only text is summarised
            parts.append(f"{key}: {value[:200]}")
    return text("; ".join(parts)[:200])
