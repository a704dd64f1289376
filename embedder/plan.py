"""Which queued models the worker takes, in what groups, and what their statuses become: pure functions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import pairwise
from typing import TypeVar

from hubdelta.index.records import ModelRecord, ModelStatus
from hubdelta.kernel.errors import ModelRefused, ModelUnavailable, one_line
from hubdelta.kernel.hub_errors import classify_hub_error

T = TypeVar("T")

_OLDEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Failure:
    """Why one model was not embedded, as plain data: it crosses from a Ray worker to the driver that records it."""

    reason: str
    gated: bool = False  # the repo needs accepted terms: skipped, not failed
    transient: bool = False  # network trouble: retried up to max_attempts

    @classmethod
    def of(cls, e: BaseException) -> Failure:
        """Refusals and broken files are final; an unreachable or half-downloaded repo is worth another try."""
        if isinstance(e, ModelUnavailable) and e.code == "gated":
            return cls(one_line(e), gated=True)
        return cls(one_line(e), transient=isinstance(e, ModelRefused | ModelUnavailable) and e.retryable)


FINAL_BASE_RULES = frozenset({"size", "path"})  # refusals of a base's download that no retry will lift


def base_failure(base: str, e: BaseException) -> Failure | None:
    """What a base's own failure leaves on its queued models: a final failure when the Hub's answer about the
    base is final (not found, gated, a bound it breaks), else None: they stay queued and the next run tries again
    (the network, a 5xx after retries, a full disk, a base that would not load, a bad ``[embed]`` option).

    A final answer is not retried model by model (each run would ask again for a base that is not there); once
    the base is fixed, ``hubdelta retry --reason <base>`` re-queues its models.
    """
    if isinstance(e, ModelRefused):  # a bound the base's declared files break; its own broken files may be mended
        return Failure(f"base {base}: {one_line(e)}") if e.rule in FINAL_BASE_RULES and not e.retryable else None
    found = classify_hub_error(e)
    if found is None or found.retryable:
        return None
    return Failure(f"base {base}: {found.reason}", gated=found.code == "gated")


def settle(record: ModelRecord, failure: Failure, *, max_attempts: int) -> ModelRecord:
    """The status a failure leaves on ``record``."""
    if failure.gated:
        return replace(record, status=ModelStatus.SKIPPED, reason=failure.reason)
    return failed(record, failure.reason, transient=failure.transient, max_attempts=max_attempts)


def claimable(records: Iterable[ModelRecord]) -> list[ModelRecord]:
    """Queued models, and models left ``embedding`` by a worker that died (only one worker runs: the lock).

    Oldest first (first seen), so a backlog drains in discovery order.
    """
    wanted = (ModelStatus.QUEUED, ModelStatus.EMBEDDING)
    picked = [r for r in records if r.status in wanted]
    return sorted(picked, key=lambda r: (r.first_seen or _OLDEST, r.repo_id))


def capped(records: Sequence[ModelRecord], max_attempts: int) -> tuple[list[ModelRecord], list[ModelRecord]]:
    """(the rows to claim, the rows that fail for good): a row still ``embedding`` after ``max_attempts`` claims
    was being embedded by a run that died every time (killed, out of memory, a crash in native code), so a
    model that kills its worker cannot crash-loop it. The cap holds however the run died: only a claim counts.
    """
    dead = [r for r in records if r.status == ModelStatus.EMBEDDING and r.attempts >= max_attempts]
    why = ("claimed {} times, and the run that held it ended each time before it was settled (killed, out of "
           "memory or crashed); not retried (hubdelta retry re-queues it)")  # fmt: skip
    gave_up = [replace(r, status=ModelStatus.FAILED, reason=why.format(r.attempts)) for r in dead]
    ids = {r.repo_id for r in dead}
    return [r for r in records if r.repo_id not in ids], gave_up


def group_by_base(
    records: Sequence[ModelRecord], tracked: Iterable[str]
) -> tuple[dict[str, list[ModelRecord]], list[ModelRecord]]:
    """Group models by the tracked base whose space they go into; the rest have no base to embed against.

    A merge lists several bases: it goes to the first of them that is tracked (its vector lives in that base's
    space), so the same model is never embedded into two spaces by accident.
    """
    tracked_set = set(tracked)
    groups: dict[str, list[ModelRecord]] = {}
    orphans: list[ModelRecord] = []
    for r in records:
        base = next((b for b in r.model.base_models if b in tracked_set), None)
        if base is None:
            orphans.append(r)
        else:
            groups.setdefault(base, []).append(r)
    return groups, orphans


def chunks(items: Sequence[T], size: int, lanes: int = 1) -> list[list[T]]:
    """``items`` in order, in chunks of at most ``size``. With ``lanes`` > 1 (chunks computed that many at once),
    the chunk count is rounded up to a multiple of ``lanes`` (never past one item a chunk) and the sizes differ
    by one at most, so the lanes finish together: cut as with one lane, 230 adapters in chunks of 8 left the last
    6 to one lane, at half the machine, while the other idled (and a run of 8 or fewer ran on one lane only)."""
    assert size >= 1 and lanes >= 1, (size, lanes)
    if lanes == 1:
        return [list(items[i : i + size]) for i in range(0, len(items), size)]
    needed = -(-len(items) // size)  # ceil
    count = min(len(items), -(-needed // lanes) * lanes)
    bounds = [len(items) * i // count for i in range(count + 1)] if count else [0]
    return [list(items[a:b]) for a, b in pairwise(bounds)]


def claim(records: Sequence[ModelRecord]) -> list[ModelRecord]:
    """Mark ``records`` as being embedded, counting the attempt."""
    return [replace(r, status=ModelStatus.EMBEDDING, reason="", attempts=r.attempts + 1) for r in records]


def embedded(record: ModelRecord, note: str = "") -> ModelRecord:
    """Embedded; ``note`` is kept as its reason (e.g. the mirror of the base its config names)."""
    return replace(record, status=ModelStatus.EMBEDDED, reason=note)


def failed(record: ModelRecord, reason: str, *, transient: bool, max_attempts: int) -> ModelRecord:
    """A failure: refusals and broken files fail at once; network trouble is retried ``max_attempts`` times."""
    line = " ".join(reason.split())[:500]
    if transient and record.attempts < max_attempts:
        return replace(record, status=ModelStatus.QUEUED, reason=f"retrying after: {line}")
    return replace(record, status=ModelStatus.FAILED, reason=line)
