"""Suggested labels, the pure parts: evidence, the documented rule, scoring, and what a refresh recomputes."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hubdelta.cli import app
from hubdelta.index.labels import SuggestedTag
from hubdelta.report import suggest
from hubdelta.report.labels import SpaceDocs, entered, evidence_digest, label_rows, redocumented, to_recompute

IGNORE = frozenset({"huggingfacetb", "smollm2", "135m"})


def test_evidence_weighs_tags_and_card_over_name_words_and_drops_boilerplate() -> None:
    tags = ["base_model:adapter:HuggingFaceTB/SmolLM2-135M", "license:mit", "region:us", "safetensors", "peft",
            "autotrain_compatible", "dataset:gsm8k", "math"]  # fmt: skip
    found = suggest.evidence("acme/smollm2-lora-algebra-v2", tags, "license: mit; datasets: openai/gsm8k", IGNORE)
    assert found == {"gsm8k": 1.0, "math": 1.0, "openai": 1.0, "algebra": suggest.NAME_WEIGHT}
    # A word both in the name and in a tag counts as a tag.
    assert suggest.evidence("acme/math-7b", ["math"], "")["math"] == 1.0
    # Boilerplate only: no evidence at all.
    assert suggest.evidence("acme/checkpoint-500", ["safetensors", "license:mit", "lora"], "license: mit") == {}


# Real Hub tags of an adapter with no card: boilerplate only.
HUB_TAGS = ["transformers", "safetensors", "text-generation", "license:apache-2.0", "region:us",
            "base_model:adapter:HuggingFaceTB/SmolLM2-135M", "peft", "lora"]  # fmt: skip


@pytest.mark.parametrize("repo_id", ["bob/my-finetune", "x/test-model-final", "u/output", "u/results",
                                     "u/new_model", "u/finetuned-checkpoint-v2", "u/sft-lora-merged",
                                     "u/my_test_run-3"])  # fmt: skip
def test_a_name_of_junk_words_documents_nothing(repo_id: str) -> None:
    found = suggest.evidence(repo_id, HUB_TAGS, "license: apache-2.0", IGNORE)
    assert found == {}
    assert suggest.documented({repo_id: found}, frozenset()) == {}


def test_a_name_with_a_real_word_documents_and_junk_never_becomes_a_suggestion() -> None:
    # The pool's names: the domain word survives (only the name documents these models).
    assert suggest.evidence("pool/smollm2-lora-math-2", HUB_TAGS, "", IGNORE) == {"math": suggest.NAME_WEIGHT}
    assert suggest.evidence("bob/my-legal-finetune-final", HUB_TAGS, "", IGNORE) == {"legal": suggest.NAME_WEIGHT}
    # A tag still states what a junk name word would not: tags are not filtered by the name list.
    assert suggest.evidence("bob/my-model", ["test"], "", IGNORE) == {"test": 1.0}
    # A mostly undocumented neighbourhood: junk-named twins say nothing, the one documented model speaks.
    raw = {r: suggest.evidence(r, HUB_TAGS, "", IGNORE) for r in ("a/my-finetune", "b/my-model-final", "c/output")}
    raw["d/code-helper"] = suggest.evidence("d/code-helper", [*HUB_TAGS, "code"], "", IGNORE)
    docs = suggest.documented(raw, suggest.common_tokens(raw.values()))
    s = suggest.suggest([("a/my-finetune", 0.99), ("b/my-model-final", 0.98), ("c/output", 0.97),
                         ("d/code-helper", 0.6)], docs)  # fmt: skip
    assert list(docs) == ["d/code-helper"] and [t.tag for t in s.tags] == ["code", "helper"]
    assert "my" not in s.behaves_like and "nearest documented: d/code-helper" in s.behaves_like


def test_a_refresh_finds_the_models_whose_documentation_changed() -> None:
    was = {"o/a": {"math": 0.5}, "o/b": {"code": 1.0, "python": 1.0}, "o/c": {"legal": 0.5}}
    stored = {r: evidence_digest(was.get(r)) for r in ("o/a", "o/b", "o/c", "o/bare", "o/later")}
    assert stored["o/bare"] == "" and len({stored["o/a"], stored["o/b"], stored["o/c"]}) == 3
    assert redocumented(was, stored) == frozenset()  # nothing changed: the space is current
    now = {"o/a": {"math": 1.0}, "o/b": {"python": 1.0, "code": 1.0}, "o/later": {"chemistry": 1.0}}
    # a: a tag now states its name word; b: same evidence (order does not matter); c: no longer documented;
    # later: documented since; bare: still undocumented.
    assert redocumented(now, stored) == {"o/a", "o/c", "o/later"}


def test_tokens_most_models_share_are_common_and_undocumented_models_are_left_out() -> None:
    raw = {f"o/m{i}": {"house": 1.0, f"topic{i % 2}": 0.5} for i in range(6)} | {"o/bare": {}}
    common = suggest.common_tokens(raw.values())
    assert common == {"house"}  # on 6 of 6 documented models; topic0/topic1 on 3 of 6 (not more than half)
    docs = suggest.documented(raw | {"o/only-house": {"house": 1.0}}, common)
    assert "o/bare" not in docs and "o/only-house" not in docs and docs["o/m1"] == {"topic1": 0.5}
    assert suggest.common_tokens([{"a": 1.0}, {"a": 1.0}]) == frozenset()  # fewer than COMMON_MIN models


def test_suggest_weights_by_similarity_and_ignores_undocumented_neighbours() -> None:
    docs = {"o/a": {"math": 1.0}, "o/b": {"math": 0.5}, "o/c": {"code": 1.0}}
    s = suggest.suggest([("o/a", 0.9), ("o/undocumented", 0.99), ("o/b", 0.8), ("o/c", 0.3)], docs, tau=None)
    total = 0.9 * 1.0 + 0.8 * 0.5 + 0.3 * 1.0
    # code's support (0.3 / 1.6 = 0.19) is under MIN_SUPPORT: not suggested.
    assert s.tags == (SuggestedTag("math", round((0.9 + 0.4) / total, 4)),)
    closeness = (0.9**2 + 0.8**2 + 0.3**2) / (0.9 + 0.8 + 0.3)
    assert s.confidence == round((0.9 + 0.4) / total * closeness, 4)
    assert s.behaves_like == "behaves like math models; nearest documented: o/a (0.90)"
    assert "o/undocumented" not in s.behaves_like


def test_close_twins_outvote_the_far_tail_of_the_neighbours() -> None:
    """Two twins at 0.95 and eight far models of another kind at 0.45: linear weights let the crowd win."""
    docs = {"o/t1": {"chemistry": 0.5}, "o/t2": {"chemistry": 0.5}} | {f"o/f{i}": {"legal": 0.5} for i in range(8)}
    near = [("o/t1", 0.95), ("o/t2", 0.95)] + [(f"o/f{i}", 0.45) for i in range(8)]
    assert suggest.weights([0.95, 0.85, 0.45]) == pytest.approx([1.0, 0.3679, 0.0067], abs=1e-4)
    sharp, flat = suggest.suggest(near, docs), suggest.suggest(near, docs, tau=None)
    assert sharp.tags == (SuggestedTag("chemistry", round(2 / (2 + 8 * math.exp(-5)), 4)),)
    assert sharp.confidence > 0.9
    assert flat.tags[0].tag == "legal" and flat.confidence < 0.5  # 8 x 0.45 = 3.6 against 2 x 0.95 = 1.9


def test_confidence_is_lower_when_neighbours_disagree_and_zero_without_documented_ones() -> None:
    docs = {f"o/m{i}": {"math": 1.0} for i in range(4)} | {f"o/c{i}": {"code": 1.0} for i in range(4)}
    agree = suggest.suggest([(f"o/m{i}", 0.9) for i in range(4)], docs)
    split = suggest.suggest([(f"o/{p}{i}", 0.9) for i in range(2) for p in "mc"], docs)
    assert 0 <= split.confidence < agree.confidence <= 1
    assert agree.tags[0].tag == "math" and {t.tag for t in split.tags} == {"math", "code"}
    assert split.behaves_like.startswith("behaves like code / math models")  # ties: alphabetical
    assert suggest.suggest([("o/x", 0.9)], docs) == suggest.NONE
    assert suggest.suggest([("o/m1", -0.2)], docs) == suggest.NONE  # an opposite model says nothing
    assert suggest.card_values("model_name: Alpha; datasets: a, b; license: mit") == "Alpha a, b"


def _space(vectors: list[list[float]], docs: dict[str, dict[str, float]]) -> SpaceDocs:
    unit = np.asarray(vectors, np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    ids = [f"o/{i}" for i in range(len(unit))]
    return SpaceDocs(ids, unit, [None] * len(ids), docs, frozenset())


def test_a_model_never_labels_itself_and_k_bounds_the_neighbours() -> None:
    data = _space([[1, 0], [1, 0.1], [0.2, 1], [0.3, 1]], {"o/0": {"math": 1.0}, "o/2": {"code": 1.0}})
    labels = label_rows("s", data, [0, 1, 2, 3], k=1)
    assert [x.neighbours for x in labels] == [("o/2",), ("o/0",), ("o/0",), ("o/2",)]
    assert [x.top for x in labels] == ["code", "math", "math", "code"]  # o/0's only other documented is o/2
    assert all(x.sims[-1] == round(x.kth, 4) for x in labels)  # kth unrounded, the cosines shown rounded
    assert label_rows("s", data, [1], k=5)[0].kth == -1.0  # fewer than k documented: any new one enters


def test_a_refresh_recomputes_the_changed_their_dependants_and_those_a_new_vector_comes_close_to() -> None:
    data = _space([[1, 0], [1, 0.05], [0, 1], [0.05, 1], [1, 1]],
                  {"o/0": {"a": 1.0}, "o/2": {"b": 1.0}, "o/4": {"c": 1.0}})  # fmt: skip
    stored = (["o/0", "o/1", "o/2", "o/3", "o/gone"], np.array([0.5, 0.99, 0.5, 0.99, 0.1], np.float32),
              [("o/2",), ("o/0",), ("o/0",), ("o/gone",), ("o/0",)])  # fmt: skip
    rows, gone = to_recompute(data, stored, frozenset({"o/4"}))
    # o/4: new (never labelled); o/3: its neighbour left; o/0 and o/2: o/4 (cos 0.71) beats their kth 0.5;
    # o/1 keeps its closer neighbour (kth 0.99).
    assert rows == [0, 2, 3, 4] and gone == ["o/gone"]
    assert entered(data.unit, [], np.zeros(5, np.float32)).sum() == 0


def test_a_model_documented_just_above_a_rows_kth_enters_though_the_shown_cosine_rounds_up() -> None:
    def at(cos: float) -> list[float]:  # a unit vector at cosine `cos` to the first axis
        return [cos, math.sqrt(1 - cos * cos), 0.0]

    # Row 0's one documented neighbour o/1 at cosine 0.12346 (shown as 0.1235); o/2, at 0.12348, is closer.
    data = _space([[1, 0, 0], at(0.12346), at(0.12348)], {"o/1": {"x": 1.0}})
    (row,) = label_rows("s", data, [0], k=1)
    assert row.neighbours == ("o/1",) and row.sims == (0.1235,)
    # o/2 is documented since: row 0 must be recomputed (with the rounded 0.1235 as kth it would not be).
    assert entered(data.unit, [2], np.array([row.kth, 2.0, 2.0], np.float32)).tolist() == [True, False, False]


@pytest.mark.parametrize("kth", [-1.0, 0.7])
def test_entered_compares_with_each_rows_kth(kth: float) -> None:
    data = _space([[1, 0], [0.8, 0.6]], {})
    hit = entered(data.unit, [1], np.array([kth, 2.0], np.float32))
    assert hit.tolist() == [True, False]  # row 1 is the new one itself: its kth 2.0 (never labelled) not beaten


def test_the_labels_command_names_an_unknown_space_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    home = ["--home", str(tmp_path / "home")]
    empty = runner.invoke(app, [*home, "labels"])
    assert empty.exit_code == 0 and "no spaces yet" in empty.stdout
    bad = runner.invoke(app, [*home, "labels", "--space", "nope-123"])
    assert bad.exit_code != 0
    (line,) = bad.stderr.strip().splitlines()
    assert "nope-123" in line and "no such space" in line and "hubdelta status" in line


def test_the_store_upserts_drops_and_reads_labels_by_space(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from hubdelta.index.labels import LabelsHead, ModelLabels
    from hubdelta.index.store import Index
    from hubdelta.kernel.errors import StoreError

    def x(space: str, repo: str, tag: str) -> ModelLabels:
        return ModelLabels(space, repo, (SuggestedTag(tag, 0.5),), f"behaves like {tag} models", 0.4, ("o/n",),
                           (0.9,), 0.9)  # fmt: skip

    now = datetime(2026, 1, 2, tzinfo=UTC)
    head = LabelsHead("s1", "n=2", now, suggest.RULE, frozenset({"house"}), 2, now, vectors=3)
    uri = str(tmp_path / "index")
    with Index.open(uri, lock_dir=tmp_path, writer="t") as index:
        index.labels.put(head, [x("s1", "o/a", "math"), x("s1", "o/b", "code")])
        index.labels.put(replace(head, space_id="s2"), [x("s2", "o/a", "legal")])
        index.labels.put(replace(head, n=1), [x("s1", "o/a", "chemistry")], drop=["o/b"])
        with pytest.raises(ValueError, match="another space"):
            index.labels.put(head, [x("s2", "o/c", "math")])
        with pytest.raises(ValueError, match="timezone"):
            index.labels.put(replace(head, computed_at=datetime(2026, 1, 2)), [])
    reader = Index.open(uri)
    assert {r: v.top for r, v in reader.labels.get("s1", ["o/a", "o/b", "o/z"]).items()} == {"o/a": "chemistry"}
    assert {s: v.top for s, v in reader.labels.of_repo("o/a").items()} == {"s1": "chemistry", "s2": "legal"}
    assert reader.labels.heads()["s1"] == replace(head, n=1)
    ids, kth, near = reader.labels.neighbourhoods("s1")
    assert ids == ["o/a"] and kth.tolist() == pytest.approx([0.9]) and near == [("o/n",)]
    with pytest.raises(StoreError):
        reader.labels.put(head, [])
