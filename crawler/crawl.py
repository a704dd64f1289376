"""A crawl: every tracked base, every followed relation, newest first, written to the index page by page.

Crash safety comes from the order of writes: a page's rows are committed before the next page is fetched, and
a (base, relation)'s cursor only after its sweep completed. A crawl killed anywhere leaves rows that a rerun
recognises (no duplicates: rows are keyed by repo id) and a cursor that makes the rerun walk far enough.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from hubdelta.crawler.decide import advance_cursor, decide_page, full_pass_due, removals
from hubdelta.crawler.hub import HubLister
from hubdelta.index.maintenance import Maintenance
from hubdelta.index.models_store import ModelsStore, TrackedStore
from hubdelta.index.records import Cursor, HubModel, ModelRecord, Relation, TrackedBase
from hubdelta.kernel.errors import HubdeltaError

log = structlog.get_logger(__name__)


class CrawlIndex(Protocol):
    """What a crawl needs from the index (``hubdelta.index.store.Index`` provides it): three of its stores."""

    models: ModelsStore
    tracked: TrackedStore
    maintenance: Maintenance


@dataclass
class BaseSummary:
    base: str
    full: bool
    new: int = 0
    updated: int = 0
    removed: int = 0
    skipped: int = 0
    pages: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class CrawlSummary:
    """What one crawl did; printed as a table or JSON."""

    bases: list[BaseSummary] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    pages: int = 0
    seconds: float = 0.0

    def total(self, name: str) -> int:
        return sum(int(getattr(b, name)) for b in self.bases)

    @property
    def errors(self) -> list[str]:
        return [e for b in self.bases for e in b.errors]


def crawl(
    index: CrawlIndex,
    lister: HubLister,
    *,
    full: bool = False,
    full_every: timedelta = timedelta(days=7),
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> CrawlSummary:
    """Crawl every tracked base once.

    Args:
        index: the index, opened for writing.
        lister: the politeness-bound Hub client.
        full: reconcile every base (updates and removals), not only the ones whose full pass is due.
        full_every: how often a base gets a reconcile pass without ``full``.
        now: clock for timestamps.

    Returns:
        Counts per base; errors of one (base, relation) are recorded there and the crawl goes on.
    """
    started = time.perf_counter()
    summary = CrawlSummary()
    for tracked in index.tracked.all():
        reconcile = full or full_pass_due(tracked, now(), full_every)
        summary.bases.append(_crawl_base(index, lister, tracked, full=reconcile, now=now()))
    index.maintenance.maybe_compact()
    summary.requests, summary.retries = lister.stats.requests, lister.stats.retries
    summary.pages, summary.seconds = lister.stats.pages, round(time.perf_counter() - started, 2)
    return summary


def _crawl_base(
    index: CrawlIndex, lister: HubLister, tracked: TrackedBase, *, full: bool, now: datetime
) -> BaseSummary:
    out = BaseSummary(tracked.base, full)
    stored = index.models.for_base(tracked.base)
    seen: set[str] = set()
    cursors = dict(tracked.cursors)
    completed: set[Relation] = set()
    for relation in tracked.relations:
        try:
            cursor = _sweep(index, lister, tracked.base, relation, cursors.get(relation), stored, seen,
                            full=full, now=now, out=out)  # fmt: skip
            completed.add(relation)
            if cursor is not None:  # None: the listing was empty, nothing to mark
                cursors[relation] = cursor
        except HubdeltaError as e:
            out.errors.append(f"{tracked.base} {relation.value}: {e.one_line()}")
            log.warning("crawl.sweep_failed", base=tracked.base, relation=relation.value, error=e.one_line())
    if full:
        gone = removals(stored, seen, completed, now)
        index.models.put(gone)
        out.removed = len(gone)
    done = replace(tracked, cursors=cursors, last_crawl=now)
    if full and completed == set(tracked.relations):
        done = replace(done, last_full_sync=now)
    index.tracked.put([done])
    log.info("crawl.base", base=tracked.base, full=full, new=out.new, updated=out.updated, removed=out.removed)
    return out


def _sweep(
    index: CrawlIndex,
    lister: HubLister,
    base: str,
    relation: Relation,
    cursor: Cursor | None,
    stored: dict[str, ModelRecord],
    seen: set[str],
    *,
    full: bool,
    now: datetime,
    out: BaseSummary,
) -> Cursor | None:
    """One (base, relation) listing, newest first; returns the cursor to store once it completed."""
    newest: HubModel | None = None
    for page in lister.children(base, relation):
        out.pages += 1
        if newest is None and page:
            newest = page[0]
        decision = decide_page(page, stored, cursor, full=full, seen=seen, now=now)
        index.models.put(decision.records)  # committed before the next page is fetched
        stored.update((r.repo_id, r) for r in decision.records)
        out.new += len(decision.new)
        out.updated += len(decision.updated)
        out.skipped += len(decision.skipped)
        if decision.stop:
            break
    return advance_cursor(cursor, newest)
