"""Suggested labels evaluated on the pool, and their refresh timed at scale (issue 20, point 3).

Usage:
    .venv/bin/python bench/labels.py pool [--recipe a|b] [--work DIR] [--trials 200]
    .venv/bin/python bench/labels.py scale [--n 100000] [--new 100] [--work DIR]

``pool`` builds the finetune pool from the test cache (``~/.cache/hubdelta-test/pool``), serves it with devhub,
and crawls, embeds and reports it as a user would (the report refreshes the labels); the index is kept in
``--work`` so a rerun only scores. Each model's labels come from its neighbours only (it is never its own
neighbour, so its own name and tags are never used); the suggested *domain* is the top suggested tag, checked
against the pool's labels.json. Variants:

- ``stored``: the labels ``hubdelta labels`` stored (every other model documented by its crawled name and tags);
- ``no shared data``: neighbours trained on any of the model's own examples are left out (a split adapter's
  full finetune or merge twins: ``full-<d>`` and the merges are built from split 1);
- ``documented p``: only a random share ``p`` of the other models are documented (the Hub: most are not),
  ``--trials`` draws each.

Confidence against being right: accuracy by confidence bin over every labelled (model, trial), and the AUC
(the chance that a right label has a higher confidence than a wrong one).

``scale`` writes ``--n`` synthetic clustered vectors (576 dims, 1 model in 10 documented by a cluster word)
into a fresh index and times a whole refresh, then ``--new`` new vectors and the incremental refresh after them.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from hubdelta.index.door import open_reader, open_writer
from hubdelta.kernel.settings import Settings, load_settings
from hubdelta.report import labels as labelling
from hubdelta.report import neighbours, suggest

SPLITS = [f"hubdelta-pool/smollm2-lora-{d}-{s}" for d in ("math", "code", "legal", "medical", "chemistry")
          for s in (1, 2, 3)]  # fmt: skip


def _say(text: str) -> None:
    print(text, flush=True)


def build_home(work: Path, recipe: str) -> tuple[Settings, dict[str, str]]:
    """The pool crawled, embedded and reported in ``work/home-<recipe>`` (kept between runs), and its labels."""
    import json

    from hubdelta.crawler.api import run_crawl, track
    from hubdelta.embedder.api import run_embed
    from hubdelta.report.api import run_report
    from hubdelta_dev.devhub.server import DevhubServer
    from hubdelta_dev.pool.base import BASE_REPO_ID
    from hubdelta_dev.pool.build import build_pool

    pool = work / f"pool-{recipe}"
    build_pool(pool, cache_dir=Path.home() / ".cache" / "hubdelta-test" / "pool", seed=0, recipe=recipe)
    truth = json.loads((pool / "labels.json").read_text())
    home = work / f"home-{recipe}"
    if (home / "done").is_file():  # a kept index: its labels refreshed (recomputed if the rule changed)
        settings = load_settings({}, home=home)
        labelling.refresh_labels(settings, command="bench/labels.py")
        return settings, truth
    with DevhubServer(pool / "hub") as hub:
        settings = load_settings({"HF_ENDPOINT": hub.url}, home=home)
        track(settings, BASE_REPO_ID)
        run_crawl(settings)
        t = time.perf_counter()
        summary = run_embed(settings)
        _say(f"embedded {summary.embedded} models in {time.perf_counter() - t:.0f} s")
        run_report(settings)
    (home / "done").write_text("")
    return load_settings({}, home=home), truth


def training_data(recipe: str) -> dict[str, frozenset[tuple[str, int]]]:
    """Each pool model's training examples as (domain, slice start) pairs, merges inheriting their inputs'."""
    from hubdelta_dev.pool.recipe import pool_recipe
    from hubdelta_dev.pool.recipe_b import pool_recipe_b

    out: dict[str, frozenset[tuple[str, int]]] = {}
    for spec in pool_recipe(0) if recipe == "a" else pool_recipe_b(0):
        own = {(s.domain, s.start) for s in spec.data}
        for b in spec.bases:
            own |= out.get(b, frozenset())
        out[spec.repo_id] = frozenset(own)
    return out


def label_one(data: labelling.SpaceDocs, row: int, docs: dict[str, dict[str, float]],
              allowed: Callable[[str], bool], tau: float | None = suggest.TAU) -> suggest.Suggestion:  # fmt: skip
    """One model's suggestion from its k nearest rows that are documented in ``docs`` and ``allowed``."""
    ids = data.repo_ids
    cand = [i for i, r in enumerate(ids) if r in docs and allowed(r) and i != row]
    near = neighbours.nearest(data.unit, [row], cand, suggest.K)[0]
    return suggest.suggest([(ids[j], c) for j, c in near], docs, tau)


def right(s: suggest.Suggestion, truth: str) -> bool:
    return bool(s.tags) and s.tags[0].tag in truth.split("+")


def auc(scored: Sequence[tuple[float, bool]]) -> float:
    """P(confidence of a right label > that of a wrong one), ties half."""
    pos = [c for c, ok in scored if ok]
    neg = [c for c, ok in scored if not ok]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def bins(scored: Sequence[tuple[float, bool]]) -> str:
    edges = [0.0, 0.2, 0.4, 0.6, 0.8, 1.01]
    out = []
    for lo, hi in itertools.pairwise(edges):
        inside = [ok for c, ok in scored if lo <= c < hi]
        if inside:
            out.append(f"[{lo:.1f}, {min(hi, 1):.1f}): {sum(inside)}/{len(inside)}")
    return "; ".join(out)


def _row(r: str, truth: str, s: suggest.Suggestion) -> str:
    tags = ", ".join(f"{t.tag} {t.score:.2f}" for t in s.tags)
    return f"| `{r.split('/')[1]}` | {truth} | {tags} | {s.confidence:.2f} |{'' if right(s, truth) else ' wrong'}"


def pool_study(work: Path, trials: int, recipe: str) -> None:
    settings, truth = build_home(work, recipe)
    data_of = training_data(recipe)
    with open_reader(settings) as index:
        (space_id,) = index.vectors.spaces()
        data = labelling.read_space(index, space_id)
        stored = index.labels.get(space_id, data.repo_ids)
    row = {r: i for i, r in enumerate(data.repo_ids)}
    targets = SPLITS if recipe == "a" else sorted(truth)
    everyone = [r for r in data.repo_ids if r in truth]
    _say(
        f"pool {recipe}, space {space_id}: {len(data.repo_ids)} models, {len(data.docs)} documented; "
        f"common tokens {sorted(data.common)}; targets: {len(targets)}"
    )
    for tau in (suggest.TAU, None):
        found = {r: label_one(data, row[r], data.docs, lambda _o: True, tau) for r in everyone}
        if tau == suggest.TAU:
            same = all([t.tag for t in stored[r].tags] == [t.tag for t in found[r].tags] for r in everyone)
            assert same, "the stored labels differ from the study's"
            _say("\n| model | pool label | suggested tags (support) | confidence |\n|---|---|---|---|")
            _say("\n".join(_row(r, truth[r], found[r]) for r in everyone))
        scored = [(found[r].confidence, right(found[r], truth[r])) for r in everyone]
        ok = [r for r in targets if right(found[r], truth[r]) and "+" not in truth[r]]
        pure = [found[r].confidence for r in ok]
        mixes = {r.split("/")[1]: found[r].confidence for r in everyone if "+" in truth[r]}
        how = f"exp((c - c1) / {tau})" if tau else "linear"
        _say(
            f"\nweights {how}: targets {len(ok)}/{len(targets)} right; "
            f"all models {sum(k for _, k in scored)}/{len(everyone)}; AUC {auc(scored):.2f}; confidence of the "
            f"right targets min {min(pure):.2f} median {float(np.median(pure)):.2f}; mixed models {mixes}"
        )
    hard = {r: label_one(data, row[r], data.docs, lambda o, r=r: not (data_of.get(o, frozenset()) & data_of[r]))
            for r in targets}  # fmt: skip
    _say(
        f"no neighbour sharing training data: targets {sum(right(hard[r], truth[r]) for r in targets)}"
        f"/{len(targets)} right"
    )
    for p in (0.5, 0.25, 0.1):
        found_p = sparse_trials(data, row, truth, p, trials)
        target_ok = [k for (_, k), r in found_p if r in targets]
        flat = [ck for ck, _ in found_p]
        _say(
            f"documented {p:.0%} ({trials} trials): targets {np.mean(target_ok):.1%} right (labelled "
            f"{len(target_ok)}/{len(targets) * trials}); AUC {auc(flat):.2f}; right by confidence {bins(flat)}"
        )


def sparse_trials(data: labelling.SpaceDocs, row: dict[str, int], truth: dict[str, str], p: float,
                  trials: int) -> list[tuple[tuple[float, bool], str]]:  # fmt: skip
    """Per trial, a random share ``p`` of the models documented; every single-domain model labelled from them."""
    rng = random.Random(f"labels-{p}")
    out = []
    for _ in range(trials):
        docs = {r: e for r, e in data.docs.items() if rng.random() < p}
        for r in truth:
            if r in row and "+" not in truth[r]:
                s = label_one(data, row[r], docs, lambda _o: True)
                if s.tags:  # no documented neighbour: no label (not counted as wrong)
                    out.append(((s.confidence, right(s, truth[r])), r))
    return out


def scale(n: int, new: int, work: Path) -> None:
    """Time a whole refresh of ``n`` synthetic vectors, then an incremental one after ``new`` more."""
    from hubdelta.index.embeddings import Embedding, SpaceRow
    from hubdelta.index.records import HubModel, ModelRecord, ModelStatus, Relation

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(100, 576)).astype(np.float32)
    words = [f"topic{i}" for i in range(100)]
    settings = load_settings({}, home=work / "scale")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def put(start: int, count: int, when: datetime) -> None:
        c = rng.integers(0, 100, count)
        vecs = centres[c] + 0.5 * rng.normal(size=(count, 576)).astype(np.float32)
        names = [f"o{i}/m-{words[k] if i % 10 == 0 else 'x'}-{i}" for i, k in zip(range(start, start + count), c,
                 strict=True)]  # fmt: skip
        with open_writer(settings, "bench") as index:
            if not index.vectors.spaces():
                index.vectors.put_space(SpaceRow("s", {"base_repo": "b/base"}, np.zeros((1, 576), np.float32)))
            index.models.put([ModelRecord(HubModel(r, "a" * 40, Relation.ADAPTER, ("b/base",)), ModelStatus.EMBEDDED)
                              for r in names])  # fmt: skip
            index.vectors.put("s", [Embedding(r, "a" * 40, v, when) for r, v in zip(names, vecs, strict=True)])

    put(0, n, t0)
    for name, count, when in (("whole", 0, None), ("incremental", new, t0 + timedelta(days=1))):
        if count:
            put(n, count, when or t0)
        with open_writer(settings, "bench") as index:
            t = time.perf_counter()
            done = labelling.refresh(index)
            _say(
                f"{name}: {done.computed['s']} labels in {time.perf_counter() - t:.1f} s "
                f"(whole: {done.full['s']}, space of {index.vectors.count('s')})"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("pool", "scale"))
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--recipe", choices=("a", "b"), default="a", help="the pool: a (the tests') or b")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=100)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.what == "pool":
            pool_study(work, args.trials, args.recipe)
        else:
            scale(args.n, args.new, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
