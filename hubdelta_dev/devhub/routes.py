"""Hub endpoints over one snapshot: request in, :class:`Response` out. No sockets here."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlencode

from hubdelta_dev.devhub import blobs, listing, payloads
from hubdelta_dev.devhub.catalog import RepoRecord, Snapshot

RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
MAIN_REVS = ("main", "refs/heads/main", "refs%2Fheads%2Fmain")


@dataclass(frozen=True)
class Route:
    """What a path addresses."""

    kind: str  # list | model_info | tree | paths_info | resolve | other
    bucket: str  # api | resolvers | pages
    repo_id: str | None = None
    revision: str | None = None
    path: str = ""


@dataclass(frozen=True)
class Request:
    """The parts of an HTTP request the endpoints read."""

    method: str
    route: Route
    params: Mapping[str, list[str]]
    headers: Mapping[str, str]  # lower-case names
    base_url: str  # scheme://host:port the client used
    authorized: bool  # carries a token devhub was told to accept
    has_token: bool


@dataclass(frozen=True)
class FileBody:
    """Bytes ``[start, end)`` of a repo file, streamed."""

    entry: blobs.FileEntry
    start: int
    end: int

    def chunks(self) -> Iterator[bytes]:
        src = self.entry.source
        if isinstance(src, bytes):
            yield src[self.start : self.end]
        elif isinstance(src, blobs.VirtualBlob):
            yield from src.read(self.start, self.end)
        else:
            with src.open("rb") as f:
                f.seek(self.start)
                left = self.end - self.start
                while left > 0 and (chunk := f.read(min(blobs.CHUNK, left))):
                    left -= len(chunk)
                    yield chunk


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | FileBody = b""

    @property
    def length(self) -> int:
        return len(self.body) if isinstance(self.body, bytes) else self.body.end - self.body.start


def parse_route(raw_path: str) -> Route:
    """Classify a (percent-encoded) path; segments are decoded after splitting, as the client quotes them."""
    segs = [unquote(s) for s in raw_path.strip("/").split("/")] if raw_path.strip("/") else []
    if segs[:2] == ["api", "models"]:
        rest = segs[2:]
        if not rest:
            return Route("list", "api")
        repo_id, tail = "/".join(rest[:2]), rest[2:]
        if not tail:
            return Route("model_info", "api", repo_id)
        if tail[0] == "revision" and len(tail) == 2:
            return Route("model_info", "api", repo_id, tail[1])
        if tail[0] == "tree" and len(tail) >= 2:
            return Route("tree", "api", repo_id, tail[1], "/".join(tail[2:]))
        if tail[0] == "paths-info" and len(tail) == 2:
            return Route("paths_info", "api", repo_id, tail[1])
        return Route("other", "api")
    for offset in (0, 1):  # /{repo}/resolve/... and /models/{repo}/resolve/...
        s = segs[offset:]
        if (offset == 0 or segs[0] == "models") and len(s) >= 5 and s[2] == "resolve":
            return Route("resolve", "resolvers", f"{s[0]}/{s[1]}", s[3], "/".join(s[4:]))
    return Route("other", "api" if segs[:1] == ["api"] else "pages")


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    # default=str: YAML front matter may hold dates, which JSON cannot encode natively.
    body = json.dumps(data, separators=(",", ":"), default=str).encode()
    return Response(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body)


def error(status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None) -> Response:
    """An error the client maps by ``X-Error-Code`` (see huggingface_hub.utils.hf_raise_for_status)."""
    extra = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {}), **(headers or {})}
    return json_response({"error": message}, status, extra)


def _access(repo: RepoRecord | None, req: Request, repo_id: str, download: bool) -> Response | None:
    """None when the request may proceed, else the Hub's refusal."""
    if repo is None or (repo.private and not req.authorized):
        # The Hub answers 401 to anonymous callers and 404 otherwise; both carry RepoNotFound.
        status = 404 if repo is None or req.has_token else 401
        return error(status, "Repository not found", "RepoNotFound")
    if download and repo.gated and not req.authorized:
        msg = f"Access to model {repo_id} is restricted. You must have access to it and be authenticated."
        return error(403 if req.has_token else 401, msg, "GatedRepo")
    return None


def _revision(repo: RepoRecord, rev: str | None) -> Response | None:
    if rev is None or rev in MAIN_REVS or rev == repo.sha:
        return None
    return error(404, f"Invalid rev id: {rev}", "RevisionNotFound")


def handle(req: Request, snap: Snapshot, page_size: int) -> Response:
    """Answer one Hub request from ``snap``."""
    route = req.route
    allowed = {"resolve": ("GET", "HEAD"), "paths_info": ("POST",)}.get(route.kind, ("GET",))
    if route.kind == "other" or req.method not in allowed:
        return error(404, f"Cannot {req.method} {route.kind} path", None)
    if route.kind == "list":
        return list_models(req, snap, page_size)
    repo = snap.repos.get(route.repo_id or "")
    refused = _access(repo, req, route.repo_id or "", download=route.kind == "resolve")
    if refused is not None or repo is None:
        return refused or error(404, "Repository not found", "RepoNotFound")
    bad_rev = _revision(repo, route.revision)
    if bad_rev is not None:
        return bad_rev
    if route.kind == "model_info":
        return model_info(req, repo, snap)
    if route.kind == "tree":
        return tree(req, repo, snap, page_size)
    if route.kind == "paths_info":
        return paths_info(req, repo, snap)
    return resolve(req, repo, snap)


def paths_info(req: Request, repo: RepoRecord, snap: Snapshot) -> Response:
    """``POST /api/models/{repo_id}/paths-info/{rev}`` (form ``paths=...&expand=...``): the tree entries of the
    asked paths (files with their LFS sha256, folders), in the tree's order; a path that is not there is left out."""
    wanted = set(req.params.get("paths", []))
    expand = listing.truthy(req.params.get("expand", ["false"])[-1])
    entries = payloads.tree_entries(repo, snap, "", recursive=True, expand=expand) or []
    return json_response([e for e in entries if e["path"] in wanted])


def list_models(req: Request, snap: Snapshot, page_size: int) -> Response:
    """``GET /api/models``: filtered, sorted, keyset-paginated; ``Link: <next>; rel="next"`` until the end."""
    try:
        query, options = listing.parse_list_params(req.params, req.authorized)
        bad = payloads.bad_expand(options["expand"], listing=True)
        if bad:
            return error(400, f"Invalid expand value(s) for the model list: {', '.join(bad)}")
        size = page_size if options["limit"] is None else max(1, min(int(options["limit"]), page_size))
        after = listing.decode_cursor(options["cursor"], query.sort) if options["cursor"] else None
    except (listing.QueryError, ValueError) as e:
        return error(400, str(e))
    ids, next_after = snap.index.page(query, after, size)
    fields = payloads.list_fields(options)
    model_id = not options["expand"]
    items = [payloads.model_json(snap.repos[i], snap, fields, model_id=model_id) for i in ids]
    headers = {}
    if next_after is not None:
        params = [(k, v) for k, vs in req.params.items() if k != "cursor" for v in vs]
        params.append(("cursor", listing.encode_cursor(query.sort, next_after)))
        headers["Link"] = f'<{req.base_url}/api/models?{urlencode(params)}>; rel="next"'
    return json_response(items, headers=headers)


def model_info(req: Request, repo: RepoRecord, snap: Snapshot) -> Response:
    """``GET /api/models/{repo_id}[/revision/{rev}]`` with ``expand``, ``blobs``, ``securityStatus``."""
    expand = list(req.params.get("expand", [])) + list(req.params.get("expand[]", []))
    bad = payloads.bad_expand(expand, listing=False)
    if bad:
        return error(400, f"Invalid expand value(s): {', '.join(bad)}")
    blobs_meta = listing.truthy(req.params.get("blobs", [None])[-1])
    fields = expand or payloads.INFO_DEFAULT
    data = payloads.model_json(repo, snap, fields, blobs_meta=blobs_meta, model_id=not expand)
    if listing.truthy(req.params.get("securityStatus", [None])[-1]):
        data["securityRepoStatus"] = {"scansDone": True, "filesWithIssues": []}
    return json_response(data)


def tree(req: Request, repo: RepoRecord, snap: Snapshot, page_size: int) -> Response:
    """``GET /api/models/{repo_id}/tree/{rev}[/{path}]``, offset-paginated with an opaque cursor."""
    recursive = listing.truthy(req.params.get("recursive", ["false"])[-1])
    expand = listing.truthy(req.params.get("expand", ["false"])[-1])
    entries = payloads.tree_entries(repo, snap, req.route.path.strip("/"), recursive=recursive, expand=expand)
    if entries is None:
        return error(404, f"{req.route.path} does not exist on 'main'", "EntryNotFound", {"X-Repo-Commit": repo.sha})
    try:
        cursor = req.params.get("cursor", [""])[-1]
        start = int(listing.decode_cursor(cursor, "tree")[0]) if cursor else 0
    except listing.QueryError as e:
        return error(400, str(e))
    headers = {}
    if start + page_size < len(entries):
        params = [(k, v) for k, vs in req.params.items() if k != "cursor" for v in vs]
        params.append(("cursor", listing.encode_cursor("tree", (start + page_size, ""))))
        base = f"{req.base_url}/api/models/{repo.id}/tree/{quote(req.route.revision or 'main', safe='')}"
        base += f"/{quote(req.route.path)}" if req.route.path else ""
        headers["Link"] = f'<{base}?{urlencode(params)}>; rel="next"'
    return json_response(entries[start : start + page_size], headers=headers)


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """A Range header as ``(start, end_exclusive)``; None to serve everything; "unsatisfiable" for a 416."""
    if not header or "," in header:
        return None
    m = RANGE_RE.match(header)
    if m is None:
        return None
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:
        n = int(last)
        return (max(0, size - n), size) if n > 0 and size > 0 else "unsatisfiable"
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    if start >= size or end <= start:
        return "unsatisfiable"
    return (start, end)


def _content_type(path: str) -> str:
    if path.endswith(".json"):
        return "application/json"
    if path.endswith((".md", ".txt", ".yml", ".yaml")):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


def resolve(req: Request, repo: RepoRecord, snap: Snapshot) -> Response:
    """``HEAD``/``GET /{repo_id}/resolve/{rev}/{path}``: the bytes, served directly (no CDN redirect)."""
    entry = snap.files(repo).get(req.route.path)
    if entry is None or blobs.escapes_repo(entry):  # never a byte from outside the repo, like a missing file
        return error(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": repo.sha})
    headers = {
        "ETag": f'"{entry.etag}"',
        "X-Repo-Commit": repo.sha,
        "Accept-Ranges": "bytes",
        "Content-Type": _content_type(entry.path),
        "Content-Disposition": f'inline; filename="{entry.path.rsplit("/", 1)[-1]}"',
    }
    if entry.lfs is not None:
        headers["X-Linked-Etag"] = f'"{entry.lfs.sha256}"'
        headers["X-Linked-Size"] = str(entry.size)
    span = parse_range(req.headers.get("range"), entry.size) if req.method == "GET" else None
    if span == "unsatisfiable":
        return error(416, "Requested range not satisfiable", None, {"Content-Range": f"bytes */{entry.size}"})
    if isinstance(span, tuple):
        headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{entry.size}"
        return Response(206, headers, FileBody(entry, span[0], span[1]))
    return Response(200, headers, FileBody(entry, 0, entry.size))
