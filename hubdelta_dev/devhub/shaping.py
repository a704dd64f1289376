"""Network shaping: per-request latency and per-connection bandwidth, so devhub behaves like the Hub over a WAN.

Shaping is not a fault: it applies to every non-control request (``path_regex`` does not scope it), is never
counted in ``injected`` and never marks a request-log record. Each request sleeps in its own handler thread, so
parallel connections each see the full latency and the full rate, as from a CDN.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator

from hubdelta_dev.errors import DevhubError

# A slice is what one wakeup sends: ~20 ms of data, so the pace is smooth at benchmark rates, bounded so slow
# rates still send something every few seconds and fast rates do not sleep thousands of times a second.
SLICE_S = 0.02
MIN_SLICE = 1024
MAX_SLICE = 256 * 1024

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_RATE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmg]i?b|b)?(?:/s)?", re.IGNORECASE)
BANDWIDTH_FIX = "give bytes/s: an integer or a number with B, KB, MB, GB (or KiB, MiB, GiB), e.g. 50MB; 0 is off"


def parse_bandwidth(text: str, *, flag: str = "--bandwidth") -> int:
    """Bytes per second from ``50000000``, ``50MB``, ``500KB``, ``1GB``, ``1.5MiB`` (units decimal unless ``i``).

    Raises:
        DevhubError: not a non-negative number with a known unit (the message names ``flag``).
    """
    if text.strip().startswith("-"):
        raise DevhubError(f"{flag} must be >= 0, got {text!r}", fix=BANDWIDTH_FIX)
    match = _RATE.fullmatch(text.strip())
    if match is None:
        raise DevhubError(f"{flag} {text!r} is not a rate", fix=BANDWIDTH_FIX)
    number, unit = match.groups()
    rate = round(float(number) * _UNITS[(unit or "").lower()])
    return max(rate, 1) if float(number) > 0 else 0  # a tiny rate must not round to 0, which means unlimited


def slice_size(rate: float) -> int:
    """Bytes per wakeup at ``rate`` bytes/s."""
    return max(MIN_SLICE, min(MAX_SLICE, int(rate * SLICE_S)))


def paced(
    chunks: Iterable[bytes],
    rate: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[bytes]:
    """Re-slice ``chunks`` and yield each slice only once the wall clock allows it at ``rate`` bytes/s.

    A slice waits for its own bytes' worth of time (no initial burst), so a body of n bytes never arrives in
    under n / rate seconds. The deadline is computed from the start, not from the previous slice: time spent
    writing or reading the file is absorbed instead of adding up.
    """
    if rate <= 0:
        yield from chunks
        return
    step = slice_size(rate)
    start = clock()
    sent = 0
    for chunk in chunks:
        for i in range(0, len(chunk), step):
            part = chunk[i : i + step]
            wait = start + (sent + len(part)) / rate - clock()
            if wait > 0:
                sleep(wait)
            sent += len(part)
            yield part


def delay(latency_ms: float, *, sleep: Callable[[float], None] = time.sleep) -> None:
    """Sleep a request's shaped latency (in the handler's own thread, so requests never queue behind it)."""
    if latency_ms > 0:
        sleep(latency_ms / 1000)
