"""``hubdelta task``: bad example files as one-line errors, the pure parts, clusters, and task search on the pool.

The end-to-end tests train real few-shot adapters on the pool's held-out examples (never trained on by any pool
model) and search the session's index of the whole pool (crawled from devhub, embedded, reported once).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hubdelta.cli import app
from hubdelta.embedder.training import Example
from hubdelta.index.door import open_reader, open_writer
from hubdelta.index.embeddings import Embedding, SpaceRow
from hubdelta.index.records import HubModel, ModelRecord, ModelStatus, Relation, TrackedBase
from hubdelta.index.reports import StoredCluster, StoredReport
from hubdelta.kernel.errors import UsageError
from hubdelta.kernel.settings import Settings
from hubdelta.task.adapter import FEWSHOT, _cached, _write_checkpoints, cache_key
from hubdelta.task.api import SpaceCluster, nearest_cluster, space_clusters
from hubdelta.task.examples import check_lengths, choose, parse_lines
from hubdelta.task.explain import explain
from hubdelta.task.schedule import CHECK_EVERY, resolve
from hubdelta.task.tracking import Checkpoint, should_stop, typical_norm
from hubdelta_dev.pool.base import BASE_REPO_ID
from tests.helpers import PoolIndex, one_line_error, settings_for

runner = CliRunner()
DIM = 16
SPACE = "base-0123abcd"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
GOOD = '{"instruction": "Add 2 and 3.", "input": "", "output": "5"}'
FIX = '(fix: one JSON object a line: {"instruction": "...", "output": "..."} or {"prompt": "...", "completion": "..."})'


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# ---- bad example files: exact one-line errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # (the bad line, the error after "error: FILE"): two good lines and a blank one come first
        ("{bad json", f":4: not valid JSON (Expecting property name enclosed in double quotes at column 2) {FIX}"),
        ('{"instruction": "a", "output": "b"', f":4: not valid JSON (Expecting ',' delimiter at column 35) {FIX}"),
        ("[1, 2]", f":4: is an array, not a JSON object {FIX}"),
        ('"just text"', f":4: is a string, not a JSON object {FIX}"),
        ('{"instruction": "Add."}', f':4: missing "output" {FIX}'),
        ('{"prompt": "Add."}', f':4: missing "completion" {FIX}'),
        ('{"instruction": "Add.", "output": "  "}', ':4: "output" is empty (fix: give "output" some text, or delete'
         " the line)"),
        ('{"prompt": "Add.", "completion": 5}', ':4: "completion" is a number, not a string (fix: make "completion"'
         " a JSON string)"),
        ('{"instruction": "A", "input": ["x"], "output": "5"}', ':4: "input" is an array, not a string (fix: make'
         ' "input" a JSON string)'),
        ('{"instruction": null, "output": "5"}', ':4: "instruction" is null, not a string (fix: make "instruction"'
         " a JSON string)"),
        ('{"instruction": "Add.", "completion": "5"}', ':4: mixes "instruction"/"output" with "prompt"/"completion"'
         " keys (fix: use one shape per line)"),
        ('{"text": "Add.", "label": "5"}', ":4: has neither instruction/output nor prompt/completion keys (keys:"
         f' "text", "label") {FIX}'),
        (b'{"prompt": "caf\xe9", "completion": "x"}', ":4: is not UTF-8 text (byte 16) (fix: save the file as UTF-8)"),
    ],
)  # fmt: skip
def test_a_bad_line_is_a_line_numbered_one_line_error(tmp_path: Path, content: str | bytes, expected: str) -> None:
    head = f"{GOOD}\n\n{GOOD}\n".encode()
    path = write(tmp_path / "ex.jsonl", head + (content if isinstance(content, bytes) else content.encode()) + b"\n")
    result = runner.invoke(app, ["--home", str(tmp_path / "home"), "task", str(path), "--base", BASE_REPO_ID])
    assert result.exit_code == 2
    assert one_line_error(result) == f"error: {path}{expected}"


@pytest.mark.parametrize(
    ("content", "args", "expected"),
    [
        ("", (), ": holds no examples " + FIX),
        ("\n  \n\n", (), ": holds no examples " + FIX),
        (f"{GOOD}\n" * 4, (), ": holds 4 examples; a task needs at least 5 (fix: add examples: the paper uses 20)"),
        (None, (), ": no such file (fix: give a JSONL file of about 20 examples)"),
    ],
)
def test_a_bad_file_is_a_one_line_error(tmp_path: Path, content: str | None, args: tuple, expected: str) -> None:
    path = tmp_path / "ex.jsonl"
    if content is not None:
        write(path, content)
    result = runner.invoke(app, ["--home", str(tmp_path / "home"), "task", str(path), "--base", BASE_REPO_ID, *args])
    assert result.exit_code == 2
    assert one_line_error(result) == f"error: {path}{expected}"


def test_bad_options_and_an_empty_index_are_one_line_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "ex.jsonl", f"{GOOD}\n" * 5)
    home = ["--home", str(tmp_path / "home")]
    line = one_line_error(runner.invoke(app, [*home, "task", str(path), "--base", BASE_REPO_ID, "--max-examples", "2"]))
    assert line == "error: --max-examples: 2 is outside 5..200 (fix: use the paper's 20)"
    line = one_line_error(runner.invoke(app, [*home, "task", str(path), "--base", BASE_REPO_ID, "--relation", "x"]))
    assert line.startswith("error: --relation: unknown relation 'x'")
    line = one_line_error(runner.invoke(app, [*home, "task", str(path), "--base", "not a repo"]))
    assert line.startswith("error: ") and "not a repo" in line
    untracked = (f"error: {BASE_REPO_ID} is not tracked, so nothing of it is embedded (fix: run hubdelta track "
                 f"{BASE_REPO_ID}, then hubdelta crawl && hubdelta embed)")  # fmt: skip
    result = runner.invoke(app, [*home, "task", str(path), "--base", BASE_REPO_ID])  # no index at all
    assert result.exit_code == 1 and one_line_error(result) == untracked
    with open_writer(settings_for(tmp_path / "home", "http://127.0.0.1:9"), "test") as index:
        index.tracked.put([TrackedBase("other/base")])
    result = runner.invoke(app, [*home, "task", str(path), "--base", BASE_REPO_ID])  # an index tracking another
    assert result.exit_code == 1 and one_line_error(result) == untracked
    with open_writer(settings_for(tmp_path / "home", "http://127.0.0.1:9"), "test") as index:
        index.tracked.put([TrackedBase(BASE_REPO_ID)])
    result = runner.invoke(app, [*home, "task", str(path), "--base", BASE_REPO_ID])
    assert one_line_error(result) == (
        f"error: nothing embedded for {BASE_REPO_ID} yet (fix: run hubdelta track {BASE_REPO_ID}, then hubdelta "
        "crawl && hubdelta embed)"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--schedule", "fast"), "--schedule: unknown schedule 'fast' (fix: use one of: auto, paper, light)"),
        (("--steps", "0"), "--steps: 0 is outside 1..1000 (fix: use e.g. --steps 100 (the paper's))"),
        (("--lr", "2"), "--lr: 2 is outside (0, 0.1] (fix: use e.g. --lr 3.3e-3 (the paper's))"),
        (("--lr", "nan"), "--lr: nan is outside (0, 0.1] (fix: use e.g. --lr 3.3e-3 (the paper's))"),
        (("--seed", "-1"), "--seed: -1 is outside 0..2147483647 (fix: use e.g. --seed 0)"),
    ],
)
def test_bad_training_options_are_one_line_errors_before_anything_runs(tmp_path: Path, args: tuple, expected: str):
    path = write(tmp_path / "ex.jsonl", f"{GOOD}\n" * 5)
    result = runner.invoke(app, ["--home", str(tmp_path / "home"), "task", str(path), "--base", BASE_REPO_ID, *args])
    assert result.exit_code == 2 and one_line_error(result) == f"error: {expected}"


def test_schedules_resolve_to_their_training_and_stop() -> None:
    auto = resolve(None, 20)
    assert (auto.name, auto.rule, auto.steps, auto.train.lr, auto.train.batch_size) == ("auto", "norm", 15, 1e-3, 4)
    assert auto.every == CHECK_EVERY == 1
    paper = resolve("paper", 20, seed=3)
    assert (paper.rule, paper.steps, paper.train.seed, paper.every) == ("last", 100, 3, 0)
    light = resolve("light", 8)
    assert (light.steps, light.train.lr, light.train.batch_size) == (6, 1e-3, 4)  # 3 epochs of 2 batches
    custom = resolve("paper", 8, steps=30, lr=1e-3)
    assert (custom.steps, custom.train.lr, custom.train.epochs) == (30, 1e-3, 4)  # 4 epochs of 8 make the 30
    assert "up to 30 steps" in custom.describe() and "to the end" in custom.describe()
    assert "as long as the space's median vector" in auto.describe()


def test_auto_stops_at_the_space_median_norm_and_explain_reports_the_top_k_along_the_way() -> None:
    assert typical_norm(np.array([1.0, 3.0, np.nan, 0.0, 2.0])) == 2.0 and typical_norm(np.zeros(0)) is None
    assert should_stop(2.0, 2.0) and not should_stop(1.9, 2.0) and not should_stop(9.0, None)
    axis = np.eye(3, dtype=np.float32)
    points = [Checkpoint(s, float(n), n * axis[i]) for s, n, i in ((2, 0.5, 0), (4, 1.0, 1), (6, 2.0, 2))]

    def top(v: np.ndarray) -> list[str]:  # two models per axis, nearest first
        return [f"m{int(np.argmax(np.abs(v)))}a", f"m{int(np.argmax(np.abs(v)))}b"]

    why = explain("s1", "auto: ...", 2.0, 2.0 * axis[2], 6, points, ["m2a", "m2b"], top)
    assert [(c.step, c.norm_ratio, c.top_k_shared) for c in why.checkpoints] == [(2, 0.25, 0.0), (4, 0.5, 0.0),
                                                                                 (6, 1.0, 1.0)]  # fmt: skip
    assert why.norm == 2.0 and why.norm_ratio == 1.0 and why.steps == 6
    assert why.stability == 0.5  # steps 4 and 6 are the second half: 0 and 1
    doc = why.to_dict()
    assert doc["checkpoints"][2] == {"step": 6, "norm": 2.0, "norm_ratio": 1.0, "top_k_shared": 1.0}
    assert explain("s1", "paper", None, axis[0], 6, (), ["m0a"], top).norm_ratio is None


def test_an_example_longer_than_the_context_is_refused_and_long_ones_noted() -> None:
    assert check_lengths([10, 20], "ex.jsonl", 8192, 128) == ()
    assert check_lengths([10, 200, 300], "ex.jsonl", 8192, 128) == (
        "2 of 3 examples are longer than 128 tokens: training reads their first 128",
    )
    with pytest.raises(UsageError) as e:
        check_lengths([10, 9000], "ex.jsonl", 8192, 128)
    assert str(e.value) == "ex.jsonl: example 2 is 9,000 tokens, longer than the base's context of 8,192"
    assert e.value.fix == "shorten it, or leave it out: a task is shown by short examples"


# ---- pure parts ------------------------------------------------------------------------------------------------


def test_both_shapes_parse_and_the_first_20_are_chosen() -> None:
    lines = [b'\xef\xbb\xbf{"prompt": "B", "completion": "OM"}', b'{"prompt": "P", "completion": "C", "id": 7}', b""]
    lines += [json.dumps({"instruction": f"I{i}", "output": f"O{i}", **({"input": "x"} if i else {})}).encode()
              for i in range(30)]  # fmt: skip
    examples = parse_lines(lines, "f")  # a byte-order mark is not text; other keys are ignored
    assert examples[:4] == [Example("B", "", "OM"), Example("P", "", "C"), Example("I0", "", "O0"),
                            Example("I1", "x", "O1")]  # fmt: skip
    chosen = choose(examples, "f")
    assert chosen.total == 32 and len(chosen.examples) == 20 and chosen.examples == tuple(examples[:20])
    assert chosen.notes == ("f holds 32 examples: using the first 20 (the paper's few-shot setting; change with "
                            "--max-examples)",)  # fmt: skip
    few = choose(examples[:6], "f", 10)
    assert len(few.examples) == 6 and few.notes == ("training on 6 examples, fewer than the paper's 20: the task's "
                                                     "vector may be noisier",)  # fmt: skip
    with pytest.raises(UsageError, match="has more than 10,000 lines"):
        parse_lines([b""] * 10_001, "f")


def test_the_cache_key_covers_examples_order_config_and_base() -> None:
    a, b = Example("a", "", "1"), Example("b", "", "2")
    key = cache_key([a, b], FEWSHOT, BASE_REPO_ID, "s1")
    assert key == cache_key([Example("a", "", "1"), b], FEWSHOT, BASE_REPO_ID, "s1") and len(key) == 64
    others = {
        cache_key([b, a], FEWSHOT, BASE_REPO_ID, "s1"),
        cache_key([a], FEWSHOT, BASE_REPO_ID, "s1"),
        cache_key([a, Example("b", "x", "2")], FEWSHOT, BASE_REPO_ID, "s1"),
        cache_key([a, b], replace(FEWSHOT, lr=1e-3), BASE_REPO_ID, "s1"),
        cache_key([a, b], replace(FEWSHOT, seed=1), BASE_REPO_ID, "s1"),
        cache_key([a, b], FEWSHOT, BASE_REPO_ID, "s2"),
        cache_key([a, b], FEWSHOT, "other/base", "s1"),
    }
    assert key not in others and len(others) == 7
    run = {"steps": 15, "rule": "norm", "every": 1, "space": "sp-1", "target": 1.23}
    runs = {
        cache_key([a, b], FEWSHOT, BASE_REPO_ID, "s1", run={**run, field: value})
        for field, value in (("steps", 14), ("rule", "last"), ("every", 2), ("space", "sp-2"), ("target", 1.24))
    }
    with_run = cache_key([a, b], FEWSHOT, BASE_REPO_ID, "s1", run=run)
    assert len(runs) == 5 and with_run not in runs | {key} | others  # fmt: skip
    # The paper's few-shot setting, with the pool's LoRA shape.
    assert (FEWSHOT.lr, FEWSHOT.epochs, FEWSHOT.batch_size, FEWSHOT.lora_r, FEWSHOT.lora_alpha) == (3.3e-3, 5, 1, 8, 16)


def test_the_nearest_cluster_is_the_one_with_the_nearest_centroid() -> None:
    def unit(rows: list[list[float]]) -> np.ndarray:
        x = np.array(rows, np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    near_member = SpaceCluster("c1", "one member near", ("a", "b", "c"), unit([[1, 0.1, 0], [0, 1, 0], [0, 1, 0.2]]))
    centred = SpaceCluster("c2", "centred", ("d", "e"), unit([[1, -0.6, 0], [1, 0.2, 0]]))
    found = nearest_cluster([near_member, centred], np.array([3.0, 0.3, 0.0], np.float32), "computed now")
    assert found is not None and found.id == "c2" and found.members == ("d", "e") and found.size == 2
    assert [m.repo_id for m in found.top] == ["e", "d"] and found.top[0].score > found.top[1].score
    expected = float(np.mean(centred.unit, axis=0) @ [1, 0.1, 0] / np.linalg.norm(np.mean(centred.unit, axis=0)))
    assert found.similarity == pytest.approx(expected / np.linalg.norm([1, 0.1, 0]), abs=1e-6)
    assert nearest_cluster([], np.ones(3, np.float32), "x") is None


# ---- clusters: the latest report's, or computed now -------------------------------------------------------------


def planted_index(home: Path) -> Settings:
    """An index with three planted families of four vectors in one space; no report yet."""
    settings = settings_for(home, "http://127.0.0.1:9")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, DIM))
    rows = {f"org/{family}-{i}": centres[f] + 0.1 * rng.normal(size=DIM)
            for f, family in enumerate(("alpha", "beta", "gamma")) for i in range(4)}  # fmt: skip
    with open_writer(settings, "test") as index:
        index.models.put([ModelRecord(HubModel(r, "0" * 40, Relation.ADAPTER, ("org/base",), created_at=T0,
                                               tags=(r.split("/")[1].split("-")[0],)), ModelStatus.EMBEDDED)
                          for r in rows])  # fmt: skip
        index.vectors.put_space(SpaceRow(SPACE, {"base_repo": "org/base"}, np.zeros((5, DIM), np.float32), T0))
        index.vectors.put(SPACE, [Embedding(r, "0" * 40, v.astype(np.float32), T0) for r, v in rows.items()])
    return settings


def test_clusters_come_from_the_latest_report_else_are_computed_like_the_report(tmp_path: Path) -> None:
    settings = planted_index(tmp_path / "home")
    with open_reader(settings) as index:
        clusters, source, note = space_clusters(index, SPACE)
        vectors = {r: e.vector for r, e in index.vectors.get(SPACE).items()}
    assert source == "computed now" and note is None
    assert sorted(c.members for c in clusters) == [tuple(f"org/{f}-{i}" for i in range(4))
                                                   for f in ("alpha", "beta", "gamma")]  # fmt: skip
    assert {c.name for c in clusters} == {"alpha", "beta", "gamma"}  # named from the members' tags, as reports are
    found = nearest_cluster(clusters, vectors["org/beta-2"] + vectors["org/beta-0"], source)
    assert found is not None and found.name == "beta" and found.top[0].repo_id in ("org/beta-0", "org/beta-2")

    report = StoredReport("r1", T0, T0, "", {SPACE: (StoredCluster("c7", "two alphas and a beta", (
        "org/alpha-0", "org/alpha-1", "org/beta-3", "org/gone")),)})  # fmt: skip
    with open_writer(settings, "test") as index:
        index.reports.put(report)
    with open_reader(settings) as index:
        clusters, source, note = space_clusters(index, SPACE)
    assert source == "report r1" and note is None
    assert [(c.id, c.name, c.members) for c in clusters] == [
        ("c7", "two alphas and a beta", ("org/alpha-0", "org/alpha-1", "org/beta-3"))
    ]  # a member without a vector
    found = nearest_cluster(clusters, vectors["org/gamma-1"], source)
    assert found is not None and found.id == "c7" and found.source == "report r1"


# ---- task search on the real pool -----------------------------------------------------------------------------


def task_json(pool_index: PoolIndex, path: Path, *args: str) -> dict:
    result = runner.invoke(app, ["--home", str(pool_index.home), "task", str(path), "--base", BASE_REPO_ID,
                                 "--json", *args], env={"HF_ENDPOINT": pool_index.hub_url})  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.pool
def test_math_examples_find_the_math_models_then_the_cache_skips_training(pool_index: PoolIndex, tmp_path: Path):
    labels = json.loads((pool_index.pool / "labels.json").read_text())
    heldout = pool_index.pool / "heldout" / "math.jsonl"
    # 8 of the 24 examples keep the test short (at most 6 steps: 3 epochs of 2 batches of 4).
    args = ("-k", "5", "--max-examples", "8", "--explain")
    first = task_json(pool_index, heldout, *args, "--save-vector", str(tmp_path / "v1.npy"))
    assert first["examples"] == {"file": str(heldout), "total": 24, "used": 8} and first["cached"] is False
    steps = first["training"]["steps"]
    assert first["schedule"].startswith("auto: lr 0.001, batch 4, up to 6 steps, seed 0")
    assert 1 <= steps <= 6 and first["training"]["last_loss"] < first["training"]["first_loss"]
    why = first["explain"]  # auto measured the vector after every step and stopped at the space's median length
    assert why["steps"] == steps and why["space_norm"] > 0
    assert [c["step"] for c in why["checkpoints"]] == list(range(1, steps + 1))
    assert all(c["norm_ratio"] < 1 for c in why["checkpoints"][:-1]) and (why["checkpoints"][-1]["norm_ratio"] >= 1
                                                                             or steps == 6)  # fmt: skip
    # The measure along training (peft's layers) and the saved adapter embedded by the embedder agree closely.
    assert why["norm"] == pytest.approx(why["checkpoints"][-1]["norm"], rel=0.02)
    assert why["checkpoints"][-1]["top_k_shared"] >= 0.8 and 0 <= why["stability"] <= 1
    top = [n["repo_id"] for n in first["neighbors"]]
    assert len(top) == 5 and [labels[r] for r in top[:3]] == ["math"] * 3, top
    assert sum("math" in labels[r] for r in top) >= 4, top  # precision@5 at least 0.8 (merges and mixes count)
    cluster = first["cluster"]
    assert cluster is not None and cluster["source"].startswith("report "), cluster
    assert {labels[m["repo_id"]] for m in cluster["top_members"]} <= {"math", "math+code"}, cluster
    assert cluster["size"] >= 3 and "math" in cluster["name"], cluster
    assert first["neighbors"][0]["cluster"] == cluster["name"]

    again = task_json(pool_index, heldout, *args, "--save-vector", str(tmp_path / "v2.npy"))
    assert again["cached"] is True and again["train_seconds"] == 0.0 and again["key"] == first["key"]
    assert again["training"] == first["training"] and again["explain"] == why
    assert np.array_equal(np.load(tmp_path / "v1.npy"), np.load(tmp_path / "v2.npy"))
    assert [n["repo_id"] for n in again["neighbors"]] == top
    shown = runner.invoke(app, ["--home", str(pool_index.home), "task", str(heldout), "--base", BASE_REPO_ID, *args],
                          env={"HF_ENDPOINT": pool_index.hub_url})  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "schedule auto: lr 0.001, batch 4, up to 6 steps, seed 0" in shown.stdout
    assert f"stopped after {steps} steps" in shown.stdout and "of the final top-k" in shown.stdout
    assert f"x the space's median vector ({why['space_norm']:.3g})" in shown.stdout


@pytest.mark.pool
def test_prompt_completion_lines_work_with_filters(pool_index: PoolIndex, tmp_path: Path) -> None:
    labels = json.loads((pool_index.pool / "labels.json").read_text())
    rows = [json.loads(line) for line in (pool_index.pool / "heldout" / "code.jsonl").read_text().splitlines()[:5]]
    path = write(tmp_path / "code.jsonl", "".join(
        json.dumps({"prompt": f"{r['instruction']}\n\n{r['input']}".strip(), "completion": r["output"]}) + "\n"
        for r in rows))  # fmt: skip
    doc = task_json(pool_index, path, "-k", "3", "--relation", "adapter", "--where", "repo_id NOT LIKE '%-1'",
                    "--schedule", "paper", "--steps", "12")  # fmt: skip
    assert doc["examples"]["used"] == 5 and doc["training"]["steps"] == 12 and doc["cached"] is False
    assert doc["schedule"] == "paper: lr 0.0033, batch 1, up to 12 steps, seed 0, to the end" and "explain" not in doc
    assert any("fewer than the paper's 20" in n for n in doc["notes"])
    top = [n["repo_id"] for n in doc["neighbors"]]
    assert len(top) == 3 and labels[top[0]] == "code" and not any(r.endswith("-1") for r in top), top
    assert all(n["relation"] == "adapter" for n in doc["neighbors"])
    assert doc["cluster"] is not None and "code" in doc["cluster"]["name"], doc["cluster"]


@pytest.mark.pool
def test_an_example_longer_than_the_base_context_is_refused_before_training(pool_index: PoolIndex, tmp_path: Path):
    long = json.dumps({"instruction": "Summarise.", "input": " ".join(["word"] * 9000), "output": "Short."})
    path = write(tmp_path / "long.jsonl", f"{GOOD}\n" * 4 + long + "\n")
    tasks = pool_index.home / "cache" / "tasks"
    before = sorted(tasks.glob("*")) if tasks.is_dir() else []
    result = runner.invoke(app, ["--home", str(pool_index.home), "task", str(path), "--base", BASE_REPO_ID],
                           env={"HF_ENDPOINT": pool_index.hub_url})  # fmt: skip
    assert result.exit_code == 2
    line = one_line_error(result)
    assert line.startswith(f"error: {path}: example 5 is ")
    assert "tokens, longer than the base's context of 8,192" in line
    assert line.endswith("(fix: shorten it, or leave it out: a task is shown by short examples)")
    assert sorted(tasks.glob("*")) == before if tasks.is_dir() else before == []  # refused before any training


def test_a_cached_adapter_with_damaged_checkpoints_is_trained_again(tmp_path: Path) -> None:
    folder = tmp_path / "key"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"")
    (folder / "task.json").write_text(json.dumps({"steps": 3, "first_loss": 2.0, "last_loss": 1.0, "seconds": 4.0}))
    points = [Checkpoint(s, 1.0, np.full(4, s, np.float32)) for s in (1, 2, 3)]
    _write_checkpoints(folder, points)
    hit = _cached(folder, "key")
    assert hit is not None and [(c.step, c.vector.tolist()) for c in hit.checkpoints] == [
        (s, [float(s)] * 4) for s in (1, 2, 3)
    ]
    for damaged in (b"", b"PK\x03\x04 truncated"):
        (folder / "checkpoints.npz").write_bytes(damaged)
        assert _cached(folder, "key") is None  # unreadable: trained again and replaced, never a traceback
