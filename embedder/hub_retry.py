"""Retry one Hub request with backoff inside a run: a 5xx, a 429 or a cut connection should not fail a model.

Which failures are worth another try is :func:`hubdelta.kernel.hub_errors.classify_hub_error`'s ``retryable``
(built on ``retryable_status``, the one rule); this module only decides how often and how long to wait. A full
disk is retryable *later* (after space is freed), not a second from now, so it is not retried here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from hubdelta.kernel.hub_errors import classify_hub_error, http_status

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """How a failed request is sent again: ``attempts`` tries in all, waits doubling from ``first_s`` to ``max_s``.

    The defaults bound one request's retries to ~7 s of waiting (0.5 + 1 + 2 + 4), on top of huggingface_hub's own
    retries of downloads; a model still unreachable after that stays for a later run (``[embed] max_attempts``).
    """

    attempts: int = 5
    first_s: float = 0.5
    max_s: float = 8.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        return min(self.max_s, self.first_s * 2 ** (retry - 1))


DEFAULT_BACKOFF = Backoff()


class HubGate:
    """Holds every request of this process while the Hub says a rate-limit window is spent.

    A 429 whose ``RateLimit`` header says ``r=0;t=N`` (or whose ``Retry-After`` says N) closes the gate for N + 1 s
    (the client's own margin), and every thread waits at it before its next request: the quota is per IP or token,
    so download threads retrying on their own would only spend the next window faster (``../shared/HUB_FACTS.md``).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock, self._lock, self._until = clock, threading.Lock(), 0.0

    def close_for(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, self._clock() + seconds)

    def reset(self) -> None:
        """Open the gate (a test's 429s must not hold the next test)."""
        with self._lock:
            self._until = 0.0

    def delay(self) -> float:
        """Seconds until the gate opens (0 when open)."""
        with self._lock:
            return max(0.0, self._until - self._clock())


GATE = HubGate()
MAX_RESET_S = 310.0  # a window is 300 s: a longer wait named by a header is not believed


def rate_limit_reset(e: BaseException) -> float | None:
    """Seconds the Hub asks to wait after a 429 (its spent window's reset + 1, or ``Retry-After``); else None."""
    from huggingface_hub.utils import parse_ratelimit_headers

    # hf_hub_download re-raises a refused HEAD as LocalEntryNotFoundError "from" the 429: look down the chain
    chain = [e, e.__cause__, e.__context__, getattr(e.__cause__, "__cause__", None)]
    e = next((c for c in chain if c is not None and http_status(c) == 429), e)
    if http_status(e) != 429:
        return None
    headers = getattr(getattr(e, "response", None), "headers", None) or {}
    info = parse_ratelimit_headers(headers)
    if info is not None and info.remaining == 0:
        return min(MAX_RESET_S, info.reset_in_seconds + 1.0)
    after = str(headers.get("retry-after", ""))
    return min(MAX_RESET_S, float(after)) if after.isdigit() else None


def worth_retrying(e: BaseException) -> bool:
    """Whether the same request may succeed a moment later: network trouble, 408/429/5xx (not a full disk)."""
    found = classify_hub_error(e)
    return found is not None and found.retryable and found.code != "disk"


def retried(call: Callable[[], T], *, what: str, backoff: Backoff | None = None,
            sleep: Callable[[float], None] = time.sleep) -> T:  # fmt: skip
    """``call()``, sent again after a retryable failure until ``backoff.attempts`` tries are spent.

    Args:
        call: one request (or one client call: a listing, a file, a snapshot).
        what: what it fetches, for the log (``hub.retry``).
        backoff: how often and how long to wait (default: ``DEFAULT_BACKOFF``, read at each call).
        sleep: the wait (tests pass a fake).

    Raises:
        The last exception of ``call``: a failure not worth retrying at once, or the last of ``attempts``.
    """
    backoff = backoff or DEFAULT_BACKOFF
    for attempt in range(1, backoff.attempts + 1):
        if (held := GATE.delay()) > 0:
            sleep(held)
        try:
            return call()
        except Exception as e:
            reset = rate_limit_reset(e)
            if reset is not None:
                GATE.close_for(reset)
            if attempt >= backoff.attempts or not worth_retrying(e):
                raise
            wait = backoff.delay(attempt) if reset is None else 0.0  # after a 429 the gate holds it to the reset
            log.info(
                "hub.retry",
                what=what,
                attempt=attempt,
                wait_s=wait if reset is None else reset,
                error=(str(e).splitlines() or [type(e).__name__])[0][:160],
            )
            sleep(wait)
    raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover
