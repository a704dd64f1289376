"""Crawl a 100k-repo synthetic catalog served by devhub and print pages/s and requests per new model.

Usage: .venv/bin/python bench/crawl_bench.py [--repos 100000] [--bases 3]

Three runs side by side on the same catalog and index: the first crawl (everything new), a second crawl with no
changes (incremental: at most one listing request per base and relation), and a full reconcile pass.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hubdelta.crawler.api import run_crawl, track
from hubdelta.index.door import open_reader
from hubdelta.index.records import Relation
from hubdelta.kernel.log import configure_logging
from hubdelta.kernel.settings import load_settings
from hubdelta_dev.devhub.server import DevhubServer
from hubdelta_dev.devhub.synth import generate_catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=100_000)
    parser.add_argument("--bases", type=int, default=3)
    args = parser.parse_args()
    configure_logging(json=False, level="warning")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        synth = generate_catalog(Path(tmp) / "hub", args.repos, args.bases, seed=0)
        print(f"catalog: {synth.repos} repos over {len(synth.bases)} bases in {time.perf_counter() - t0:.1f} s")
        with DevhubServer(Path(tmp) / "hub") as hub:
            settings = load_settings({"HF_ENDPOINT": hub.url}, home=Path(tmp) / "home")
            settings.home.mkdir(parents=True)
            for base in synth.bases:
                track(settings, base, tuple(Relation), check=False)
            print(f"{'run':12s} {'new':>7s} {'upd':>5s} {'rm':>4s} {'requests':>8s} {'pages':>6s} "
                  f"{'seconds':>8s} {'pages/s':>8s} {'req/new':>8s}")  # fmt: skip
            for name, full in (("first", False), ("no-change", False), ("full", True)):
                hub.reset_requests()
                s = run_crawl(settings, full=full)
                new = s.total("new")
                per_new = f"{s.requests / new:.4f}" if new else "-"
                print(f"{name:12s} {new:7d} {s.total('updated'):5d} {s.total('removed'):4d} {s.requests:8d} "
                      f"{s.pages:6d} {s.seconds:8.1f} {s.pages / s.seconds:8.1f} {per_new:>8s}")  # fmt: skip
                assert s.requests == hub.requests()["by_kind"].get("list", 0)
            with open_reader(settings) as index:
                stats = index.maintenance.stats()
            print("index:", {name: (t.rows, t.fragments) for name, t in stats.items()}, "(rows, fragments)")


if __name__ == "__main__":
    main()
