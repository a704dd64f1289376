"""The crawler's pure decisions: request budget, retry delays, page decisions, removals, cursors."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from hubdelta.crawler.decide import advance_cursor, decide_page, full_pass_due, initial_status, removals
from hubdelta.crawler.hub import HubLister
from hubdelta.crawler.politeness import Politeness, RequestBudget, retry_delay
from hubdelta.index.records import Cursor, HubModel, ModelRecord, ModelStatus, Relation, TrackedBase
from hubdelta.kernel.errors import HubRequestError, HubUnavailableError

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def hub(i: int, sha: str = "a", relation: Relation = Relation.ADAPTER, **kw) -> HubModel:
    return HubModel(f"org/m{i:03d}", sha, relation, ("base/b",), created_at=T0 + timedelta(hours=i), **kw)


def stored(m: HubModel, status: ModelStatus = ModelStatus.QUEUED) -> ModelRecord:
    return ModelRecord(m, status, first_seen=T0, last_seen=T0)


# --- budget -----------------------------------------------------------------------------------------------


def test_budget_never_allows_more_than_quota_in_any_window() -> None:
    budget = RequestBudget(requests=5, window_s=10.0)
    t, starts = 0.0, []
    for _ in range(40):
        t += budget.wait_time(t)
        budget.record(t)
        starts.append(t)
        t += 0.1
    for i, s in enumerate(starts):
        assert sum(1 for x in starts[i:] if x < s + 10.0) <= 5
    assert starts[-1] < 80  # and it does not wait longer than needed: 40 requests in 8 windows


def test_budget_pause_blocks_until_the_server_reset() -> None:
    budget = RequestBudget(requests=100, window_s=10.0)
    budget.pause_until(7.5)
    assert budget.wait_time(2.0) == pytest.approx(5.5)
    assert budget.wait_time(8.0) == 0.0


def test_budget_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RequestBudget(0, 10.0)


# --- retry ------------------------------------------------------------------------------------------------

POLICY = Politeness(max_attempts=5, backoff_base_s=1.0, backoff_cap_s=8.0)


@pytest.mark.parametrize(
    ("attempt", "status", "headers", "low", "high"),
    [
        (
            1,
            429,
            {"RateLimit": '"api";r=0;t=12', "RateLimit-Policy": '"fixed window";"api";q=500;w=300'},
            13,
            14,
        ),
        (1, 429, {"Retry-After": "3"}, 3, 4),
        (1, 429, {}, 0, 1),
        (3, 503, {}, 0, 4),
        (4, 500, {}, 0, 8),
        (4, None, None, 0, 8),  # timeout / cut body
        (2, 408, {}, 0, 2),
    ],
)
def test_retry_delay_honours_headers_then_backs_off_with_jitter(attempt, status, headers, low, high) -> None:
    delays = [
        retry_delay(attempt, status=status, headers=headers, policy=POLICY, rng=random.Random(s)) for s in range(20)
    ]
    assert all(d is not None and low <= d <= high for d in delays), delays
    assert len(set(delays)) > 1  # jittered


@pytest.mark.parametrize(("attempt", "status"), [(5, 503), (1, 404), (1, 400), (1, 401)])
def test_retry_delay_gives_up(attempt: int, status: int) -> None:
    assert retry_delay(attempt, status=status, headers={}, policy=POLICY, rng=random.Random(0)) is None


# --- decisions --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "status"),
    [
        (hub(1), ModelStatus.QUEUED),
        (hub(1, gated="manual"), ModelStatus.SKIPPED),
        (hub(1, private=True), ModelStatus.SKIPPED),
        (hub(1, relation=Relation.QUANTIZED), ModelStatus.DISCOVERED),
        (hub(1, relation=Relation.MERGE), ModelStatus.QUEUED),
    ],
)
def test_initial_status(model: HubModel, status: ModelStatus) -> None:
    got, reason = initial_status(model)
    assert got == status
    assert bool(reason) == (status != ModelStatus.QUEUED)


def test_incremental_page_stops_at_the_first_known_repo_below_the_cursor() -> None:
    page = [hub(9), hub(8), hub(7), hub(6)]
    known = {m.repo_id: stored(m) for m in (hub(7), hub(6))}
    d = decide_page(page, known, Cursor(hub(7).created_at, hub(7).repo_id), full=False, seen=set(), now=NOW)  # type: ignore[arg-type]
    assert d.stop and d.new == ["org/m009", "org/m008"] and [r.repo_id for r in d.records] == d.new
    assert all(r.status == ModelStatus.QUEUED and r.first_seen == NOW for r in d.records)


def test_known_repos_above_the_cursor_do_not_stop_a_sweep() -> None:
    # A killed sweep recorded m009 but never reached m008: the cursor still says m007.
    page = [hub(9), hub(8), hub(7)]
    known = {m.repo_id: stored(m) for m in (hub(9), hub(7))}
    d = decide_page(page, known, Cursor(hub(7).created_at, hub(7).repo_id), full=False, seen=set(), now=NOW)  # type: ignore[arg-type]
    assert d.stop and d.new == ["org/m008"]


def test_a_new_sha_is_an_update_that_requeues_and_keeps_first_seen() -> None:
    old = stored(hub(5, sha="a"), ModelStatus.EMBEDDED)
    d = decide_page([hub(5, sha="b")], {old.repo_id: old}, None, full=False, seen=set(), now=NOW)
    assert d.updated == ["org/m005"] and not d.new
    (r,) = d.records
    assert (r.status, r.model.sha, r.first_seen, r.last_seen, r.attempts) == (
        ModelStatus.QUEUED,
        "b",
        T0,
        NOW,
        0,
    )


def test_full_pass_refreshes_unchanged_rows_without_counting_them() -> None:
    old = stored(hub(5), ModelStatus.EMBEDDED)
    fresh = replace(hub(5), downloads=77)
    d = decide_page([fresh], {old.repo_id: old}, Cursor(NOW, "z"), full=True, seen=set(), now=NOW)
    assert not d.stop and not d.new and not d.updated
    assert d.records[0].status == ModelStatus.EMBEDDED and d.records[0].model.downloads == 77


def test_a_repo_listed_under_two_bases_is_handled_once() -> None:
    seen: set[str] = set()
    first = decide_page([hub(1)], {}, None, full=False, seen=seen, now=NOW)
    second = decide_page([hub(1)], {}, None, full=False, seen=seen, now=NOW)
    assert first.new == ["org/m001"] and not second.records and not second.new


def test_a_removed_repo_that_reappears_is_new_again() -> None:
    gone = stored(hub(3), ModelStatus.REMOVED)
    d = decide_page([hub(3)], {gone.repo_id: gone}, None, full=True, seen=set(), now=NOW)
    assert d.new == ["org/m003"] and d.records[0].status == ModelStatus.QUEUED


def test_removals_only_for_completed_relations_and_unseen_rows() -> None:
    rows = {m.repo_id: stored(m) for m in (hub(1), hub(2), hub(3, relation=Relation.MERGE))}
    rows["org/m004"] = stored(hub(4), ModelStatus.REMOVED)
    gone = removals(rows, seen={"org/m001"}, completed={Relation.ADAPTER}, now=NOW)
    assert [(r.repo_id, r.status) for r in gone] == [("org/m002", ModelStatus.REMOVED)]


@pytest.mark.parametrize(
    ("last_full", "due"),
    [(None, True), (NOW - timedelta(days=8), True), (NOW - timedelta(days=6), False)],
)
def test_full_pass_due(last_full: datetime | None, due: bool) -> None:
    assert full_pass_due(TrackedBase("b", last_full_sync=last_full), NOW, timedelta(days=7)) is due


def test_advance_cursor() -> None:
    old = Cursor(T0, "org/m000")
    assert advance_cursor(old, None) == old
    assert advance_cursor(old, hub(4)) == Cursor(hub(4).created_at, "org/m004")  # type: ignore[arg-type]


# --- the lister's error paths (a mock transport: only the status codes matter here) -----------------------


def _lister(handler) -> HubLister:
    import httpx2

    policy = Politeness(requests=100, window_s=1.0, max_attempts=3, backoff_base_s=0.001, backoff_cap_s=0.002)
    return HubLister("http://hub.test", None, policy, session=httpx2.Client(transport=httpx2.MockTransport(handler)))


def test_a_refused_listing_is_one_typed_error_without_retries() -> None:
    import httpx2

    calls = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(request)
        return httpx2.Response(401, headers={"X-Error-Message": "Invalid credentials"}, json={"error": "nope"})

    with pytest.raises(HubRequestError) as e:
        next(_lister(handler).children("org/base", Relation.ADAPTER))
    assert e.value.status == 401 and "HF_TOKEN" in e.value.one_line() and len(calls) == 1


def test_a_failing_listing_gives_up_after_max_attempts() -> None:
    import httpx2

    lister = _lister(lambda request: httpx2.Response(503))
    with pytest.raises(HubUnavailableError) as e:
        next(lister.children("org/base", Relation.ADAPTER))
    assert e.value.attempts == 3 and lister.stats.requests == 3 and lister.stats.retries == 2
