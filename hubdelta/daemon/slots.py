"""Pure schedule arithmetic: daily slots and whether one was missed (so a restart catches up exactly once)."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta

from hubdelta.kernel.errors import ConfigError

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def parse_hhmm(text: str, setting: str) -> time:
    """``"06:00"`` → 06:00.

    Raises:
        ConfigError: not HH:MM on a 24-hour clock.
    """
    match = _HHMM.match(text.strip())
    if not match:
        raise ConfigError(setting, f"{text!r} is not a time of day", fix='write it as HH:MM, e.g. "06:00"')
    return time(int(match.group(1)), int(match.group(2)))


def latest_slot(now: datetime, at: time) -> datetime:
    """The most recent daily slot at local time ``at`` that is not after ``now`` (``now`` timezone-aware)."""
    assert now.tzinfo is not None, "slots are computed on aware datetimes"
    today = now.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    return today if today <= now else today - timedelta(days=1)


def missed_slot(
    now: datetime, at: time, last_done: datetime | None, started: datetime | None = None
) -> datetime | None:
    """The slot a (re)starting daemon still owes: the latest one, if it was not done.

    Args:
        now: the current time, aware.
        at: the daily time.
        last_done: the slot the job last completed (from the daemon's state), or None.
        started: the first start of this daemon's state: slots before it are not owed (a new install does not
            report "last night" at once).

    Returns:
        The slot to run now, or None.
    """
    slot = latest_slot(now, at)
    if last_done is not None and last_done >= slot:
        return None
    if last_done is None and started is not None and slot < started:
        return None
    return slot
