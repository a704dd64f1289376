"""What every request of one running service shares: its settings, one open index, and the caches over it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hubdelta.index.door import SharedReader, reading
from hubdelta.index.store import Index
from hubdelta.kernel.settings import Settings
from hubdelta.web.maps import LayoutCache
from hubdelta.web.names import Completer


@dataclass(frozen=True)
class Site:
    settings: Settings
    reader: SharedReader  # one read-only index for the process: it sees each new commit
    layouts: LayoutCache
    completer: Completer

    @classmethod
    def of(cls, settings: Settings) -> Site:
        reader = SharedReader(settings)
        return cls(settings, reader, LayoutCache(), Completer(settings, reader))

    @contextmanager
    def reading(self) -> Iterator[Index]:
        with reading(self.settings, self.reader) as index:
            yield index
