"""The request log: every non-control request, with counts per endpoint kind and status."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

MAX_ENTRIES = 2_000_000  # beyond this the oldest half is dropped (a 100k-repo crawl is far below)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it."""

    t: float  # epoch seconds when the request arrived
    method: str
    path: str  # path and query string
    kind: str  # list | model_info | tree | paths_info | resolve | other
    bucket: str  # api | resolvers | none (the rate-limit bucket)
    status: int  # 0 when no response was sent (hang)
    bytes: int  # body bytes sent (half the body when truncated; planned count if the client hung up)
    fault: str | None = None  # rate_limited | error | hang | truncate | latency
    retry_after: int | None = None  # seconds announced on a 429


def max_in_window(times: Iterable[float], window_s: float) -> int:
    """The largest number of requests inside any window of ``window_s`` seconds (sliding, half-open)."""
    ts = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ts):
        while t - ts[lo] >= window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def summarize(records: Sequence[RequestRecord]) -> dict[str, Any]:
    """Counts: total, per kind, per status, per kind and status, per fault."""
    by_kind: dict[str, int] = {}
    by_status: dict[str, int] = {}
    by_kind_status: dict[str, dict[str, int]] = {}
    faults: dict[str, int] = {}
    for r in records:
        by_kind[r.kind] = by_kind.get(r.kind, 0) + 1
        by_status[str(r.status)] = by_status.get(str(r.status), 0) + 1
        ks = by_kind_status.setdefault(r.kind, {})
        ks[str(r.status)] = ks.get(str(r.status), 0) + 1
        if r.fault:
            faults[r.fault] = faults.get(r.fault, 0) + 1
    return {
        "total": len(records),
        "by_kind": by_kind,
        "by_status": by_status,
        "by_kind_status": by_kind_status,
        "faults": faults,
    }


class RequestLog:
    """Thread-safe, in memory, optionally mirrored to a JSON-lines file.

    Args:
        path: append one JSON object per request to this file (created if missing).
    """

    def __init__(self, path: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8", buffering=1)

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)
            if len(self._records) > MAX_ENTRIES:
                del self._records[: MAX_ENTRIES // 2]
            if self._file is not None:
                self._file.write(json.dumps(dataclasses.asdict(record)) + "\n")

    def records(self, since: float | None = None) -> list[RequestRecord]:
        """A copy of the records, optionally only those at or after ``since`` (epoch seconds)."""
        with self._lock:
            records = list(self._records)
        return records if since is None else [r for r in records if r.t >= since]

    def reset(self) -> None:
        with self._lock:
            self._records.clear()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
