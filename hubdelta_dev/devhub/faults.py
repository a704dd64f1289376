"""Fault injection: fixed-window rate limits and seeded random faults (errors, latency, hangs, truncation).

The decisions are pure functions of (config, counters, one random draw); :class:`FaultInjector` only holds the
counters and the seeded RNG behind a lock.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hubdelta_dev.errors import DevhubError

ERROR_STATUSES = (500, 502, 503)
FAULT_FIX = "rates are fractions in [0, 1] whose sum is <= 1; quota >= 1; window, latency and hang >= 0"
SHAPE_FIX = "shape_latency_ms (--latency-ms) is ms, shape_bandwidth (--bandwidth) bytes/s; 0 turns either off"


@dataclass(frozen=True)
class FaultConfig:
    """What to inject. The defaults inject nothing.

    Rate limits and shaping (``shape_*``, see :mod:`hubdelta_dev.devhub.shaping`) apply to every non-control
    request; the random faults and ``latency_ms`` only to paths matching ``path_regex``.
    """

    rate_limit: int | None = None  # requests per window per bucket ("api", "resolvers") and client
    rate_window_s: float = 300.0  # the Hub's window is 5 minutes
    resolver_rate_limit: int | None = None  # quota of the "resolvers" bucket (default: rate_limit)
    error_rate: float = 0.0  # fraction answered 500/502/503
    latency_ms: int = 0  # a fault: added to requests in path_regex scope, logged as fault "latency"
    shape_latency_ms: float = 0.0  # shaping: added to every non-control request (a WAN round trip), not logged
    shape_bandwidth: int = 0  # shaping: bytes/s per response body (so per connection); 0 is unlimited
    hang_rate: float = 0.0  # fraction that get no answer for hang_s seconds, then a closed connection
    hang_s: float = 30.0
    truncate_rate: float = 0.0  # fraction whose body is cut in half after a full Content-Length
    path_regex: str | None = None  # scope of the random faults (re.search on the path)
    max_faults: int | None = None  # stop injecting random faults after this many
    seed: int = 0

    def quota(self, bucket: str) -> int | None:
        """The quota of a bucket, or None when it is not limited (only "api" and "resolvers" are)."""
        if bucket not in ("api", "resolvers"):
            return None
        if bucket == "resolvers" and self.resolver_rate_limit is not None:
            return self.resolver_rate_limit
        return self.rate_limit


def validate(config: FaultConfig) -> FaultConfig:
    """Check a config's ranges.

    Raises:
        DevhubError: a rate outside [0, 1], rates summing over 1, a bad quota/window/regex.
    """
    rates = {
        "error_rate": config.error_rate,
        "hang_rate": config.hang_rate,
        "truncate_rate": config.truncate_rate,
    }
    for name, value in rates.items():
        if not 0.0 <= value <= 1.0:
            raise DevhubError(f"fault {name} must be in [0, 1], got {value}", fix=FAULT_FIX)
    if sum(rates.values()) > 1.0 + 1e-9:
        raise DevhubError(f"fault rates sum to {sum(rates.values())} > 1", fix=FAULT_FIX)
    for name in ("rate_limit", "resolver_rate_limit"):
        quota = getattr(config, name)
        if quota is not None and quota < 1:
            raise DevhubError(f"{name} must be >= 1, got {quota}", fix=FAULT_FIX)
    if config.rate_window_s <= 0 or config.latency_ms < 0 or config.hang_s < 0:
        raise DevhubError("rate_window_s must be > 0; latency_ms and hang_s >= 0", fix=FAULT_FIX)
    for name in ("shape_latency_ms", "shape_bandwidth"):
        value = getattr(config, name)
        # JSON and keyword changes are not type-checked by dataclasses.replace; a bool would pass as 0 or 1.
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            raise DevhubError(f"{name} must be a finite number >= 0, got {value!r}", fix=SHAPE_FIX)
    if config.path_regex is not None:
        try:
            re.compile(config.path_regex)
        except re.error as e:
            raise DevhubError(f"path_regex {config.path_regex!r} is invalid ({e})", fix="give a Python regex") from e
    return config


def updated(config: FaultConfig, changes: Mapping[str, Any]) -> FaultConfig:
    """``config`` with the JSON ``changes`` applied and validated (unknown keys are an error)."""
    names = {f.name for f in dataclasses.fields(FaultConfig)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise DevhubError(f"unknown fault setting(s): {', '.join(unknown)}", fix=f"use {', '.join(sorted(names))}")
    try:
        return validate(dataclasses.replace(config, **changes))
    except TypeError as e:
        raise DevhubError(f"bad fault settings ({e})", fix=FAULT_FIX) from e


@dataclass(frozen=True)
class WindowState:
    """Where a request falls in its fixed window."""

    index: int
    reset_s: int  # whole seconds until the window resets (what the Hub puts in t=)


def window_state(now: float, start: float, window_s: float) -> WindowState:
    """The fixed window containing ``now`` (windows start at ``start`` and last ``window_s``)."""
    elapsed = max(0.0, now - start)
    index = int(elapsed // window_s)
    reset = (index + 1) * window_s - elapsed
    return WindowState(index, max(1, math.ceil(reset - 1e-9)))


def rate_headers(bucket: str, remaining: int, reset_s: int, quota: int, window_s: float) -> dict[str, str]:
    """The Hub's rate-limit headers (IETF draft syntax, as huggingface_hub parses them)."""
    return {
        "RateLimit": f'"{bucket}";r={remaining};t={reset_s}',
        "RateLimit-Policy": f'"fixed window";"{bucket}";q={quota};w={math.ceil(window_s)}',
    }


@dataclass(frozen=True)
class Decision:
    """What to do with one request."""

    action: str = "ok"  # ok | rate_limited | error | hang | truncate
    status: int = 200  # for rate_limited and error
    latency_s: float = 0.0
    hang_s: float = 0.0
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)  # RateLimit headers
    retry_after: int | None = None


def random_action(config: FaultConfig, draw: float) -> str:
    """Map one uniform draw in [0, 1) to a random fault (hang, then error, then truncate bands)."""
    if draw < config.hang_rate:
        return "hang"
    if draw < config.hang_rate + config.error_rate:
        return "error"
    if draw < config.hang_rate + config.error_rate + config.truncate_rate:
        return "truncate"
    return "ok"


class FaultInjector:
    """Counters and a seeded RNG; :meth:`decide` is called once per non-control request."""

    def __init__(self, config: FaultConfig | None = None, *, start: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._start = start
        self._config = validate(config or FaultConfig())
        self._rng = random.Random(self._config.seed)
        self._windows: dict[tuple[str, str], tuple[int, int]] = {}  # (bucket, client) -> (window, used)
        self.injected: dict[str, int] = {}

    @property
    def config(self) -> FaultConfig:
        return self._config

    def configure(self, config: FaultConfig, *, now: float) -> None:
        """Replace the config; counters restart (new windows from ``now``, RNG reseeded)."""
        with self._lock:
            self._config = validate(config)
            self._rng = random.Random(config.seed)
            self._windows.clear()
            self._start = now
            self.injected = {}

    def decide(self, path: str, bucket: str, client: str, now: float) -> Decision:
        """Count the request against its bucket's quota, then draw its random fault."""
        with self._lock:
            cfg = self._config
            headers: dict[str, str] = {}
            quota = cfg.quota(bucket)
            if quota is not None:
                state = window_state(now, self._start, cfg.rate_window_s)
                index, used = self._windows.get((bucket, client), (state.index, 0))
                used = used if index == state.index else 0
                if used >= quota:
                    self._count("rate_limited")
                    headers = rate_headers(bucket, 0, state.reset_s, quota, cfg.rate_window_s)
                    return Decision("rate_limited", 429, headers=headers, retry_after=state.reset_s)
                self._windows[(bucket, client)] = (state.index, used + 1)
                headers = rate_headers(bucket, quota - used - 1, state.reset_s, quota, cfg.rate_window_s)
            in_scope = cfg.path_regex is None or re.search(cfg.path_regex, path) is not None
            budget_left = cfg.max_faults is None or sum(self.injected.get(k, 0) for k in _RANDOM) < cfg.max_faults
            action = random_action(cfg, self._rng.random()) if in_scope and budget_left else "ok"
            latency = cfg.latency_ms / 1000 if in_scope else 0.0
            if action == "error":
                self._count(action)
                return Decision("error", self._rng.choice(ERROR_STATUSES), latency, headers=headers)
            if action != "ok":
                self._count(action)
            return Decision(action, 200, latency, cfg.hang_s if action == "hang" else 0.0, headers=headers)

    def uncount(self, action: str) -> None:
        """Give back a fault that could not apply (truncating a body-less response)."""
        with self._lock:
            self.injected[action] = max(0, self.injected.get(action, 0) - 1)

    def _count(self, action: str) -> None:
        self.injected[action] = self.injected.get(action, 0) + 1

    def describe(self) -> dict[str, Any]:
        """The config and counters, for ``GET /_devhub/faults``."""
        with self._lock:
            return {"config": dataclasses.asdict(self._config), "injected": dict(self.injected)}


_RANDOM = ("error", "hang", "truncate")
