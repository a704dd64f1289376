"""Repo-id completion for the search box: the visible ids, read once a minute at most, answered from memory."""

from __future__ import annotations

import bisect
import threading
import time

from hubdelta.index.door import SharedReader, reading
from hubdelta.index.selectors import visible
from hubdelta.kernel.settings import Settings

REFRESH_S = 60.0  # a new model appears in completion within a minute; the index is not read per keystroke


class Completer:
    def __init__(self, settings: Settings, reader: SharedReader | None = None) -> None:
        self.settings, self.reader = settings, reader
        self._ids: list[str] = []  # sorted by lower case
        self._lower: list[str] = []
        self._read_at = -REFRESH_S
        self._lock = threading.Lock()

    def _fresh(self) -> tuple[list[str], list[str]]:
        with self._lock:
            if time.monotonic() - self._read_at >= REFRESH_S:
                with reading(self.settings, self.reader) as index:
                    ids = sorted(index.models.ids(visible()), key=str.lower)
                self._ids, self._lower = ids, [r.lower() for r in ids]
                self._read_at = time.monotonic()
            return self._ids, self._lower

    def complete(self, text: str, limit: int) -> list[str]:
        """Up to ``limit`` repo ids: those starting with ``text`` first, then those whose name part starts with
        it, then any containing it; case-insensitive."""
        ids, lower = self._fresh()
        needle = text.strip().lower()
        if not needle:
            return []
        start = bisect.bisect_left(lower, needle)
        found: list[str] = []
        for i in range(start, len(lower)):
            if not lower[i].startswith(needle) or len(found) >= limit:
                break
            found.append(ids[i])
        for rank in (lambda r: r.split("/")[-1].startswith(needle), lambda r: needle in r):
            for i, r in enumerate(lower):
                if len(found) >= limit:
                    return found
                if rank(r) and ids[i] not in found:
                    found.append(ids[i])
        return found
