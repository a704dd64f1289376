"""Do the pool's adapters cluster by domain? Silhouette (cosine) and leave-one-out nearest-neighbour accuracy.

Usage: .venv/bin/python bench/embed_quality.py POOL_DIR [--layers final,20,2/3] [--positions last,mean]

Serves the pool from devhub, crawls it and embeds every model once per (layer, position) setting into a
temporary index, then prints, per setting: the silhouette of the 15 split adapters by domain, the same with
the 5 few-shot adapters added, nearest-neighbour domain accuracy, and where the mixed and merged models land.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from hubdelta.crawler.api import run_crawl, track
from hubdelta.embedder.api import run_embed
from hubdelta.embedder.quality import cosine_distances, nearest_neighbour_accuracy, silhouette
from hubdelta.index.door import open_reader
from hubdelta.kernel.log import configure_logging
from hubdelta.kernel.settings import load_settings
from hubdelta_dev.devhub.server import DevhubServer
from hubdelta_dev.pool.base import BASE_REPO_ID


def _score(vectors: dict[str, np.ndarray], labels: dict[str, str], ids: list[str]) -> tuple[float, float]:
    d = cosine_distances(np.stack([vectors[i] for i in ids]))
    names = [labels[i] for i in ids]
    return silhouette(d, names), nearest_neighbour_accuracy(d, names)


def _nearest(vectors: dict[str, np.ndarray], labels: dict[str, str], repo: str, pool_ids: list[str]) -> str:
    v = vectors[repo] / np.linalg.norm(vectors[repo])
    sims = {i: float(v @ vectors[i] / np.linalg.norm(vectors[i])) for i in pool_ids}
    top = sorted(sims, key=sims.__getitem__, reverse=True)[:3]
    return ", ".join(f"{labels[i]} {sims[i]:.2f}" for i in top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pool", type=Path)
    parser.add_argument("--layers", default="final")
    parser.add_argument("--positions", default="last")
    args = parser.parse_args()
    configure_logging(json=False, level="warning")
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # one table, not a bar per download
    transformers.logging.disable_progress_bar()
    labels: dict[str, str] = json.loads((args.pool / "labels.json").read_text())
    splits = sorted(
        r for r in labels if r.rsplit("-", 1)[-1] in {"1", "2", "3"} and "lora" in r and "+" not in labels[r]
    )
    fewshot = sorted(r for r in labels if r.endswith("-fewshot"))
    others = sorted(r for r in labels if r not in splits and r not in fewshot)
    print(
        f"{'layer':>6s} {'position':>8s} {'silhouette(15)':>14s} {'silhouette(20)':>14s} {'NN acc(20)':>10s} {'s':>5s}"
    )
    with DevhubServer(args.pool / "hub") as hub, tempfile.TemporaryDirectory() as tmp:
        for layer in args.layers.split(","):
            for position in args.positions.split(","):
                home = Path(tmp) / f"{layer.replace('/', '_')}-{position}"
                home.mkdir()
                (home / "hubdelta.toml").write_text(f'[embed]\nlayer = "{layer}"\nposition = "{position}"\n')
                settings = load_settings({"HF_ENDPOINT": hub.url}, home=home)
                track(settings, BASE_REPO_ID)
                run_crawl(settings)
                started = time.perf_counter()
                summary = run_embed(settings)
                with open_reader(settings) as index:
                    (space,) = summary.spaces
                    vectors = {k: e.vector for k, e in index.vectors.get(space).items()}
                s15, _ = _score(vectors, labels, splits)
                s20, nn20 = _score(vectors, labels, splits + fewshot)
                secs = time.perf_counter() - started
                print(f"{layer:>6s} {position:>8s} {s15:14.3f} {s20:14.3f} {nn20:10.2f} {secs:5.0f}")
                for repo in others:
                    print(f"    {repo:48s} ({labels[repo]:12s}) nearest: {_nearest(vectors, labels, repo, splits)}")


if __name__ == "__main__":
    main()
