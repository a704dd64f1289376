"""Write a report's files: ``report.md``, a self-contained ``report.html`` and ``map-<space>.png`` per space.

The HTML has inline CSS and the maps as base64 ``data:`` URIs, and links nowhere: it can be mailed, archived
or opened offline and shows the same thing. Every model-derived string (repo ids, names, failure reasons) is
escaped, in HTML with ``html.escape`` and in markdown table cells by backslash-escaping.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial
from pathlib import Path
from urllib.parse import quote

from hubdelta.report.map import draw_map
from hubdelta.report.match import id_order
from hubdelta.report.records import ChangeKind, Cluster, ClusterChange, NewModel, Report, SpaceSummary

MEMBERS_SHOWN = 12  # per cluster in the tables; the JSON and the index keep them all
NEIGHBOURS_SHOWN = 5
COPY_GROUPS_SHOWN = 50  # per space; report --json has them all
NEW_SHOWN = 500  # new models listed in the files (a first report over a big index would list them all)

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
.meta { color: #666; } .summary { background: #f5f7fa; border-radius: 6px; padding: .6em 1em; }
table { border-collapse: collapse; width: 100%; margin: .6em 0; }
th, td { border-bottom: 1px solid #e5e5e5; padding: .35em .5em; text-align: left; vertical-align: top; }
th { background: #fafafa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, monospace; background: #f3f3f3; padding: 0 .25em;
       border-radius: 3px; }
.kind { font-weight: 600; } .new { color: #0a7d32; } .grown { color: #1f5fbf; } .shrunk { color: #b26a00; }
.dissolved { color: #a11; } .same { color: #666; }
img.map { max-width: 100%; border: 1px solid #e5e5e5; border-radius: 4px; }
.empty { color: #888; font-style: italic; }
"""


def when(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC")


def map_name(space_id: str) -> str:
    return f"map-{space_id}.png"


def render(report: Report, out_dir: Path, base_url: str = "") -> tuple[Path, ...]:
    """Write the report's files into ``out_dir`` (created if missing); each file appears whole or not at all.

    Returns:
        The paths written: report.md, report.html, then one map per space that has vectors.

    Raises:
        MissingDependencyError: matplotlib is not installed.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    maps = []
    for space_map in report.maps:
        if space_map.size:
            maps.append(_atomic(out_dir / map_name(space_map.space_id), partial(draw_map, space_map)))
    md = _atomic(out_dir / "report.md", lambda p: p.write_text(markdown(report), encoding="utf-8"))
    images = {p.name: p.read_bytes() for p in maps}
    page = _atomic(out_dir / "report.html", lambda p: p.write_text(to_html(report, images, base_url), encoding="utf-8"))
    return (md, page, *maps)


def _atomic(path: Path, write: Callable[[Path], object]) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


# ---- shared wording ----


def headline(report: Report) -> str:
    """One line: new models, clusters and what changed, failures."""
    kinds = {k: len(report.changes_of(k)) for k in ChangeKind}
    failures = sum(f.count for f in report.failures)
    return (
        f"{len(report.new_models)} new models; {len(report.clusters)} clusters ({kinds[ChangeKind.NEW]} new, "
        f"{kinds[ChangeKind.GROWN]} grown, {kinds[ChangeKind.SHRUNK]} shrunk, "
        f"{kinds[ChangeKind.DISSOLVED]} dissolved); {failures} failed or skipped models"
    )


def _cluster_label(report: Report, cluster_id: str | None, space_id: str) -> str:
    if cluster_id is None:
        return ""
    cluster = report.cluster(cluster_id, space_id)
    return f"{cluster_id} {cluster.name}" if cluster else cluster_id


def _shown(members: Iterable[str], limit: int = MEMBERS_SHOWN) -> tuple[list[str], int]:
    items = list(members)
    return items[:limit], max(0, len(items) - limit)


def _more_new(report: Report) -> str:
    return f"... and {len(report.new_models) - NEW_SHOWN} more (all in hubdelta report --json)."


def _space_clusters(report: Report, space_id: str) -> list[Cluster]:
    """A space's clusters, largest first (then by id number)."""
    return sorted((c for c in report.clusters if c.space_id == space_id), key=lambda c: (-c.size, id_order(c.id)))


def _change_of(report: Report, cluster: Cluster) -> ClusterChange | None:
    return next((c for c in report.changes if c.cluster_id == cluster.id and c.space_id == cluster.space_id), None)


def _delta(change: ClusterChange) -> str:
    parts = [f"{change.previous_size} → {change.size}"]
    if change.added:
        parts.append("+" + ", +".join(change.added[:MEMBERS_SHOWN]))
    if change.removed:
        parts.append("−" + ", −".join(change.removed[:MEMBERS_SHOWN]))
    parts.append(f"Jaccard {change.jaccard:.2f}")
    return "; ".join(parts)


# ---- markdown ----


def _md(text: str) -> str:
    """Text for a markdown table cell: no pipes, no newlines, no markup characters acting."""
    out = " ".join(str(text).split())
    for ch in "\\`*_[]<>|#":
        out = out.replace(ch, "\\" + ch)
    return out


def _md_code(text: str) -> str:
    return "`" + " ".join(str(text).replace("`", "'").replace("|", "\\|").split()) + "`"


def markdown(report: Report) -> str:
    """The report as markdown (maps referenced by file name, next to it)."""
    previous = f"previous report {report.previous_id}" if report.previous_id else "first report"
    lines = [
        f"# hubdelta report {report.report_id}",
        "",
        f"Created {when(report.created_at)}; new since {when(report.since)} ({previous}).",
        "",
        f"**{headline(report)}.**",
        "",
        f"## New models ({len(report.new_models)})",
        "",
    ]
    if report.new_models:
        lines += ["| model | relation | space | cluster | suggested labels | nearest established neighbours |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for m in report.new_models[:NEW_SHOWN]:
            near = ", ".join(f"{_md_code(n.repo_id)} {n.score:.3f}" for n in m.neighbors[:NEIGHBOURS_SHOWN])
            lines.append(f"| {_md_code(m.repo_id)} | {m.relation} | {m.space_id} | "
                         f"{_md(_cluster_label(report, m.cluster_id, m.space_id))} | {_md(suggested(m)) or '—'} | "
                         f"{near or '—'} |")  # fmt: skip
        if len(report.new_models) > NEW_SHOWN:
            lines += ["", _more_new(report)]
    else:
        lines.append("No new models.")
    new = report.changes_of(ChangeKind.NEW)
    lines += ["", f"## New clusters ({len(new)})", ""]
    lines += [_md_cluster_line(report, c) for c in new] or ["No new clusters."]
    moved = report.changes_of(ChangeKind.GROWN, ChangeKind.SHRUNK, ChangeKind.DISSOLVED)
    lines += ["", f"## Grown, shrunk and dissolved clusters ({len(moved)})", ""]
    lines += [_md_change_line(report, c) for c in moved] or ["No cluster changed size."]
    lines += ["", "## Clusters", ""]
    for space in report.spaces:
        clusters = _space_clusters(report, space.space_id)
        lines += [f"### {space.space_id} ({_md(space.base)})", "",
                  f"{space.vectors} models, {len(clusters)} clusters, {space.noise} unclustered.", ""]  # fmt: skip
        lines += _md_copies(space)
        if clusters:
            lines += ["| id | name | size | change | members |", "|---|---|---:|---|---|"]
            for c in clusters:
                shown, more = _shown(c.members)
                members = ", ".join(_md_code(m) for m in shown) + (f" and {more} more" if more else "")
                change = _change_of(report, c)
                kind = change.kind.value if change else ""
                lines.append(f"| {c.id} | {_md(c.name)} | {c.size} | {kind} | {members} |")
            lines.append("")
    lines += ["## Failures by reason", ""]
    if report.failures:
        lines += ["| status | reason | models |", "|---|---|---:|"]
        lines += [f"| {f.status} | {_md(f.reason)} | {f.count} |" for f in report.failures]
    else:
        lines.append("No failed or skipped models.")
    lines += ["", "## Maps", ""]
    for space_map in report.maps:
        if space_map.size:
            lines += [f"![map of {space_map.space_id}]({map_name(space_map.space_id)})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _md_cluster_line(report: Report, change: ClusterChange) -> str:
    cluster = report.cluster(change.cluster_id or "", change.space_id)
    assert cluster is not None  # a new-cluster change always names a current cluster
    shown, more = _shown(cluster.members)
    members = ", ".join(_md_code(m) for m in shown) + (f" and {more} more" if more else "")
    return f"- **{_md(cluster.name)}** ({cluster.id}, {cluster.space_id}, {cluster.size} models): {members}"


def _md_change_line(report: Report, change: ClusterChange) -> str:
    name = _cluster_label(report, change.cluster_id, change.space_id) or f"{change.previous_id} (gone)"
    delta = _delta(change) if change.kind != ChangeKind.DISSOLVED else f"{change.previous_size} members, dissolved"
    return f"- **{_md(name)}** ({change.space_id}) {change.kind.value}: {_md(delta)}"


# ---- html ----


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


class _Links:
    """Links into the live pages (``[serve] base_url``): a model's page, a cluster on its space's map; plain text
    when no base URL is set."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/")

    def _a(self, path: str, inner: str) -> str:
        return f'<a href="{_e(self.base + path)}">{inner}</a>' if self.base else inner

    def model(self, repo_id: str) -> str:
        return self._a(f"/models/{quote(repo_id)}", f"<code>{_e(repo_id)}</code>")

    def cluster(self, space_id: str, name: str) -> str:
        return self._a(f"/spaces/{quote(space_id)}?cluster={quote(name, safe='')}", f"<b>{_e(name)}</b>")


def _table(head: list[str], rows: list[list[str]], numeric: frozenset[int] = frozenset()) -> str:
    """An HTML table; cells are already-escaped HTML."""
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _codes(items: Iterable[str], links: _Links) -> str:
    shown, more = _shown(items)
    return ", ".join(links.model(m) for m in shown) + (f" and {more} more" if more else "")


def _kind(kind: ChangeKind) -> str:
    return f'<span class="kind {kind.value}">{kind.value}</span>'


def to_html(report: Report, images: dict[str, bytes], base_url: str = "") -> str:
    """The report as one self-contained HTML page; ``images`` maps a map's file name to its PNG bytes; with a
    ``base_url`` (the web service's), models and clusters link to their live pages."""
    links = _Links(base_url)
    live = f' <a href="{_e(links.base)}/reports/{quote(report.report_id)}">Live pages</a>.' if links.base else ""
    previous = f"previous report {report.previous_id}" if report.previous_id else "first report"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>hubdelta report {_e(report.report_id)}</title><style>{CSS}</style></head><body>",
        f"<h1>hubdelta report {_e(report.report_id)}</h1>",
        f'<p class="meta">Created {_e(when(report.created_at))}; new since {_e(when(report.since))} '
        f"({_e(previous)}).{live}</p>",
        f'<p class="summary">{_e(headline(report))}.</p>',
        _html_new_models(report, links),
        _html_new_clusters(report, links),
        _html_moved(report),
        _html_clusters(report, links),
        _html_failures(report),
        _html_maps(report, images),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _html_new_models(report: Report, links: _Links) -> str:
    out = f"<h2>New models ({len(report.new_models)})</h2>"
    if not report.new_models:
        return out + '<p class="empty">No new models.</p>'
    rows = []
    for m in report.new_models[:NEW_SHOWN]:
        near = "<br>".join(f"{links.model(n.repo_id)} {n.score:.3f}" + (f" ({_e(n.cluster)})" if n.cluster
                           else "") for n in m.neighbors[:NEIGHBOURS_SHOWN])  # fmt: skip
        rows.append([links.model(m.repo_id), _e(m.relation), _e(m.space_id),
                     _e(_cluster_label(report, m.cluster_id, m.space_id)), _e(suggested(m)) or "—",
                     near or "—"])  # fmt: skip
    more = f"<p>{_e(_more_new(report))}</p>" if len(report.new_models) > NEW_SHOWN else ""
    head = ["model", "relation", "space", "cluster", "suggested labels", "nearest established neighbours"]
    return out + _table(head, rows) + more


def suggested(m: NewModel) -> str:
    """``math, fewshot (confidence 0.81)``: a new model's suggested tags, or "" when it has none."""
    x = m.labels
    if x is None or not x.tags:
        return ""
    stale = ", stale: run hubdelta labels" if x.stale else ""
    return f"{', '.join(t.tag for t in x.tags[:3])} (confidence {x.confidence:.2f}{stale})"


def _html_new_clusters(report: Report, links: _Links) -> str:
    new = report.changes_of(ChangeKind.NEW)
    out = f"<h2>New clusters ({len(new)})</h2>"
    if not new:
        return out + '<p class="empty">No new clusters.</p>'
    rows = []
    for change in new:
        c = report.cluster(change.cluster_id or "", change.space_id)
        assert c is not None
        rows.append([_e(c.id), links.cluster(c.space_id, c.name), _e(c.space_id), str(c.size),
                     _codes(c.members, links)])  # fmt: skip
    return out + _table(["id", "name", "space", "size", "members"], rows, frozenset({3}))


def _html_moved(report: Report) -> str:
    moved = report.changes_of(ChangeKind.GROWN, ChangeKind.SHRUNK, ChangeKind.DISSOLVED)
    out = f"<h2>Grown, shrunk and dissolved clusters ({len(moved)})</h2>"
    if not moved:
        return out + '<p class="empty">No cluster changed size.</p>'
    rows = []
    for c in moved:
        name = _cluster_label(report, c.cluster_id, c.space_id) or f"{c.previous_id} (gone)"
        delta = _delta(c) if c.kind != ChangeKind.DISSOLVED else f"{c.previous_size} members, dissolved"
        rows.append([f"<b>{_e(name)}</b>", _e(c.space_id), _kind(c.kind), _e(delta)])
    return out + _table(["cluster", "space", "change", "detail"], rows)


def _html_clusters(report: Report, links: _Links) -> str:
    out = ["<h2>Clusters</h2>"]
    for space in report.spaces:
        clusters = _space_clusters(report, space.space_id)
        out.append(f"<h3>{_e(space.space_id)} <small>({_e(space.base)})</small></h3>")
        out.append(f"<p>{space.vectors} models, {len(clusters)} clusters, {space.noise} unclustered.</p>")
        out += [f"<p>{_e(line)}</p>" for line in copies_lines(space)]
        rows = []
        for c in clusters:
            change = _change_of(report, c)
            rows.append([_e(c.id), links.cluster(space.space_id, c.name), str(c.size),
                         _kind(change.kind) if change else "", _codes(c.members, links)])  # fmt: skip
        if rows:
            out.append(_table(["id", "name", "size", "change", "members"], rows, frozenset({2})))
    return "\n".join(out)


def _html_failures(report: Report) -> str:
    out = "<h2>Failures by reason</h2>"
    if not report.failures:
        return out + '<p class="empty">No failed or skipped models.</p>'
    rows = [[_e(f.status), _e(f.reason), str(f.count)] for f in report.failures]
    return out + _table(["status", "reason", "models"], rows, frozenset({2}))


def _html_maps(report: Report, images: dict[str, bytes]) -> str:
    out = ["<h2>Maps</h2>"]
    for space_map in report.maps:
        png = images.get(map_name(space_map.space_id))
        if png is None:
            continue
        data = base64.b64encode(png).decode("ascii")
        out.append(f"<h3>{_e(space_map.space_id)}</h3>")
        out.append(f'<img class="map" alt="map of {_e(space_map.space_id)}" src="data:image/png;base64,{data}">')
    return "\n".join(out)


def copies_lines(space: SpaceSummary) -> list[str]:
    """What a report says of a space's copies: the count, the bytes not downloaded, each group (plain text)."""
    if not space.copy_groups and not space.copies_reused:
        return []
    near = "" if space.near_checked else " (equal weight files only: too many models to compare vectors)"
    lines = [f"Copies: {len(space.copy_groups)} groups{near}; {space.copies_reused} models reused a vector without "
             f"download, {space.bytes_not_downloaded:,} bytes not downloaded."]  # fmt: skip
    for group in space.copy_groups[:COPY_GROUPS_SHOWN]:
        shown, more = _shown(group[1:])
        lines.append(f"{group[0]}: " + ", ".join(shown) + (f" and {more} more" if more else ""))
    if len(space.copy_groups) > COPY_GROUPS_SHOWN:
        lines.append(f"and {len(space.copy_groups) - COPY_GROUPS_SHOWN} more groups")
    return lines


def _md_copies(space: SpaceSummary) -> list[str]:
    lines = copies_lines(space)
    return [lines[0], "", *(f"- {_md(line)}" for line in lines[1:]), ""] if lines else []
