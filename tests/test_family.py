"""Families: Delta Meaning of real SmolLM2 and Gemma-3 adapters in one space, over devhub, through the CLI."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from hubdelta.cli import app
from hubdelta.embedder import scoring
from hubdelta.embedder.continuations import ContinuationSet, Sampling, sample_texts
from hubdelta.embedder.meaning import vector_dim
from hubdelta.embedder.probes import PAPER_PROBES
from hubdelta.embedder.scoring import ResidentScorer, score_rows
from hubdelta.embedder.space import Space
from hubdelta.index.door import open_reader
from hubdelta.kernel.recipe import Recipe
from hubdelta.kernel.settings import Settings, load_settings
from hubdelta_dev.devhub.server import DevhubServer
from hubdelta_dev.pool.base import BASE_REPO_ID, GEMMA_REPO_ID
from tests.helpers import GEMMA_ADAPTERS, SMOL_ADAPTERS, one_line_error

TEXTS = (" The answer is 42, because 6 x 7 = 42.", "\ndef add(a, b):\n    return a + b\n", " Hello  there!")


def fixed_set(texts: tuple[str, ...] = TEXTS) -> ContinuationSet:
    rows = tuple(texts for _ in PAPER_PROBES.texts)
    return ContinuationSet(PAPER_PROBES.version, PAPER_PROBES.hash, ("test@0",), Sampling(n=len(texts), tokens=8), rows)


def _flat(scores: scoring.TextScores) -> np.ndarray:
    return np.concatenate([lp for row in scores.token_lp for lp in row])


def test_batched_adapter_scores_equal_one_at_a_time_and_the_merged_model(family_pool: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    from hubdelta.embedder.training import load_causal_lm

    hub = family_pool / "hub"
    a, b = SMOL_ADAPTERS[0], SMOL_ADAPTERS[2]
    with ResidentScorer(hub / BASE_REPO_ID, PAPER_PROBES, fixed_set()) as scorer:
        both = scorer.adapter_scores({a: hub / a, b: hub / b}, per_forward=2)
        alone = scorer.adapter_scores({a: hub / a})
        merged = PeftModel.from_pretrained(load_causal_lm(hub / BASE_REPO_ID), hub / a).merge_and_unload()
        merged.save_pretrained(tmp_path / "merged")
        full = scorer.model_scores(tmp_path / "merged")
        base = scorer.base_scores()
        # every text is scored to its last character, in this tokenizer's pieces
        assert all(e[-1] == len(t) for row, trow in zip(base.token_ends, fixed_set().texts, strict=True)
                   for e, t in zip(row, trow, strict=True))  # fmt: skip
    assert np.allclose(_flat(both[a]), _flat(alone[a]), atol=2e-4)
    assert np.allclose(_flat(alone[a]), _flat(full), atol=2e-4)
    assert not np.allclose(_flat(both[a]), _flat(both[b]), atol=1e-2)  # the adapters really differ
    assert np.all(_flat(base) < 0)


def test_gemma_scores_do_not_depend_on_the_batch_or_its_padding(family_pool: Path) -> None:
    hub = family_pool / "hub"
    with ResidentScorer(hub / GEMMA_REPO_ID, PAPER_PROBES, fixed_set()) as scorer:
        rows = scorer.rows
        batched = score_rows(scorer.model, rows)[0]
        # a budget of a few kB: one row per forward and one position per head matmul
        assert rows.batching(scorer.config, 1e-6) == scoring.Batching(rows=1, head=1)
        single = score_rows(scorer.model, rows, memory_gb=1e-6)[0]
        adapter = scorer.adapter_scores({"g": hub / GEMMA_ADAPTERS[0]})["g"]
    assert len(set(rows.lengths)) > 1 and len(rows) == len(PAPER_PROBES) * len(TEXTS)
    assert np.allclose(_flat(batched), _flat(single), atol=2e-4)
    assert np.abs(_flat(adapter) - _flat(batched)).max() > 1e-2  # the trained adapter changes likelihoods


@pytest.mark.parametrize("base", [BASE_REPO_ID, GEMMA_REPO_ID])
def test_texts_scored_after_a_cached_probe_equal_one_plain_forward_of_probe_and_text(family_pool: Path,
                                                                                      base: str) -> None:  # fmt: skip
    """The probe runs once per forward (a key/value cache); each text's scores are still exactly those of the
    whole sequence run through the model in one piece, its logits log-softmaxed."""
    import torch

    with ResidentScorer(family_pool / "hub" / base, PAPER_PROBES, fixed_set()) as scorer:
        got = scorer.base_scores()
        tok, model = scorer.tokenizer, scorer.model
        with torch.inference_mode():
            for q, probe in enumerate(PAPER_PROBES.texts):
                prompt = tok(probe)["input_ids"]
                for i, text in enumerate(TEXTS):
                    ids = prompt + tok(text, add_special_tokens=False)["input_ids"]
                    logp = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
                    want = logp[torch.arange(len(prompt) - 1, len(ids) - 1), torch.tensor(ids[len(prompt) :])]
                    assert np.allclose(got.token_lp[q][i], want.numpy(), atol=2e-4), (q, i)


def test_sampling_is_seeded_and_exactly_as_long_as_asked(family_pool: Path) -> None:
    from transformers import AutoTokenizer

    base = family_pool / "hub" / BASE_REPO_ID
    sampling = Sampling(n=2, tokens=12, seed=3)
    first = sample_texts(base, PAPER_PROBES, 2, sampling, seed=3)
    again = sample_texts(base, PAPER_PROBES, 2, sampling, seed=3)
    other = sample_texts(base, PAPER_PROBES, 2, sampling, seed=4)
    assert first == again and first != other and len(first) == len(PAPER_PROBES)
    tok = AutoTokenizer.from_pretrained(base)
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for row in first for t in row]
    assert all(8 <= n <= 16 for n in lengths), lengths  # 12 sampled tokens, re-tokenized from text


def _json(result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _check_family_space(settings: Settings, space_id: str) -> None:
    """The family space's stored parts agree, and its vectors group the SmolLM2 adapters by domain."""
    with open_reader(settings) as index:
        space = Space.from_dict(index.vectors.spaces()[space_id].params)
        cset = ContinuationSet.from_dict(index.families.continuation_set(space.continuations or ""))
        vectors = index.vectors.get(space_id)
        profiles = index.families.base_profiles(space_id)
        members = index.families.members(space_id)
    assert space.method == "meaning" and space.family == "small" and cset.hash == space.continuations
    assert [s.split("@")[0] for s in cset.sources] == [BASE_REPO_ID, GEMMA_REPO_ID]
    assert len(cset.texts) == 5 and all(len(row) == 4 for row in cset.texts)
    assert space.dim == vector_dim(Recipe.parse(space.recipe or ""), cset.texts)
    assert set(vectors) == {*SMOL_ADAPTERS, *GEMMA_ADAPTERS} == set(members)
    assert all(v.vector.shape == (space.dim,) and np.isclose(np.linalg.norm(v.vector), 1, atol=1e-4)
               for v in vectors.values())  # fmt: skip
    assert set(profiles) == {BASE_REPO_ID, GEMMA_REPO_ID} and all(m.status == "embedded" for m in members.values())
    # Trained SmolLM2 adapters of one domain are each other's nearest in the family space (4 models: their
    # base's mean is subtracted); Gemma's two keep their own vectors (fewer than CENTRE_MIN).
    smol = np.stack([vectors[r].vector for r in SMOL_ADAPTERS])
    sims = smol @ smol.T - 2 * np.eye(len(SMOL_ADAPTERS))
    assert [SMOL_ADAPTERS[j].split("-")[-2] for j in sims.argmax(1)] == ["math", "math", "code", "code"]
    for r in GEMMA_ADAPTERS:
        assert np.allclose(vectors[r].vector, members[r].raw, atol=1e-6)


def _check_queries_of_the_family_space(cli: Callable[..., Any], tmp_path: Path, space_id: str,
                                       spaces: list[str]) -> None:  # fmt: skip
    """similar, eval and report over the family space and a base's space."""
    # The same Gemma adapter: in the family space its neighbours cross architectures; by default, its base's.
    query = GEMMA_ADAPTERS[0]
    family_hits = _json(cli("similar", query, "--space", space_id, "-k", "5", "--json"))
    assert family_hits["space_id"] == space_id
    assert {n["repo_id"] for n in family_hits["neighbors"]} == {*SMOL_ADAPTERS, GEMMA_ADAPTERS[1]}
    default_hits = _json(cli("similar", query, "--json"))
    assert default_hits["space_id"] != space_id and [n["repo_id"] for n in default_hits["neighbors"]] == [
        GEMMA_ADAPTERS[1]
    ]
    assert space_id in default_hits["other_spaces"]
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"{r},{r.split('-')[-2]}\n" for r in (*SMOL_ADAPTERS, *GEMMA_ADAPTERS)))
    scored = _json(cli("eval", "--labels", str(labels), "--space", space_id, "--json"))
    assert scored["scores"]["n"] == 6 and scored["cross_base"]["bases"] == 2
    assert scored["cross_base"]["chance"] == 0.5  # of the other base's models, half share a domain
    assert _json(cli("eval", "--labels", str(labels), "--json"))["space_id"] == space_id  # it holds the most
    smol_space = next(s for s in spaces if s.startswith("smollm2"))
    base_space = _json(cli("eval", "--labels", str(labels), "--space", smol_space, "--json"))
    assert base_space["cross_base"] is None and base_space["scores"]["n"] == 4
    report = _json(cli("report", "--json"))
    in_report = {s["space_id"]: s for s in report["spaces"]}
    assert in_report[space_id]["base"] == "family small" and in_report[space_id]["vectors"] == 6


def test_a_family_of_two_architectures_end_to_end(family_pool: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    with DevhubServer(family_pool / "hub") as hub:
        home = tmp_path / "home"
        env = {"HF_ENDPOINT": hub.url, "HUBDELTA_HOME": str(home)}
        settings = load_settings(env)

        def cli(*args: str):
            return runner.invoke(app, list(args), env=env)

        created = _json(cli("family", "create", "small", "--base", BASE_REPO_ID, "--base", GEMMA_REPO_ID,
                            "--n", "4", "--tokens", "16", "--json"))  # fmt: skip
        assert created["space_id"] is None and created["references"] == [BASE_REPO_ID, GEMMA_REPO_ID]
        assert cli("crawl").exit_code == 0
        embedded = _json(cli("embed", "--json"))
        assert embedded["embedded"] == 6 and len(embedded["spaces"]) == 2

        first = _json(cli("family", "embed", "small", "--json"))[0]
        assert (first["embedded"], first["failed"], first["pending"], first["sampled"]) == (6, 0, 0, True)
        space_id = first["space_id"]
        _check_family_space(settings, space_id)

        shown = _json(cli("family", "show", "small", "--json"))
        per_base = {b["base"]: b for b in shown["per_base"]}
        assert per_base[BASE_REPO_ID] == {"base": BASE_REPO_ID, "members": 4, "embedded": 4, "failed": 0,
                                          "pending": 0}  # fmt: skip
        assert per_base[GEMMA_REPO_ID]["embedded"] == 2 and shown["vectors"] == 6

        # New [family] defaults make new families' spaces only: this one keeps its texts, recipe and space
        other = tmp_path / "other.toml"
        other.write_text('[family]\nn = 2\ntokens = 4\nrecipe = "paper"\nmemory_gb = 0.01\n')
        again = _json(cli("--config", str(other), "family", "embed", "--json"))[0]
        assert (again["embedded"], again["failed"], again["pending"], again["sampled"]) == (0, 0, 0, False)
        assert again["space_id"] == space_id
        kept = _json(cli("family", "show", "small", "--json"))["options"]
        assert (kept["n"], kept["tokens"], kept["recipe"]) == (4, 16, "default")

        _check_queries_of_the_family_space(cli, tmp_path, space_id, embedded["spaces"])
        _check_a_task_in_the_family_space(cli, settings, family_pool, space_id, tmp_path)


def _check_a_task_in_the_family_space(cli: Callable[..., Any], settings: Settings, pool: Path, space_id: str,
                                      tmp_path: Path) -> None:  # fmt: skip
    """hubdelta task --family: a SmolLM2 task placed as the family's members are, its neighbours of both bases."""
    from hubdelta.task.family import family_target, meaning_of

    # A member's own adapter, placed the way a task is, lands exactly on the member's vector in the space.
    hub = pool / "hub"
    member = SMOL_ADAPTERS[0]
    shutil.copytree(hub / member, tmp_path / "member")
    with open_reader(settings) as index:
        target = family_target(index, "small", BASE_REPO_ID)
        stored = index.vectors.get(space_id)[member].vector
    placed, cached = meaning_of(target, hub / BASE_REPO_ID, tmp_path / "member", "cpu", 2.0)
    assert not cached and target.members == 4 and target.centre is not None
    assert np.allclose(placed, stored, atol=1e-4), float(np.abs(placed - stored).max())
    assert np.array_equal(meaning_of(target, hub / BASE_REPO_ID, tmp_path / "member", "cpu", 2.0)[0], placed)

    heldout = str(pool / "heldout" / "math.jsonl")
    args = ("task", heldout, "--base", BASE_REPO_ID, "--family", "small", "-k", "6", "--max-examples", "8", "--json")
    first = _json(cli(*args))
    assert first["family"] == "small" and first["space_id"] == space_id and first["cached"] is False
    assert {n["repo_id"] for n in first["neighbors"]} == {*SMOL_ADAPTERS, *GEMMA_ADAPTERS}  # both bases
    assert any("centred by the mean of its 4" in n for n in first["notes"]), first["notes"]
    assert first["norm"] == pytest.approx(1.0, abs=1e-4)  # unit length, as the space's vectors
    again = _json(cli(*args, "--explain"))
    assert again["cached"] is True and any("read from the cache" in n for n in again["notes"])
    assert [n["repo_id"] for n in again["neighbors"]] == [n["repo_id"] for n in first["neighbors"]]
    why = again["explain"]  # training is measured in the base's own space, where auto stopped
    assert why["space_id"].startswith("smollm2") and why["space_id"] != space_id
    assert len(why["checkpoints"]) == why["steps"] == first["training"]["steps"]

    assert "no such family" in one_line_error(cli("task", heldout, "--base", BASE_REPO_ID, "--family", "nope"))
    new = _json(cli("family", "create", "gemma-only", "--base", GEMMA_REPO_ID, "--json"))["options"]
    assert (new["n"], new["tokens"]) == (20, 32)  # today's [family] defaults, for this new family
    wrong_base = one_line_error(cli("task", heldout, "--base", BASE_REPO_ID, "--family", "gemma-only"))
    assert f"gemma-only's bases are {GEMMA_REPO_ID}, not {BASE_REPO_ID}" in wrong_base
    empty = one_line_error(cli("task", heldout, "--base", GEMMA_REPO_ID, "--family", "gemma-only"))
    assert "has no vectors of" in empty and "hubdelta family embed gemma-only" in empty


def test_family_commands_refuse_bad_input_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    home = ["--home", str(tmp_path / "home")]
    bad_name = one_line_error(runner.invoke(app, [*home, "family", "create", "Big Family", "--base", "a/b"]))
    assert "not a family name" in bad_name
    uneven = one_line_error(runner.invoke(app, [*home, "family", "create", "f", "--base", "a/b", "--base", "c/d",
                                                "--n", "5"]))  # fmt: skip
    assert "split evenly" in uneven and "multiple of 2" in uneven
    recipe = one_line_error(runner.invoke(app, [*home, "family", "create", "f", "--base", "a/b", "--recipe", "x"]))
    assert "recipe" in recipe
    assert "does not exist yet" in one_line_error(runner.invoke(app, [*home, "family", "show", "nope"]))
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text('[family]\nrecipe = "words"\n')
    assert "family.recipe" in one_line_error(runner.invoke(app, [*home, "--config", str(bad_toml), "family", "list"]))
