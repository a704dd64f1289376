"""The crawler's only HTTP: paged child listings through huggingface_hub's own session, politely.

We page ``GET /api/models`` ourselves (with the client's session, headers and error mapping) instead of
iterating ``HfApi.list_models`` because a crawl must (1) count and budget every request, pages included,
(2) resume a listing at the page that failed instead of from the top, and (3) stop after the page where it
meets known repos without the client prefetching more. Items are read by ``wire.py``, not ``ModelInfo``, whose
card model raises on hostile cards.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx2
import structlog
from huggingface_hub.utils import build_hf_headers, get_session

from hubdelta.crawler.politeness import Politeness, RequestBudget, retry_delay
from hubdelta.crawler.wire import Unreadable, read_item
from hubdelta.index.records import HubModel, Relation
from hubdelta.kernel.errors import HubUnavailableError, UsageError
from hubdelta.kernel.hub_errors import is_transport_failure, request_refused, retryable_status

log = structlog.get_logger(__name__)

LIST_EXPAND = [
    "sha", "createdAt", "lastModified", "tags", "library_name", "pipeline_tag", "downloads", "likes", "gated",
    "private", "cardData",
]  # fmt: skip
PAGE_SIZE = 1000  # the Hub's largest page


@dataclass
class RequestStats:
    requests: int = 0
    retries: int = 0
    pages: int = 0
    waited_s: float = 0.0


class HubLister:
    """Lists a base model's children, newest first, within a request budget.

    Args:
        endpoint: the Hub (or devhub) URL.
        token: a Hub token, or None for anonymous requests.
        policy: budget, retries and timeouts.
        clock, sleep, rng: injected for tests; real time and an unseeded RNG by default.
        session: an HTTP client; huggingface_hub's shared session by default.
    """

    def __init__(
        self,
        endpoint: str,
        token: str | None,
        policy: Politeness,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        session: httpx2.Client | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.policy = policy
        self.budget = RequestBudget(policy.requests, policy.window_s)
        self.stats = RequestStats()
        self._headers = build_hf_headers(token=token or False, library_name="hubdelta")
        self._clock, self._sleep = clock, sleep
        self._rng = rng or random.Random()
        self._session = session

    def children(self, base: str, relation: Relation, page_size: int = PAGE_SIZE) -> Iterator[list[Any]]:
        """Pages of the children of ``base`` with ``relation``, newest first, as the Hub's JSON items (read them
        with :func:`hubdelta.crawler.wire.read_item`: one item's values must never end the page); fetched only as
        consumed."""
        url: str | None = f"{self.endpoint}/api/models"
        params: Any = [
            ("filter", f"base_model:{relation.value}:{base}"),
            ("sort", "createdAt"),
            ("limit", str(page_size)),
        ] + [("expand", e) for e in LIST_EXPAND]
        while url is not None:
            response = self._get(url, params)
            items = response.json()
            if not isinstance(items, list):  # not a listing at all: no repo in it to record
                raise HubUnavailableError(str(response.url), attempts=1, last_error="the listing is not a JSON list")
            self.stats.pages += 1
            yield items
            url, params = response.links.get("next", {}).get("url"), None  # the next URL carries every param

    def _get(self, url: str, params: Any) -> httpx2.Response:
        attempt = 0
        while True:
            self._wait(self.budget.wait_time(self._clock()))
            self.budget.record(self._clock())
            self.stats.requests += 1
            attempt += 1
            status, headers, error = None, None, ""
            try:
                session = self._session or get_session()
                response = session.get(url, params=params, headers=self._headers, timeout=self.policy.timeout_s)
                if response.status_code < 400:
                    response.json()  # a cut body fails here, not later in the caller
                    return response
                status, headers = response.status_code, response.headers
                error = f"HTTP {status}"
                if not retryable_status(status):  # retrying will not help
                    raise request_refused(url, response)
            except RecursionError:  # a hostile card nested deeper than the parser goes: retrying will not help
                raise HubUnavailableError(url, attempts=attempt, last_error="nested too deeply to parse") from None
            except ValueError as e:  # a cut body (JSONDecodeError), or bytes that are not UTF-8
                error = f"{type(e).__name__}: {e}"
            except Exception as e:
                if not is_transport_failure(e):
                    raise
                error = f"{type(e).__name__}: {e}"
            self._after_failure(url, attempt, status, headers, error)

    def _after_failure(self, url: str, attempt: int, status: int | None, headers: Any, error: str) -> None:
        delay = retry_delay(attempt, status=status, headers=headers, policy=self.policy, rng=self._rng)
        if delay is None:
            raise HubUnavailableError(url, attempts=attempt, last_error=error)
        if status == 429:
            self.budget.pause_until(self._clock() + delay)  # the quota is shared: no other request either
        self.stats.retries += 1
        log.info("hub.retry", url=url, attempt=attempt, error=error, wait_s=round(delay, 2))
        self._wait(delay)

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self.stats.waited_s += seconds
            self._sleep(seconds)


def to_hub_model(item: Any, relation: Relation) -> HubModel:
    """One repo's JSON as a :class:`HubModel` (see :mod:`hubdelta.crawler.wire` for the rule of each field).

    Raises:
        UsageError: the item has no usable repo id, or a value the record depends on is unusable.
    """
    read = read_item(item, relation, None, datetime.now(UTC))
    if isinstance(read, Unreadable):
        raise UsageError("the Hub's answer", read.what, fix="check HF_ENDPOINT")
    if read.problem:
        raise UsageError(read.model.repo_id, read.problem, fix="ask the repo's owner to fix it, or skip this repo")
    for note in read.notes:
        log.warning("hub.metadata_repaired", repo=read.model.repo_id, note=note)
    return read.model
