"""``hubdelta eval`` and the evaluation's building blocks: labels, scores, baselines, on the real pool."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer
from typer.testing import CliRunner

from hubdelta.cli import app
from hubdelta.embedder.activations import ResidentBase, load_causal_lm, probe_activations
from hubdelta.embedder.bases import space_for
from hubdelta.embedder.lora import read_adapter
from hubdelta.evaluation import baselines as bl
from hubdelta.evaluation.labels import parse_labels
from hubdelta.evaluation.pool import Pool, activations
from hubdelta.evaluation.scores import chance_accuracy, score
from hubdelta.kernel.errors import UsageError
from tests.helpers import PoolIndex, one_line_error

runner = CliRunner()


# ---- label files ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a/x,math\na/y,code\n", {"a/x": "math", "a/y": "code"}),
        ("repo_id,label\na/x,math\n", {"a/x": "math"}),
        ("label,model\nmath,a/x\n", {"a/x": "math"}),  # columns in any order
        ("# a comment\n\n a/x , math \na/x,math\n", {"a/x": "math"}),  # blank, comment, spaces, a repeat
        ("# made by build-pool\nrepo_id,label\na/x,math\n", {"a/x": "math"}),  # a header after a comment
        ('\ufeffrepo,label\na/x,"math, applied"\n', {"a/x": "math, applied"}),  # quoted comma
    ],
)
def test_labels_parse(text: str, expected: dict[str, str]) -> None:
    assert parse_labels(text.lstrip("\ufeff"), "l.csv") == expected


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("a/x,math\na/y\n", "l.csv:2", "got 1 field"),
        ("a/x,math\na/y,\n", "l.csv:2", "empty"),
        ("repo_id,label\na/x,math\na/x,code\n", "l.csv:3", "labelled 'math' earlier and 'code' here"),
        ("name,label\na/x,math\n", "l.csv:1", "no repo column"),
        ("#c\n\nname,label\n", "l.csv:3", "no repo column"),
        ("repo_id,label\n", "l.csv", "no labelled repos"),
    ],
)
def test_bad_label_files_name_the_line(text: str, where: str, what: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_labels(text, "l.csv")
    assert e.value.argument == where and what in e.value.message


# ---- scores ---------------------------------------------------------------------------------------------------


def test_scores_of_known_geometry() -> None:
    gen = np.random.default_rng(0)
    centres = np.eye(4)[:2] * 10  # two far-apart directions
    tight = np.concatenate([c + gen.normal(0, 0.1, (5, 4)) for c in centres])
    labels = ["a"] * 5 + ["b"] * 5
    good = score(tight, labels)
    assert good.silhouette > 0.95 and good.nn_accuracy == 1.0
    assert [(p.label, p.count, p.nn_accuracy) for p in good.per_label] == [("a", 5, 1.0), ("b", 5, 1.0)]
    assert good.nn_chance == pytest.approx(chance_accuracy(labels)) == pytest.approx(40 / 90)
    shuffled = score(tight, ["a", "b"] * 5)  # labels that ignore the geometry
    assert shuffled.silhouette < 0.0 and shuffled.nn_accuracy < 0.5
    with pytest.raises(ValueError):
        score(tight[:2], ["a", "b"])  # every label alone


# ---- baselines ------------------------------------------------------------------------------------------------


def test_salient_mask_keeps_exactly_the_top_share_and_binary_cosine_matches_dense() -> None:
    gen = np.random.default_rng(1)
    mags = [np.abs(gen.normal(size=10_000)).astype(np.float32) for _ in range(3)]
    mags[1][:5000] = mags[0][:5000]  # half shared with the first
    masks = [bl.salient_mask(m, 0.05) for m in mags]
    dense = np.stack([np.unpackbits(m)[:10_000] for m in masks]).astype(float)  # (3, n)
    assert (dense.sum(axis=1) == 500).all()
    assert dense[0, np.argsort(mags[0])[-500:]].all()  # the largest ones
    unit = dense / np.linalg.norm(dense, axis=1, keepdims=True)
    np.testing.assert_allclose(bl.binary_cosine_distances(masks), 1 - unit @ unit.T, atol=1e-12)


def test_delta_logits_is_zero_for_the_base_and_a_log_probability_difference() -> None:
    gen = torch.Generator().manual_seed(0)
    head, base, fine = (
        torch.randn(50, 8, generator=gen),
        torch.randn(3, 8, generator=gen),
        torch.randn(3, 8, generator=gen),
    )
    assert np.abs(bl.delta_logits(base, base, head)).max() == 0.0
    want = (torch.log_softmax(fine @ head.T, -1) - torch.log_softmax(base @ head.T, -1)).mean(0)
    np.testing.assert_allclose(bl.delta_logits(fine, base, head), want.numpy(), atol=1e-5)


def test_baselines_on_real_adapters(pool: Path) -> None:
    p = Pool.load(pool)
    math1, code1 = (next(m for m in p.split_adapters if m.label == d and m.split == "1") for d in ("math", "code"))
    base = load_causal_lm(p.base_dir, torch.float32, torch.device("cpu"))
    a = read_adapter(math1.repo_id, math1.folder, base)
    flat = bl.flattened_weights(a)
    assert flat.shape == (30 * 8 * (576 + 576 + 576 + 192 + 576 + 192 + 3 * (576 + 1536)),)  # r (in + out) per Linear
    assert bl.update_magnitudes(a).size == 30 * (576 * 576 + 2 * 192 * 576 + 3 * 1536 * 576)
    # The merged weights give the activations the embedder gets from its LoRA hooks, and are restored after.
    before = base.model.layers[3].self_attn.q_proj.weight.clone()
    acts = activations(p, [math1])
    with bl.lora_merged(base, a) as merged:
        space = space_for(p.base_dir, p.base_repo, "local")
        with ResidentBase(p.base_dir, space) as rb:
            got = probe_activations(merged, rb.batch, space)
    torch.testing.assert_close(got, acts.models[math1.repo_id], atol=2e-4, rtol=1e-4)
    assert torch.equal(base.model.layers[3].self_attn.q_proj.weight, before)
    # An adapter's answers change under its domain (the base never writes "Step" answers to a generic probe).
    tok = AutoTokenizer.from_pretrained(p.base_dir, local_files_only=True)
    with bl.lora_merged(base, read_adapter(code1.repo_id, code1.folder, base)) as merged:
        answers = bl.greedy_answers(merged, tok, ["### Instruction:\nWrite the Python function `add(a, b)`.\n\n"
                                                  "### Input:\nReturn the sum.\n\n### Response:\n"], 24)  # fmt: skip
    assert "def" in answers[0] or "return" in answers[0], answers
    encoder = bl.SentenceEncoder()
    vecs = encoder.encode(["the cat sat on the mat", "a cat was sitting on a mat", "stock prices fell sharply"])
    assert vecs.shape == (3, 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.3


# ---- the command ----------------------------------------------------------------------------------------------


def cli(home: Path, *args: str):
    return runner.invoke(app, ["--home", str(home), *args])


def write_labels(path: Path, pool: Path, keep=lambda repo, label: "+" not in label) -> dict[str, str]:
    labels = {r: lab for r, lab in json.loads((pool / "labels.json").read_text()).items() if keep(r, lab)}
    path.write_text("repo_id,label\n" + "".join(f"{r},{lab}\n" for r, lab in labels.items()))
    return labels


def test_eval_scores_the_pool_by_domain_with_a_map(pool_index: PoolIndex, tmp_path: Path) -> None:
    labels = write_labels(tmp_path / "labels.csv", pool_index.pool,
                          keep=lambda r, lab: "lora" in r and "+" not in lab)  # fmt: skip
    (tmp_path / "labels.csv").write_text((tmp_path / "labels.csv").read_text() + "ghost/not-embedded,math\n")
    png = tmp_path / "map.png"
    result = cli(pool_index.home, "eval", "--labels", str(tmp_path / "labels.csv"), "--plot", str(png), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["scores"]["n"] == len(labels) == 20
    assert doc["scores"]["silhouette"] > 0.5 and doc["scores"]["nn_accuracy"] >= 0.9  # measured: 0.80, 0.95
    assert doc["scores"]["nn_chance"] == pytest.approx(chance_accuracy(list(labels.values())))
    assert {p["label"]: p["count"] for p in doc["scores"]["per_label"]} == {
        d: 4 for d in ("math", "code", "legal", "medical", "chemistry")
    }
    assert doc["missing"] == ["ghost/not-embedded"] and doc["missing_count"] == 1
    assert doc["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    table = cli(pool_index.home, "eval", "--labels", str(tmp_path / "labels.csv"))
    assert table.exit_code == 0 and "silhouette" in table.stdout and "chemistry" in table.stdout
    assert "1 labelled repos have no vector" in table.stdout


def test_eval_of_shuffled_labels_scores_low(pool_index: PoolIndex, tmp_path: Path) -> None:
    labels = write_labels(tmp_path / "l.csv", pool_index.pool, keep=lambda r, lab: "lora" in r and "+" not in lab)
    domains = sorted(set(labels.values()))
    dealt = {r: domains[i % len(domains)] for i, r in enumerate(sorted(labels))}  # each domain's 4 get 4 labels
    (tmp_path / "l.csv").write_text("".join(f"{r},{lab}\n" for r, lab in dealt.items()))
    doc = json.loads(cli(pool_index.home, "eval", "--labels", str(tmp_path / "l.csv"), "--json").stdout)
    assert doc["scores"]["silhouette"] < 0.2 and doc["scores"]["nn_accuracy"] < 0.5


@pytest.mark.parametrize(
    ("labels", "args", "message"),
    [
        (None, [], "l.csv: cannot be read"),
        ("a/x,math\nb/y\n", [], "l.csv:2: expected a repo id and a label, got 1 field(s)"),
        ("ghost/a,math\nghost/b,code\n", [], "eval: none of the labelled repos has a vector"),
        ("POOL", ["--space", "nope"], "--space: no space 'nope'"),
        ("ONE", [], "have vectors in"),
    ],
)
def test_eval_errors_are_one_line(pool_index: PoolIndex, tmp_path: Path, labels, args, message) -> None:
    path = tmp_path / "l.csv"
    if labels == "POOL":
        path.write_text((pool_index.pool / "labels.csv").read_text())  # as build-pool writes it
    elif labels == "ONE":
        write_labels(path, pool_index.pool, keep=lambda r, lab: lab == "math")
    elif labels is not None:
        path.write_text(labels)
    result = cli(pool_index.home, "eval", "--labels", str(path), *args)
    assert result.exit_code == 2
    assert message in one_line_error(result), result.output
