"""The download process's CPU by thread count: N adapter files fetched with ``hf_hub_download`` from devhub.

Serves a devhub tree (``bench/pipeline.py --keep DIR`` leaves one in ``DIR/tree/hub``) in this process and, for
each thread count, fetches every ``adapter_model.safetensors`` of the tree's ``hubdelta-bench`` repos into a fresh
cache from a child process on a thread pool, as `embed`'s download process does. Prints the wall time and the
child's user and kernel CPU (``getrusage``): on 2 cores the downloads' CPU is taken from the forwards. Asserts
nothing; run it on a quiet machine.

Usage: .venv/bin/python bench/download_threads.py TREE_HUB [--threads 8,2,1]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import sys
from concurrent.futures import ThreadPoolExecutor
from huggingface_hub import hf_hub_download
threads, cache, repos = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
with ThreadPoolExecutor(threads) as pool:
    list(pool.map(lambda r: hf_hub_download(r, "adapter_model.safetensors", cache_dir=cache), repos))
"""


def main() -> None:
    from hubdelta_dev.devhub.server import DevhubServer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a devhub root holding hubdelta-bench/adapter-* repos")
    parser.add_argument("--threads", default="8,2,1", help="thread counts, in turn (default 8,2,1)")
    args = parser.parse_args()
    repos = sorted(f"hubdelta-bench/{p.name}" for p in (args.root / "hubdelta-bench").glob("adapter-*"))
    size = sum((args.root / r / "adapter_model.safetensors").stat().st_size for r in repos)
    print(f"{len(repos)} files, {size / 1e9:.2f} GB, {os.cpu_count()} CPUs")
    with DevhubServer(args.root) as hub:
        for threads in (int(t) for t in args.threads.split(",")):
            with tempfile.TemporaryDirectory() as cache:
                before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
                env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
                subprocess.run([sys.executable, "-c", CHILD, str(threads), cache, *repos], check=True, env=env)
                wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
            print(f"{threads} threads: wall {wall:.1f} s, user {after.ru_utime - before.ru_utime:.1f} s, "
                  f"kernel {after.ru_stime - before.ru_stime:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
