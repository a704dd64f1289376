"""``hubdelta merge-plan``: the pure selection (fast), then plans, refusals and merges on the embedded pool."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hubdelta.cli import app
from hubdelta.index.door import open_reader, open_writer
from hubdelta.index.embeddings import Embedding, SpaceRow
from hubdelta.index.records import HubModel, ModelRecord, ModelStatus, Relation
from hubdelta.kernel.errors import OutputError, UsageError
from hubdelta.merge.apply import check_out
from hubdelta.merge.combine import check_method
from hubdelta.merge.plan import distinct, farthest_points, group_labels, medoid, nearest_rows, unit_rows, unmergeable
from hubdelta_dev.pool.base import BASE_REPO_ID
from tests.helpers import PoolIndex, free_port, one_line_error, settings_for

runner = CliRunner()


# ---- the pure selection -----------------------------------------------------------------------------------------


def _brute_greedy(unit: np.ndarray, anchor: int, k: int) -> list[int]:
    chosen = [anchor]
    while len(chosen) < k:
        best, best_d = -1, -1.0
        for i in range(len(unit)):
            if i in chosen:
                continue
            d = min(1 - float(unit[i] @ unit[j]) for j in chosen)
            if d > best_d + 1e-12:
                best, best_d = i, d
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_farthest_points_is_the_brute_max_min_greedy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    unit = unit_rows(rng.normal(size=(40, 16)))
    picks = farthest_points(unit, 7, 6)
    assert [p[0] for p in picks] == _brute_greedy(unit, 7, 6)
    for n, (row, d, near) in enumerate(picks[1:], start=1):
        before = [p[0] for p in picks[:n]]
        assert near in before and d == pytest.approx(min(1 - unit[row] @ unit[j] for j in before))


def test_farthest_points_never_takes_a_copy_of_a_chosen_row() -> None:
    unit = unit_rows(np.array([[1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]]))  # 3: not a copy, same vector
    assert [p[0] for p in farthest_points(unit, 0, 3)] == [0, 1, 2]  # a tie at distance 0: the lowest row
    assert [p[0] for p in farthest_points(unit, 0, 3, [-1, 0, 0, -1])] == [0, 1, 3]  # row 2 is row 1's copy
    assert distinct([-1, 0, 0, -1]) == 3 and group_labels(["a", "b", "c"], [("c", "a")]) == [0, -1, 0]


def test_a_reupload_and_its_original_are_never_two_members(tmp_path: Path) -> None:
    from hubdelta.index.copies import CopyRow
    from hubdelta.merge.api import merge_plan

    now = datetime(2026, 11, 1, tzinfo=UTC)
    vectors = {"org/query": [1.0, 0.0], "org/first": [-1.0, 0.0], "org/again": [-1.0, 0.0], "org/other": [0.0, 1.0]}
    settings = settings_for(tmp_path / "home", "http://127.0.0.1:9")
    with open_writer(settings, "test") as index:
        index.models.put([ModelRecord(HubModel(k, "a" * 40, Relation.ADAPTER, ("org/base",)), ModelStatus.EMBEDDED)
                          for k in vectors])  # fmt: skip
        index.vectors.put_space(SpaceRow("sp", {"base_repo": "org/base"}, np.ones((2, 2), np.float32), now))
        index.vectors.put("sp", [Embedding(k, "a" * 40, np.asarray(v, np.float32), now) for k, v in vectors.items()])
        index.copies.put([CopyRow("sp", "org/first", "a" * 40, "F", 100, None, now),
                          CopyRow("sp", "org/again", "a" * 40, "F", 100, "org/first", now)])  # fmt: skip
    plan = merge_plan(settings, anchor="org/query", k=3)
    assert len({"org/first", "org/again"} & set(plan.repo_ids)) == 1 and "org/other" in plan.repo_ids
    with pytest.raises(UsageError, match=r"2 mergeable models sp offers after --where \(copies counted once\)"):
        merge_plan(settings, anchor="org/query", k=3, where="repo_id != 'org/other'")  # the copy would be 3rd


def test_medoid_and_nearest_rows() -> None:
    unit = unit_rows(np.array([[1.0, 0.0], [0.9, 0.1], [0.7, 0.7], [0.0, 1.0]]))
    assert medoid(unit) == 2  # the middle direction has the highest mean cosine to the others
    assert nearest_rows(unit, 0, 2) == [0, 1]


def _rec(relation: Relation, bases: tuple[str, ...] = ("b",)) -> ModelRecord:
    return ModelRecord(HubModel("o/m", "0" * 40, relation, bases), ModelStatus.EMBEDDED)


def test_unmergeable_relations_and_bases() -> None:
    assert unmergeable(_rec(Relation.ADAPTER), "b") is None
    assert unmergeable(_rec(Relation.FINETUNE), "b") is None
    assert "quantized" in (unmergeable(_rec(Relation.QUANTIZED), "b") or "")
    assert "not b" in (unmergeable(_rec(Relation.ADAPTER, ("other",)), "b") or "")
    assert unmergeable(None, "b") is not None


def test_bad_method_density_and_out(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--method"):
        check_method("slerp", 0.2)
    with pytest.raises(UsageError, match="--density"):
        check_method("ties", 0.0)
    (tmp_path / "taken").mkdir()
    with pytest.raises(UsageError, match="already exists"):
        check_out(tmp_path / "taken")
    with pytest.raises(UsageError, match="does not exist"):
        check_out(tmp_path / "no" / "out")
    with pytest.raises(OutputError):
        check_out(Path("/proc/merged"))
    assert check_out(tmp_path / "new") == tmp_path / "new" and not (tmp_path / "new").exists()


# ---- on the embedded pool ---------------------------------------------------------------------------------------


def _space(pool_index: PoolIndex) -> str:
    with open_reader(pool_index.settings) as index:
        return next(iter(index.vectors.spaces()))


def _plan(pool_index: PoolIndex, *args: str) -> dict:
    result = runner.invoke(app, ["--home", str(pool_index.home), "merge-plan", "--json", *args],
                           env={"HF_ENDPOINT": pool_index.hub_url})  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_plan_is_the_greedy_dispersion_of_the_stored_vectors(pool_index: PoolIndex) -> None:
    anchor = "hubdelta-pool/smollm2-lora-math-1"
    doc = _plan(pool_index, "--anchor", anchor, "-k", "4")
    ids = [m["repo_id"] for m in doc["members"]]
    assert ids[0] == anchor and len(set(ids)) == 4 and doc["anchor_rule"] == "given"
    assert all(m["relation"] in ("adapter", "finetune", "merge") for m in doc["members"])
    with open_reader(pool_index.settings) as index:
        stored = index.vectors.visible(doc["space"])
    offered = sorted(stored)  # every pool model is mergeable onto the base
    unit = unit_rows(np.stack([stored[r].vector for r in offered]))
    expected = [offered[i] for i in _brute_greedy(unit, offered.index(anchor), 4)]
    assert ids == expected
    sub = unit_rows(np.stack([stored[r].vector for r in ids]))
    assert np.allclose(np.array(doc["cosines"]), sub @ sub.T, atol=1e-5)
    assert doc["clusters_total"] >= 2 and len(doc["clusters_covered"]) >= 2  # dispersion leaves the math cluster


def test_plan_without_anchor_starts_at_the_medoid_and_where_restricts(pool_index: PoolIndex) -> None:
    doc = _plan(pool_index, "-k", "3", "--where", "relation = 'adapter'")
    assert doc["anchor_rule"].startswith("none given: the medoid")
    assert all(m["relation"] == "adapter" for m in doc["members"]) and doc["excluded"]["left out by --where"] >= 1


def test_refusals_are_one_line(pool_index: PoolIndex, tmp_path: Path) -> None:
    home, env = ["--home", str(pool_index.home)], {"HF_ENDPOINT": pool_index.hub_url}
    cases = [
        (["--anchor", "hubdelta-pool/smollm2-lora-math-9"], "not in the index"),
        (["-k", "500"], "mergeable models"),
        (["-k", "3", "--where", "relation = 'nothing'"], "0 mergeable models"),
        (["--space", "nope"], "does not exist"),
        (["--where", "no_such_column = 1"], "--where"),
        (["--apply", str(tmp_path / "no" / "out")], "does not exist"),
        (["--apply", str(tmp_path), "--method", "linear"], "already exists"),
        (["--apply", str(tmp_path / "x"), "--method", "slerp"], "--method"),
        (["--method", "ties"], "--apply"),  # without --apply it would be silently ignored
        (["--density", "0.5"], "--apply"),
    ]
    for args, expected in cases:
        line = one_line_error(runner.invoke(app, [*home, "merge-plan", *args], env=env))
        assert expected in line, (args, line)


def test_anchor_of_another_space_is_refused(pool_index: PoolIndex, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(pool_index.home, home, ignore=shutil.ignore_patterns("cache"))
    settings = settings_for(home, pool_index.hub_url)
    now = datetime.now(UTC)
    with open_writer(settings, "test") as index:
        index.vectors.put_space(SpaceRow("other-space", {"base_repo": "acme/other"}, np.ones((2, 4), np.float32)))
        rec = ModelRecord(HubModel("acme/lone", "1" * 40, Relation.ADAPTER, ("acme/other",)), ModelStatus.EMBEDDED)
        index.models.put([rec])
        index.vectors.put("other-space", [Embedding("acme/lone", "1" * 40, np.ones(4, np.float32), now)])
    args = ["--home", str(home), "merge-plan", "--space", _space(pool_index), "--anchor", "acme/lone"]
    line = one_line_error(runner.invoke(app, args))
    assert "embedded in other-space" in line


def _add(settings_home: Path, url: str, folder: Path, name: str) -> dict:
    result = runner.invoke(app, ["--home", str(settings_home), "add", str(folder), "--base", BASE_REPO_ID, "--name",
                                 name, "--json"], env={"HF_ENDPOINT": url})  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{\n") :])  # after the embed's log lines


@pytest.fixture(scope="module")
def writable_home(pool_index: PoolIndex, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the pool's home that merges may be added to (the shared one is never written)."""
    home = tmp_path_factory.mktemp("merge-home") / "home"
    shutil.copytree(pool_index.home, home, ignore=shutil.ignore_patterns("cache"))
    return home


def _vector(home: Path, url: str, repo: str) -> np.ndarray:
    with open_reader(settings_for(home, url)) as index:
        found = index.vectors.of_repo(repo)
    assert len(found) == 1, found
    return next(iter(found.values())).vector


def test_single_adapter_linear_merge_reproduces_its_vector(pool_index: PoolIndex, writable_home: Path,
                                                           tmp_path: Path) -> None:  # fmt: skip
    anchor = "hubdelta-pool/smollm2-lora-code-2"
    out = tmp_path / "one"
    doc = _plan(pool_index, "--anchor", anchor, "-k", "1", "--apply", str(out))
    assert doc["applied"]["kind"] == "adapter" and doc["applied"]["weights"] == [1.0]
    _add(writable_home, pool_index.hub_url, out, "local/merge-one")
    own, merged = _vector(writable_home, pool_index.hub_url, anchor), _vector(writable_home, pool_index.hub_url,
                                                                              "local/merge-one")  # fmt: skip
    assert np.linalg.norm(merged - own) <= 1e-4 * np.linalg.norm(own)


@pytest.mark.parametrize("method", ["linear", "ties"])
def test_applied_merge_is_embedded_by_add(pool_index: PoolIndex, writable_home: Path, tmp_path: Path,
                                          method: str) -> None:  # fmt: skip
    out = tmp_path / f"merged-{method}"
    doc = _plan(pool_index, "--anchor", "hubdelta-pool/smollm2-lora-math-1", "-k", "3", "--where",
                "relation = 'adapter'", "--apply", str(out), "--method", method)  # fmt: skip
    applied = doc["applied"]
    assert applied["kind"] == ("adapter" if method == "linear" else "full")
    recipe = json.loads((out / "merge_recipe.json").read_text())
    assert [m["repo_id"] for m in recipe["members"]] == [m["repo_id"] for m in doc["members"]]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the temporary folder was renamed
    added = _add(writable_home, pool_index.hub_url, out, f"local/merged-{method}")
    assert added["space_id"] == doc["space"]
    assert np.linalg.norm(_vector(writable_home, pool_index.hub_url, f"local/merged-{method}")) > 0
    _check_weights(pool_index.pool / "hub", out, [m["repo_id"] for m in doc["members"]], method)


def _check_weights(hub: Path, out: Path, members: list[str], method: str) -> None:
    """The written weights are the merge rule applied to the members' task vectors (peft's cat for linear)."""
    from safetensors.torch import load_file

    from hubdelta.embedder.lora import read_adapter
    from hubdelta.embedder.training import load_causal_lm
    from hubdelta.merge.combine import adapter_delta, combine, default_weights

    base_dir = hub / BASE_REPO_ID
    model = load_causal_lm(base_dir)
    key = "model.layers.3.self_attn.q_proj.weight"
    deltas = [{key: adapter_delta(read_adapter(m, hub / m, model).factors)[key]} for m in members]
    expected = combine(deltas, method, default_weights(method, len(members)), 0.2)[key]
    if method == "linear":
        written = adapter_delta(read_adapter("merged", out, model).factors)[key]
    else:
        written = load_file(str(out / "model.safetensors"))[key] - load_file(str(base_dir / "model.safetensors"))[key]
    # a full checkpoint stores base + delta in float32: (base + delta) - base is exact to the base's rounding
    tol = 1e-5 * float(expected.abs().max()) if method == "linear" else 1e-6
    assert float((written - expected).abs().max()) <= tol
    if method == "ties":
        assert float((written == 0).float().mean()) > 0.3  # trimmed: most entries of each task vector dropped


def test_table_for_people(pool_index: PoolIndex) -> None:
    anchor = "hubdelta-pool/smollm2-lora-legal-1"
    result = runner.invoke(app, ["--home", str(pool_index.home), "merge-plan", "--anchor", anchor, "-k", "3"],
                           env={"HF_ENDPOINT": pool_index.hub_url, "COLUMNS": "160"})  # fmt: skip
    assert result.exit_code == 0, result.output
    print(result.output)
    assert anchor in result.output and "anchor (given)" in result.output
    assert "pairwise cosines" in result.output and "clusters covered" in result.output


def test_a_failed_apply_leaves_nothing(pool_index: PoolIndex, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    args = ["--home", str(pool_index.home), "merge-plan", "--anchor", "hubdelta-pool/smollm2-lora-math-1", "-k", "2",
            "--apply", str(out)]  # fmt: skip
    result = runner.invoke(app, args, env={"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"})  # nothing listens
    assert result.exit_code != 0
    assert list(tmp_path.iterdir()) == []  # neither OUT nor its temporary folder


def test_python_api(pool_index: PoolIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    import hubdelta

    monkeypatch.setenv("HF_ENDPOINT", pool_index.hub_url)
    plan = hubdelta.merge_plan(anchor="hubdelta-pool/smollm2-lora-code-1", k=2, home=pool_index.home)
    assert plan.repo_ids[0] == "hubdelta-pool/smollm2-lora-code-1" and len(plan.repo_ids) == 2
    assert plan.to_dict()["members"][1]["nearest_chosen"] == "hubdelta-pool/smollm2-lora-code-1"


FULL = ("hubdelta-pool/smollm2-full-math", "hubdelta-pool/smollm2-full-code")


def test_full_finetunes_merge_by_hand_into_a_checkpoint(pool_index: PoolIndex, writable_home: Path,
                                                        tmp_path: Path) -> None:  # fmt: skip
    from safetensors.torch import load_file

    out = tmp_path / "full"
    doc = _plan(pool_index, "--anchor", FULL[0], "-k", "2", "--where", "relation = 'finetune'", "--apply", str(out))
    assert [m["repo_id"] for m in doc["members"]] == list(FULL)
    assert doc["applied"]["kind"] == "full" and doc["applied"]["weights"] == [0.5, 0.5]
    hub = pool_index.pool / "hub"
    key = "model.layers.5.mlp.down_proj.weight"
    base = load_file(str(hub / BASE_REPO_ID / "model.safetensors"))[key]
    math, code = (load_file(str(hub / m / "model.safetensors"))[key] for m in FULL)
    written = load_file(str(out / "model.safetensors"))[key]
    assert float((written - (base + 0.5 * (math - base) + 0.5 * (code - base))).abs().max()) <= 1e-6
    added = _add(writable_home, pool_index.hub_url, out, "local/merged-full")
    assert added["kind"] == "full" and added["space_id"] == doc["space"]


def _rslora_copy(src: Path, dst: Path) -> Path:
    """``src``'s adapter as an rsLoRA adapter of the same delta: alpha/sqrt(r) == the original alpha/r."""
    import math

    shutil.copytree(src, dst)
    config = json.loads((dst / "adapter_config.json").read_text())
    config["use_rslora"] = True
    config["lora_alpha"] = config["lora_alpha"] / math.sqrt(config["r"])
    (dst / "adapter_config.json").write_text(json.dumps(config))
    return dst


def test_linear_merge_of_rslora_adapters_is_the_mean_of_their_deltas(pool_index: PoolIndex, tmp_path: Path) -> None:
    """peft's cat merge keeps the first member's use_rslora: the merged delta must not grow by sqrt(R)."""
    from hubdelta.embedder.fetch import FetchedModel
    from hubdelta.embedder.lora import read_adapter
    from hubdelta.embedder.safety import Limits
    from hubdelta.embedder.safety_records import RepoKind
    from hubdelta.embedder.training import load_causal_lm
    from hubdelta.merge.apply import _write_cat
    from hubdelta.merge.combine import adapter_delta

    hub = pool_index.pool / "hub"
    names = ("hubdelta-pool/smollm2-lora-math-1", "hubdelta-pool/smollm2-lora-code-2")
    first = _rslora_copy(hub / names[0], tmp_path / "rs")  # the first member's config is the one peft copies
    members = [(names[0], first), (names[1], hub / names[1])]
    fetched = [FetchedModel(r, "0" * 40, RepoKind.ADAPTER, p, (), (), 0, None, False) for r, p in members]
    out = tmp_path / "out"
    out.mkdir()
    _write_cat(out, hub / BASE_REPO_ID, BASE_REPO_ID, fetched, [0.5, 0.5], Limits())
    model = load_causal_lm(hub / BASE_REPO_ID)
    own = [adapter_delta(read_adapter(r, hub / r, model).factors) for r in names]  # the unchanged originals
    written = adapter_delta(read_adapter("merged", out, model).factors)
    assert set(written) == set(own[0]) | set(own[1])
    for key, got in written.items():
        want = sum(0.5 * d[key] for d in own if key in d)
        assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max()), key


def test_a_member_without_a_vector_and_a_failed_rename_are_one_line_errors(pool_index: PoolIndex,
                                                                          tmp_path: Path) -> None:  # fmt: skip
    from dataclasses import replace

    from hubdelta.embedder.fetch import FetchedModel
    from hubdelta.embedder.safety import Limits
    from hubdelta.embedder.safety_records import RepoKind
    from hubdelta.kernel.errors import HubdeltaError
    from hubdelta.merge.api import merge_plan
    from hubdelta.merge.apply import _members, _write

    anchor = "hubdelta-pool/smollm2-lora-code-2"
    plan = merge_plan(pool_index.settings, anchor=anchor, k=1)
    ghost = replace(plan, members=(*plan.members, replace(plan.members[0], repo_id="acme/ghost")))
    with pytest.raises(HubdeltaError, match="acme/ghost has no vector") as caught:
        _members(pool_index.settings, ghost)
    assert "\n" not in str(caught.value) and "merge-plan again" in (caught.value.fix or "")
    out = tmp_path / "out"
    (out / "taken").mkdir(parents=True)  # OUT appeared after the up-front check: the rename cannot replace it
    hub = pool_index.pool / "hub"
    fetched = [FetchedModel(anchor, "0" * 40, RepoKind.ADAPTER, hub / anchor, (), (), 0, None, False)]
    with pytest.raises(OutputError, match="--apply"):
        _write(out, "adapter", hub / BASE_REPO_ID, plan, fetched, "linear", [1.0], 0.2, Limits())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and [p.name for p in out.iterdir()] == ["taken"]


def test_a_full_merge_beyond_the_memory_bound_is_refused_up_front(pool_index: PoolIndex, tmp_path: Path) -> None:
    from hubdelta.kernel.errors import HubdeltaError
    from hubdelta.merge.api import merge_plan
    from hubdelta.merge.apply import apply_plan

    settings = pool_index.settings
    full = merge_plan(settings, anchor=FULL[0], k=2, where="relation = 'finetune'")
    adapters = merge_plan(settings, anchor="hubdelta-pool/smollm2-lora-math-1", k=3, where="relation = 'adapter'")
    # 135M params: the base's files twice + (k + 2) float32 copies of the model, well over 1 GB
    for plan, method in ((full, "linear"), (adapters, "ties")):
        with pytest.raises(HubdeltaError, match=r"needs about [2-9]\.\d\d GB of memory, 1\.00 GB is available") as e:
            apply_plan(settings, plan, tmp_path / "out", method=method, memory_bytes=10**9)
        assert "-k" in (e.value.fix or "")
    assert list(tmp_path.iterdir()) == []
