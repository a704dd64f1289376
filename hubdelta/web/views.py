"""What each page shows, gathered from the query library the CLI uses (``show``, ``similar``, ``status``) and the
read-only index: plain data for the templates, no HTML here.

Every function raises the library's own errors (``NotFoundError``, ``UsageError``, ``HubdeltaError``): the pages
turn them into a page with the message and the fix. Model-derived strings pass through untouched: escaping is
the templates' job (autoescape), and only there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubdelta.index.records import Relation
from hubdelta.index.selectors import by_metadata
from hubdelta.kernel.errors import NotFoundError, UsageError
from hubdelta.query.api import Shown, check_relation, cluster_names, show, similar
from hubdelta.query.records import Neighbor
from hubdelta.query.status import status
from hubdelta.web.site import Site

NEIGHBOURS = 10
# The files a report folder holds (hubdelta.report.render): only these are served, by name, never a path.
REPORT_FILE = re.compile(r"^(report\.md|report\.html|map-[A-Za-z0-9._-]+\.png)$")


@dataclass(frozen=True)
class NeighbourFilters:
    """The model page's neighbour filter form, as GET parameters: structured values, never SQL."""

    relation: str | None = None
    license: str | None = None
    min_downloads: int = 0

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> NeighbourFilters:
        """The filters of a query string (empty fields mean "any").

        Raises:
            UsageError: an unknown relation, or min downloads that is not a whole number >= 0.
        """
        relation = check_relation(params.get("relation", "").strip() or None)
        license_ = params.get("license", "").strip() or None
        raw = params.get("min_downloads", "").strip() or "0"
        if not raw.isdigit() or len(raw) > 12:
            raise UsageError("min_downloads", f"{raw[:40]!r} is not a whole number >= 0", fix="e.g. min_downloads=100")
        return cls(relation, license_, int(raw))

    @property
    def active(self) -> bool:
        return self.relation is not None or self.license is not None or self.min_downloads > 0


@dataclass(frozen=True)
class ModelPage:
    shown: Shown
    neighbors: list[Neighbor]
    filters: NeighbourFilters
    space_id: str | None  # the space the neighbours were searched in
    cluster: tuple[str, str] | None  # (space id, cluster name) in the latest report
    relations: list[str]

    @property
    def tags(self) -> list[str]:
        """The Hub tags, less ``base_model:`` ones (the base is shown on its own)."""
        return [t for t in self.shown.record.model.tags if not t.startswith("base_model:")]


def _cluster_of(site: Site, repo: str, spaces: list[str], prefer: str | None) -> tuple[str, str] | None:
    """The model's cluster in the latest report (what the map colours it by and what ``similar`` names for its
    neighbours), in ``prefer``'s space first: (space id, cluster name), or None."""
    with site.reading() as index:
        for space_id in sorted(spaces, key=lambda s: s != prefer):
            name = cluster_names(index, space_id).get(repo)
            if name is not None:
                return space_id, name
    return None


def model_page(site: Site, repo: str, params: Mapping[str, str]) -> ModelPage:
    """The model page: its record (``show``), its top neighbours under the filters (``similar``), its cluster
    (from the site's cache of the maps).

    Raises:
        NotFoundError: the repo is not in the index (with close ids).
        UsageError: a malformed filter.
    """
    filters = NeighbourFilters.parse(params)
    # The record and vectors; the neighbours are searched below, filtered.
    shown = show(site.settings, repo, reader=site.reader, neighbors=False)
    neighbors: list[Neighbor] = []
    space_id = None
    if shown.vectors and not shown.hidden:
        selector = None
        if filters.license is not None or filters.min_downloads:
            licenses = None if filters.license is None else [filters.license]
            selector = by_metadata(licenses=licenses, min_downloads=filters.min_downloads)
        answer = similar(
            site.settings, repo, k=NEIGHBOURS, relation=filters.relation, filters=selector, reader=site.reader
        )
        neighbors, space_id = answer.neighbors, answer.space_id
    cluster = _cluster_of(site, repo, [v.space_id for v in shown.vectors], space_id)
    return ModelPage(shown, neighbors, filters, space_id, cluster, [r.value for r in Relation])


def spaces(site: Site) -> dict[str, Any]:
    """The spaces with their counts (``status``), and which have a map."""
    answer = status(site.settings, daemon=None, reader=site.reader)
    with site.reading() as index:
        heads = index.layouts.heads()
    return {"status": answer, "spaces": answer.spaces, "maps": {s: h.n for s, h in heads.items()}}


def space(site: Site, space_id: str) -> dict[str, Any]:
    """The map page's frame (the points themselves come from ``/api/spaces/<id>/layout``).

    Raises:
        NotFoundError: no such space.
    """
    with site.reading() as index:
        known = index.vectors.spaces()
        if space_id not in known:
            raise NotFoundError(space_id, "no such space", fix=f"use one of: {', '.join(known) or 'none yet'}")
        head = index.layouts.heads().get(space_id)
        count = index.vectors.count(space_id)
    params = known[space_id].params
    base = f"family {params['family']}" if params.get("family") else str(params.get("base_repo", ""))
    return {"space_id": space_id, "base": base, "vectors": count, "head": head}


def reports(site: Site) -> list[dict[str, Any]]:
    """Every report, newest first, without member lists."""
    with site.reading() as index:
        return index.reports.heads()


def report(site: Site, report_id: str) -> dict[str, Any]:
    """One report: its clusters by space, its summary, the files it wrote that can be opened, and the spaces
    whose map shows this report's clusters (``on_map``: a map is coloured by the report its layout was computed
    from, the latest; an older report's cluster names are not on it).

    Raises:
        NotFoundError: no such report.
    """
    with site.reading() as index:
        stored = index.reports.get(report_id)
        heads = index.layouts.heads()
    if stored is None:
        raise NotFoundError(report_id, "no such report", fix="pick one from /reports")
    names = [str(n) for n in stored.summary.get("files", []) if REPORT_FILE.match(str(n))]
    files = [n for n in names if (Path(stored.files) / n).is_file()]
    spaces = {s: sorted(cs, key=lambda c: (-len(c.members), c.name)) for s, cs in sorted(stored.clusters.items())}
    on_map = {s for s, head in heads.items() if head.report_id == stored.report_id}
    return {"report": stored, "spaces": spaces, "files": files, "on_map": on_map}


def report_file(site: Site, report_id: str, name: str) -> Path:
    """A file of a report's folder, by its bare name (``report.html``, ``map-<space>.png``, ...).

    Raises:
        NotFoundError: no such report, a name that is not one of its files, or a file gone from disk.
    """
    if not REPORT_FILE.match(name):
        raise NotFoundError(name, "not a report file", fix="open the files listed on the report's page")
    with site.reading() as index:
        stored = index.reports.get(report_id)
    if stored is None:
        raise NotFoundError(report_id, "no such report", fix="pick one from /reports")
    path = Path(stored.files) / name
    if not path.is_file():
        # The folder is a path on the server's disk: not the client's business.
        raise NotFoundError(name, "is no longer on the server", fix="the report's files were moved or cleaned up")
    return path
