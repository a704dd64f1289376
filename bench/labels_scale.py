"""Suggested labels at Hub scale: every model's nearest documented models, exact against probed lists.

Usage: .venv/bin/python bench/labels_scale.py [--sizes 100000,1000000] [--probes 4,8] [--sample 5000]

For each size N it makes ``bench/report_scale.py``'s planted space (every model documented by its cluster's topic
word, noise models by "misc"), then times :func:`hubdelta.report.probed.nearest_probed` over all N models for each
``--probes`` and compares a seeded sample of ``--sample`` models with the exact search
(:func:`hubdelta.report.neighbours.nearest`, whose whole-space time is extrapolated from the sample's): recall@10,
the share of neighbour lists that are identical, and the share of top suggested tags (``suggest.suggest``) that are
the same. Prints figures, asserts nothing; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from report_scale import planted  # bench/: the script's folder is on sys.path

from hubdelta.report import suggest
from hubdelta.report.cluster import normalise_in_place
from hubdelta.report.neighbours import nearest
from hubdelta.report.probed import nearest_probed

K = suggest.K


def top_tags(found: list[list[tuple[int, float]]], ids: list[str], docs: dict[str, dict[str, float]]) -> list[str]:
    out = []
    for near in found:
        s = suggest.suggest([(ids[j], c) for j, c in near], docs)
        out.append(s.tags[0].tag if s.tags else "")
    return out


def bench(n: int, probes: list[int], sample: int) -> None:
    space = planted(n, 0)
    unit = normalise_in_place(np.ascontiguousarray(space.vectors, np.float32))
    ids = [f"u/m{i:07d}" for i in range(n)]
    docs = {r: {space.words[int(c)] if c >= 0 else "misc": 1.0} for r, c in zip(ids, space.labels, strict=True)}
    everyone = np.arange(n)
    sub = np.sort(np.random.default_rng(5).choice(n, min(sample, n), replace=False))
    started = time.perf_counter()
    exact = nearest(unit, sub, everyone, K)
    seconds = time.perf_counter() - started
    print(f"N={n:>9,}: exact, {len(sub):,} models: {seconds:.1f} s (all {n:,}: ~{seconds * n / len(sub):,.0f} s)",
          flush=True)  # fmt: skip
    exact_tags = top_tags(exact, ids, docs)
    for p in probes:
        started = time.perf_counter()
        found = nearest_probed(unit, everyone, everyone, K, probes=p)
        seconds = time.perf_counter() - started
        mine = [found[i] for i in sub]
        pairs = list(zip(mine, exact, strict=True))
        recall = np.mean([len({r for r, _ in f} & {r for r, _ in e}) / max(1, len(e)) for f, e in pairs])
        same = np.mean([[r for r, _ in f] == [r for r, _ in e] for f, e in pairs])
        tags = np.mean([a == b for a, b in zip(top_tags(mine, ids, docs), exact_tags, strict=True)])
        print(f"N={n:>9,}: probes {p}, all {n:,} models: {seconds:.1f} s; recall@{K} {recall:.4f}, identical lists "
              f"{same:.4f}, same top tag {tags:.4f}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--probes", default="4,8")
    parser.add_argument("--sample", type=int, default=5000)
    args = parser.parse_args()
    for n in (int(s) for s in args.sizes.split(",")):
        bench(n, [int(p) for p in args.probes.split(",")], args.sample)


if __name__ == "__main__":
    main()
