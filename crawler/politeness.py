"""How often and how patiently the crawler may talk to the Hub: pure decisions, a clock passed in.

The Hub counts API requests per fixed 5-minute window (anonymous 500, free account 1,000). A plain token bucket
of capacity Q refilled at Q per window can still let 2Q through inside one window (a full bucket, then its
refill), so the budget here is a sliding log: a request may start only if fewer than ``requests`` started in
the last ``window_s`` seconds. That bounds *every* window, the Hub's fixed ones included.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from huggingface_hub.utils import parse_ratelimit_headers

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Politeness:
    """Request budget and retry policy. Defaults stay under the Hub's anonymous limit (500 / 5 min)."""

    requests: int = 450  # per window, across the whole crawl
    window_s: float = 300.0
    max_attempts: int = 8  # per request, the first one included
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    timeout_s: float = 30.0  # per request: connect and read


class RequestBudget:
    """Sliding-log limiter: at most ``requests`` request starts in any ``window_s`` seconds."""

    def __init__(self, requests: int, window_s: float) -> None:
        if requests < 1 or window_s <= 0:
            raise ValueError("a request budget needs requests >= 1 and window_s > 0")
        self.requests = requests
        self.window_s = window_s
        # A little slack: the server stamps arrivals, which trail our starts by a varying few ms.
        self._span = window_s + min(0.5, 0.02 * window_s)
        self._starts: deque[float] = deque()
        self._paused_until = 0.0

    def wait_time(self, now: float) -> float:
        """Seconds to wait before a request may start at ``now`` (0 when it may start now)."""
        while self._starts and self._starts[0] <= now - self._span:
            self._starts.popleft()
        wait = self._paused_until - now
        if len(self._starts) >= self.requests:
            wait = max(wait, self._starts[0] + self._span - now)
        return max(0.0, wait)

    def record(self, now: float) -> None:
        """Note that a request started at ``now``."""
        self._starts.append(now)

    def pause_until(self, t: float) -> None:
        """The server said the quota is spent until ``t``: no request starts before then."""
        self._paused_until = max(self._paused_until, t)


def retry_delay(
    attempt: int,
    *,
    status: int | None,
    headers: Mapping[str, str] | None,
    policy: Politeness,
    rng: random.Random,
) -> float | None:
    """How long to wait before retrying a failed request, or None to give up.

    Args:
        attempt: attempts made so far (1 after the first failure).
        status: the HTTP status, or None for a transport error (timeout, dropped connection, cut body).
        headers: the response headers, when there was a response.
        policy: limits and backoff.
        rng: jitter source (seeded in tests).
    """
    if attempt >= policy.max_attempts:
        return None
    if status is not None and status not in RETRY_STATUSES:
        return None
    if status == 429 and headers is not None:
        info = parse_ratelimit_headers(headers)
        if info is not None and info.remaining == 0:
            return info.reset_in_seconds + 1 + rng.uniform(0, 1)  # the window's end, spread a little
        retry_after = headers.get("Retry-After", "")
        if retry_after.isdigit():
            return int(retry_after) + rng.uniform(0, 1)
    # Full jitter: uniformly up to base * 2^(attempt-1), capped; desynchronises many clients after an outage.
    return rng.uniform(0, min(policy.backoff_cap_s, policy.backoff_base_s * 2 ** (attempt - 1)))
