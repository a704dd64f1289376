"""Copies found before download: what a crawl and embed of a tree with 20% byte-identical re-uploads fetched.

Builds the pool (from its cache: hard links, seconds), the copy tree of ``hubdelta_dev.pool.copies`` (17 adapters,
3 variants, 5 re-uploads: 5 of 25 adapter repos), serves it with devhub, runs track -> crawl -> embed in this
process, and prints from devhub's request log: requests and body bytes by kind, the bytes served for the
re-uploads (0 when none was downloaded), the run's ``copied`` count and the bytes not downloaded (the report's
figure), the embed run's seconds and its seconds per computed model (what each copy did not cost, roughly: a
copy still costs its listing request and its share of a commit). Asserts nothing.

Usage: .venv/bin/python bench/copies.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hubdelta.crawler.api import run_crawl, track
from hubdelta.embedder.api import run_embed
from hubdelta.index.door import open_reader
from hubdelta.kernel.settings import load_settings
from hubdelta_dev.devhub.server import DevhubServer
from hubdelta_dev.pool.base import BASE_REPO_ID
from hubdelta_dev.pool.build import build_pool
from hubdelta_dev.pool.copies import build_copy_tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="build everything here instead of a temp folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        cache = Path.home() / ".cache" / "hubdelta-test" / "pool"
        manifest = build_pool(work / "pool", cache_dir=cache, seed=0)
        tree = build_copy_tree(work / "pool", manifest, work / "hub")
        with DevhubServer(tree.root) as hub:
            settings = load_settings({"HF_ENDPOINT": hub.url}, home=work / "home")
            track(settings, BASE_REPO_ID)
            run_crawl(settings)
            hub.reset_requests()
            started = time.perf_counter()
            summary = run_embed(settings)
            seconds = time.perf_counter() - started
            records = hub.request_records()
        with open_reader(settings) as index:
            (space,) = index.vectors.spaces()
            copied, saved = index.copies.saved_bytes(space)
    by_kind: dict[str, list[int]] = {}
    for r in records:
        by_kind.setdefault(r.kind, [0, 0])
        by_kind[r.kind][0] += 1
        by_kind[r.kind][1] += r.bytes
    reupload_bytes = sum(r.bytes for r in records if any(new in r.path for new in tree.reuploads))
    reupload_files = sum(1 for r in records if r.kind == "resolve" and any(new in r.path for new in tree.reuploads))
    computed = summary.embedded + summary.unchanged
    print(f"tree: {len(tree.originals) + 3} adapters downloaded and computed, {len(tree.reuploads)} re-uploads")
    for kind, (n, b) in sorted(by_kind.items()):
        print(f"  embed run requests {kind:<10} {n:>5}  {b:>12,} body bytes")
    print(f"re-uploads: {reupload_files} files downloaded, {reupload_bytes:,} body bytes served (their listings)")
    print(f"copied {summary.copied} (index: {copied}), bytes not downloaded {saved:,}")
    print(
        f"embed run {seconds:.1f} s: {computed} models computed, {seconds / max(1, computed):.2f} s per computed model"
    )


if __name__ == "__main__":
    main()
