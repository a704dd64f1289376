"""A report and the suggested labels of a large space: what it leaves to ``hubdelta labels`` and how it says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from hubdelta.index.door import open_reader
from hubdelta.kernel.settings import Settings
from hubdelta.query.labels import read_labels
from hubdelta.report import labels as report_labels
from hubdelta.report import suggest
from hubdelta.report.api import run_report
from tests.helpers import REPORT_SPACE, PlantedPool, pool_names, settings_for

SPACE = REPORT_SPACE
H = timedelta(hours=1)
FOUR_DOMAINS = {
    n: d for dom in ("math", "code", "legal", "chemistry") for n, d in pool_names(dom, [1, 2, 3, 4, 5, 6]).items()
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, PlantedPool]:
    """A fresh home whose report counts a space of more than 5 vectors as large, and the planted pool."""
    monkeypatch.setattr(report_labels, "REPORT_WHOLE_MAX", 5)
    return settings_for(tmp_path / "home", "http://127.0.0.1:9"), PlantedPool()


def test_a_report_leaves_a_large_spaces_first_whole_labelling_to_hubdelta_labels(
    home: tuple[Settings, PlantedPool],
) -> None:
    settings, pool = home
    pool.put(settings, FOUR_DOMAINS, datetime.now(UTC) - 3 * H)
    with capture_logs() as logs:
        first = run_report(settings, command="test")
    assert len(first.new_models) == 24  # the report itself is whole
    said = [e for e in logs if e["event"] == "labels deferred"]
    assert [(e["space"], e["vectors"], e["log_level"]) for e in said] == [(SPACE, 24, "warning")]
    assert "hubdelta labels" in said[0]["fix"]
    with open_reader(settings) as index:
        assert SPACE not in index.labels.heads() and index.labels.get(SPACE, pool_names("math", [1])) == {}

    run = report_labels.refresh_labels(settings)  # what `hubdelta labels` runs: no deadline, no bound
    assert run.computed == {SPACE: 24} and run.full == {SPACE: True} and not run.deferred

    # Labelled once, a report refreshes it incrementally: three documented models far from the others (their
    # nearest change, nobody else's).
    far: dict[str, str | None] = {f"hubdelta-pool/smollm2-lora-legal-{s}": None for s in ("x", "y", "z")}
    pool.put(settings, far, datetime.now(UTC))
    with capture_logs() as logs:
        run_report(settings, command="test")
    assert not [e for e in logs if e["event"] == "labels deferred"]
    assert [e["whole"] for e in logs if e["event"] == "labels stored"] == [False]
    with open_reader(settings) as index:
        assert index.labels.heads()[SPACE].n == 27
        assert set(index.labels.get(SPACE, far)) == set(far)


def test_a_report_leaves_a_large_space_to_hubdelta_labels_when_most_of_it_would_be_relabelled(
    home: tuple[Settings, PlantedPool],
) -> None:
    settings, pool = home
    pool.put(settings, FOUR_DOMAINS, datetime.now(UTC) - 3 * H)
    run_report(settings, command="test")
    report_labels.refresh_labels(settings)
    # One more legal model: in this small space it comes closer to most models than their 10th neighbour, so the
    # refresh would recompute more than half of it, as costly as a first labelling.
    pool.put(settings, pool_names("legal", [7]), datetime.now(UTC))
    with capture_logs() as logs:
        report = run_report(settings, command="test")
    assert [(e["space"], e["vectors"]) for e in logs if e["event"] == "labels deferred"] == [(SPACE, 25)]
    assert [m.labels for m in report.new_models] == [None]  # listed, not labelled
    with open_reader(settings) as index:
        assert index.labels.heads()[SPACE].n == 24  # nothing written
    assert report_labels.refresh_labels(settings).full == {SPACE: True}  # `hubdelta labels`: no bound


def test_a_report_leaves_the_relabelling_after_a_rule_change_and_shows_the_old_labels_as_stale(
    home: tuple[Settings, PlantedPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, pool = home
    pool.put(settings, pool_names("math", [1, 2, 3]) | pool_names("code", [1, 2, 3]), datetime.now(UTC) - 3 * H)
    run_report(settings, command="test")
    pool.put(settings, pool_names("legal", [1, 2, 3]), datetime.now(UTC))
    assert report_labels.refresh_labels(settings).computed == {SPACE: 9}  # labelled whole by this version's rule
    legal = pool_names("legal", [1, 2, 3])

    monkeypatch.setattr(suggest, "RULE", suggest.RULE + " next")  # a later version scores otherwise
    with capture_logs() as logs:
        report = run_report(settings, command="test")
    assert [e["space"] for e in logs if e["event"] == "labels deferred"] == [SPACE]
    shown = {m.repo_id: m.labels for m in report.new_models}
    assert set(shown) == set(legal)
    assert all(x is not None and x.tags and x.stale for x in shown.values())  # shown, but not as current
    assert report.out_dir is not None and "stale: run hubdelta labels" in (report.out_dir / "report.md").read_text()
    with open_reader(settings) as index:
        assert all(x.stale for x in read_labels(index, SPACE, legal).values())  # `show` and the API say so too

    assert report_labels.refresh_labels(settings).full == {SPACE: True}  # `hubdelta labels`: the new rule
    with open_reader(settings) as index:
        fresh = read_labels(index, SPACE, legal)
    assert set(fresh) == set(legal) and not any(x.stale for x in fresh.values())
