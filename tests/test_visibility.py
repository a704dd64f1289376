"""One visibility rule (``index.records.visible_to_queries``): a model removed from the Hub keeps its row and its
vectors, but ``similar``, ``task``, ``report``, ``export`` and ``eval`` leave it out, and ``show`` still shows its
record, saying it was removed.

Real LanceDB in tmp_path, planted vectors, library calls in this process: no pool, no subprocess. The removed
model is planted where it matters: it is the nearest model to the queries, so leaving it out is visible.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from hubdelta.cli import app
from hubdelta.evaluation.api import evaluate
from hubdelta.index.door import open_reader, open_writer
from hubdelta.index.records import ModelStatus
from hubdelta.index.reports import StoredCluster, StoredReport
from hubdelta.kernel.errors import HubdeltaError
from hubdelta.kernel.settings import Settings
from hubdelta.query.api import show, similar
from hubdelta.query.export import export
from hubdelta.report.api import run_report
from hubdelta.task.api import search_space, space_clusters
from tests.helpers import REPORT_SPACE, T0, PlantedPool, pool_names, settings_for

runner = CliRunner()
NAMES = pool_names("math", [1, 2, 3, 4]) | pool_names("code", [1, 2, 3, 4]) | pool_names("legal", [1, 2, 3, 4])
GONE = "hubdelta-pool/smollm2-lora-math-1"  # removed from the Hub
QUERY = "hubdelta-pool/smollm2-lora-math-2"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home whose index holds 12 planted models in one space, GONE marked removed (its vector kept)."""
    settings = settings_for(tmp_path / "home", "http://127.0.0.1:9")
    PlantedPool().put(settings, NAMES, datetime.now(UTC))
    with open_writer(settings, "test") as index:
        record = index.models.get([GONE])[GONE]
        index.models.put([record.with_status(ModelStatus.REMOVED, "no longer listed on the Hub")])
    return tmp_path / "home"


def settings(home: Path) -> Settings:
    return settings_for(home, "http://127.0.0.1:9")


def raw_vectors(home: Path) -> dict[str, np.ndarray]:
    """Every stored vector, the removed model's included (what a search would see without the rule)."""
    with open_reader(settings(home)) as index:
        return {r: e.vector for r, e in index.vectors.get(REPORT_SPACE).items()}


def ranking(vectors: dict[str, np.ndarray], query: np.ndarray) -> list[str]:
    q = query / np.linalg.norm(query)
    sims = {r: float(v @ q / np.linalg.norm(v)) for r, v in vectors.items()}
    return sorted(sims, key=sims.__getitem__, reverse=True)


# ---- similar ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("where", "relation"), [(None, None), ("downloads >= 0", "adapter")])
def test_similar_never_returns_a_removed_model(home: Path, where: str | None, relation: str | None) -> None:
    vectors = raw_vectors(home)
    brute = [r for r in ranking(vectors, vectors[QUERY]) if r != QUERY]
    assert GONE in brute[:3]  # without the rule it would be a top-3 neighbour
    for k in (3, len(NAMES)):
        got = similar(settings(home), QUERY, k=k, where=where, relation=relation)
        assert [n.repo_id for n in got] == [r for r in brute if r != GONE][:k]


def test_similar_by_vector_never_returns_a_removed_model(home: Path, tmp_path: Path) -> None:
    vectors = raw_vectors(home)
    path = tmp_path / "gone.npy"
    np.save(path, vectors[GONE])  # its own vector: cosine 1 to it
    got = similar(settings(home), vector=path, k=len(NAMES))
    assert [n.repo_id for n in got] == [r for r in ranking(vectors, vectors[GONE]) if r != GONE]


def test_similar_refuses_to_search_with_a_removed_model(home: Path) -> None:
    with pytest.raises(HubdeltaError, match="removed from the Hub") as e:
        similar(settings(home), GONE)
    assert f"hubdelta show {GONE}" in e.value.one_line()


# ---- show -------------------------------------------------------------------------------------------------------


def test_show_of_a_removed_model_shows_its_record_and_says_it_was_removed(home: Path) -> None:
    shown = show(settings(home), GONE)
    assert shown.record.status == ModelStatus.REMOVED and shown.hidden
    assert [v.space_id for v in shown.vectors] == [REPORT_SPACE]  # its vector is kept, and listed
    assert shown.neighbors == []  # it is not searched with

    text = runner.invoke(app, ["--home", str(home), "show", GONE])
    assert text.exit_code == 0, text.output
    assert (
        "status     removed: no longer listed on the Hub" in text.output
        and "REMOVED    gone from the Hub" in text.output
    )
    doc = json.loads(runner.invoke(app, ["--home", str(home), "show", GONE, "--json"]).stdout)
    assert doc["hidden"] is True and doc["status"] == "removed" and doc["neighbors"] == []


def test_show_never_lists_a_removed_model_as_a_neighbour(home: Path) -> None:
    shown = show(settings(home), QUERY, k=len(NAMES))
    assert not shown.hidden and len(shown.neighbors) == len(NAMES) - 2
    assert GONE not in {n.repo_id for n in shown.neighbors}


# ---- export -----------------------------------------------------------------------------------------------------


def test_export_leaves_removed_models_out_unless_asked(home: Path, tmp_path: Path) -> None:
    done = export(settings(home), tmp_path / "v.parquet", fmt="parquet")
    table = pq.read_table(tmp_path / "v.parquet")
    assert done.rows == len(NAMES) - 1 and GONE not in table["repo_id"].to_pylist()
    assert set(table["status"].to_pylist()) == {"embedded"}

    result = runner.invoke(app, ["--home", str(home), "export", "--out", str(tmp_path / "all.csv"), "--format", "csv",
                                 "--include-removed", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == len(NAMES)
    rows = (tmp_path / "all.csv").read_text().splitlines()
    assert sum(line.startswith(f'"{GONE}"') and '"removed"' in line for line in rows) == 1
    assert "--include-removed" in runner.invoke(app, ["export", "--help"]).output


# ---- report -----------------------------------------------------------------------------------------------------


def test_report_leaves_removed_models_out(home: Path) -> None:
    report = run_report(settings(home), command="test")
    members = {m for c in report.clusters for m in c.members}
    assert members and GONE not in members and QUERY in members
    assert {m.repo_id for m in report.new_models} == set(NAMES) - {GONE}
    assert GONE not in json.dumps(report.to_dict(), default=str)  # nowhere: not a neighbour of a new model either
    with open_reader(settings(home)) as index:
        stored = index.reports.latest()
    assert stored is not None and stored.cluster_of(GONE) is None


# ---- task -------------------------------------------------------------------------------------------------------


def test_task_search_and_its_clusters_leave_removed_models_out(home: Path) -> None:
    vectors = raw_vectors(home)
    with open_reader(settings(home)) as index:
        neighbors, clusters, source, _ = search_space(index, REPORT_SPACE, vectors[GONE], len(NAMES), None)
    assert [n.repo_id for n in neighbors] == [r for r in ranking(vectors, vectors[GONE]) if r != GONE]
    assert source == "computed now" and clusters and all(GONE not in c.members for c in clusters)

    # A report made before the model was removed still lists it: the task's clusters do not.
    stale = StoredReport(
        "r1", T0, T0, "", {REPORT_SPACE: (StoredCluster("c1", "math", tuple(pool_names("math", [1, 2, 3]))),)}
    )
    with open_writer(settings(home), "test") as index:
        index.reports.put(stale)
    with open_reader(settings(home)) as index:
        clusters, source, _ = space_clusters(index, REPORT_SPACE)
    assert source == "report r1" and [c.members for c in clusters] == [(QUERY, "hubdelta-pool/smollm2-lora-math-3")]


# ---- eval -------------------------------------------------------------------------------------------------------


def test_eval_does_not_score_removed_models(home: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("repo_id,label\n" + "".join(f"{r},{d}\n" for r, d in NAMES.items()) + "nobody/else,math\n")
    result = evaluate(settings(home), labels)
    assert result.removed == (GONE,) and result.missing == ("nobody/else",)
    assert result.scores.n == len(NAMES) - 1
    assert result.to_dict()["removed"] == [GONE]


def test_search_widens_past_removed_models_and_asks_only_about_its_candidates(home: Path) -> None:
    """The nearest rows are mostly removed: the search widens its rounds until k visible ones are found."""
    vectors = raw_vectors(home)
    order = [r for r in ranking(vectors, vectors[QUERY]) if r != QUERY]
    gone = set(order[:6])  # the six nearest neighbours leave the Hub
    with open_writer(settings(home), "test") as index:
        records = index.models.get(gone)
        index.models.put([r.with_status(ModelStatus.REMOVED, "gone") for r in records.values()])
        assert index.models.hidden_ids(order[:3]) == set(order[:3])  # a lookup of the candidates only
        assert index.models.hidden_ids() == gone | {GONE}
    for k in (1, 3, 5):
        got = similar(settings(home), QUERY, k=k)
        assert [n.repo_id for n in got] == [r for r in order if r not in gone | {GONE}][:k]


def test_a_where_filter_cannot_escape_its_parentheses(home: Path) -> None:
    result = runner.invoke(app, ["--home", str(home), "similar", QUERY, "--where", "1=1) OR (1=1"])
    assert result.exit_code == 2 and "--where" in result.output and "unbalanced parentheses" in result.output
    assert len(result.output.strip().splitlines()) == 1
    quoted = similar(settings(home), QUERY, k=2, where="license != ')(' OR license IS NULL")
    assert len(list(quoted)) == 2  # parentheses inside a quoted string are text, not nesting
