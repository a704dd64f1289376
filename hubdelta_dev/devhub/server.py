"""devhub's HTTP server: stdlib ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive.

Each request: control endpoints (``/_devhub/*``) go straight to :mod:`hubdelta_dev.devhub.control`; every
other request is delayed and its body paced by :mod:`hubdelta_dev.devhub.shaping`, counted and maybe faulted by
the :class:`FaultInjector`, answered by :mod:`hubdelta_dev.devhub.routes` from the current catalog snapshot, and
recorded in the :class:`RequestLog`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import sys
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog

from hubdelta_dev.devhub import control, routes, shaping
from hubdelta_dev.devhub.catalog import Catalog, Snapshot
from hubdelta_dev.devhub.faults import Decision, FaultConfig, FaultInjector, updated
from hubdelta_dev.devhub.reqlog import RequestLog, RequestRecord, summarize
from hubdelta_dev.errors import DevhubError

log = structlog.get_logger(__name__)

DEFAULT_PAGE_SIZE = 1000  # the Hub's page size for /api/models
IDLE_TIMEOUT_S = 120.0  # a keep-alive connection idle this long is closed


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes: with Nagle on, the body waited for the client's delayed ACK
    # (40 ms on Linux) on every small answer, a stall the Hub's servers do not have.
    disable_nagle_algorithm = True
    server_version = "devhub"
    timeout = IDLE_TIMEOUT_S
    server: _HTTPServer

    def do_GET(self) -> None:
        self.server.app.dispatch(self, "GET")

    def do_HEAD(self) -> None:
        self.server.app.dispatch(self, "HEAD")

    def do_POST(self) -> None:
        self.server.app.dispatch(self, "POST")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log records every request; stderr lines would only be noise


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a hanging fault must never block shutdown
    # The stdlib default backlog (5) drops connections in a burst of parallel downloads; the client then waits
    # out a SYN retransmit (~1 s), which would swamp the shaped latency being measured.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: DevhubServer) -> None:
        self.app = app
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer (killed, timed out) is the client's business, as on the Hub: no
        traceback on devhub's stderr; anything else is still printed."""
        if isinstance(sys.exc_info()[1], ConnectionResetError | BrokenPipeError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Close every open keep-alive connection, so clients never reuse one into a stopped server."""
        with self._conns_lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


class DevhubServer:
    """A local Hub: binds at construction, serves in a background thread (``with``) or in the foreground.

    Args:
        root: the devhub root (``<org>/<name>/`` folders and/or ``catalog.jsonl``).
        host: address to bind.
        port: port to bind; 0 picks a free one (see :attr:`url`).
        tokens: bearer tokens that may see private repos and download gated ones.
        faults: what to inject (nothing by default); change it later with :meth:`set_faults`.
        request_log: also append every request as a JSON line to this file.
        page_size: largest page of ``/api/models`` and tree listings (the Hub's is 1000).
        check_interval_s: how often, at most, the root is checked for changes.

    Raises:
        DevhubError: the root is missing, or the address cannot be bound.
        CatalogError: the root holds a malformed catalog line or model card.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Iterable[str] = (),
        faults: FaultConfig | None = None,
        request_log: Path | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        check_interval_s: float = 0.5,
    ) -> None:
        # Cheap checks first: a bad flag or a busy port fails before a 100k-line catalog is scanned.
        self.injector = FaultInjector(faults, start=time.monotonic())
        self.tokens = frozenset(tokens)
        self.page_size = max(1, page_size)
        try:
            self._httpd = _HTTPServer((host, port), self)
        except OSError as e:
            raise DevhubError(
                f"cannot listen on {host}:{port} ({e.strerror or e})",
                fix="pick another --port (0 picks a free one) or stop the process that holds it",
            ) from None
        try:
            self.catalog = Catalog(Path(root), check_interval_s=check_interval_s)
        except BaseException:
            self._httpd.server_close()
            raise
        self.log = RequestLog(request_log)
        self.host = host
        self.port = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The endpoint to give ``HfApi(endpoint=...)`` / ``HF_ENDPOINT``."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> DevhubServer:
        """Serve in a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.serve_forever, name="devhub", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` (or Ctrl-C, which the caller handles)."""
        self._httpd.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        """Stop serving, close connections and the listening socket, close the request-log file."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.close_connections()
        self._httpd.server_close()
        self.log.close()

    def __enter__(self) -> DevhubServer:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    # --- the Python control API (the same as the /_devhub endpoints) ---

    @property
    def snapshot(self) -> Snapshot:
        return self.catalog.current()

    def reload(self) -> Snapshot:
        """Rescan the root now (raises CatalogError, keeping the old snapshot, on a malformed root)."""
        return self.catalog.reload()

    @property
    def faults(self) -> FaultConfig:
        return self.injector.config

    def set_faults(self, config: FaultConfig | None = None, **changes: Any) -> FaultConfig:
        """Replace the fault config (or change some fields); windows and fault counters restart."""
        new = updated(config or self.injector.config, changes)
        self.injector.configure(new, now=time.monotonic())
        return new

    def requests(self, *, since: float | None = None) -> dict[str, Any]:
        """Counts of logged requests (total, by_kind, by_status, by_kind_status, faults)."""
        return summarize(self.log.records(since))

    def request_records(self, *, since: float | None = None) -> list[RequestRecord]:
        return self.log.records(since)

    def reset_requests(self) -> None:
        self.log.reset()

    # --- per request ---

    def dispatch(self, h: _Handler, method: str) -> None:
        """Answer one request on handler ``h``."""
        arrived = time.time()
        split = urlsplit(h.path)
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0)) if method == "POST" else b""
        if split.path.startswith("/_devhub/"):
            resp = control.handle(self, method, split.path, parse_qs(split.query, keep_blank_values=True), body)
            self._send(h, method, resp, truncate=False)
            return
        shape = self.injector.config  # one config for the whole request, even if it is changed meanwhile
        shaping.delay(shape.shape_latency_ms)
        route = routes.parse_route(split.path)
        token = _bearer(h.headers.get("Authorization"))
        decision = self.injector.decide(split.path, route.bucket, token or h.client_address[0], time.monotonic())

        def record(status: int, sent: int, fault: str | None) -> None:
            path = split.path + (f"?{split.query}" if split.query else "")
            rec = RequestRecord(arrived, method, path, route.kind, route.bucket, status, sent, fault)
            self.log.add(dataclasses.replace(rec, retry_after=decision.retry_after))

        if decision.action == "hang":
            record(0, 0, "hang")  # logged first: the client gives up long before the sleep ends
            time.sleep(decision.hang_s)
            h.close_connection = True
            return
        # paths-info posts its parameters as a form: read them as the query string's
        query = "&".join(q for q in (split.query, body.decode("latin-1") if route.kind == "paths_info" else "") if q)
        resp = self._answer(h, method, query, route, token, decision)
        truncate = decision.action == "truncate" and method == "GET" and resp.length > 1
        if decision.action == "truncate" and not truncate:
            self.injector.uncount("truncate")
        fault = decision.action if decision.action not in ("ok", "truncate") or truncate else None
        fault = fault or ("latency" if decision.latency_s else None)
        planned = 0 if method == "HEAD" else resp.length // 2 if truncate else resp.length
        # Recorded before sending: once the client holds the response, the log already shows it.
        record(resp.status, planned, fault)
        self._send(h, method, resp, truncate, rate=shape.shape_bandwidth)

    def _answer(
        self, h: _Handler, method: str, query: str, route: routes.Route, token: str | None, decision: Decision
    ) -> routes.Response:
        if decision.action == "rate_limited":
            headers = {**decision.headers, "Retry-After": str(decision.retry_after)}
            return routes.error(429, "You have been rate-limited; retry after the window resets.", None, headers)
        if decision.latency_s:
            time.sleep(decision.latency_s)
        if decision.action == "error":
            resp = routes.error(decision.status, "devhub injected a server error", None)
        else:
            req = routes.Request(
                method=method,
                route=route,
                params=parse_qs(query, keep_blank_values=True),
                headers={k.lower(): v for k, v in h.headers.items()},
                base_url=f"http://{h.headers.get('Host') or f'{self.url[7:]}'}",
                authorized=token is not None and token in self.tokens,
                has_token=token is not None,
            )
            try:
                resp = routes.handle(req, self.catalog.current(), self.page_size)
            except Exception:  # a bug must cost one 500, not the connection
                log.exception("devhub.handler_failed", path=h.path)
                resp = routes.error(500, "devhub internal error", None)
        resp.headers.update(decision.headers)
        return resp

    def _send(self, h: _Handler, method: str, resp: routes.Response, truncate: bool, *, rate: float = 0) -> int:
        """Write the response; with ``truncate``, only half the body, then close; a ``rate`` > 0 paces the body
        to that many bytes/s. Returns body bytes sent."""
        # A client that hangs up mid-body is not an error here; the log keeps the planned byte count.
        sent = 0
        try:
            h.send_response(resp.status)
            for name, value in resp.headers.items():
                h.send_header(name, value)
            h.send_header("Content-Length", str(resp.length))
            h.end_headers()
            if method == "HEAD":
                return 0
            limit = resp.length // 2 if truncate else resp.length
            body = resp.body
            if not truncate and not rate and isinstance(body, routes.FileBody) and isinstance(body.entry.source, Path):
                # The Hub's CDN serves bytes without a copy through user space; so does this, or the server's
                # CPU (on the benchmark's own cores) would be billed to the client's run.
                with body.entry.source.open("rb") as f:
                    return h.connection.sendfile(f, body.start, limit)
            chunks = [resp.body] if isinstance(resp.body, bytes) else resp.body.chunks()
            for chunk in shaping.paced(chunks, rate):
                part = chunk[: limit - sent]
                h.wfile.write(part)
                sent += len(part)
                if sent >= limit:
                    break
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            h.close_connection = True
        if truncate:
            h.close_connection = True  # the declared Content-Length was a lie: end the connection
        return sent
