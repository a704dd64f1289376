"""Tables never cut a repo id (``similar``, ``show``): at 80 columns (a pipe), 40 (a narrow terminal) and 200,
through the real Typer app over a real LanceDB index whose ids are long and alike (math-1, math-2)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hubdelta.cli import app
from hubdelta.index.door import open_writer
from hubdelta.index.embeddings import Embedding, SpaceRow
from hubdelta.index.records import HubModel, ModelRecord, ModelStatus, Relation
from tests.helpers import settings_for

runner = CliRunner()
BASE = "org/base"
NOW = datetime(2026, 11, 1, tzinfo=UTC)
DIM = 16
SPACE = "base-aaaaaaaa"
PARAMS = {"base_repo": BASE, "base_sha": "0" * 40, "probes": "paper-v1", "probes_hash": "x", "dim": DIM,
          "layer": None, "position": "last", "dtype": "float32", "method": "activations"}  # fmt: skip


LONG_IDS = ("hubdelta-pool/smollm2-lora-math-1", "hubdelta-pool/smollm2-lora-math-2",
            "an-organisation-with-a-long-name/and-a-finetune-whose-name-is-longer-still-v2")  # fmt: skip


@pytest.fixture(scope="module")
def long_ids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(1)
    with open_writer(settings_for(home, "http://127.0.0.1:9"), "test") as index:
        models = [HubModel(r, f"{i:040x}", Relation.ADAPTER, (BASE,), created_at=NOW, license="apache-2.0",
                           downloads=123_456, likes=7, card_summary="a card " * 20)
                  for i, r in enumerate(("org/query", *LONG_IDS))]  # fmt: skip
        index.models.put([ModelRecord(m, ModelStatus.EMBEDDED, first_seen=NOW, last_seen=NOW) for m in models])
        index.vectors.put_space(SpaceRow(SPACE, PARAMS, np.zeros((5, DIM), np.float32), NOW))
        index.vectors.put(SPACE, [Embedding(m.repo_id, m.sha, rng.normal(size=DIM).astype(np.float32), NOW)
                                  for m in models])  # fmt: skip
    return home


@pytest.mark.parametrize("columns", ["80", "40", "200"])
def test_tables_never_cut_a_repo_id(long_ids: Path, columns: str) -> None:
    result = runner.invoke(app, ["--home", str(long_ids), "similar", "org/query"], env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    for repo in LONG_IDS:
        assert repo in result.output, result.output
    rows = [line for line in result.output.splitlines() if "hubdelta-pool" in line]
    if columns == "200":  # room for every column
        assert all("apache-2.0" in line and "123,456" in line for line in rows), result.output
    else:  # the less telling columns left first
        assert not any("a card" in line for line in rows), result.output
    shown = runner.invoke(app, ["--home", str(long_ids), "show", LONG_IDS[0], "-k", "3"], env={"COLUMNS": columns})
    assert shown.exit_code == 0 and all(r in shown.output for r in LONG_IDS[1:]), shown.output


def test_fit_columns_drops_the_least_telling_first() -> None:
    from hubdelta.cli._tables import fit_columns, table_width

    widths = {"#": 2, "repo": 40, "license": 10, "card": 24}
    assert fit_columns(widths, 200, ("card", "license")) == ["#", "repo", "license", "card"]
    assert fit_columns(widths, table_width([2, 40, 10]), ("card", "license")) == ["#", "repo", "license"]
    assert fit_columns(widths, 30, ("card", "license")) == ["#", "repo"]  # never the id: the table grows instead


def test_the_status_table_keeps_base_and_space_ids_whole_on_a_narrow_terminal(long_ids: Path) -> None:
    result = runner.invoke(app, ["--home", str(long_ids), "status"], env={"COLUMNS": "40"})
    assert result.exit_code == 0, result.output
    assert SPACE in result.output and BASE in result.output, result.output
