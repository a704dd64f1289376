"""Reports: the pure rules as tables (matching, naming, windows), clustering on planted clusters, and two reports
end to end over a real LanceDB index where a batch of new models forms exactly one new cluster."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from hubdelta.cli import app
from hubdelta.index.door import open_reader, open_writer
from hubdelta.index.records import HubModel, ModelRecord, ModelStatus, Relation
from hubdelta.index.reports import StoredCluster, StoredReport
from hubdelta.kernel.errors import MissingDependencyError, UsageError
from hubdelta.kernel.settings import Settings
from hubdelta.report import match, naming, window
from hubdelta.report.api import run_report
from hubdelta.report.cluster import ClusterParams, cluster_labels, groups
from hubdelta.report.map import draw_map
from hubdelta.report.neighbours import nearest
from hubdelta.report.records import ChangeKind, MapPoint, SpaceMap
from tests.helpers import (
    REPORT_BASE,
    REPORT_DIM,
    REPORT_SPACE,
    PlantedPool,
    Processes,
    one_line_error,
    pool_card,
    pool_names,
    pool_tags,
    settings_for,
)

runner = CliRunner()
BASE, SPACE, DIM = REPORT_BASE, REPORT_SPACE, REPORT_DIM  # the planted pool's
T0 = datetime(2026, 11, 1, tzinfo=UTC)


# ---- matching ----------------------------------------------------------------------------------------------------


def S(text: str) -> frozenset[str]:
    return frozenset(text.split())


@pytest.mark.parametrize(
    ("current", "previous", "expected"),
    [
        # (current clusters, previous clusters by id, [(kind, current cluster id or None, previous id)])
        (["a b c"], {"c1": "a b c"}, [("same", "c1", "c1")]),
        (["a b c d"], {"c1": "a b c"}, [("grown", "c1", "c1")]),  # J 0.75
        (["a b c"], {"c1": "a b c d"}, [("shrunk", "c1", "c1")]),
        (["a b c e"], {"c1": "a b c d"}, [("same", "c1", "c1")]),  # J 0.6: one member swapped, same size
        (["a b"], {"c1": "a b c d"}, [("shrunk", "c1", "c1")]),  # J exactly 0.5: still the same cluster
        (["a b c d e f g"], {"c1": "a b c"}, [("new", "c2", None), ("dissolved", None, "c1")]),  # J 3/7 < 0.5
        (["a d e f"], {"c1": "a b c"}, [("new", "c2", None), ("dissolved", None, "c1")]),
        # a cluster split in exact halves: the first half continues it, the other is new
        (["a b", "c d"], {"c1": "a b c d"}, [("shrunk", "c1", "c1"), ("new", "c2", None)]),
        # two clusters merged: the merged one continues the first by id, the other dissolves
        (["a b c d e f"], {"c1": "a b c", "c2": "d e f"}, [("grown", "c1", "c1"), ("dissolved", None, "c2")]),
        (["a b c d e f"], {"c10": "a b c", "c2": "d e f"}, [("grown", "c2", "c2"), ("dissolved", None, "c10")]),
        # the better match wins even when a worse one comes first in order
        (["a b x y", "a b c"], {"c1": "a b c d"}, [("new", "c2", None), ("shrunk", "c1", "c1")]),
        (["a b c", "d e f"], {}, [("new", "c1", None), ("new", "c2", None)]),
        ([], {"c1": "a b c"}, [("dissolved", None, "c1")]),
    ],
)
def test_clusters_match_by_member_jaccard(current: list[str], previous: dict[str, str], expected: list) -> None:
    now = [S(c) for c in current]
    before = {k: S(v) for k, v in previous.items()}
    matches = match.match(now, before)
    ids, _ = match.cluster_ids(matches, next_number=2 if previous else 1)
    changes = match.changes("s", list(zip(ids, now, strict=True)), before, matches)
    assert [(c.kind.value, c.cluster_id, c.previous_id) for c in changes] == expected


def test_new_cluster_numbers_are_never_reused() -> None:
    matches = match.match([S("a b c"), S("x y z"), S("p q r")], {"c4": S("a b c")})
    assert match.cluster_ids(matches, next_number=7) == (["c4", "c7", "c8"], 9)


def test_a_change_lists_members_gained_and_lost() -> None:
    before = {"c1": S("a b c d")}
    (change,) = match.changes("s", [("c1", S("a b c e f"))], before, match.match([S("a b c e f")], before))
    assert (change.kind, change.added, change.removed, change.jaccard) == (ChangeKind.GROWN, ("e", "f"), ("d",), 0.5)


# ---- naming ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("smollm2-lora-math-1", {"smollm2", "math"}),
        ("Qwen2.5-7B-Instruct-SFT-v2", {"qwen2", "sft"}),  # sizes, versions and generic words go
        ("LoRA adapter on 64 legal examples (disjoint split 3).", {"legal", "examples", "disjoint", "split"}),
        ("the model for a medical chat", {"medical"}),
        ("gsm8k_Math__Tutor", {"gsm8k", "math", "tutor"}),
    ],
)
def test_words_keep_only_telling_tokens(text: str, expected: set[str]) -> None:
    assert naming.words(text) == expected


def test_model_tokens_use_name_tags_and_card_but_not_bookkeeping() -> None:
    ignore = naming.base_words([BASE])
    tokens = naming.model_tokens(
        "someone/SmolLM2-135M-Instruct-pirate-lora",
        ("peft", "dataset:gsm8k", "license:mit", f"base_model:adapter:{BASE}", "region:us", "roleplay"),
        "Talks like a pirate.",
        ignore,
    )
    assert tokens == {"pirate", "gsm8k", "roleplay", "talks", "like"}  # not "someone": owners say who, not what


def pool_tokens(repo_ids: list[str]) -> dict[str, frozenset[str]]:
    ignore = naming.base_words([BASE])
    return {r: naming.model_tokens(r, pool_tags(r), pool_card(r), ignore) for r in repo_ids}


def test_pool_clusters_are_named_by_their_domain() -> None:
    domains = ["math", "code", "legal", "medical", "chemistry"]
    clusters = [[f"hubdelta-pool/smollm2-lora-{d}-{i}" for i in (1, 2, 3, "fewshot")] for d in domains]
    clusters[0].append("hubdelta-pool/smollm2-full-math")
    clusters[1] += ["hubdelta-pool/smollm2-merge-math-code", "hubdelta-pool/smollm2-lora-mix-math-code"]
    noise = ["hubdelta-pool/smollm2-lora-mix-legal-medical"]
    names = naming.cluster_names(clusters, pool_tokens([r for c in clusters for r in c] + noise))
    assert names == domains


def test_one_odd_member_does_not_name_a_cluster_and_a_lone_cluster_falls_back_to_common_words() -> None:
    tokens = {"u/a-1": S("math tutor pirate"), "u/a-2": S("math tutor"), "u/a-3": S("math"), "u/a-4": S("math")}
    tokens |= {f"u/b-{i}": S("legal") for i in range(4)}
    assert naming.cluster_names([sorted(tokens)[:4]], tokens) == ["math / tutor"]
    assert naming.cluster_names([sorted(tokens)], tokens) == ["legal / math"]  # everything: nothing stands out
    assert naming.cluster_names([["u/x", "u/y"]], {"u/x": S("a"), "u/y": S("b")}) == [""]


# ---- windows and durations ---------------------------------------------------------------------------------------


DURATIONS = [
    ("24h", timedelta(hours=24)),
    ("7d", timedelta(days=7)),
    ("90m", timedelta(minutes=90)),
    ("2w", timedelta(weeks=2)),
    (" 30S ", timedelta(seconds=30)),
]


@pytest.mark.parametrize(("text", "expected"), DURATIONS)
def test_durations_parse(text: str, expected: timedelta) -> None:
    assert window.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["banana", "24", "h", "-5h", "1.5h", "0h", "24 hours", ""])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError) as e:
        window.parse_duration(text)
    assert e.value.one_line().startswith("--since:") and "fix: write a number and a unit" in e.value.one_line()


H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("window_", "previous", "expected"),
    [(None, None, T0 - 24 * H), (None, T0 - 3 * H, T0 - 3 * H), (2 * H, T0 - 3 * H, T0 - 2 * H)],
)
def test_the_window_starts_at_the_previous_report_unless_given(window_, previous, expected) -> None:
    assert window.resolve_since(T0, window_, previous) == expected


@pytest.mark.parametrize(
    ("embedded", "first_seen", "clustered_before", "new"),
    [
        (T0 + H, T0 + H, False, True),  # seen and embedded in the window
        (T0 - H, T0 - 2 * H, False, False),  # embedded before the window
        (T0 + H, T0 - 5 * H, False, True),  # waited in the queue: seen before, embedded now, never reported
        (T0 + H, T0 - 5 * H, True, False),  # re-embedded at a new revision: the last report had it
        (T0 + H, None, True, True),  # added locally (no crawl record)
        (None, T0 + H, False, True),
        (None, None, False, False),
    ],
)
def test_what_counts_as_new(embedded, first_seen, clustered_before, new) -> None:
    known = {"o/m"} if clustered_before else set()
    assert window.is_new("o/m", embedded_at=embedded, first_seen=first_seen, since=T0,
                         previously_clustered=known) is new  # fmt: skip


def test_report_ids_sort_by_time_and_never_collide() -> None:
    assert window.report_id(T0, set()) == "20261101T000000Z"
    assert window.report_id(T0, {"20261101T000000Z", "20261101T000000Z-2"}) == "20261101T000000Z-3"


# ---- clustering --------------------------------------------------------------------------------------------------


def planted(rng: np.random.Generator, clusters: int, size: int, outliers: int, dim: int = 64) -> np.ndarray:
    """Clusters around centres that share a common direction (as finetunes of one base do), and outliers.

    Without the shared part, random centres are as far apart as random outliers are from them, and HDBSCAN may
    rightly call an outlier a cluster's member.
    """
    centres = 1.5 * rng.normal(size=dim) + rng.normal(size=(clusters, dim))
    members = [c + 0.15 * rng.normal(size=(size, dim)) for c in centres]
    return np.concatenate([*members, rng.normal(size=(outliers, dim))]).astype(np.float32)


def test_hdbscan_finds_the_planted_clusters_whatever_the_norms() -> None:
    rng = np.random.default_rng(3)
    x = planted(rng, clusters=4, size=5, outliers=2)
    x *= rng.uniform(0.2, 20, size=(len(x), 1)).astype(np.float32)  # cosine must not care
    labels = cluster_labels(x)
    ids = [f"m{i:02d}" for i in range(len(x))]
    assert groups(ids, labels) == [tuple(ids[k * 5 : k * 5 + 5]) for k in range(4)]
    assert (labels[20:] == -1).all()  # the outliers stay unclustered
    assert np.array_equal(cluster_labels(x), labels)  # deterministic


def test_few_or_zero_vectors_are_noise() -> None:
    assert cluster_labels(np.ones((2, 8), np.float32)).tolist() == [-1, -1]
    x = np.zeros((5, 8), np.float32)
    assert cluster_labels(x).tolist() == [-1] * 5
    rng = np.random.default_rng(0)
    x = np.concatenate([planted(rng, 2, 4, 0, dim=8), np.zeros((2, 8), np.float32)])
    assert cluster_labels(x, ClusterParams(min_cluster_size=3)).tolist() == [0] * 4 + [1] * 4 + [-1, -1]
    # One family alone is not a cluster: HDBSCAN (allow_single_cluster off) wants groups apart from others.
    assert cluster_labels(x[:4]).tolist() == [-1] * 4


def test_nearest_skips_itself_and_non_candidates() -> None:
    unit = np.eye(4)[[0, 0, 1, 0]] * np.array([[1], [1], [1], [0.9]])
    unit[3] = [0.6, 0.8, 0, 0]
    assert nearest(unit, [0], [1, 2, 3], k=2) == [[(1, 1.0), (3, pytest.approx(0.6))]]
    assert nearest(unit, [0, 1], [0, 1], k=5) == [[(1, 1.0)], [(0, 1.0)]]
    assert nearest(unit, [0], [], k=3) == [[]]


def test_missing_optional_packages_are_one_line_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.cluster", None)
    with pytest.raises(MissingDependencyError, match="scikit-learn"):
        cluster_labels(np.ones((5, 4), np.float32))
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MissingDependencyError) as e:
        draw_map(SpaceMap("s", "t", (MapPoint("a/b", 0, 0, None, False),), {}), tmp_path / "m.png")
    assert "fix: pip install -e '.[report]'" in e.value.one_line()


def test_queries_and_the_cli_never_import_the_report_packages(processes: Processes) -> None:
    code = ("import sys, hubdelta.cli, hubdelta.query.api, hubdelta.report.window; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'matplotlib', 'torch'}))")  # fmt: skip
    out = processes.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- the index's reports table -----------------------------------------------------------------------------------


def test_the_latest_report_is_the_newest_by_creation_time(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", "http://127.0.0.1:9")
    newer = StoredReport("r2", T0, T0 - H, "/x/r2", {SPACE: (StoredCluster("c1", "math", ("a/b", "a/c")),)},
                         {"clustering": {"min_cluster_size": 3}}, {"new_models": 2})  # fmt: skip
    older = StoredReport("r1", T0 - 24 * H, T0 - 48 * H, "/x/r1")
    with open_writer(settings, "test") as index:
        assert index.reports.latest() is None
        index.reports.put(newer)
        index.reports.put(older)
        assert index.reports.latest() == newer
    with open_reader(settings) as reader:
        latest = reader.reports.latest()
    assert latest is not None and latest.cluster_of("a/c") == StoredCluster("c1", "math", ("a/b", "a/c"))


# ---- end to end ----------------------------------------------------------------------------------------------------


def _check_report_files(settings: Settings, doc: dict[str, Any], second_batch: dict[str, Any]) -> None:
    """The report's files (offline HTML, escaped model text, the map) and its stored record."""
    home = settings.home
    out = Path(doc["out_dir"])
    assert out.parent == home / "reports" and out.name == doc["report_id"]
    files = {Path(p).name for p in doc["files"]}
    assert files == {"report.md", "report.html", f"map-{SPACE}.png"} and all(Path(p).is_file() for p in doc["files"])
    assert (out / f"map-{SPACE}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert 'src="data:image/png;base64,' in page
    assert "corrupt safetensors header | &lt;b&gt;" in page and "<b>\n" not in page  # escaped model text
    md = (out / "report.md").read_text()
    section = md.split("## New models")[1].split("## ")[0]
    assert all(f"`{r}`" in section for r in second_batch)
    assert "## New clusters (1)" in md and "chemistry" in md

    with open_reader(settings) as index:
        stored = index.reports.latest()
    assert stored is not None and stored.report_id == doc["report_id"] and stored.files == str(out)
    assert stored.summary["new_models"] == len(second_batch) and stored.summary["changes"]["new"] == 1
    assert {c.name for c in stored.clusters[SPACE]} == {"math", "code", "legal", "chemistry"}


def test_two_reports_a_new_batch_forms_exactly_one_new_cluster(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = settings_for(home, "http://127.0.0.1:9")
    pool = PlantedPool()
    start = datetime.now(UTC) - 3 * H
    first_batch = pool_names("math", [1, 2, 3]) | pool_names("code", [1, 2, 3, "fewshot"])
    first_batch |= pool_names("legal", [1, 2, 3]) | {"someone/odd-merge": None}
    pool.put(settings, first_batch, start)
    broken = HubModel("x/broken", "e" * 40, Relation.ADAPTER, (BASE,))
    gated = HubModel("x/gated", "f" * 40, Relation.ADAPTER, (BASE,), gated="manual")
    with open_writer(settings, "test") as index:
        index.models.put([ModelRecord(broken, ModelStatus.FAILED, reason="corrupt safetensors header | <b>"),
                          ModelRecord(gated, ModelStatus.SKIPPED, reason="gated")])  # fmt: skip

    first = run_report(settings, command="test")
    assert first.previous_id is None and len(first.new_models) == len(first_batch)
    assert sorted(c.name for c in first.clusters) == ["code", "legal", "math"]
    assert [c.kind for c in first.changes] == [ChangeKind.NEW] * 3
    assert {(f.status, f.count) for f in first.failures} == {("failed", 1), ("skipped", 1)}

    second_batch = pool_names("chemistry", [1, 2, 3, "fewshot"]) | pool_names("math", ["fewshot"])
    pool.put(settings, second_batch, datetime.now(UTC))
    result = runner.invoke(app, ["--home", str(home), "report", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)

    assert doc["previous_id"] == first.report_id
    assert sorted(m["repo_id"] for m in doc["new_models"]) == sorted(second_batch)
    new = [c for c in doc["changes"] if c["kind"] == "new"]
    assert len(new) == 1
    (cluster,) = [c for c in doc["clusters"] if c["id"] == new[0]["cluster"]]
    assert sorted(cluster["members"]) == sorted(pool_names("chemistry", [1, 2, 3, "fewshot"]))
    assert "chemistry" in cluster["name"]
    kinds = {c["previous"]: c["kind"] for c in doc["changes"] if c["previous"]}
    by_name = {c.name: c.id for c in first.clusters}
    assert kinds == {by_name["math"]: "grown", by_name["code"]: "same", by_name["legal"]: "same"}
    for m in doc["new_models"]:  # neighbours are established models only, best first
        scores = [n["score"] for n in m["neighbors"]]
        assert m["neighbors"] and scores == sorted(scores, reverse=True)
        assert not {n["repo_id"] for n in m["neighbors"]} & set(second_batch)
    math_new = next(m for m in doc["new_models"] if m["repo_id"].endswith("math-fewshot"))
    assert math_new["neighbors"][0]["repo_id"].startswith("hubdelta-pool/smollm2-lora-math-")
    assert math_new["cluster"] == by_name["math"]

    _check_report_files(settings, doc, second_batch)


def test_report_since_banana_is_a_one_line_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--home", str(tmp_path), "report", "--since", "banana"])
    line = one_line_error(result)
    assert "--since" in line and "banana" in line and result.exit_code == 2
