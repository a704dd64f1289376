"""The crawler's only HTTP: paged child listings through huggingface_hub's own session, politely.

We page ``GET /api/models`` ourselves (with the client's session, headers, error mapping and ``ModelInfo``)
instead of iterating ``HfApi.list_models`` because a crawl must (1) count and budget every request, pages
included, (2) resume a listing at the page that failed instead of from the top, and (3) stop after the page
where it meets known repos without the client prefetching more.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx2
import structlog
from huggingface_hub import ModelInfo
from huggingface_hub.utils import build_hf_headers, get_session

from hubdelta.crawler.politeness import Politeness, RequestBudget, retry_delay
from hubdelta.index.records import HubModel, Relation
from hubdelta.kernel.errors import HubUnavailableError
from hubdelta.kernel.hub_errors import is_transport_failure, request_refused, retryable_status

log = structlog.get_logger(__name__)

LIST_EXPAND = [
    "sha", "createdAt", "lastModified", "tags", "library_name", "pipeline_tag", "downloads", "likes", "gated",
    "private", "cardData",
]  # fmt: skip
PAGE_SIZE = 1000  # the Hub's largest page
_SUMMARY_KEYS = ("model_name", "datasets", "language", "license")


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

    def children(self, base: str, relation: Relation, page_size: int = PAGE_SIZE) -> Iterator[list[HubModel]]:
        """Pages of the children of ``base`` with ``relation``, newest first; fetched only as consumed."""
        url: str | None = f"{self.endpoint}/api/models"
        params: Any = [
            ("filter", f"base_model:{relation.value}:{base}"),
            ("sort", "createdAt"),
            ("limit", str(page_size)),
        ] + [("expand", e) for e in LIST_EXPAND]
        while url is not None:
            response = self._get(url, params)
            items = response.json()
            self.stats.pages += 1
            yield [to_hub_model(item, relation) for item in items]
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
            except json.JSONDecodeError as e:  # a cut body
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


def _bases_from_tags(tags: list[str]) -> tuple[str, ...]:
    relations = {r.value for r in Relation}
    bases = []
    for tag in tags:
        parts = tag.split(":", 2)
        if len(parts) == 3 and parts[0] == "base_model" and parts[1] in relations and parts[2] not in bases:
            bases.append(parts[2])
    return tuple(bases)


def _summary(card: dict[str, Any]) -> str:
    parts = []
    for key in _SUMMARY_KEYS:
        value = card.get(key)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value[:5])
        if value:
            parts.append(f"{key}: {value}")
    return "; ".join(parts)[:200]


def to_hub_model(item: dict[str, Any], relation: Relation) -> HubModel:
    """One listing item as a :class:`HubModel`; ``ModelInfo`` is the one place wire names are mapped.

    The card may be missing or malformed: lineage comes from the tags the Hub derived, not from the card.
    """
    info = ModelInfo(**item)
    tags = list(info.tags or [])
    card = info.card_data.to_dict() if info.card_data is not None else {}
    license_tag = next((t.split(":", 1)[1] for t in tags if t.startswith("license:")), None)
    gated = info.gated if isinstance(info.gated, str) else None
    return HubModel(
        repo_id=info.id,
        sha=info.sha,
        relation=relation,
        base_models=_bases_from_tags(tags),
        created_at=_utc(info.created_at),
        last_modified=_utc(info.last_modified),
        tags=tuple(tags),
        library=info.library_name,
        pipeline_tag=info.pipeline_tag,
        license=license_tag or (str(card["license"]) if card.get("license") else None),
        downloads=info.downloads or 0,
        likes=info.likes or 0,
        gated=gated,
        private=bool(info.private),
        card_summary=_summary(card),
    )


def _utc(t: datetime | None) -> datetime | None:
    from datetime import UTC

    return None if t is None else (t if t.tzinfo else t.replace(tzinfo=UTC))
