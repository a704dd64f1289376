"""Repo-id completion for the search box: the visible ids, read once a minute at most, answered from memory."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from hubdelta.index.door import SharedReader, reading
from hubdelta.index.selectors import visible
from hubdelta.kernel.settings import Settings

REFRESH_S = 60.0  # a new model appears in completion within a minute; the index is not read per keystroke


class IdText:
    """Repo ids as one lower-case text, so a substring is found by ``str.find`` (C speed: ~20 ms over a million
    ids, where a Python loop over them takes ~0.3 s holding the GIL against every other request)."""

    def __init__(self, ids: list[str]) -> None:
        self.text = "\n".join(r.lower() for r in ids) + "\n"
        lengths = np.fromiter((len(r) + 1 for r in ids), dtype=np.int64, count=len(ids))
        self.starts = np.concatenate(([0], np.cumsum(lengths)[:-1])) if len(ids) else np.zeros(0, np.int64)

    def containing(self, text: str, limit: int) -> Iterator[int]:
        """Numbers of the ids containing ``text`` (case-insensitive), in order, at most ``limit``."""
        needle = text.strip().lower()
        if not needle or "\n" in needle:
            return
        at, found = 0, 0
        while found < limit and (at := self.text.find(needle, at)) >= 0:
            i = int(np.searchsorted(self.starts, at, side="right")) - 1
            yield i
            found += 1
            at = int(self.starts[i + 1]) if i + 1 < len(self.starts) else len(self.text)  # the next id


@dataclass(frozen=True)
class _Names:
    ids: list[str]  # sorted by lower case
    lower: list[str]
    name_keys: list[str]  # the lower-case names after "owner/", sorted
    name_ids: list[int]  # the number in ids of each
    text: IdText


def _names(ids: list[str]) -> _Names:
    ids = sorted(ids, key=str.lower)
    lower = [r.lower() for r in ids]
    by_name = sorted((r.rsplit("/", 1)[-1], i) for i, r in enumerate(lower))
    return _Names(ids, lower, [n for n, _ in by_name], [i for _, i in by_name], IdText(ids))


def _prefixed(keys: list[str], needle: str) -> Iterator[int]:
    """Positions in sorted ``keys`` of those starting with ``needle``."""
    i = bisect.bisect_left(keys, needle)
    while i < len(keys) and keys[i].startswith(needle):
        yield i
        i += 1


class Completer:
    def __init__(self, settings: Settings, reader: SharedReader | None = None) -> None:
        self.settings, self.reader = settings, reader
        self._names = _names([])
        self._read_at = -REFRESH_S
        self._lock = threading.Lock()

    def _fresh(self) -> _Names:
        with self._lock:
            if time.monotonic() - self._read_at >= REFRESH_S:
                with reading(self.settings, self.reader) as index:
                    self._names = _names(index.models.ids(visible()))
                self._read_at = time.monotonic()
            return self._names

    def complete(self, text: str, limit: int) -> list[str]:
        """Up to ``limit`` repo ids: those starting with ``text`` first, then those whose name part starts with
        it, then any containing it; case-insensitive. Each tier is a binary search or a C-speed scan."""
        names = self._fresh()
        needle = text.strip().lower()
        if not needle:
            return []
        tiers = (
            _prefixed(names.lower, needle),
            (names.name_ids[j] for j in _prefixed(names.name_keys, needle)),
            names.text.containing(needle, limit * 4),  # the tiers above may hold some of these
        )
        found: dict[int, None] = {}
        for tier in tiers:
            for i in tier:
                if len(found) >= limit:
                    return [names.ids[j] for j in found]
                found.setdefault(i)
        return [names.ids[j] for j in found]
