"""Delta Meaning's pure parts: recipes, word alignment across tokenizations, vectors, continuation sets, spaces."""

from __future__ import annotations

import numpy as np
import pytest

from hubdelta.embedder.continuations import ContinuationSet, Sampling
from hubdelta.embedder.meaning import (
    TextScores,
    meaning_vector,
    vector_dim,
    word_ends,
    word_logprobs,
)
from hubdelta.embedder.probes import PAPER_PROBES
from hubdelta.embedder.space import Space
from hubdelta.evaluation.scores import cross_group_accuracy
from hubdelta.kernel.recipe import PAPER, Recipe


def test_recipe_names_round_trip_and_bad_ones_are_refused() -> None:
    for recipe in (
        PAPER,
        Recipe(),
        Recipe("text", "loglik", "concat", True),
        Recipe("word", "loglik", "concat", False),
    ):
        assert Recipe.parse(str(recipe)) == recipe
    assert Recipe.parse("paper") == PAPER and str(PAPER) == "text-invppl-mean"
    assert str(Recipe.parse("default")) == "word-invppl-concat-centred-per-base"
    assert Recipe.parse("word-loglik-concat-centred") == Recipe("word", "loglik", "concat", True, False)
    for bad in ("", "text-loglik", "word-loglik-mean", "char-loglik-concat", "text-ppl-mean-centred"):
        with pytest.raises(ValueError):
            Recipe.parse(bad)


def test_words_sum_the_tokens_that_end_in_them_whatever_the_tokenizer() -> None:
    text = " The cat sat.\n\nIt ran"
    ends = word_ends(text)
    assert [text[:e] for e in ends][-1] == text and len(ends) == 5
    # Two tokenizations of the same text: one by words, one cutting words into pieces.
    by_words = (np.array([-1.0, -2.0, -3.0, -4.0, -5.0]), ends)
    pieces_ends = [4, 6, 8, 12, 13, 15, 17, 21]  # " The", " c", "at", " sat", ".", "\n\n", "It", " ran"
    pieces_lp = np.array([-1.0, -1.5, -0.5, -2.0, -1.0, -0.25, -3.75, -5.0])
    a = word_logprobs(by_words[0], by_words[1], ends)
    b = word_logprobs(pieces_lp, pieces_ends, ends)
    assert np.allclose(a, b) and np.isclose(b.sum(), pieces_lp.sum())
    assert word_logprobs(np.array([-1.0]), [len(text) + 3], ends)[-1] == -1.0  # trailing whitespace: the last word
    assert word_logprobs(np.zeros(0), [], []).size == 0


def _scores(lp: list[list[list[float]]], texts: list[list[str]]) -> TextScores:
    ends = [[np.array(word_ends(t)[: len(v)]) for v, t in zip(row, trow, strict=True)]
            for row, trow in zip(lp, texts, strict=True)]  # fmt: skip
    return TextScores(tuple(tuple(np.array(v) for v in row) for row in lp), tuple(tuple(e) for e in ends))


def test_paper_vector_is_the_mean_over_probes_of_inverse_perplexity_differences() -> None:
    texts = [["a b", "c d"], ["e f", "g h"]]
    base = _scores([[[-1.0, -1.0], [-2.0, -2.0]], [[-1.0, -3.0], [-0.5, -0.5]]], texts)
    tuned = _scores([[[-0.5, -0.5], [-2.0, -2.0]], [[-1.0, -1.0], [-0.5, -1.5]]], texts)
    v = meaning_vector(tuned.profile(texts, PAPER), base.profile(texts, PAPER), PAPER)
    expect = (
        ((np.exp(-0.5) - np.exp(-1.0)) + (np.exp(-1.0) - np.exp(-2.0))) / 2,
        (0.0 + (np.exp(-1.0) - np.exp(-0.5))) / 2,
    )
    assert v.shape == (2,) == (vector_dim(PAPER, texts),) and np.allclose(v, expect, atol=1e-6)
    words = Recipe("word", "loglik", "concat")
    w = meaning_vector(tuned.profile(texts, words), base.profile(texts, words), words)
    assert w.shape == (vector_dim(words, texts),) == (8,)
    assert abs(float(w.mean())) < 1e-6 and np.isclose(np.linalg.norm(w), 1.0)  # centred, unit length
    # A finetune that is uniformly surer of every word has no direction of its own.
    assert np.allclose(meaning_vector(base.profile(texts, words) + 0.3, base.profile(texts, words), words), 0)
    with pytest.raises(ValueError, match="shape"):
        meaning_vector(np.zeros(3), np.zeros(4), words)


def test_a_continuation_set_hash_covers_texts_and_provenance() -> None:
    texts = tuple(("one two", "three") for _ in PAPER_PROBES.texts)
    cset = ContinuationSet(PAPER_PROBES.version, PAPER_PROBES.hash, ("a/b@1",), Sampling(n=2, tokens=4), texts)
    again = ContinuationSet.from_dict(cset.to_dict())
    assert again == cset and again.hash == cset.hash and cset.matches(PAPER_PROBES)
    edited = ContinuationSet.from_dict({**cset.to_dict(), "texts": [["one two", "three!"]] * len(texts)})
    other_source = ContinuationSet.from_dict({**cset.to_dict(), "sources": ["a/b@2"]})
    assert len({cset.hash, edited.hash, other_source.hash}) == 3
    with pytest.raises(ValueError, match="same number"):
        ContinuationSet("v", "h", (), Sampling(), (("a",), ("b", "c")))
    with pytest.raises(ValueError, match="malformed"):
        ContinuationSet.from_dict({"probes": "v"})
    for bad in ({"n": 0}, {"tokens": 10_000}, {"temperature": 0.0}):
        with pytest.raises(ValueError):
            Sampling(**bad)  # type: ignore[arg-type]


def test_meaning_spaces_are_named_after_their_family_and_activation_ids_are_unchanged() -> None:
    plain = Space("HuggingFaceTB/SmolLM2-135M-Instruct", "abc", "paper-v1", "h", 576)
    assert "family" not in plain.to_dict() and plain.id.startswith("smollm2-135m-instruct-")
    meaning = Space("HuggingFaceTB/SmolLM2-135M-Instruct", "abc", "paper-v1", "h", 1200, method="meaning",
                    family="small", continuations="0123456789abcdef", recipe=str(Recipe()))  # fmt: skip
    assert meaning.id.startswith("family-small-") and meaning.label == "family small"
    assert Space.from_dict(meaning.to_dict()) == meaning
    assert Space.from_dict({**meaning.to_dict(), "recipe": str(PAPER)}).id != meaning.id
    with pytest.raises(ValueError, match="meaning space"):
        Space("a/b", "abc", "paper-v1", "h", 8, method="meaning", family="small")
    with pytest.raises(ValueError, match="meaning space"):
        Space("a/b", "abc", "paper-v1", "h", 8, recipe="paper")


def test_cross_group_accuracy_looks_only_at_the_other_groups() -> None:
    # Two bases; within a base everything is close (a base signature), across bases domains line up.
    d = np.array(
        [
            [0.0, 0.1, 0.5, 0.9],  # s-math
            [0.1, 0.0, 0.9, 0.5],  # s-code
            [0.5, 0.9, 0.0, 0.1],  # g-math
            [0.9, 0.5, 0.1, 0.0],  # g-code
        ]
    )
    labels, groups = ["math", "code", "math", "code"], ["s", "s", "g", "g"]
    assert cross_group_accuracy(d, labels, groups) == (1.0, 0.5)
    swapped = d[:, [0, 1, 3, 2]][[0, 1, 3, 2], :]
    assert cross_group_accuracy(swapped, labels, groups)[0] == 0.0
    with pytest.raises(ValueError, match="two groups"):
        cross_group_accuracy(d, labels, ["s"] * 4)


def test_pending_members_are_those_embedded_in_their_base_and_not_yet_in_the_family_at_their_sha() -> None:
    from hubdelta.embedder.family_run import pending_members
    from hubdelta.index.families import Family, Member, MemberStatus
    from hubdelta.index.records import ModelStatus, Relation
    from tests.helpers import record

    family = Family("f", ("a/one", "b/two"))
    done, stale, new, failed_here = (record(i, base="a/one", status=ModelStatus.EMBEDDED) for i in range(4))
    one = "a/one"
    other_base = record(5, base="b/two", status=ModelStatus.EMBEDDED)
    queued = record(6, base="a/one", status=ModelStatus.QUEUED)  # not in its base's space yet
    outsider = record(7, base="c/three", status=ModelStatus.EMBEDDED)
    quantized = record(8, base="a/one", status=ModelStatus.EMBEDDED, relation=Relation.QUANTIZED)
    members = {
        done.repo_id: Member("s", done.repo_id, done.model.sha, one, MemberStatus.EMBEDDED),
        stale.repo_id: Member("s", stale.repo_id, "0" * 40, one, MemberStatus.EMBEDDED),  # an older revision
        failed_here.repo_id: Member(
            "s", failed_here.repo_id, failed_here.model.sha, one, MemberStatus.FAILED, "broken"
        ),
    }
    todo = pending_members([done, stale, new, failed_here, other_base, queued, outsider, quantized], family, members)
    assert {b: {r.repo_id for r in rs} for b, rs in todo.items()} == {
        "a/one": {stale.repo_id, new.repo_id},
        "b/two": {other_base.repo_id},
    }


def test_per_base_centring_removes_what_a_base_shares_once_it_has_enough_models() -> None:
    from hubdelta.embedder.meaning import CENTRE_MIN, centre_by_base

    rng = np.random.default_rng(0)
    shared = rng.normal(size=64) * 5  # what every finetune of base "a" does
    domains = rng.normal(size=(2, 64))
    raw = {f"a{i}": shared + domains[i % 2] + 0.05 * rng.normal(size=64) for i in range(CENTRE_MIN)}
    raw |= {f"b{i}": domains[i % 2] + 0.05 * rng.normal(size=64) for i in range(CENTRE_MIN - 1)}
    base_of = {k: k[0] for k in raw}
    out = centre_by_base(raw, base_of)

    def cos(x: np.ndarray, y: np.ndarray) -> float:
        return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))

    assert cos(raw["a0"], raw["a1"]) > 0.9  # before: the base's share dominates
    assert cos(out["a0"], out["a2"]) > 0.9 and cos(out["a0"], out["a1"]) < 0  # after: domains show
    assert all(np.isclose(np.linalg.norm(out[k]), 1) for k in out if k.startswith("a"))
    assert all(np.array_equal(out[k], raw[k].astype(np.float32)) for k in out if k.startswith("b"))  # too few
