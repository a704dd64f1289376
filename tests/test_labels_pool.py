"""Suggested labels on the real pool: computed by the report of ``pool_index`` (crawled, embedded, reported),
recomputed when a neighbour is embedded, and shown by show, similar --json and the report."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

import hubdelta
from hubdelta.cli import app
from hubdelta.embedder.api import add_local
from hubdelta.index.door import open_reader, open_writer
from hubdelta.kernel.errors import NotFoundError
from hubdelta.kernel.settings import Settings
from hubdelta.query.api import similar
from hubdelta.query.labels import read_labels
from hubdelta.report import labels as labelling
from hubdelta.report.labels import read_space
from hubdelta_dev.pool.base import BASE_REPO_ID
from tests.helpers import PoolIndex, settings_for

ORG = "hubdelta-pool"
DOMAINS = ("math", "code", "legal", "medical", "chemistry")
SPLITS = [f"{ORG}/smollm2-lora-{d}-{s}" for d in DOMAINS for s in (1, 2, 3)]
MATH1, MIX = f"{ORG}/smollm2-lora-math-1", f"{ORG}/smollm2-lora-mix-math-code"
runner = CliRunner()


def _truth(pool_index: PoolIndex) -> dict[str, str]:
    return json.loads((pool_index.pool / "labels.json").read_text())


def _space(pool_index: PoolIndex) -> str:
    with open_reader(pool_index.settings) as index:
        (space_id,) = index.vectors.spaces()
    return space_id


def test_split_adapters_are_labelled_with_their_domain(pool_index: PoolIndex) -> None:
    truth, space_id = _truth(pool_index), _space(pool_index)
    with open_reader(pool_index.settings) as index:
        stored = read_labels(index, space_id, truth)
    assert set(stored) == set(truth) and not any(x.stale for x in stored.values())
    right = [r for r in SPLITS if stored[r].top == truth[r]]
    assert len(right) >= 14, {r: stored[r].tags for r in SPLITS}  # >= 90% of 15
    assert all(0 <= x.confidence <= 1 and x.repo_id not in x.neighbours for x in stored.values())
    # A model between two domains gets a lower confidence than any split adapter labelled right (0.63 against
    # 0.75 at least when measured), and one of its domains.
    assert stored[MIX].confidence < min(stored[r].confidence for r in right)
    assert stored[MIX].top in ("math", "code")
    assert stored[MATH1].behaves_like.startswith("behaves like math")


def test_an_undocumented_neighbour_never_contributes(pool_index: PoolIndex) -> None:
    """On the real vectors: math-2 loses its documentation (its name and tags) and disappears from every label."""
    space_id = _space(pool_index)
    with open_reader(pool_index.settings) as index:
        data = read_space(index, space_id)
    gone = f"{ORG}/smollm2-lora-math-2"
    assert data.docs[gone] == {"math": 0.5}  # its name word; "hubdelta-pool" is on every model: common
    blind = replace(data, docs={r: e for r, e in data.docs.items() if r != gone})
    found = labelling.label_rows(space_id, blind, range(len(data.repo_ids)))
    assert all(gone not in x.neighbours for x in found)
    assert all(set(x.neighbours) <= set(blind.docs) for x in found)
    assert {x.repo_id: x.top for x in found}[gone] == "math"  # itself still labelled, from the others


def test_labels_are_recomputed_when_neighbours_are_embedded(pool_index: PoolIndex, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(pool_index.home, home, ignore=shutil.ignore_patterns("*.lock"))
    settings = settings_for(home, pool_index.hub_url)
    space_id, hub = _space(pool_index), pool_index.pool / "hub" / ORG
    with open_reader(settings) as index:
        before = index.labels.get(space_id, [MATH1, f"{ORG}/smollm2-lora-legal-1"])
    # A documented twin of math-2 (its weights under a telling name) and an undocumented twin of code-2.
    add_local(settings, hub / "smollm2-lora-math-2", BASE_REPO_ID, name="local/arithmetic-helper")
    add_local(settings, hub / "smollm2-lora-code-2", BASE_REPO_ID, name="local/checkpoint-7")
    with open_reader(settings) as index:
        stale = read_labels(index, space_id, [MATH1, "local/checkpoint-7"])
    assert stale[MATH1].stale and "local/checkpoint-7" not in stale  # shown as stale; the new one has none yet
    near = similar(settings, MATH1, k=3).neighbors  # similar's cheap check (the row count) says so too
    assert all(n.labels is not None and n.labels.stale for n in near if n.repo_id.startswith(ORG))

    done = labelling.refresh_labels(settings)
    assert not done.full[space_id] and 2 <= done.computed[space_id] < len(_truth(pool_index))
    with open_reader(settings) as index:
        after = read_labels(index, space_id, index.labels.neighbourhoods(space_id)[0])
    assert not any(x.stale for x in after.values())
    assert "local/arithmetic-helper" in after[MATH1].neighbours
    assert "local/arithmetic-helper" not in before[MATH1].neighbours
    assert after["local/checkpoint-7"].top == "code" and after["local/arithmetic-helper"].top == "math"
    assert all("local/checkpoint-7" not in x.neighbours for x in after.values())  # undocumented: never a source
    legal = f"{ORG}/smollm2-lora-legal-1"
    assert after[legal].computed_at == before[legal].computed_at  # far from both: not recomputed
    assert labelling.refresh_labels(settings).unchanged == {space_id: len(after)}  # current now: nothing to do


def test_show_and_similar_json_carry_the_labels(pool_index: PoolIndex) -> None:
    home = str(pool_index.home)
    shown = runner.invoke(app, ["--home", home, "show", MATH1, "--json"])
    assert shown.exit_code == 0, shown.output
    (labels,) = json.loads(shown.stdout)["labels"]
    assert labels["tags"][0]["tag"] == "math" and 0 < labels["confidence"] <= 1 and labels["stale"] is False
    found = runner.invoke(app, ["--home", home, "similar", MATH1, "-k", "3", "--json"])
    assert found.exit_code == 0, found.output
    near = json.loads(found.stdout)["neighbors"]
    assert [n["labels"]["tags"][0]["tag"] for n in near] == ["math"] * 3
    text = runner.invoke(app, ["--home", home, "show", MATH1])
    assert "suggested  math (" in text.stdout and "behaves like math" in text.stdout
    (api,) = hubdelta.labels(MATH1, home=home)
    assert api.top == "math" and api.behaves_like == labels["behaves_like"]
    with pytest.raises(NotFoundError, match="not in the index"):
        hubdelta.labels("nobody/nothing", home=home)


def test_the_report_lists_new_models_with_their_labels(pool_index: PoolIndex) -> None:
    (folder,) = (pool_index.home / "reports").iterdir()
    markdown = (folder / "report.md").read_text()
    assert "| suggested labels |" in markdown
    line = next(x for x in markdown.splitlines() if x.startswith(f"| `{MATH1}`"))
    assert "| math" in line and "(confidence 0." in line


def _retag(settings: Settings, repo_id: str, **changes: object) -> None:
    """What a crawl that found new tags or a new card does to the models table."""
    with open_writer(settings, "test: crawl") as index:
        (record,) = index.models.get([repo_id]).values()
        index.models.put([replace(record, model=replace(record.model, **changes))])  # type: ignore[arg-type]


def test_labels_are_recomputed_when_a_neighbours_documentation_changes(pool_index: PoolIndex, tmp_path: Path) -> None:
    """No vector moves: the crawler tags a documented neighbour, then documents an undocumented model."""
    home = tmp_path / "home"
    shutil.copytree(pool_index.home, home, ignore=shutil.ignore_patterns("*.lock"))
    settings = settings_for(home, pool_index.hub_url)
    space_id, hub = _space(pool_index), pool_index.pool / "hub" / ORG
    code2, twin = f"{ORG}/smollm2-lora-code-2", "local/checkpoint-7"
    add_local(settings, hub / "smollm2-lora-code-2", BASE_REPO_ID, name=twin)  # code-2's weights, no documentation
    labelling.refresh_labels(settings)
    with open_reader(settings) as index:
        before = index.labels.get(space_id, [MATH1, code2])
    assert twin not in before[code2].neighbours  # undocumented: never a source
    assert labelling.refresh_labels(settings).unchanged == {space_id: len(_truth(pool_index)) + 1}

    math2 = f"{ORG}/smollm2-lora-math-2"
    with open_reader(settings) as index:
        tags = index.models.get([math2])[math2].model.tags
    _retag(settings, math2, tags=(*tags, "arithmetic"))
    done = labelling.refresh_labels(settings)
    assert done.computed.get(space_id, 0) > 0 and space_id not in done.unchanged  # before: unchanged, never looked
    with open_reader(settings) as index:
        after = index.labels.get(space_id, [MATH1, code2])
        data = read_space(index, space_id)
    fresh = labelling.label_rows(space_id, data, [data.repo_ids.index(MATH1)])
    assert math2 in after[MATH1].neighbours and "arithmetic" in [t.tag for t in after[MATH1].tags]
    assert after[MATH1].tags == fresh[0].tags != before[MATH1].tags

    _retag(settings, twin, tags=("python",), card_summary="model_name: python-helper")
    done = labelling.refresh_labels(settings)
    assert done.computed.get(space_id, 0) > 0
    with open_reader(settings) as index:
        now = index.labels.get(space_id, [code2])[code2]
    assert now.neighbours[0] == twin and "python" in [t.tag for t in now.tags]  # it contributes now
    assert labelling.refresh_labels(settings).unchanged == {space_id: len(_truth(pool_index)) + 1}
