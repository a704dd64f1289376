"""The pages of ``hubdelta serve``: server-rendered HTML (Jinja2, autoescape on) over the query library.

Model-derived strings (cards, repo ids, tags, cluster names) are untrusted: a card can hold HTML. They reach the
page only through autoescaped template expressions, and scripts only as data-* attributes or /api answers read
with ``textContent``; the CSP forbids inline scripts and styles, so every script and style is a static file.
An error of the library (an unknown repo, a bad filter) becomes a page with its message and fix, with the
status code an API client would get.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from hubdelta.kernel.errors import HubdeltaError
from hubdelta.web import apidoc, views
from hubdelta.web.app import error_body, local_target, status_of
from hubdelta.web.site import Site

router = APIRouter(include_in_schema=False)  # the OpenAPI description is the JSON API's

TEMPLATES = Path(__file__).resolve().parent / "templates"
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,  # every template, whatever its name: model-derived strings are untrusted
    undefined=jinja2.StrictUndefined,  # a misspelt variable fails the page instead of printing nothing
    trim_blocks=True,
    lstrip_blocks=True,
)
templates = Jinja2Templates(env=_env)
SEARCH_LIMIT = 50

# A report's own HTML carries its style inline and its maps as data: URLs, and no script: this policy lets it
# look right and run nothing.
REPORT_HTML_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data: 'self'; frame-ancestors 'none'"


def _root(request: Request) -> str:
    """Where the app is mounted (a reverse proxy's prefix), for links: "" at the root."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _site(request: Request) -> Site:
    site: Site = request.app.state.site
    return site


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    """``name`` rendered with ``context``, plus what every page uses (the mount point, for links)."""
    base = {"root": _root(request), "path": request.url.path}
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


def error_page(request: Request, status_code: int, body: dict[str, str]) -> HTMLResponse:
    """An error as a page (``body``: the API's ``{"error", "fix"}``): what went wrong and the fix."""
    title = {404: "Not found", 400: "Bad request", 503: "Index unavailable"}.get(status_code, "Cannot do that")
    context = {"title": title, "code": status_code, "message": body.get("error", ""), "fix": body.get("fix", "")}
    return render(request, "error.html", context, status_code)


def library_error(request: Request, e: HubdeltaError) -> HTMLResponse:
    """A refusal of the query library as a page, with the status code the API gives it."""
    return error_page(request, status_of(e), error_body(e))


def page(request: Request, name: str, build: Callable[[], dict[str, Any]]) -> HTMLResponse:
    """``name`` with the context ``build`` gathers, or the error page when the library refuses."""
    try:
        context = build()
    except HubdeltaError as e:
        return library_error(request, e)
    return render(request, name, context)


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    from hubdelta.query.status import status

    site = _site(request)
    return page(request, "home.html", lambda: {"status": status(site.settings, daemon=None, reader=site.reader)})


@router.get("/search", response_model=None)
def search(request: Request, q: str = Query("", max_length=200)) -> Response:
    """Repo ids containing ``q`` (the search box without JavaScript); an exact id goes straight to its page."""
    try:
        matches = _site(request).completer.complete(q, SEARCH_LIMIT) if q.strip() else []
    except HubdeltaError as e:
        return library_error(request, e)
    if q.strip() in matches:
        return RedirectResponse(f"{_root(request)}/models/{quote(q.strip())}", 303)
    return render(request, "search.html", {"q": q, "matches": matches, "limit": SEARCH_LIMIT})


@router.get("/models/{repo_id:path}", response_class=HTMLResponse)
def model(request: Request, repo_id: str) -> HTMLResponse:
    params = dict(request.query_params)
    return page(request, "model.html", lambda: {"m": views.model_page(_site(request), repo_id, params)})


@router.get("/spaces", response_class=HTMLResponse)
def spaces(request: Request) -> HTMLResponse:
    return page(request, "spaces.html", lambda: views.spaces(_site(request)))


@router.get("/spaces/{space_id}", response_class=HTMLResponse)
def space_map(request: Request, space_id: str, focus: str = "", cluster: str = "") -> HTMLResponse:
    """The interactive map (static/map.js draws it from /api/spaces/<id>/layout and layout.bin)."""
    return page(request, "space.html",
                lambda: {**views.space(_site(request), space_id), "focus": focus, "cluster": cluster})  # fmt: skip


@router.get("/reports", response_class=HTMLResponse)
def reports(request: Request) -> HTMLResponse:
    return page(request, "reports.html", lambda: {"reports": views.reports(_site(request))})


@router.get("/reports/{report_id}", response_class=HTMLResponse)
def report(request: Request, report_id: str) -> HTMLResponse:
    return page(request, "report.html", lambda: views.report(_site(request), report_id))


@router.get("/reports/{report_id}/files/{name}", response_model=None)
def report_file(request: Request, report_id: str, name: str) -> Response:
    """One of a report's own files (report.html, report.md, map-<space>.png), by bare name."""
    try:
        path = views.report_file(_site(request), report_id, name)
    except HubdeltaError as e:
        return library_error(request, e)
    if name.endswith(".html"):
        return FileResponse(path, media_type="text/html; charset=utf-8",
                            headers={"Content-Security-Policy": REPORT_HTML_CSP})  # fmt: skip
    media = "text/markdown; charset=utf-8" if name.endswith(".md") else "image/png"
    return FileResponse(path, media_type=media)


@router.get("/api/docs", response_class=HTMLResponse)
def api_docs(request: Request) -> HTMLResponse:
    """The JSON API's routes and parameters, from the app's own OpenAPI description (FastAPI's Swagger page
    needs a CDN and an inline script: neither passes the CSP, nor an air gap)."""
    openapi = request.app.openapi()
    return render(request, "api_docs.html", {"info": openapi.get("info", {}), "routes": apidoc.routes(openapi)})


def login_page(request: Request, *, failed: bool = False, next_url: str = "/", status_code: int = 200) -> Response:
    """The login form; the app's POST /login checks the token, sets the cookie and sends a failed try back here
    with ``failed=1``."""
    return render(request, "login.html", {"failed": failed, "next": local_target(next_url)}, status_code)


@router.get("/login", response_model=None)
def login(request: Request, next_url: str = Query("/", alias="next", max_length=2000), failed: int = 0) -> Response:
    return login_page(request, failed=bool(failed), next_url=next_url)
