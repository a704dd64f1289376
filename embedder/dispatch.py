"""Which Ray worker takes which batch, and what a worker's death does to its batch: pure decisions, no Ray.

A worker holds one resident base. Loading a base costs seconds (GB of weights on a real GPU box), a batch on a
loaded base costs little, so a worker keeps to its base while that base has work, and a worker that needs a new
base goes where the fewest workers already are.

A worker that dies takes its batch with it, and its batch is given to another worker. A batch that kills a
worker again is probably the cause (a model that exhausts memory, a kernel crash): it is split into single
models, and a single model that kills a worker twice is given up, so one poisonous repo cannot take the whole
cluster down one worker at a time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

MAX_DEATHS = 2  # worker deaths a batch may cause before it is split (or, for one model, given up)


@dataclass(frozen=True)
class Batch:
    """Models of one base that one worker embeds in one call."""

    base: str
    repo_ids: tuple[str, ...]
    deaths: int = 0  # workers that died while holding this batch


class Dispatcher:
    """The pending batches, by base, in the order they were added."""

    def __init__(self, batches: Iterable[Batch]) -> None:
        self._queues: dict[str, deque[Batch]] = {}
        for b in batches:
            self._queues.setdefault(b.base, deque()).append(b)

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def take(self, current: str | None, serving: Mapping[str | None, int]) -> Batch | None:
        """The next batch for a free worker whose resident base is ``current`` (None: nothing loaded yet).

        Args:
            serving: how many workers hold each base now (the asking worker included under ``current``).
        """
        if current is not None and self._queues.get(current):
            return self._queues[current].popleft()
        open_bases = [base for base, q in self._queues.items() if q]
        if not open_bases:
            return None
        order = {base: i for i, base in enumerate(self._queues)}
        best = min(open_bases, key=lambda b: (serving.get(b, 0), -len(self._queues[b]), order[b]))
        return self._queues[best].popleft()

    def lost(self, batch: Batch) -> tuple[str, ...]:
        """``batch``'s worker died: queue it again (first in line) and return the repo ids given up, if any."""
        dead = replace(batch, deaths=batch.deaths + 1)
        queue = self._queues.setdefault(batch.base, deque())
        if dead.deaths < MAX_DEATHS:
            queue.appendleft(dead)
            return ()
        if len(batch.repo_ids) == 1:
            return batch.repo_ids
        queue.extendleft(Batch(batch.base, (r,)) for r in reversed(batch.repo_ids))
        return ()

    def put_back(self, batch: Batch) -> None:
        """Queue ``batch`` again, first in line and unblamed (it waited behind a batch that killed its worker)."""
        self._queues.setdefault(batch.base, deque()).appendleft(batch)

    def drop(self, base: str) -> list[Batch]:
        """Remove and return every pending batch of ``base`` (it could not be loaded anywhere)."""
        return list(self._queues.pop(base, ()))
