"""How a run's adapters are cut into chunks for the lanes: cut for one lane (full chunks, then what is left) against
cut in rounds of one chunk a lane (``hubdelta.embedder.plan.chunks`` with the lanes, as ``hubdelta embed`` cuts
them), side by side on one resident base and the same lanes (:mod:`hubdelta.embedder.lanes`).

Cut for one lane, a run of 8 adapters is one chunk that one lane computes while the other idles, and a run of 230
in chunks of 8 ends with 6 on one lane. Prints seconds to compute each run's chunks (files read and checked
included, base load excluded), alternating the two cuts, for each ``--n``. Asserts nothing; run it alone on the
machine (OpenMP threads sharing cores with another process slow down many times over).

Usage: .venv/bin/python bench/lane_tail.py POOL_DIR [--dtype bfloat16] [--n 8 10 230] [--repeat 2]
    POOL_DIR: a pool or a bench/pipeline.py tree (``hub/<owner>/<adapter>/adapter_config.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from embed_throughput import pool_adapters

from hubdelta.embedder.activations import ResidentBase
from hubdelta.embedder.bases import space_for
from hubdelta.embedder.lanes import lanes_for
from hubdelta.embedder.plan import chunks
from hubdelta.embedder.runtime import keep_freed_memory
from hubdelta_dev.pool.base import BASE_REPO_ID


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pool", type=Path)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--n", type=int, nargs="+", default=[8, 10, 230])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    keep_freed_memory()
    adapters = pool_adapters(args.pool, max(args.n))
    if len(adapters) < max(args.n):
        sys.exit(f"{args.pool} holds {len(adapters)} adapters, fewer than --n {max(args.n)}")
    base_dir = args.pool / "hub" / BASE_REPO_ID
    resident = ResidentBase(base_dir, space_for(base_dir, BASE_REPO_ID, "bench", dtype=args.dtype))
    resident.base_activations()
    names = list(adapters)
    with lanes_for(resident.device, 0) as lane:
        if lane.n == 1:  # the two cuts are then the same: nothing to compare
            sys.exit(f"one lane on {resident.device} with {torch.get_num_threads()} thread(s): no cut to compare")
        print(f"{args.dtype}, chunks of at most {args.batch}, {lane.n} lanes of {lane.threads} thread(s)")
        for n in args.n:
            seconds: dict[int, list[float]] = {1: [], lane.n: []}
            for _ in range(args.repeat):
                for cut_for in seconds:
                    cut = chunks(names[:n], args.batch, cut_for)
                    started = time.perf_counter()
                    flight = [lane.submit(resident.adapter_activations, {k: adapters[k] for k in c}) for c in cut]
                    for done in flight:
                        done.result()
                    seconds[cut_for].append(time.perf_counter() - started)
            one, ours = (min(seconds[k]) for k in seconds)
            sizes = [len(c) for c in chunks(names[:n], args.batch, lane.n)]
            print(f"  {n:4d} adapters: cut for one lane {one:6.2f} s, in rounds ({sizes[-2:]} last) {ours:6.2f} s: "
                  f"{one / ours:.2f}x  (best of {args.repeat})")  # fmt: skip
    resident.close()


if __name__ == "__main__":
    main()
