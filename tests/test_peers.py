"""bench/peers.py's own logic (the benchmark itself needs the pool and minutes a model: run it by hand)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import peers
import peers_dna

SMOL, GEMMA = "HuggingFaceTB/SmolLM2-135M-Instruct", "google/gemma-3-270m"


@pytest.mark.parametrize(("text", "n", "tokens"), [("40x64", 40, 64), (" 20x32 ", 20, 32), ("4x8", 4, 8)])
def test_parse_sampling(text: str, n: int, tokens: int) -> None:
    s = peers.parse_sampling(text)
    assert (s.n, s.tokens) == (n, tokens)


@pytest.mark.parametrize("text", ["40", "40x", "x64", "40*64", "0x32", "20x0"])
def test_parse_sampling_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        peers.parse_sampling(text)


def test_cache_key_moves_with_everything_that_decides_the_vector() -> None:
    s = peers_dna.DnaSettings()
    args = ("adapter", "base", "probes", "encoder", "1.0.1")
    key = peers_dna.cache_key(s, *args)
    assert key == peers_dna.cache_key(peers_dna.DnaSettings(), *args)
    others = {
        peers_dna.cache_key(replace(s, probes=100), *args),
        peers_dna.cache_key(replace(s, dtype="float32"), *args),
    }
    for i in range(len(args)):
        changed = list(args)
        changed[i] += "!"
        others.add(peers_dna.cache_key(s, *changed))
    assert key not in others and len(others) == 2 + len(args)


def test_adapter_digest_reads_the_content(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text("{}")
        (tmp_path / name / "adapter_model.safetensors").write_bytes(b"weights")
    assert peers_dna.adapter_digest(tmp_path / "a") == peers_dna.adapter_digest(tmp_path / "b")
    (tmp_path / "b" / "adapter_model.safetensors").write_bytes(b"other weights")
    assert peers_dna.adapter_digest(tmp_path / "a") != peers_dna.adapter_digest(tmp_path / "b")


def test_rand_probes_are_the_same_on_every_run() -> None:
    pytest.importorskip("llm_dna", reason="the peers extra")
    a = peers_dna.rand_probes(3, seed=42)
    assert a == peers_dna.rand_probes(3, seed=42)
    assert peers_dna.rand_probes(2, seed=42) == a[:2]  # fewer probes: the first ones of the longer set
    assert a != peers_dna.rand_probes(3, seed=7)
    assert all(90 <= len(p.split()) <= 140 for p in a)


def test_within_base_scores_each_base_alone() -> None:
    label, base_of, vecs = {}, {}, {}
    for b, base in enumerate((SMOL, GEMMA)):
        for d, domain in enumerate(("math", "code")):
            for split in (1, 2):
                repo = f"{base}-{domain}-{split}"
                label[repo], base_of[repo] = domain, base
                v = np.zeros(4, np.float32)
                v[d] = 1.0
                v[2 + b] = 0.1 * split  # the base's own offset: no help within a base
                vecs[repo] = v
    out = peers.within_base(vecs, label, base_of)
    assert set(out) == {SMOL, GEMMA}
    assert all(r["n"] == 4 and r["nn_accuracy"] == 1.0 and r["silhouette"] > 0.5 for r in out.values())


def test_meaning_timings_fall_back_to_the_run_that_measured_them(tmp_path: Path) -> None:
    family = tmp_path / "family.json"
    family.write_text(json.dumps({"continuations": {"hash": "abc"}, "timings_s": {f"{SMOL} per adapter": 27.6}}))
    assert peers.meaning_timings({"timings": {}}, "abc", tmp_path, family) == {f"{SMOL} per adapter": 27.6}
    assert peers.meaning_timings({"timings": {}}, "other", tmp_path, family) == {}
    fam_cache = tmp_path / "family"
    fam_cache.mkdir()
    (fam_cache / "timings-beside.json").write_text(json.dumps({f"{SMOL} per adapter": 4.3}))
    assert peers.meaning_timings({"timings": {}}, "beside", tmp_path, family, fam_cache) == {f"{SMOL} per adapter": 4.3}
    peers.meaning_timings({"timings": {f"{SMOL} per adapter": 12.0}}, "other", tmp_path, family)
    assert peers.meaning_timings({"timings": {}}, "other", tmp_path, family) == {f"{SMOL} per adapter": 12.0}


def _row(method: str, cross: float | None, within: dict, seconds: dict) -> dict:
    return {"method": method, "setting": "s", "dim": 128, "silhouette": 0.25, "nn_accuracy": 0.9,
            "cross_base_nn": cross, "within": within, "seconds": seconds}  # fmt: skip


def test_render_writes_a_replaceable_section(tmp_path: Path) -> None:
    within = {SMOL: {"n": 10, "silhouette": 0.5, "nn_accuracy": 1.0}}
    dna = _row("LLM DNA, 40 probes x 32 tok", 0.4, within | {GEMMA: within[SMOL]}, {SMOL: 30.0, GEMMA: 60.0})
    parts = {"merge": 3.0, "load": 0.5, "generate": 29.0, "encode": 0.5}
    dna |= {"settings": peers_dna.DnaSettings().__dict__, "llm_dna": "1.0.1", "encoder": "all-MiniLM-L6-v2",
            "encoder_load_s": 0.4, "empty_replies": 0, "parts": {SMOL: parts, GEMMA: parts}}  # fmt: skip
    act = _row("Delta Activations, SmolLM2-135M-Instruct only", None, within, {SMOL: 2.0})
    doc = {"machine": "x86_64", "torch_threads": 2, "n": 20, "bases": [SMOL, GEMMA], "cross_chance": 0.2,
           "command": "bench/peers.py POOL_DIR", "rows": [dna, act]}  # fmt: skip
    text = peers.render(doc)
    assert text.startswith(peers.MARK_BEGIN) and text.rstrip().endswith(peers.MARK_END)
    assert "| Delta Activations, SmolLM2-135M-Instruct only | `s` | 128 | 0.250 | 0.90 | n/a | 2.0 | n/a |" in text
    assert "| LLM DNA, 40 probes x 32 tok | 0.500 | 1.00 | 0.500 | 1.00 |" in text
    doc_path = tmp_path / "evaluation.md"
    doc_path.write_text(f"# Results\n\n## Families\n\n{peers.MARK_BEGIN}\nold\n{peers.MARK_END}\n\n## Later\n")
    peers.write_section(doc_path, text, peers.MARK_BEGIN, peers.MARK_END)
    out = doc_path.read_text()
    assert "old" not in out and out.index("## Peers: LLM DNA") < out.index("## Later")
    peers.write_section(doc_path, text, peers.MARK_BEGIN, peers.MARK_END)
    assert doc_path.read_text() == out


def test_projected_is_llm_dnas_seeded_projection() -> None:
    rng = np.random.default_rng(0)
    vecs = {f"m{i}": rng.standard_normal(2000).astype(np.float32) for i in range(6)}
    a, b = peers.projected(vecs, 128, 42), peers.projected(vecs, 128, 42)
    assert all(a[k].shape == (128,) and np.array_equal(a[k], b[k]) for k in vecs)
    assert not np.array_equal(a["m0"], peers.projected(vecs, 128, 7)["m0"])
    # A random projection keeps lengths to within a few tens of percent at 128 coordinates.
    ratio = [np.linalg.norm(a[k]) / np.linalg.norm(vecs[k]) * np.sqrt(2000 / 128) for k in vecs]
    assert all(0.7 < r < 1.3 for r in ratio)
