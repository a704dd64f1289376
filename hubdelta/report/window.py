"""The time window a report covers and what counts as new in it (pure decisions)."""

from __future__ import annotations

import re
from collections.abc import Container
from datetime import datetime, timedelta

from hubdelta.kernel.errors import UsageError

DEFAULT_WINDOW = timedelta(hours=24)  # the first report, with no previous one to start from
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str, argument: str = "--since") -> timedelta:
    """``"24h"`` → 24 hours; units s, m, h, d, w (``90m``, ``7d``, ``2w``).

    Raises:
        UsageError: not a positive whole number followed by a unit.
    """
    found = _DURATION.match(text.lower())
    if found is None or int(found.group(1)) == 0:
        raise UsageError(argument, f"{text!r} is not a duration", fix="write a number and a unit: 90m, 24h, 7d or 2w")
    return timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})


def resolve_since(now: datetime, window: timedelta | None, previous_created_at: datetime | None) -> datetime:
    """Where the report's window starts: ``now - window`` if given, else at the previous report, else 24 h ago."""
    if window is not None:
        return now - window
    if previous_created_at is not None:
        return previous_created_at
    return now - DEFAULT_WINDOW


def is_new(
    repo_id: str,
    *,
    embedded_at: datetime | None,
    first_seen: datetime | None,
    since: datetime,
    previously_clustered: Container[str],
) -> bool:
    """Whether a model with a vector counts as new in a report covering ``since`` → now.

    New means its vector was written after ``since`` and it is not a model the previous report already knew:
    first seen after ``since``, or first seen earlier but embedded only now (it waited in the queue) and so in
    none of the previous report's clusters. A model re-embedded at a new revision that the previous report
    had clustered is therefore not new. Without an ``embedded_at``, ``first_seen`` decides.
    """
    if embedded_at is None:
        return first_seen is not None and first_seen > since
    if embedded_at <= since:
        return False
    return first_seen is None or first_seen > since or repo_id not in previously_clustered


def report_id(now: datetime, taken: Container[str]) -> str:
    """A readable, sortable id from the UTC time (``20261101T020000Z``), suffixed ``-2``, ``-3`` if taken."""
    base = now.strftime("%Y%m%dT%H%M%SZ")
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate
