"""What a crawl does with what it lists: pure functions of (now, stored state, listing), no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from hubdelta.index.records import (
    EMBEDDABLE,
    Cursor,
    HubModel,
    ModelRecord,
    ModelStatus,
    Relation,
    TrackedBase,
)

HUB_EPOCH = datetime(2016, 1, 1, tzinfo=UTC)  # no Hub repo is older: an earlier date is nonsense
CLOCK_SKEW = timedelta(days=1)  # how far past our clock a Hub date may be before it is nonsense


@dataclass
class PageDecision:
    """What to write for one listing page, and whether the sweep may stop after it."""

    records: list[ModelRecord] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stop: bool = False


def initial_status(model: HubModel) -> tuple[ModelStatus, str]:
    """Status and reason for a repo seen for the first time (or at a new sha)."""
    if model.private:
        return ModelStatus.SKIPPED, "private repo: hubdelta indexes public models only"
    if model.gated:
        return ModelStatus.SKIPPED, f"gated repo ({model.gated} approval): its files need accepted terms"
    if model.relation not in EMBEDDABLE:
        return ModelStatus.DISCOVERED, f"{model.relation.value} children are recorded, not embedded"
    return ModelStatus.QUEUED, ""


def plausible_date(t: datetime | None, now: datetime) -> bool:
    """Whether a Hub date can be true: not before the Hub existed, not later than ``now`` plus clock skew."""
    return t is not None and HUB_EPOCH <= t <= now + CLOCK_SKEW


def at_or_below(model: HubModel, cursor: Cursor | None) -> bool:
    """Whether ``model`` lies at or below the newest-first high-water mark of the last completed sweep.

    An undated repo proves nothing about how far the sweep has come, so a sweep never stops at one.
    """
    if cursor is None or model.created_at is None:
        return False
    return (model.created_at, model.repo_id) <= (cursor.created_at, cursor.repo_id)


def usable_cursor(cursor: Cursor | None, now: datetime) -> Cursor | None:
    """The stored cursor, or None when it is dated in the future (an incremental sweep would stop at the
    future-dated repo, listed first, and never see a new one): the sweep then walks the whole listing once."""
    return cursor if cursor is not None and cursor.created_at <= now + CLOCK_SKEW else None


def newest_dated(items: Sequence[HubModel], now: datetime) -> HubModel | None:
    """The first repo of a newest-first listing that may become the cursor: dated, and not in the future."""
    return next((m for m in items if m.created_at is not None and m.created_at <= now + CLOCK_SKEW), None)


def decide_page(
    items: Sequence[HubModel],
    stored: Mapping[str, ModelRecord],
    cursor: Cursor | None,
    *,
    full: bool,
    seen: set[str],
    now: datetime,
    problems: Mapping[str, str] | None = None,
) -> PageDecision:
    """Decide one page of a newest-first listing.

    Args:
        items: the page, newest first.
        stored: what the index holds for these repos (by repo id).
        cursor: the (base, relation)'s high-water mark; an incremental sweep stops at a known, unchanged repo
            at or below it.
        full: a reconcile pass: never stop early, and refresh every listed row's metadata and ``last_seen``.
        seen: repo ids already handled in this crawl (a merge is listed under each of its bases); updated.
        now: the crawl's timestamp.
        problems: repo id -> why its metadata is unusable; such a repo is recorded ``skipped`` with that reason.
    """
    out = PageDecision()
    for item in items:
        known = stored.get(item.repo_id)
        unchanged = known is not None and known.model.sha == item.sha and known.status != ModelStatus.REMOVED
        if not full and unchanged and at_or_below(item, cursor):
            out.stop = True
            break
        if item.repo_id in seen:
            continue
        seen.add(item.repo_id)
        if unchanged:
            assert known is not None
            if full or known.model != item:
                out.records.append(replace(known, model=item, last_seen=now))
            continue
        problem = (problems or {}).get(item.repo_id)
        status, reason = (ModelStatus.SKIPPED, problem) if problem else initial_status(item)
        first_seen = known.first_seen if known is not None else now
        out.records.append(ModelRecord(item, status, reason, attempts=0, first_seen=first_seen, last_seen=now))
        (out.new if known is None or known.status == ModelStatus.REMOVED else out.updated).append(item.repo_id)
        if status == ModelStatus.SKIPPED:
            out.skipped.append(item.repo_id)
    return out


def removals(
    stored: Mapping[str, ModelRecord], seen: set[str], completed: set[Relation], now: datetime
) -> list[ModelRecord]:
    """Rows a finished full pass no longer listed: marked removed (vectors are kept, queries hide them).

    Only relations whose listing completed count: a sweep cut short by errors proves nothing about absence.
    """
    return [
        replace(r, status=ModelStatus.REMOVED, reason="no longer listed on the Hub")
        for r in stored.values()
        if r.status != ModelStatus.REMOVED and r.model.relation in completed and r.repo_id not in seen
    ]


def full_pass_due(tracked: TrackedBase, now: datetime, every: timedelta) -> bool:
    """A base gets a reconcile pass on its first crawl and then every ``every``."""
    return tracked.last_full_sync is None or now - tracked.last_full_sync >= every


def advance_cursor(old: Cursor | None, newest: HubModel | None) -> Cursor | None:
    """The high-water mark after a completed sweep whose newest dated item was ``newest`` (see
    :func:`newest_dated`)."""
    if newest is None or newest.created_at is None:
        return old
    return Cursor(newest.created_at, newest.repo_id)
