"""Delta Meaning across two architectures: do SmolLM2 and Gemma-3 finetunes of one domain land together? (issue 8)

Usage: .venv/bin/python bench/family_pool.py POOL_DIR [--out docs/evaluation.md] [--n 20] [--tokens 32]
       [--also 40x64,20x32@1]

POOL_DIR is a pool built with both bases (``hubdelta devhub build-pool --out POOL_DIR --gemma``). On its 20 split
adapters (5 domains x 2 on SmolLM2-135M-Instruct and on Gemma-3-270M, trained on the same data), one run:

1. samples a continuation set of the probes: ``--n`` texts per probe, half from each base, ``--tokens`` tokens
   each (cached in ``--cache``, keyed by everything that decides it);
2. scores every text under every model, each in its own tokenizer (cached per model and continuation set);
3. turns the scores into vectors under each recipe variant (the paper's recipe, and the ones beyond it), on
   subsets of the texts (one source or both, fewer or shorter texts), and prints silhouette by domain and
   cross-base nearest-neighbour domain accuracy for each, side by side;
4. scores the sets of ``--also`` (other sizes, e.g. the earlier default 40 x 64, and other sampling seeds) under
   the default recipe, each sampled afresh, for the cost table: seconds per adapter on each base (scoring on a
   resident base, 4 adapters a forward, as ``family embed`` does), silhouette, cross-base accuracy;
5. computes Delta Activations per base on the same adapters for comparison (they cannot cross bases);

and writes the figures to ``--json`` and, with ``--out``, a section of the evaluation results file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hubdelta.embedder.continuations import ContinuationSet, Sampling, sample_continuations
from hubdelta.embedder.meaning import TextScores, centre_by_base, meaning_vector
from hubdelta.embedder.probes import PAPER_PROBES
from hubdelta.embedder.quality import cosine_distances
from hubdelta.embedder.scoring import ResidentScorer
from hubdelta.evaluation.pool import Pool, PoolModel, activations
from hubdelta.evaluation.scores import cross_group_accuracy, score_distances
from hubdelta.kernel.recipe import PAPER, Recipe
from hubdelta.kernel.settings import FamilySettings

MARK_BEGIN = "<!-- family: written by bench/family_pool.py -->"
MARK_END = "<!-- family: end -->"


@dataclass(frozen=True)
class Variant:
    """One row of the results: a recipe on a subset of the scored texts."""

    name: str
    recipe: Recipe
    sources: tuple[int, ...]  # which sources' texts to keep (indices into the continuation set's sources)
    per_source: int | None = None  # texts per probe per source (None: all)
    prefix_tokens: int | None = None  # keep only each text's first tokens (None: all)


def variants(tokens: int, per_source: int) -> list[Variant]:
    """The recipes side by side on the whole set, then the default recipe on cheaper subsets of it."""
    text_concat = Recipe("text", "loglik", "concat", centre=True, per_base=False)
    words_ll = Recipe("word", "loglik", "concat", centre=True, per_base=False)
    words_ip = Recipe("word", "invppl", "concat", centre=True, per_base=False)
    default = Recipe()
    both, full = (0, 1), f"{2 * per_source} x {tokens} tok"
    return [
        Variant(f"paper: {per_source} x {tokens} tok from SmolLM2, inv-ppl, mean", PAPER, (0,)),
        Variant("paper, texts from both bases", PAPER, both),
        Variant("paper, per-base centred", replace(PAPER, per_base=True), both),
        Variant("text log-lik, mean", Recipe("text", "loglik", "mean", False, False), both),
        Variant("text log-lik, concat", Recipe("text", "loglik", "concat", False, False), both),
        Variant("text log-lik, concat, centred", text_concat, both),
        Variant("text log-lik, concat, centred, per-base", replace(text_concat, per_base=True), both),
        Variant("words, log-lik, centred", words_ll, both),
        Variant("words, inv-ppl, centred", words_ip, both),
        Variant("words, log-lik, centred, per-base", replace(words_ll, per_base=True), both),
        Variant(f"words, inv-ppl, centred, per-base: {full} (the default)", default, both),
        Variant(f"  same, {per_source} SmolLM2 texts x {tokens} tok", default, (0,)),
        Variant(f"  same, {per_source} Gemma texts x {tokens} tok", default, (1,)),
        Variant(f"  same, {2 * (per_source // 2)} texts x {tokens} tok", default, both, per_source // 2),
        Variant(f"  same, {2 * per_source} texts x {tokens // 2} tok", default, both, None, tokens // 2),
    ]


def pool_models(pool: Pool) -> dict[str, list[PoolModel]]:
    """Per base, its adapters of splits 1 and 2 (the shape both bases share)."""
    return {
        base: pool.select(lambda m: m.kind == "lora" and m.single_domain and m.split in {"1", "2"}, base)
        for base in pool.bases
    }


def continuation_set(pool: Pool, sampling: Sampling, cache: Path) -> ContinuationSet:
    sources = [(b, "local", pool.repo_dir(b)) for b in pool.bases]
    key = hashlib.sha256(json.dumps([asdict(sampling), pool.bases, PAPER_PROBES.hash]).encode()).hexdigest()[:12]
    path = cache / f"cset-{key}.json"
    if path.is_file():
        return ContinuationSet.from_dict(json.loads(path.read_text()))
    t0 = time.perf_counter()
    cset = sample_continuations(sources, PAPER_PROBES, sampling)
    print(f"sampled {sampling.n} x {len(PAPER_PROBES)} continuations in {time.perf_counter() - t0:.0f} s")
    path.write_text(json.dumps(cset.to_dict(), ensure_ascii=False, indent=1))
    return cset


def _save(path: Path, s: TextScores) -> None:
    flat_lp = [a for row in s.token_lp for a in row]
    flat_ends = [a for row in s.token_ends for a in row]
    arrays = {f"lp{i}": a for i, a in enumerate(flat_lp)} | {f"e{i}": a for i, a in enumerate(flat_ends)}
    np.savez(path, p=len(s.token_lp), **arrays)  # type: ignore[arg-type]


def _load(path: Path) -> TextScores:
    z = np.load(path)
    p, total = int(z["p"]), (len(z.files) - 1) // 2
    n = total // p
    lp = [z[f"lp{i}"] for i in range(total)]
    ends = [z[f"e{i}"] for i in range(total)]
    return TextScores(tuple(tuple(lp[q * n : (q + 1) * n]) for q in range(p)),
                      tuple(tuple(ends[q * n : (q + 1) * n]) for q in range(p)))  # fmt: skip


def all_scores(pool: Pool, models: dict[str, list[PoolModel]], cset: ContinuationSet, cache: Path) -> dict[str, Any]:
    """TextScores of every base and model (repo id -> scores), scoring only what the cache lacks."""
    out: dict[str, TextScores] = {}
    timings: dict[str, float] = {}
    timing_file = cache / f"timings-{cset.hash}.json"
    for base, members in models.items():
        paths = {
            m: cache / f"scores-{cset.hash}-{m.replace('/', '--')}.npz" for m in [base] + [x.repo_id for x in members]
        }
        missing = [m for m, p in paths.items() if not p.is_file()]
        if missing:
            t0 = time.perf_counter()
            with ResidentScorer(pool.repo_dir(base), PAPER_PROBES, cset) as scorer:
                t1 = time.perf_counter()
                _save(paths[base], scorer.base_scores())
                timings[f"{base} base"] = time.perf_counter() - t1
                todo = {x.repo_id: x.folder for x in members if x.repo_id in missing}
                t2 = time.perf_counter()
                for repo, s in scorer.adapter_scores(todo).items():
                    _save(paths[repo], s)
                per = (time.perf_counter() - t2) / max(1, len(todo))
                timings[f"{base} per adapter"] = per
            print(f"scored {base}: {len(missing)} models in {time.perf_counter() - t0:.0f} s ({per:.1f} s an adapter)")
        out.update({m: _load(p) for m, p in paths.items()})
    if not timings:  # every score came from the cache: the run that scored them measured the time
        timings = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    else:
        timing_file.write_text(json.dumps(timings))
    return {"scores": out, "timings": timings}


def _subset(
    s: TextScores, cset: ContinuationSet, v: Variant, prefix_chars: list[list[int]]
) -> tuple[TextScores, list[list[str]]]:
    """The scores and texts ``v`` keeps: its sources' first texts, cut to their first tokens."""
    n_src = len(cset.sources)
    per = len(cset.texts[0]) // n_src
    keep = [src * per + i for src in v.sources for i in range(v.per_source or per)]
    lps, ends, texts = [], [], []
    for q, row in enumerate(cset.texts):
        lp_row, end_row, text_row = [], [], []
        for i in keep:
            lp, e, text = s.token_lp[q][i], s.token_ends[q][i], row[i]
            if v.prefix_tokens is not None:
                cut = prefix_chars[q][i]
                take = e <= cut
                lp, e, text = lp[take], e[take], text[:cut]
            lp_row.append(lp)
            end_row.append(e)
            text_row.append(text)
        lps.append(tuple(lp_row))
        ends.append(tuple(end_row))
        texts.append(text_row)
    return TextScores(tuple(lps), tuple(ends)), texts


def prefix_chars(pool: Pool, cset: ContinuationSet, tokens: int) -> list[list[int]]:
    """Per text, the character length of its first ``tokens`` tokens in the tokenizer of the source it came from."""
    from transformers import AutoTokenizer

    per = len(cset.texts[0]) // len(cset.sources)
    toks = [AutoTokenizer.from_pretrained(pool.repo_dir(s.split("@")[0])) for s in cset.sources]
    out = []
    for row in cset.texts:
        lens = []
        for i, text in enumerate(row):
            enc = toks[i // per](text, add_special_tokens=False, return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
            lens.append(offsets[min(tokens, len(offsets)) - 1][1] if offsets else 0)
        out.append(lens)
    return out


def evaluate(vectors: dict[str, np.ndarray], label: dict[str, str], base_of: dict[str, str]) -> dict[str, float]:
    repos = sorted(vectors)
    d = cosine_distances(np.stack([vectors[r] for r in repos]))
    labels, groups = [label[r] for r in repos], [base_of[r] for r in repos]
    s = score_distances(d, labels)
    cross, chance = cross_group_accuracy(d, labels, groups)
    return {"n": len(repos), "dim": int(vectors[repos[0]].shape[0]), "silhouette": s.silhouette,
            "nn_accuracy": s.nn_accuracy, "cross_base_nn": cross, "cross_chance": chance}  # fmt: skip


def delta_activations(pool: Pool, models: dict[str, list[PoolModel]]) -> dict[str, dict[str, float]]:
    """Delta Activations per base (the paper's default space) on the same adapters."""
    out = {}
    for base, members in models.items():
        sub = Pool(base, pool.repo_dir(base), tuple(members))
        acts = activations(sub, members)
        vec = acts.vectors()
        repos = sorted(vec)
        s = score_distances(
            cosine_distances(np.stack([vec[r] for r in repos])),
            [m.label for m in sorted(members, key=lambda m: m.repo_id)],
        )
        out[base] = {"n": len(repos), "dim": int(vec[repos[0]].shape[0]), "silhouette": s.silhouette,
                     "nn_accuracy": s.nn_accuracy}  # fmt: skip
    return out


def render(doc: dict[str, Any]) -> str:
    """The results as a Markdown section (between markers, so a rerun replaces only it)."""
    c = doc["continuations"]
    rows = doc["variants"]
    lines = [
        MARK_BEGIN,
        "## Families",
        "",
        f"Delta Meaning on {rows[0]['n']} LoRA adapters: 5 domains x 2 on SmolLM2-135M-Instruct and the same data "
        "on Gemma-3-270M (`build-pool --gemma`). Texts: "
        f"{c['n']} per probe ({c['n'] // len(c['sources'])} from each base), {c['tokens']} tokens, temperature "
        f"{c['temperature']}, seed {c['seed']} (set `{c['hash']}`); variants use subsets of them. Silhouette "
        "(cosine) and nearest-neighbour accuracy by domain over all of them; cross-base NN: a model's nearest "
        f"model *of the other base* has its domain (chance {rows[0]['cross_chance']:.2f}). Regenerate: "
        "`.venv/bin/python bench/family_pool.py POOL_DIR --out docs/evaluation.md`.",
        "",
        "| variant | recipe | dim | silhouette | NN acc | cross-base NN |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['variant']} | `{r['recipe']}` | {r['dim']} | {r['silhouette']:.3f} | "
                     f"{r['nn_accuracy']:.2f} | {r['cross_base_nn']:.2f} |")  # fmt: skip
    lines += ["", "Delta Activations on the same adapters, one space per base (they cannot be compared across bases):",
              "", "| base | dim | silhouette | NN acc |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for base, r in doc["delta_activations"].items():
        lines.append(f"| {base} | {r['dim']} | {r['silhouette']:.3f} | {r['nn_accuracy']:.2f} |")
    lines += ["", "The default recipe on the sets of each sampling seed, and on cheaper subsets of them (silhouette / "
              "cross-base NN):", "", "| variant | " + " | ".join(f"seed {x['seed']}" for x in doc["seeds"]) + " |",
              "| --- |" + " ---: |" * len(doc["seeds"])]  # fmt: skip
    for i, row in enumerate(doc["seeds"][0]["rows"]):
        cells = [f"{x['rows'][i]['silhouette']:.3f} / {x['rows'][i]['cross_base_nn']:.2f}" for x in doc["seeds"]]
        lines.append(f"| {row['variant'].strip()} | " + " | ".join(cells) + " |")
    lines += ["", f"The default recipe on whole sampled sets, and what scoring one adapter costs ({doc['machine']}, "
              f"{doc['torch_threads']} threads, {FamilySettings().batch} adapters a forward; a fresh set is sampled "
              "for each size and seed):", "",
              "| texts x tokens | seed | s / SmolLM2 adapter | s / Gemma-3 adapter | silhouette | cross-base NN |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for c in doc["costs"]:
        per = c["seconds_per_adapter"]
        smol = next((v for k, v in per.items() if "SmolLM2" in k), float("nan"))
        gemma = next((v for k, v in per.items() if "gemma" in k.lower()), float("nan"))
        lines.append(f"| {c['set']} | {c['seed']} | {smol:.1f} | {gemma:.1f} | {c['silhouette']:.3f} | "
                     f"{c['cross_base_nn']:.2f} |")  # fmt: skip
    lines += [MARK_END]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str, begin: str = MARK_BEGIN, end: str = MARK_END) -> None:
    """Replace the section between ``begin`` and ``end`` of ``path`` (or append it at the end, below the
    hand-written notes' mark); ``section`` holds both marks."""
    text = path.read_text() if path.is_file() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def vectors_of(scores: dict[str, TextScores], cset: ContinuationSet, v: Variant, label: dict[str, str],
               base_of: dict[str, str], cuts: list[list[int]] | None) -> dict[str, np.ndarray]:  # fmt: skip
    """Every model's vector under ``v`` (its recipe on its subset of the scored texts)."""
    vecs = {}
    for repo in label:
        mine, texts = _subset(scores[repo], cset, v, cuts or [])
        base, _ = _subset(scores[base_of[repo]], cset, v, cuts or [])
        vecs[repo] = meaning_vector(mine.profile(texts, v.recipe), base.profile(texts, v.recipe), v.recipe)
    return centre_by_base(vecs, base_of) if v.recipe.per_base else vecs


def cost_row(name: str, sampling: Sampling, r: dict[str, float], timings: dict[str, float]) -> dict[str, Any]:
    per = {k.removesuffix(" per adapter"): v for k, v in timings.items() if k.endswith(" per adapter")}
    return {**r, "set": name, "texts": sampling.n, "tokens": sampling.tokens, "seed": sampling.seed,
            "seconds_per_adapter": per}  # fmt: skip


def study(pool: Pool, models: dict[str, list[PoolModel]], sampling: Sampling, cache: Path) -> dict[str, Any]:
    """The variants table on one sampled set, and the default recipe's cost row for it."""
    label = {m.repo_id: m.label for ms in models.values() for m in ms}
    base_of = {m.repo_id: m.base for ms in models.values() for m in ms}
    cset = continuation_set(pool, sampling, cache)
    scored = all_scores(pool, models, cset, cache)
    cuts: dict[int | None, list[list[int]] | None] = {None: None}
    rows = []
    print(f"{'variant':58} {'dim':>6} {'silh':>6} {'NN':>5} {'x-base NN':>9}")
    for v in variants(sampling.tokens, sampling.n // len(cset.sources)):
        if v.prefix_tokens not in cuts:
            cuts[v.prefix_tokens] = prefix_chars(pool, cset, v.prefix_tokens or 0)
        r = evaluate(vectors_of(scored["scores"], cset, v, label, base_of, cuts[v.prefix_tokens]), label, base_of)
        rows.append({"variant": v.name, "recipe": str(v.recipe), **r})
        print(f"{v.name:58} {r['dim']:6d} {r['silhouette']:6.3f} {r['nn_accuracy']:5.2f} {r['cross_base_nn']:9.2f}")
    default = next(r for r in rows if r["variant"].endswith("(the default)"))
    return {"cset": cset, "rows": rows, "timings": scored["timings"], "default": default}


def measured_set(pool: Pool, models: dict[str, list[PoolModel]], sampling: Sampling, cache: Path,
                 name: str) -> dict[str, Any]:  # fmt: skip
    """The default recipe on a whole other sampled set (another size or seed): its figures and scoring cost."""
    label = {m.repo_id: m.label for ms in models.values() for m in ms}
    base_of = {m.repo_id: m.base for ms in models.values() for m in ms}
    cset = continuation_set(pool, sampling, cache)
    scored = all_scores(pool, models, cset, cache)
    v = Variant(name, Recipe(), (0, 1))
    r = evaluate(vectors_of(scored["scores"], cset, v, label, base_of, None), label, base_of)
    print(f"{name:58} {r['dim']:6d} {r['silhouette']:6.3f} {r['nn_accuracy']:5.2f} {r['cross_base_nn']:9.2f}")
    return cost_row(name, sampling, r, scored["timings"])


def _sets(text: str) -> list[tuple[int, int, int]]:
    """``40x64,20x32@1`` -> [(40, 64, 0), (20, 32, 1)]: texts per probe x tokens, @ the sampling seed."""
    out = []
    for part in filter(None, text.split(",")):
        size, _, seed = part.partition("@")
        n, tokens = size.split("x")
        out.append((int(n), int(tokens), int(seed or 0)))
    return out


def main() -> None:
    defaults = FamilySettings()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pool", type=Path)
    ap.add_argument("--n", type=int, default=defaults.n, help="continuations per probe, split over the two bases")
    ap.add_argument("--tokens", type=int, default=defaults.tokens, help="tokens per continuation")
    ap.add_argument("--seeds", default="0,1,2", help="sampling seeds of the --n x --tokens sets, each sampled afresh")
    ap.add_argument("--also", default="40x64",
                    help="other sets scored under the default recipe for the cost table: NxT[@seed],...")  # fmt: skip
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "hubdelta-bench" / "family")
    ap.add_argument("--json", type=Path, default=Path("docs/family.json"))
    ap.add_argument("--render", action="store_true", help="only re-render --out from --json")
    ap.add_argument("--out", type=Path, default=None, help="update this Markdown results file's family section")
    args = ap.parse_args()
    if args.render:
        write_section(args.out or Path("docs/evaluation.md"), render(json.loads(args.json.read_text())))
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    pool = Pool.load(args.pool)
    models = pool_models(pool)
    if len(models) < 2 or any(len(v) < 10 for v in models.values()):
        raise SystemExit(f"{args.pool}: need two bases with 5 domains x 2 adapters; build with --gemma")
    runs = []
    costs = []
    for seed in (int(x) for x in args.seeds.split(",")):
        print(f"--- {args.n} x {args.tokens} tok, seed {seed}")
        run = study(pool, models, Sampling(n=args.n, tokens=args.tokens, seed=seed), args.cache)
        runs.append(run)
        costs.append(cost_row(f"{args.n} x {args.tokens} tok (the default)", run["cset"].sampling, run["default"],
                              run["timings"]))  # fmt: skip
    for n, tokens, seed in _sets(args.also):
        name = f"{n} x {tokens} tok" + (f", seed {seed}" if seed else "")
        costs.append(measured_set(pool, models, Sampling(n=n, tokens=tokens, seed=seed), args.cache, name))
    da = delta_activations(pool, models)
    for base, r in da.items():
        print(f"Delta Activations, {base}: silhouette {r['silhouette']:.3f}, NN {r['nn_accuracy']:.2f} (n={r['n']})")
    cset = runs[0]["cset"]
    seeds = [{"seed": r["cset"].sampling.seed, "rows": [x for x in r["rows"] if x["recipe"] == str(Recipe())]}
             for r in runs]  # fmt: skip
    doc = {"machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
           "continuations": {"hash": cset.hash, "sources": list(cset.sources), **asdict(cset.sampling)},
           "variants": runs[0]["rows"], "seeds": seeds, "costs": costs, "delta_activations": da}  # fmt: skip
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.json}")
    if args.out is not None:
        write_section(args.out, render(doc))
        print(f"wrote the family section of {args.out}")


if __name__ == "__main__":
    main()
