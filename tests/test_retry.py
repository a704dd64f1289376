"""``hubdelta retry`` and re-tracking: failed models go back in the queue, exactly those asked for (issue 16)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hubdelta.cli import app
from hubdelta.crawler.api import track
from hubdelta.embedder.api import run_embed
from hubdelta.index.door import open_reader, open_writer
from hubdelta.index.records import ModelRecord, ModelStatus, Relation
from hubdelta.kernel.settings import Settings
from tests.helpers import one_line_error, record, settings_for

runner = CliRunner()
NOWHERE = "http://127.0.0.1:9"  # no Hub is asked: retry and re-tracking (--no-check) only touch the index


def _put(settings: Settings, rows: list[ModelRecord]) -> None:
    with open_writer(settings, "test") as index:
        index.models.put(rows)


def _rows(settings: Settings) -> dict[str, tuple[str, str, int]]:
    with open_reader(settings) as index:
        return {k: (r.status.value, r.reason, r.attempts) for k, r in index.models.get().items()}


def _row(i: int, status: ModelStatus, reason: str, attempts: int = 3) -> ModelRecord:
    return replace(record(i, status=status), reason=reason, attempts=attempts)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    settings = settings_for(tmp_path / "home", NOWHERE)
    _put(settings, [
        _row(1, ModelStatus.FAILED, "HTTP 503: Server error '503 Service Unavailable'"),
        _row(2, ModelStatus.FAILED, "network failure: connection reset"),
        _row(3, ModelStatus.FAILED, "pytorch_model.bin: pickle-only weights refused"),
        _row(4, ModelStatus.SKIPPED, "gated repo: this token may not download it"),
        _row(5, ModelStatus.EMBEDDED, "", attempts=1),
    ])  # fmt: skip
    return tmp_path / "home"


def _retry(home: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--home", str(home), "retry", *args])
    return result.exit_code, result.output


def test_retry_by_reason_requeues_only_the_matching_failed_models(home: Path) -> None:
    settings = settings_for(home, NOWHERE)
    before = _rows(settings)
    code, out = _retry(home, "--reason", "http 5", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["count"] == 1 and doc["dry_run"] is False and doc["missed"] == []
    assert doc["requeued"] == [{"repo_id": "user1/model-1", "status": "failed", "reason": before["user1/model-1"][1]}]
    after = _rows(settings)
    assert after["user1/model-1"] == ("queued", "", 0)  # attempts reset: max_attempts tries again
    assert {k: v for k, v in after.items() if k != "user1/model-1"} == {
        k: v for k, v in before.items() if k != "user1/model-1"
    }


def test_retry_dry_run_changes_nothing_and_plain_retry_takes_every_failed_model(home: Path) -> None:
    settings = settings_for(home, NOWHERE)
    before = _rows(settings)
    code, out = _retry(home, "--dry-run")
    assert code == 0 and out.startswith("would requeue 3 models") and _rows(settings) == before
    code, out = _retry(home)
    assert code == 0 and out.startswith("requeued 3 models")
    after = _rows(settings)
    assert {k for k, v in after.items() if v == ("queued", "", 0)} == {f"user{i}/model-{i}" for i in (1, 2, 3)}
    assert after["user4/model-4"] == before["user4/model-4"] and after["user5/model-5"] == before["user5/model-5"]


def test_retry_named_repos_and_skipped_ones(home: Path) -> None:
    settings = settings_for(home, NOWHERE)
    code, out = _retry(home, "user3/model-3", "user5/model-5", "nobody/nothing", "--json")
    doc = json.loads(out)
    assert code == 0 and [r["repo_id"] for r in doc["requeued"]] == ["user3/model-3"]
    assert doc["missed"] == ["user5/model-5", "nobody/nothing"]  # embedded, and unknown: left as they were
    assert _rows(settings)["user5/model-5"] == ("embedded", "", 1)
    code, out = _retry(home, "--reason", "gated")
    assert code == 0 and out.startswith("requeued 0 models")  # skipped rows only with --skipped
    code, out = _retry(home, "--reason", "gated", "--skipped")
    assert code == 0 and out.startswith("requeued 1 model\n") and _rows(settings)["user4/model-4"][0] == "queued"


@pytest.mark.parametrize(
    ("args", "expected"), [(["--reason", " "], "--reason: is empty"), (["not-a-repo"], "not a Hub repo id")]
)
def test_retry_refuses_bad_arguments_in_one_line(home: Path, args: list[str], expected: str) -> None:
    result = runner.invoke(app, ["--home", str(home), "retry", *args])
    assert expected in one_line_error(result)


def test_retracking_a_base_requeues_the_children_that_failed_because_it_was_untracked(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", NOWHERE)
    _put(settings, [
        record(1, base="acme/base"),
        record(2, base="acme/other"),
        _row(3, ModelStatus.FAILED, "pytorch_model.bin: pickle-only weights refused"),
    ])  # fmt: skip
    summary = run_embed(settings)  # nothing is tracked: the queued models fail (untrack + embed)
    assert summary.failed == 2
    rows = _rows(settings)
    untracked_reason = rows["user1/model-1"][1]
    assert rows["user1/model-1"][0] == rows["user2/model-2"][0] == "failed" and "tracked" in untracked_reason
    track(settings, "acme/base", check=False)
    after = _rows(settings)
    assert after["user1/model-1"] == ("queued", "", 0)
    assert after["user2/model-2"] == rows["user2/model-2"]  # another base's child stays failed
    assert after["user3/model-3"] == rows["user3/model-3"]  # failed for its own reason: hubdelta retry's business


def test_the_python_api_retries_as_the_command_does(home: Path) -> None:
    import hubdelta

    done = hubdelta.retry("user2/model-2", reason="NETWORK", home=home)
    assert [r["repo_id"] for r in done.requeued] == ["user2/model-2"] and not done.missed
    assert _rows(settings_for(home, NOWHERE))["user2/model-2"] == ("queued", "", 0)


def test_retry_queues_only_what_a_new_repo_would_queue(tmp_path: Path) -> None:
    """A gated quantized child (skipped, not discovered) goes back to discovered; a repo with no revision (skipped
    by the crawler) stays as it is: neither can be embedded."""
    settings = settings_for(tmp_path / "home", NOWHERE)
    quantized = replace(record(10, status=ModelStatus.SKIPPED, relation=Relation.QUANTIZED), reason="gated repo")
    no_sha = replace(record(11, status=ModelStatus.SKIPPED, sha=None), reason="listing metadata: no sha")
    _put(settings, [quantized, no_sha])
    code, out = _retry(tmp_path / "home", "--skipped", "--json")
    assert code == 0 and [r["repo_id"] for r in json.loads(out)["requeued"]] == [quantized.repo_id]
    rows = _rows(settings)
    assert rows[quantized.repo_id] == ("discovered", "", 0) and rows[no_sha.repo_id][0] == "skipped"
