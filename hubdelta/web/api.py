"""``/api``: the index as JSON, read-only. Every answer goes through the CLI's serializer
(:mod:`hubdelta.query.serialize`), so ``--json`` and the API give the same fields."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from hubdelta.daemon.state import daemon_health
from hubdelta.kernel.errors import BusyError, ConflictError, NotFoundError
from hubdelta.query.api import show, similar
from hubdelta.query.export import export
from hubdelta.query.serialize import plain, shown_doc
from hubdelta.query.status import space_statuses, status
from hubdelta.web import maps
from hubdelta.web.params import K_MAX, TEXT_MAX, Filters, VectorQuery, check_repo_id, filters_query
from hubdelta.web.site import Site

router = APIRouter(prefix="/api")
EXPORTS = threading.BoundedSemaphore(1)
EXPORT_WAIT_S = 30.0
Text = Annotated[str, Query(max_length=TEXT_MAX)]
K = Annotated[int, Query(ge=1, le=K_MAX, description="how many neighbours")]
POINTS = r"^\d{1,9}(,\d{1,9}){0,99}$"  # up to 100 point numbers
EXPORT_TYPES = {"parquet": "application/vnd.apache.parquet", "npz": "application/octet-stream", "csv": "text/csv"}


def site_of(request: Request) -> Site:
    site: Site = request.app.state.site
    return site


SiteDep = Annotated[Site, Depends(site_of)]


@router.get("/status", summary="The index at a glance (hubdelta status --json)")
def api_status(site: SiteDep) -> Any:
    return plain(status(site.settings, daemon=daemon_health(site.settings.home), reader=site.reader))


@router.get("/spaces", summary="Every space: base, dimension, vectors")
def api_spaces(site: SiteDep) -> Any:
    with site.reading() as index:
        return {"spaces": plain(space_statuses(index))}


@router.get("/models/{repo_id:path}", summary="A model's record, vectors, neighbours, labels (hubdelta show --json)")
def api_model(repo_id: str, site: SiteDep, k: Annotated[int, Query(ge=1, le=K_MAX)] = 10) -> Any:
    return shown_doc(show(site.settings, check_repo_id(repo_id), k=k, reader=site.reader))


@router.get("/similar", summary="The models nearest to a repo (hubdelta similar --json)")
def api_similar(site: SiteDep, repo: Text, filters: Annotated[Filters, Depends(filters_query)],
                space: Text | None = None, k: K = 10, show_all: Annotated[bool, Query(alias="all")] = False,
                ) -> Any:  # fmt: skip
    found = similar(site.settings, check_repo_id(repo), k=k, space=space, filters=filters.selector(),
                    relation=filters.relation.value if filters.relation else None, reader=site.reader,
                    show_all=show_all)  # fmt: skip
    return {**plain(found), "filters": filters.described()}


@router.post("/similar", summary="The models nearest to a posted vector")
def api_similar_vector(site: SiteDep, body: VectorQuery) -> Any:
    found = similar(site.settings, vector=body.array(), k=body.k, space=body.space, filters=body.selector(),
                    relation=body.relation.value if body.relation else None, reader=site.reader)  # fmt: skip
    return {**plain(found), "filters": body.described()}


@router.get("/complete", summary="Repo ids containing the text, for a search box")
def api_complete(site: SiteDep, q: Text, limit: Annotated[int, Query(ge=1, le=50)] = 10) -> Any:
    return {"repo_ids": site.completer.complete(q, limit)}


@router.get("/reports", summary="Every report, newest first")
def api_reports(site: SiteDep) -> Any:
    with site.reading() as index:
        return {"reports": plain(index.reports.heads())}


@router.get("/reports/{report_id}", summary="One report: its clusters by space and its summary")
def api_report(report_id: str, site: SiteDep) -> Any:
    with site.reading() as index:
        report = index.reports.get(report_id)
    if report is None:
        raise NotFoundError("report", f"no report {report_id[:TEXT_MAX]!r}", fix="see /api/reports")
    doc = plain(report)
    doc.pop("files", None)  # a path on the server's disk: not the client's business
    return doc


@router.get("/clusters", summary="The latest report's clusters of a space")
def api_clusters(site: SiteDep, space: Text) -> Any:
    with site.reading() as index:
        if space not in index.vectors.spaces():
            raise NotFoundError("space", f"no space {space!r}", fix="see /api/spaces")
        report = index.reports.latest()
    clusters = [] if report is None else report.clusters.get(space, ())
    return {"space_id": space, "report_id": report and report.report_id, "clusters": plain(clusters)}


@router.get("/spaces/{space_id}/export", summary="A space's vectors and metadata as a file (hubdelta export)")
def api_export(space_id: str, site: SiteDep,
               format: Annotated[str, Query(pattern="^(parquet|npz|csv)$")] = "parquet") -> Any:  # fmt: skip
    # One export at a time: each writes the whole space to a temporary file (2.3 GB at a million 576-d vectors)
    # before it is sent, and a crowd of them must not fill the disk. The previous one's file is deleted just
    # after its last byte is sent, so a client asking again at once waits a moment rather than being refused.
    if not EXPORTS.acquire(timeout=EXPORT_WAIT_S):
        raise BusyError("another export is being written", fix="retry in a minute")
    folder = Path(tempfile.mkdtemp(prefix="hubdelta-export-"))
    out = folder / f"{space_id}.{format}"
    try:
        done = export(site.settings, out, fmt=format, space=space_id)
    except BaseException:
        _finished(folder)
        raise
    return FileResponse(done.path, media_type=EXPORT_TYPES[format], filename=out.name,
                        background=BackgroundTask(_finished, folder))  # fmt: skip


def _finished(folder: Path) -> None:
    """The export's file is sent (or failed): delete it, and let the next export run."""
    try:
        for f in folder.iterdir():
            f.unlink(missing_ok=True)
        folder.rmdir()
    finally:
        EXPORTS.release()


def _layout(request: Request, space_id: str, version: str | None = None) -> maps.PackedLayout:
    """The space's current map; with ``version`` (the one a page drew), a 409 when it has been replaced since:
    point numbers of another layout would name other models."""
    site = site_of(request)
    with site.reading() as index:
        packed = site.layouts.get(index, space_id)
    if version is not None and version != packed.version:
        raise ConflictError(f"the map of {space_id} was recomputed since this page drew it",
                            fix="reload the map (GET layout and layout.bin again)")  # fmt: skip
    return packed


Version = Annotated[str | None, Query(max_length=64, description="the layout version the page drew (409 if stale)")]


@router.get("/spaces/{space_id}/layout", summary="The map's description: points, clusters, bounds")
def api_layout(request: Request, space_id: str) -> Any:
    return _layout(request, space_id).meta


@router.get("/spaces/{space_id}/layout.bin", summary="The map's points, packed (see docs/web.md)")
def api_layout_bin(request: Request, space_id: str) -> Response:
    packed = _layout(request, space_id)
    return Response(packed.payload, media_type="application/octet-stream",
                    headers={"x-layout-version": packed.version, "cache-control": "no-cache"})  # fmt: skip


@router.get("/spaces/{space_id}/points", summary="Repo ids of map points, by number")
def api_points(request: Request, space_id: str, i: Annotated[str, Query(max_length=1100, pattern=POINTS)],
               v: Version = None) -> Any:  # fmt: skip
    wanted = [int(x) for x in i.split(",")][:100]
    return {"points": maps.points(_layout(request, space_id, v), wanted)}


@router.get("/spaces/{space_id}/position", summary="A model's point number on the map")
def api_position(request: Request, space_id: str, repo: Text, v: Version = None) -> Any:
    packed = _layout(request, space_id, v)
    i = maps.position_of(packed, repo)
    if i is None:
        raise NotFoundError(repo, f"is not on the map of {space_id}", fix="it may have no vector in this space yet")
    return {"i": i, "version": packed.version}


@router.get("/spaces/{space_id}/find", summary="Map points whose repo id contains the text")
def api_find(request: Request, space_id: str, q: Text, v: Version = None,
             limit: Annotated[int, Query(ge=1, le=maps.FIND_MAX)] = 1000) -> Any:  # fmt: skip
    return {"indices": maps.find(_layout(request, space_id, v), q, limit)}
