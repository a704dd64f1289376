"""Retry one Hub request with backoff inside a run: a 5xx, a 429 or a cut connection should not fail a model.

Which failures are worth another try is :func:`hubdelta.kernel.hub_errors.classify_hub_error`'s ``retryable``
(built on ``retryable_status``, the one rule); this module only decides how often and how long to wait. A full
disk is retryable *later* (after space is freed), not a second from now, so it is not retried here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from hubdelta.kernel.hub_errors import classify_hub_error

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
        try:
            return call()
        except Exception as e:
            if attempt >= backoff.attempts or not worth_retrying(e):
                raise
            wait = backoff.delay(attempt)
            log.info(
                "hub.retry",
                what=what,
                attempt=attempt,
                wait_s=wait,
                error=(str(e).splitlines() or [type(e).__name__])[0][:160],
            )
            sleep(wait)
    raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover
