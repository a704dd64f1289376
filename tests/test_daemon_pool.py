"""The daemon on the real pool: its children are discovered, embedded and reported; then the chemistry models
are published to devhub, and the next report lists them as new and the new cluster they form."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hubdelta.crawler.api import track
from hubdelta.index.door import open_reader
from hubdelta.index.reports import StoredReport
from hubdelta_dev.devhub.server import DevhubServer
from hubdelta_dev.pool.base import BASE_REPO_ID
from tests.helpers import Processes, drained, settings_for, start_daemon, stop_daemon, wait_for

HELD_BACK = "chemistry"
SCHEDULE = """
[daemon]
crawl_every_s = 2
embed_every_s = 1
embed_limit = 8
report_every_s = {report_every}
compact_every_s = 30
stop_timeout_s = 120
"""


def publish(pool: Path, root: Path, labels: dict[str, str], *, held_back: bool) -> list[str]:
    """Link the pool's repos into devhub's root (without the held-back domain when ``held_back``)."""
    lines = (pool / "hub" / "catalog.jsonl").read_text().splitlines()
    keep = [ln for ln in lines if not (held_back and labels.get(json.loads(ln)["id"]) == HELD_BACK)]
    if not held_back:  # published now: on the Hub a new repo is the newest one (the incremental crawl relies on it)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        entries = [json.loads(ln) for ln in keep]
        keep = [json.dumps({**e, "createdAt": now, "lastModified": now} if labels.get(e["id"]) == HELD_BACK else e)
                for e in entries]  # fmt: skip
    published = []
    for line in keep:
        repo = json.loads(line)["id"]
        target = root / repo
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(pool / "hub" / repo, target_is_directory=True)
        published.append(repo)
    tmp = root / ".catalog.tmp"
    tmp.write_text("\n".join(keep) + "\n")
    tmp.replace(root / "catalog.jsonl")  # devhub sees the whole new catalog or the old one
    return published


def latest(home: Path, url: str) -> StoredReport | None:
    try:
        with open_reader(settings_for(home, url)) as index:
            return index.reports.latest()
    except Exception:  # not created yet, or a migration/commit under way
        return None


@pytest.mark.pool
def test_the_daemon_reports_new_pool_models_and_the_cluster_they_form(
    pool: Path, tmp_path: Path, processes: Processes
) -> None:
    labels: dict[str, str] = json.loads((pool / "labels.json").read_text())
    chemistry = {r for r, d in labels.items() if d == HELD_BACK}
    root, home = tmp_path / "hub", tmp_path / "home"
    root.mkdir()
    publish(pool, root, labels, held_back=True)
    with DevhubServer(root) as hub:
        # Reports every 20 s: the crawl + embed of the held-back adapters may straddle two reports, so their new
        # models are collected over every report after publishing, and the last one must hold the new cluster.
        settings = settings_for(home, hub.url, SCHEDULE.format(report_every=20))
        track(settings, BASE_REPO_ID)
        proc = start_daemon(processes, home, hub.url)
        try:
            wait_for("the first pool models embedded", lambda: drained(home, hub.url), timeout=600, proc=proc)
            before = getattr(latest(home, hub.url), "report_id", None)
            wait_for("a report of the first models", lambda: _newer(latest(home, hub.url), before), timeout=120,
                     proc=proc)  # fmt: skip
            first = latest(home, hub.url)
            assert first is not None
            first_members = {m for cs in first.clusters.values() for c in cs for m in c.members}
            assert not first_members & chemistry
            named = {c.name for cs in first.clusters.values() for c in cs}
            assert {"math", "code", "legal", "medical"} <= {w for n in named for w in n.split(" / ")}, named
            publish(pool, root, labels, held_back=False)  # the chemistry models appear on the "Hub"
            seen: dict[str, StoredReport] = {}  # every report from now on
            wait_for("reports listing the chemistry models", lambda: _lists(latest(home, hub.url), seen, chemistry),
                     timeout=400, proc=proc)  # fmt: skip
            second = latest(home, hub.url)
        finally:
            err = stop_daemon(proc, timeout=180)
    assert proc.returncode == 0, err[-2000:]
    assert second is not None and second.summary["previous_id"] is not None
    print(f"\nreports after publishing: {len(seen)}")
    assert chemistry <= {r for report in seen.values() for r in report.summary["new_model_ids"]}
    previous_ids = {c.id for cs in first.clusters.values() for c in cs}
    new = [c for cs in second.clusters.values() for c in cs if c.id not in previous_ids]
    assert len(new) == 1, new  # exactly one newly formed cluster: the chemistry models
    assert HELD_BACK in new[0].name and len(set(new[0].members) & chemistry) >= 3, new[0]
    html = (Path(second.files) / "report.html").read_text()
    assert new[0].name in html and all(r in html for r in new[0].members)


def _newer(report: StoredReport | None, than: str | None) -> bool:
    return report is not None and report.report_id != than


def _lists(report: StoredReport | None, seen: dict[str, StoredReport], repos: set[str]) -> bool:
    if report is not None:
        seen[report.report_id] = report
    listed = {r for stored in seen.values() for r in stored.summary.get("new_model_ids", [])}
    return repos <= listed
