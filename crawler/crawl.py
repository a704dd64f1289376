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
from typing import Any, Protocol

import structlog

from hubdelta.crawler.decide import (
    advance_cursor,
    decide_page,
    full_pass_due,
    newest_dated,
    removals,
    usable_cursor,
)
from hubdelta.crawler.hub import HubLister
from hubdelta.crawler.wire import Unreadable, read_item
from hubdelta.index.maintenance import Maintenance
from hubdelta.index.models_store import ModelsStore, TrackedStore
from hubdelta.index.records import Cursor, HubModel, ModelRecord, ModelStatus, Relation, TrackedBase
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
    repaired: int = 0  # recorded with a bad field dropped or clamped (logged: crawl.metadata_repaired)
    unreadable: int = 0  # listing items without a usable repo id: nothing to record (logged: crawl.unreadable_item)
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


# A person at a terminal watches a long crawl through this (the CLI's status line): base, relation, counts so far.
CrawlProgress = Callable[[str, Relation, "BaseSummary"], None]


def crawl(
    index: CrawlIndex,
    lister: HubLister,
    *,
    full: bool = False,
    full_every: timedelta = timedelta(days=7),
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: CrawlProgress | None = None,
) -> CrawlSummary:
    """Crawl every tracked base once.

    Args:
        index: the index, opened for writing.
        lister: the politeness-bound Hub client.
        full: reconcile every base (updates and removals), not only the ones whose full pass is due.
        full_every: how often a base gets a reconcile pass without ``full``.
        now: clock for timestamps.
        progress: told (base, relation, the base's counts so far) as each listing starts and after each page.

    Returns:
        Counts per base; errors of one (base, relation) are recorded there and the crawl goes on.
    """
    started = time.perf_counter()
    summary = CrawlSummary()
    for tracked in index.tracked.all():
        reconcile = full or full_pass_due(tracked, now(), full_every)
        summary.bases.append(_crawl_base(index, lister, tracked, full=reconcile, now=now(), progress=progress))
    index.maintenance.maybe_compact()
    index.maintenance.key_indexes()
    summary.requests, summary.retries = lister.stats.requests, lister.stats.retries
    summary.pages, summary.seconds = lister.stats.pages, round(time.perf_counter() - started, 2)
    return summary


def _crawl_base(
    index: CrawlIndex,
    lister: HubLister,
    tracked: TrackedBase,
    *,
    full: bool,
    now: datetime,
    progress: CrawlProgress | None = None,
) -> BaseSummary:
    out = BaseSummary(tracked.base, full)
    stored = index.models.for_base(tracked.base)
    seen: set[str] = set()
    cursors = dict(tracked.cursors)
    completed: set[Relation] = set()
    stored.pop(tracked.base, None)  # a base is never its own child (nor marked removed by its own pass)
    for relation in tracked.relations:
        try:
            cursor = _sweep(index, lister, tracked.base, relation, cursors.get(relation), stored, seen,
                            full=full, now=now, out=out, progress=progress)  # fmt: skip
            completed.add(relation)
            if cursor is None:  # nothing dated listed, and no usable cursor before: nothing to mark
                cursors.pop(relation, None)
            else:
                cursors[relation] = cursor
        except Exception as e:  # one (base, relation) never stops the crawl; a bug's traceback goes to the log
            line = e.one_line() if isinstance(e, HubdeltaError) else f"{type(e).__name__}: {e}"
            out.errors.append(f"{tracked.base} {relation.value}: {line}")
            log.warning("crawl.sweep_failed", base=tracked.base, relation=relation.value, error=line,
                        exc_info=not isinstance(e, HubdeltaError))  # fmt: skip
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
    progress: CrawlProgress | None = None,
) -> Cursor | None:
    """One (base, relation) listing, newest first; returns the cursor to store once it completed."""
    if progress is not None:
        progress(base, relation, out)
    newest: HubModel | None = None
    cursor = usable_cursor(cursor, now)
    for items in lister.children(base, relation):
        out.pages += 1
        page, problems = _read_page(items, base, relation, now, out)
        newest = newest or newest_dated(page, now)
        decision = decide_page(page, stored, cursor, full=full, seen=seen, now=now, problems=problems)
        _put_page(index, decision.records)  # committed before the next page is fetched
        stored.update((r.repo_id, r) for r in decision.records)
        out.new += len(decision.new)
        out.updated += len(decision.updated)
        out.skipped += len(decision.skipped)
        if progress is not None:
            progress(base, relation, out)
        if decision.stop:
            break
    return advance_cursor(cursor, newest)


def _read_page(
    items: list[Any], base: str, relation: Relation, now: datetime, out: BaseSummary
) -> tuple[list[HubModel], dict[str, str]]:
    """A page's items as records, one repo at a time: a bad value costs its repo, never the page."""
    models: list[HubModel] = []
    problems: dict[str, str] = {}
    for item in items:
        read = read_item(item, relation, base, now)
        if isinstance(read, Unreadable):
            out.unreadable += 1
            log.warning("crawl.unreadable_item", base=base, relation=relation.value, item=read.what)
            continue
        repo = read.model.repo_id
        if repo == base:  # a card naming itself as its base: the Hub lists the base as its own child
            log.debug("crawl.self_listed", base=base, relation=relation.value)
            continue
        if read.notes:
            out.repaired += 1
            log.warning("crawl.metadata_repaired", repo=repo, notes="; ".join(read.notes))
        if read.problem:
            problems[repo] = read.problem
            log.warning("crawl.repo_skipped", repo=repo, reason=read.problem)
        models.append(read.model)
    return models, problems


def _put_page(index: CrawlIndex, records: list[ModelRecord]) -> None:
    """Write a page's rows; if the store refuses the page, find the rows it refuses and record them skipped."""
    try:
        index.models.put(records)
    except HubdeltaError:
        raise
    except Exception:  # the conversion's range checks should make this unreachable; one row must not cost a page
        for record in records:
            _put_one(index, record)


def _put_one(index: CrawlIndex, record: ModelRecord) -> None:
    try:
        index.models.put([record])
    except HubdeltaError:
        raise
    except Exception as e:
        reason = f"index write refused its metadata ({type(e).__name__})"
        log.warning("crawl.repo_skipped", repo=record.repo_id, reason=reason, error=str(e)[:200])
        bare = HubModel(record.repo_id, None, record.model.relation, ())
        try:
            index.models.put([replace(record, model=bare, status=ModelStatus.SKIPPED, reason=reason)])
        except Exception as again:
            raise HubdeltaError(f"{record.repo_id}: could not be written to the index ({again})",
                                fix="check the index's disk, then rerun hubdelta crawl") from again  # fmt: skip
