"""``run_report``: what ``hubdelta report`` (and the nightly job) call."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hubdelta.index.door import open_writer
from hubdelta.index.reports import StoredCluster, StoredReport
from hubdelta.index.store import Index
from hubdelta.kernel.settings import Settings
from hubdelta.report import labels, window
from hubdelta.report.build import ReportParams, build_report
from hubdelta.report.layout import refresh_after_writes
from hubdelta.report.records import ChangeKind, Report
from hubdelta.report.render import render

NEW_IDS_STORED = 1000  # new model ids kept in the stored summary (the files list them all)


def reports_dir(settings: Settings) -> Path:
    return settings.home / "reports"


def run_report(
    settings: Settings,
    *,
    since: timedelta | None = None,
    out: Path | None = None,
    command: str = "hubdelta report",
    now: datetime | None = None,
    params: ReportParams | None = None,
) -> Report:
    """Build the report since the last one, write its files, and store it for the next one to compare against.

    Args:
        settings: where the index and the reports folder are.
        since: the window to call "new" (default: since the previous report, or 24 hours for the first).
        out: the folder for the files (default: ``<home>/reports/<report id>/``).
        command: the command line, recorded in the writer lock.
        now: the report's time (default: the current UTC time); for tests and replays.
        params: how to cluster (defaults: ``ReportParams()``).

    Returns:
        The report, with the paths of its files.

    Raises:
        IndexLockedError: another writer (a crawl, an embed run) holds the index.
        MissingDependencyError: scikit-learn or matplotlib is missing (``pip install -e '.[report]'``).
    """
    now = now or datetime.now(UTC)
    with open_writer(settings, command) as index:
        # New models' suggested labels are shown in the report: refreshed first (never failing the report). A large
        # space's first whole labelling (minutes at 1M vectors) is left to `hubdelta labels` and the next embed run.
        labels.refresh_after_writes(settings, command, index=index, whole_max=labels.REPORT_WHOLE_MAX)
        previous = index.reports.latest()
        start = window.resolve_since(now, since, previous.created_at if previous else None)
        taken = _taken_ids(settings, previous)
        report = build_report(index, since=start, now=now, previous=previous,
                              report_id=window.report_id(now, taken), params=params)  # fmt: skip
        folder = out or reports_dir(settings) / report.report_id
        # Files first, then the row: a run killed in between leaves files the next report simply does not
        # compare against, never a stored report whose files are missing.
        files = render(report, folder, settings.serve.base_url)
        report = replace(report, out_dir=folder, files=files)
        _store(index, report)
        # The maps of `hubdelta serve` show the new clusters: recomputed under the lock held (never failing the
        # report, which is stored).
        refresh_after_writes(settings, command, index=index)
    return report


def _taken_ids(settings: Settings, previous: StoredReport | None) -> set[str]:
    """Ids that a new report must not reuse: the last stored one and every folder under reports/."""
    folder = reports_dir(settings)
    taken = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return taken | ({previous.report_id} if previous else set())


def _store(index: Index, report: Report) -> None:
    clusters: dict[str, tuple[StoredCluster, ...]] = {s.space_id: () for s in report.spaces}
    for c in report.clusters:
        clusters[c.space_id] = (*clusters[c.space_id], StoredCluster(c.id, c.name, c.members))
    index.reports.put(
        StoredReport(
            report_id=report.report_id,
            created_at=report.created_at,
            since=report.since,
            files=str(report.out_dir),
            clusters=clusters,
            params=report.params,
            summary=summary(report),
        )
    )


def summary(report: Report) -> dict[str, object]:
    """What the stored row says about a report without reading its files (``hubdelta status``, the daemon)."""
    return {
        "new_models": len(report.new_models),
        "new_model_ids": [m.repo_id for m in report.new_models[:NEW_IDS_STORED]],
        "clusters": len(report.clusters),
        "changes": {k.value: len(report.changes_of(k)) for k in ChangeKind},
        "failures": sum(f.count for f in report.failures),
        "spaces": {
            s.space_id: {
                "vectors": s.vectors,
                "clustered": s.clustered,
                "method": s.method,
                "copy_groups": len(s.copy_groups),
                "copies_reused": s.copies_reused,
                "bytes_not_downloaded": s.bytes_not_downloaded,
            }
            for s in report.spaces
        },
        "next_cluster": report.next_cluster,
        "previous_id": report.previous_id,
        "files": [Path(p).name for p in report.files],
    }
