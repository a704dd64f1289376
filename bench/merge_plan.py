"""Does choosing merge members by dispersion (``hubdelta merge-plan``) beat random or same-cluster choices?

On the pool's SmolLM2 LoRA adapters (docs/pool.md), for every anchor adapter (all of them, in a seeded order):

- **proposed**: the anchor plus the k-1 adapters greedy farthest-point selection picks (:mod:`hubdelta.merge.plan`,
  the code ``merge-plan`` runs), in the space of their Delta Activations (paper probes, final norm, last token);
- **random**: the anchor plus k-1 adapters drawn at random (``--random`` draws per anchor, seeded);
- **same-cluster**: the anchor plus its k-1 nearest adapters by cosine.

Each set is merged with the code ``--apply`` runs (:func:`hubdelta.merge.combine.combine`: linear = the mean of the
task vectors, TIES = peft's ``ties`` at ``--density``) onto the base in memory and scored by held-out response loss
(:func:`hubdelta.embedder.training.heldout_loss`, the pool's own measure) on every domain's held-out examples; the
score is the mean over the five domains (lower is better). Prints figures and a JSON file; asserts nothing.

    flock /tmp/heavy.lock .venv/bin/python bench/merge_plan.py ~/.cache/hubdelta-test/pool-out
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hubdelta.embedder.lora import read_adapter
from hubdelta.embedder.training import heldout_loss, load_causal_lm
from hubdelta.evaluation.pool import Pool, activations
from hubdelta.merge.combine import adapter_delta, combine, default_weights
from hubdelta.merge.plan import farthest_points, nearest_rows, unit_rows
from hubdelta_dev.pool.evaluate import load_heldout

KINDS = ("proposed", "random", "same-cluster")


def _say(text: str) -> None:
    print(text, flush=True)


class Scorer:
    """The base resident once; a merged task vector is added in place, scored, and the base weights restored."""

    def __init__(self, pool: Pool, pool_dir: Path, adapters: Sequence[str]) -> None:
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(pool.base_dir)
        self.model = load_causal_lm(pool.base_dir)
        self.params = dict(self.model.named_parameters())
        self.factors = {r: read_adapter(r, pool.repo_dir(r), self.model).factors for r in adapters}
        names = {f"{m}.weight" for f in self.factors.values() for m in f}
        self.saved = {n: self.params[n].detach().clone() for n in names}
        domains = sorted(p.stem for p in (pool_dir / "heldout").glob("*.jsonl"))
        self.heldout = {d: load_heldout(pool_dir, d) for d in domains}

    def losses(self, delta: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        with torch.no_grad():
            for name, d in (delta or {}).items():
                self.params[name].add_(d)
            try:
                return {dom: heldout_loss(self.model, self.tok, ex) for dom, ex in self.heldout.items()}
            finally:
                for name in delta or {}:
                    self.params[name].copy_(self.saved[name])

    def merged(self, members: Sequence[str], method: str, density: float) -> dict[str, torch.Tensor]:
        deltas = [adapter_delta(self.factors[m]) for m in members]
        return combine(deltas, method, default_weights(method, len(members)), density)


def _sets(ids: list[str], unit: np.ndarray, anchor: int, k: int, draws: int, rng: random.Random) -> list[tuple]:
    others = [i for i in range(len(ids)) if i != anchor]
    out = [("proposed", [p[0] for p in farthest_points(unit, anchor, k)], 0)]
    out += [("random", [anchor, *rng.sample(others, k - 1)], n) for n in range(draws)]
    out.append(("same-cluster", nearest_rows(unit, anchor, k), 0))
    return out


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    q = np.percentile(values, [25, 50, 75])
    return float(q[0]), float(q[1]), float(q[2])


def _paired(rows: list[dict[str, Any]], method: str, against: str) -> str:
    """Per anchor, proposed minus the first ``against`` set: median, mean, and the Wilcoxon / sign-test p."""
    from scipy.stats import binomtest, wilcoxon

    score = {(r["anchor"], r["kind"]): r["score"] for r in rows if r["method"] == method and r["draw"] == 0}
    diffs = [score[a, "proposed"] - score[a, against] for a, k in score if k == "proposed" and (a, against) in score]
    if len(diffs) < 2 or not any(diffs):
        return "too few pairs"
    sign_p = binomtest(sum(d < 0 for d in diffs), len(diffs)).pvalue
    return (f"paired difference median {statistics.median(diffs):+.4f}, mean {statistics.mean(diffs):+.4f}; "
            f"Wilcoxon p {wilcoxon(diffs).pvalue:.3g}, sign test p {sign_p:.3g}")  # fmt: skip


def _win_rate(rows: list[dict[str, Any]], method: str, against: str) -> tuple[float, int]:
    """Paired by anchor: the share of (proposed, other) pairs where proposed has the lower score (ties: half)."""
    wins, pairs = 0.0, 0
    for anchor in sorted({r["anchor"] for r in rows}):
        mine = [r["score"] for r in rows if r["anchor"] == anchor and r["method"] == method and r["kind"] == "proposed"]
        theirs = [r["score"] for r in rows if r["anchor"] == anchor and r["method"] == method and r["kind"] == against]
        for a in mine:
            for b in theirs:
                wins += 1.0 if a < b else 0.5 if a == b else 0.0
                pairs += 1
    return (wins / pairs if pairs else float("nan")), pairs


def summarise(rows: list[dict[str, Any]], base: dict[str, float], domains: Sequence[str]) -> None:
    _say(f"\nbase: mean held-out loss {statistics.mean(base.values()):.4f} "
         + " ".join(f"{d} {v:.3f}" for d, v in base.items()))  # fmt: skip
    for method in sorted({r["method"] for r in rows}):
        _say(f"\n### {method}\n")
        _say("| set | n | median | IQR | mean pairwise cosine | domains covered | "
             + " | ".join(domains) + " |")  # fmt: skip
        _say("|---|---:|---:|---:|---:|---:|" + "---:|" * len(domains))
        for kind in ("single", *KINDS):
            sel = [r for r in rows if r["method"] == method and r["kind"] == kind]
            if not sel:
                continue
            q1, med, q3 = _quartiles([r["score"] for r in sel])
            per = [statistics.median(r["losses"][d] for r in sel) for d in domains]
            cos = statistics.mean(r["mean_cosine"] for r in sel)
            cov = statistics.mean(r["domains"] for r in sel)
            _say(f"| {kind} | {len(sel)} | {med:.4f} | {q1:.4f}–{q3:.4f} | {cos:.3f} | {cov:.2f} | "
                 + " | ".join(f"{x:.3f}" for x in per) + " |")  # fmt: skip
        from scipy.stats import spearmanr

        sets = [r for r in rows if r["method"] == method and r["kind"] in KINDS]
        loss = [r["score"] for r in sets]
        _say(f"\nSpearman of the loss with the mean pairwise cosine "
             f"{spearmanr([r['mean_cosine'] for r in sets], loss).statistic:.2f}, with the domains covered "
             f"{spearmanr([r['domains'] for r in sets], loss).statistic:.2f} ({len(sets)} sets)")  # fmt: skip
        for against in ("random", "same-cluster"):
            rate, pairs = _win_rate(rows, method, against)
            _say(f"\nproposed beats {against} (lower mean loss, paired by anchor): {rate:.2f} of {pairs} pairs; "
                 + _paired(rows, method, against))  # fmt: skip


def from_json(path: Path) -> None:
    """Print the summary of a saved run again (no model is loaded)."""
    saved = json.loads(path.read_text())
    summarise(saved["rows"], saved["base"], list(saved["base"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pool", type=Path)
    parser.add_argument("-k", type=int, default=3)
    parser.add_argument("--random", type=int, default=1, help="random sets per anchor")
    parser.add_argument("--single", action="store_true", help="also score each anchor alone")
    parser.add_argument("--anchors", type=int, default=0, help="how many anchors (0: every adapter)")
    parser.add_argument("--methods", default="linear", help="linear and/or ties (TIES: ~2x the time)")
    parser.add_argument("--density", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/merge-plan.json"))
    parser.add_argument("--summary", type=Path, help="only print the summary of a saved --out file")
    args = parser.parse_args()
    if args.summary:
        from_json(args.summary)
        return
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    pool = Pool.load(args.pool)
    adapters = [m for m in pool.models if m.kind == "lora" and m.base == pool.base_repo]
    labels = {m.repo_id: m.label for m in adapters}
    vectors = activations(pool, adapters).vectors()
    ids = sorted(vectors)
    unit = unit_rows(np.stack([vectors[r] for r in ids]))
    _say(f"{len(ids)} adapters embedded in {time.perf_counter() - t0:.0f} s")
    scorer = Scorer(pool, args.pool, ids)
    domains = list(scorer.heldout)
    base = scorer.losses()
    rng = random.Random(args.seed)
    order = list(range(len(ids)))
    rng.shuffle(order)
    anchors = order[: args.anchors or len(order)]
    rows: list[dict[str, Any]] = []
    cache: dict[tuple[str, frozenset[int]], dict[str, float]] = {}
    for method in args.methods.split(","):
        for n, anchor in enumerate(anchors):
            sets = [("single", [anchor], 0)] if args.single else []
            sets += _sets(ids, unit, anchor, args.k, args.random, rng)
            for kind, members, draw in sets:
                key = (method, frozenset(members))
                if key not in cache:
                    cache[key] = scorer.losses(scorer.merged([ids[i] for i in members], method, args.density))
                losses = cache[key]
                sub = unit[members]
                cos = float(np.mean([sub[i] @ sub[j] for i in range(len(sub)) for j in range(i + 1, len(sub))])) \
                    if len(sub) > 1 else 1.0  # fmt: skip
                covered = {d for i in members for d in labels[ids[i]].split("+")}
                rows.append({"method": method, "anchor": ids[anchor], "kind": kind, "draw": draw,
                             "members": [ids[i] for i in members], "losses": losses,
                             "score": statistics.mean(losses.values()), "mean_cosine": cos,
                             "domains": len(covered)})  # fmt: skip
            _say(f"{method} anchor {n + 1}/{len(anchors)} {ids[anchor]}: "
                 + " ".join(f"{r['kind']} {r['score']:.4f}" for r in rows[-len(sets):])
                 + f"  ({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.out.write_text(json.dumps({"base": base, "rows": rows, "args": settings}))
    summarise(rows, base, domains)
    _say(f"\n{len(cache)} merges scored in {time.perf_counter() - t0:.0f} s; rows in {args.out}")


if __name__ == "__main__":
    main()
