"""The family space end to end, through the product: devhub, crawl, embed, `family embed`, `eval`. (issue 8)

Usage: .venv/bin/python bench/family_index.py [--cache DIR] [--work DIR] [--json docs/family-index.json]

bench/family_pool.py compares recipes on scores it caches; this script checks that the product gives the same
answer. It publishes the 20 split adapters (5 domains x 2 on SmolLM2-135M-Instruct and on Gemma-3-270M, from the
pool cache: ``build-pool --gemma`` trains them once), serves them with devhub, and runs what a user runs:

    hubdelta family create pool --base HuggingFaceTB/SmolLM2-135M-Instruct --base google/gemma-3-270m
    hubdelta crawl && hubdelta embed && hubdelta family embed
    hubdelta eval --labels labels.csv --space <the family space>     # and each base's activation space

with the default ``[family]`` settings, then prints silhouette, nearest-neighbour and cross-base accuracy.
About 4 minutes on 2 cores with the default [family] settings (20 texts x 32 tokens a probe).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hubdelta.crawler.api import run_crawl, track
from hubdelta.embedder.api import run_embed
from hubdelta.embedder.family import create_family, embed_families
from hubdelta.evaluation.api import evaluate
from hubdelta.kernel.settings import load_settings
from hubdelta_dev.devhub.server import DevhubServer
from hubdelta_dev.pool.base import BASE_REPO_ID, GEMMA_REPO_ID
from hubdelta_dev.pool.build import build_pool
from hubdelta_dev.pool.recipe import DOMAIN_NAMES

ADAPTERS = {f"hubdelta-pool/{b}-lora-{d}-{s}": d for b in ("smollm2", "gemma3") for d in DOMAIN_NAMES for s in (1, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "hubdelta-test" / "pool")
    ap.add_argument("--work", type=Path, default=None, help="where the pool and the home go (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=Path("docs/family-index.json"))
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="family-index-"))
    t0 = time.perf_counter()
    build_pool(work / "pool", cache_dir=args.cache, only=set(ADAPTERS), gemma=True)
    labels = work / "labels.csv"
    labels.write_text("repo_id,label\n" + "".join(f"{r},{d}\n" for r, d in ADAPTERS.items()))
    timings: dict[str, float] = {"pool": time.perf_counter() - t0}
    with DevhubServer(work / "pool" / "hub") as hub:
        settings = load_settings({"HF_ENDPOINT": hub.url}, home=work / "home")
        create_family(settings, "pool", [BASE_REPO_ID, GEMMA_REPO_ID], track_base=lambda b: track(settings, b))
        t = time.perf_counter()
        crawl = run_crawl(settings)
        embedded = run_embed(settings)
        timings["crawl + embed (activations)"] = time.perf_counter() - t
        assert embedded.failed == 0 and embedded.embedded == len(ADAPTERS), (crawl, embedded)
        t = time.perf_counter()
        (family,) = embed_families(settings, ["pool"])
        timings["family embed"] = time.perf_counter() - t
        assert family.failed == 0 and family.embedded == len(ADAPTERS), family
        results = {"family": evaluate(settings, labels, space=family.space_id).to_dict()}
        for space in embedded.spaces:
            results[space] = evaluate(settings, labels, space=space).to_dict()
    print(f"{'space':34} {'n':>3} {'silhouette':>10} {'NN acc':>7} {'cross-base NN':>14}")
    for r in results.values():
        s, c = r["scores"], r["cross_base"]
        cross = f"{c['accuracy']:.2f} ({c['chance']:.2f})" if c else "-"
        print(f"{r['space_id']:34} {s['n']:3d} {s['silhouette']:10.3f} {s['nn_accuracy']:7.2f} {cross:>14}")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    doc = {"family_space": family.space_id, "results": results, "timings_s": timings}
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
