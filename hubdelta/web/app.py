"""The web application: ``create_app`` wires the API, the pages, the static assets and the guard.

Read-only by construction: one index opened without the writer lock serves every request (it sees each new
commit), so vectors, layouts and reports written by the daemon appear without a restart, and the service never
waits for a crawl or an embed run. torch is never imported here.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from hubdelta.kernel.errors import BusyError, HubdeltaError, IndexNotFoundError, NotFoundError, StoreError, UsageError
from hubdelta.kernel.settings import Settings
from hubdelta.kernel.version import hubdelta_version
from hubdelta.web import api, security
from hubdelta.web.site import Site

STATIC = Path(__file__).parent / "static"
log = structlog.get_logger(__name__)


def status_of(e: HubdeltaError) -> int:
    """The HTTP status of one of hubdelta's errors: 404 not found, 400 bad input, 503 no index or busy, 409 the rest
    (a model known but not embedded, removed from the Hub: the request was fine, the state says no)."""
    if isinstance(e, NotFoundError):
        return 404
    if isinstance(e, UsageError):
        return 400
    if isinstance(e, (IndexNotFoundError, StoreError, BusyError)):
        return 503
    return 409


def error_body(e: HubdeltaError) -> dict[str, str]:
    return {"error": " ".join(e.message.split()), "fix": e.fix or "see /api/docs"}


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", "")


def create_app(settings: Settings, *, token: str | None = None) -> FastAPI:
    """The application over ``settings``' index; ``token``: every request must carry it (off loopback)."""
    site = Site.of(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        site.reader.close()

    # FastAPI's own docs pages load scripts from a CDN and start them inline: the CSP and an air-gapped site
    # forbid both, so /api/docs is a page of ours (pages.py) over the same OpenAPI description.
    app = FastAPI(title="hubdelta", version=hubdelta_version(), docs_url=None, redoc_url=None,
                  lifespan=lifespan,
                  openapi_url="/api/openapi.json",
                  description="Finetunes, adapters and merges navigable by behaviour: read-only.")  # fmt: skip
    app.state.site = site
    app.include_router(api.router)
    _pages(app)
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    _errors(app)
    _login(app, token)
    s = settings.serve
    limits = security.Limits(token, s.rate_per_s, s.burst, s.max_body_bytes)
    guarded: Any = security.Guard(app.build_middleware_stack(), limits)
    app.middleware_stack = guarded  # the guard wraps everything, error pages included
    return app


def _pages(app: FastAPI) -> None:
    from hubdelta.web import pages  # here, not at the top: pages uses this module's error mapping

    app.include_router(pages.router)
    app.state.error_page = pages.error_page


def _errors(app: FastAPI) -> None:
    def respond(request: Request, status: int, body: dict[str, str]) -> Response:
        page = getattr(app.state, "error_page", None)
        if page is not None and not _wants_json(request):
            return page(request, status, body)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(HubdeltaError)
    async def hubdelta_error(request: Request, e: HubdeltaError) -> Response:
        return respond(request, status_of(e), error_body(e))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> Response:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body", "path"))
        message = f"{where or 'request'}: {first.get('msg', 'invalid')}"
        return respond(request, 400, {"error": message[:300], "fix": HTTP_FIXES[400]})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> Response:
        return respond(request, e.status_code, {"error": str(e.detail), "fix": HTTP_FIXES.get(e.status_code, "")})

    @app.exception_handler(Exception)
    async def crashed(request: Request, e: Exception) -> Response:
        log.exception("serve.request_failed", path=request.url.path)
        return respond(request, 500, {"error": f"the server failed: {type(e).__name__}",
                                      "fix": "retry; if it persists, the server's log has the details"})  # fmt: skip


HTTP_FIXES = {
    400: "see /api/docs for the parameters",
    404: "see /api/docs for the routes",
    405: "see /api/docs for the methods each route takes",
    413: "send less",
}


def _login(app: FastAPI, token: str | None) -> None:
    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given, target = form.get("token", [""])[0], local_target(form.get("next", ["/"])[0])
        if token is None:
            return RedirectResponse(target, status_code=303)
        if not hmac.compare_digest(given.encode(), token.encode()):
            return RedirectResponse(f"/login?failed=1&next={quote(target, safe='')}", status_code=303)
        done = RedirectResponse(target, status_code=303)
        done.set_cookie(security.COOKIE, security.session_value(token), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", max_age=30 * 86400)  # fmt: skip
        return done


def local_target(target: str) -> str:
    """A redirect target on this site only (``/path``), never another host (``//evil``, ``https://...``)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"
