"""Who may ask, how much, and what every answer carries: the access token, rate and size limits, security headers.

One ASGI middleware (:class:`Guard`) wraps the whole application, so no route can forget a rule. The decisions
(is this address loopback, is this credential right, may this client ask now) are plain functions and a small
token bucket, apart from the ASGI plumbing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hubdelta.kernel.errors import ConfigError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "hubdelta_session"
TOKEN_MIN_CHARS = 16
OPEN_PATHS = ("/login", "/static/", "/favicon.ico")  # reachable without a token: the login form and its assets
CLIENTS_MAX = 10_000  # rate buckets kept (least recently seen dropped first): bounded memory under a flood
HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
     b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]  # fmt: skip


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine (no token needed)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(path: Path) -> str:
    """The access token in ``path`` (its first line).

    Raises:
        ConfigError: missing, unreadable, or shorter than ``TOKEN_MIN_CHARS`` characters.
    """
    fix = f"write a random token of {TOKEN_MIN_CHARS}+ characters to it, e.g. openssl rand -hex 32 > {path}"
    try:
        lines = path.read_text().strip().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("--token-file", f"cannot read {path}: {getattr(e, 'strerror', None) or e}", fix=fix) from None
    token = lines[0].strip() if lines else ""
    if len(token) < TOKEN_MIN_CHARS:
        raise ConfigError("--token-file", f"{path} holds no token of {TOKEN_MIN_CHARS}+ characters", fix=fix)
    return token


def session_value(token: str) -> str:
    """The login cookie's value: derived from the token, so the cookie never carries the token itself."""
    return hmac.new(token.encode(), b"hubdelta-session-v1", hashlib.sha256).hexdigest()


def authorized(token: str, headers: dict[str, str]) -> bool:
    """Whether a request's bearer header or login cookie carries ``token`` (compared in constant time)."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer " and hmac.compare_digest(auth[7:].strip().encode(), token.encode()):
        return True
    cookie: SimpleCookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:  # a malformed cookie header is an anonymous request, not an error
        return False
    morsel = cookie.get(COOKIE)
    return morsel is not None and hmac.compare_digest(morsel.value.encode(), session_value(token).encode())


class RateLimiter:
    """A token bucket per client address: ``burst`` requests at once, then ``rate`` a second."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        self._lock = threading.Lock()

    def wait_s(self, client: str) -> float:
        """0 when ``client`` may ask now (and it is counted), else the seconds until it may."""
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1:
                tokens -= 1
                wait = 0.0
            else:
                wait = (1 - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > CLIENTS_MAX:
                self._buckets.popitem(last=False)
            return wait


@dataclass(frozen=True)
class Limits:
    token: str | None  # None: no token asked (the service is bound to loopback)
    rate: float
    burst: int
    max_body_bytes: int


def json_error(status: int, error: str, fix: str, headers: list[tuple[bytes, bytes]] | None = None) -> tuple:
    body = json.dumps({"error": error, "fix": fix}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return status, head + (headers or []), body


def loopback_host(host_header: str) -> bool:
    """Whether a request's Host names this machine's loopback (``localhost:8000``, ``127.0.0.1``, ``[::1]:80``).

    Without a token the service trusts loopback; a page elsewhere could still reach it through a DNS name that
    resolves to 127.0.0.1 (DNS rebinding), and only the Host it sends gives that away.
    """
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":")[0]
    return is_loopback(host)


class Guard:
    """The middleware: security headers on every response; then Host, size, rate and token checks, and the
    body read whole (within the limit) before any route sees it."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app, self.limits = app, limits
        self.rates = RateLimiter(limits.rate, limits.burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                taken = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [h for h in HEADERS if h[0] not in taken]
            await send(message)

        refusal = self._refusal(scope)
        body = None if refusal is not None else await self._body(receive)
        if refusal is None and body is None:
            refusal = self._too_large()
        if refusal is not None:
            if _has_body(scope) and body is None:
                await _drain(receive)
            await _respond(send_secured, *refusal)
            return
        assert body is not None
        await self.app(scope, _replay(body, receive), send_secured)

    def _too_large(self) -> tuple:
        return json_error(413, f"the request body is over {self.limits.max_body_bytes:,} bytes",
                          "send less: one vector, a few filters")  # fmt: skip

    def _refusal(self, scope: Scope) -> tuple | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        token = self.limits.token
        if token is None and not loopback_host(headers.get("host", "")):
            return json_error(421, "this service answers only to localhost without a token",
                              "open it as http://127.0.0.1:<port>, or serve with --token-file")  # fmt: skip
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > self.limits.max_body_bytes:
            return self._too_large()
        client = (scope.get("client") or ("?", 0))[0]
        wait = self.rates.wait_s(client)
        if wait > 0:
            retry = str(max(1, math.ceil(wait))).encode()
            return json_error(429, "too many requests from this address",
                              f"slow down: retry after {retry.decode()} s", [(b"retry-after", retry)])  # fmt: skip
        path = scope.get("path", "/")
        if token is None or path.startswith(OPEN_PATHS) or authorized(token, headers):
            return None
        if path.startswith("/api/"):
            return json_error(401, "this service asks for a token",
                              "send Authorization: Bearer <token>, or log in at /login",
                              [(b"www-authenticate", b'Bearer realm="hubdelta"')])  # fmt: skip
        query = scope.get("query_string", b"").decode("latin-1")
        target = quote(path + (f"?{query}" if query else ""), safe="")
        return 303, [(b"location", f"/login?next={target}".encode()), (b"content-length", b"0")], b""

    async def _body(self, receive: Receive) -> bytes | None:
        """The whole request body, or None past the limit (a chunked body announces no length: it is counted)."""
        parts: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(parts)  # the client left: the route sees an empty body and it does not matter
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limits.max_body_bytes:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)


DRAIN_BYTES = 16 << 20  # a refused request's body read and dropped up to this, before the answer (lingering close)


def _has_body(scope: Scope) -> bool:
    headers = {k.lower(): v for k, v in scope.get("headers", [])}
    return headers.get(b"content-length", b"0") not in (b"", b"0") or b"transfer-encoding" in headers


async def _drain(receive: Receive) -> None:
    """Read and drop what is left of a refused request's body, up to :data:`DRAIN_BYTES`.

    Answering before the client has sent its body, then closing, makes a client still sending see a broken pipe
    instead of the answer (a 413 for an oversized vector, a 401 for a missing token). Reading the rest first
    lets it finish and read the answer; past the bound the connection is closed without waiting.
    """
    seen = 0
    while seen <= DRAIN_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the already-read body once, then what the connection says (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
