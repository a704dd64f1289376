"""How should a task's vector be made? Task search measured on two pools of different recipes (issue 19).

Usage:
    .venv/bin/python bench/task_search.py explore --pool POOL_A --pool POOL_B [--seeds 0,1,2] [--work DIR]
    .venv/bin/python bench/task_search.py final --pool POOL_A --pool POOL_B [--seeds 0,1,2] [--out docs/evaluation.md]

Pools: ``hubdelta devhub build-pool --out POOL_A`` and ``... --recipe b --out POOL_B`` (other ranks, targets,
learning rates and schedules). Both hold the same five domains; each domain's task is its first 20 held-out
examples, which no model of either pool was trained on.

``explore`` trains each task once per schedule and seed, saving the adapter at several steps along the way, embeds
every checkpoint exactly as ``hubdelta embed`` embeds an adapter (fp32, the paper's probes, the base's final
layer, last token), and scores every way of turning those checkpoints into one task vector against both pools:
top-1 neighbour of the task's domain, precision@5, the task vector's norm over the pool's median adapter norm.
The trainings and vectors are kept in ``--work`` (a rerun only scores).

``final`` runs the real ``task_search`` (``hubdelta task``'s API, default settings unless ``--schedule``) against
each pool served by devhub and crawled, embedded and reported as a user would, for every seed, and prints (and
with ``--out`` writes) the table docs/evaluation.md holds, with the seconds of each task.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

Vectors = dict[str, np.ndarray]


@dataclass(frozen=True)
class Schedule:
    name: str
    lr: float
    batch: int
    epochs: int
    keep: tuple[int, ...]  # steps at which the adapter is saved


SCHEDULES = (
    Schedule("paper", 3.3e-3, 1, 5, (2, 4, 6, 8, 10, 15, 20, 30, 40, 60, 80, 100)),
    Schedule("light", 1e-3, 4, 3, (3, 6, 9, 12, 15)),
)


def _say(text: str) -> None:
    print(text, flush=True)


def pool_vectors(pool_dir: Path, work: Path) -> tuple[Vectors, dict[str, str]]:
    """Every model's Delta Activations vector in the pool (cached in ``work``), and its label."""
    from hubdelta.evaluation.pool import Pool, activations

    pool = Pool.load(pool_dir)
    labels = {m.repo_id: m.label for m in pool.models if m.base == pool.base_repo}
    cache = work / f"pool-{pool_dir.name}.npz"
    if cache.is_file():
        saved = np.load(cache)
        return {k: saved[k] for k in saved.files}, labels
    vectors = activations(pool, pool.select(lambda m: True)).vectors()
    np.savez(cache, **vectors)
    return vectors, labels


def train_checkpoints(pool_dir: Path, domain: str, sched: Schedule, seed: int, work: Path) -> Vectors:
    """The task's adapter at each kept step, embedded; cached in ``work``."""
    cache = work / f"task-{domain}-{sched.name}-{seed}.npz"
    if cache.is_file():
        saved = np.load(cache)
        return {k: saved[k] for k in saved.files}
    import torch
    from transformers import AutoTokenizer

    from hubdelta.embedder.activations import ResidentBase
    from hubdelta.embedder.bases import space_for
    from hubdelta.embedder.delta import delta_vector
    from hubdelta.embedder.training import load_causal_lm, lora_model, save_adapter, train
    from hubdelta.evaluation.pool import Pool
    from hubdelta.task.adapter import FEWSHOT
    from hubdelta.task.examples import load

    pool = Pool.load(pool_dir)
    examples = load(pool_dir / "heldout" / f"{domain}.jsonl", 20).examples
    cfg = replace(FEWSHOT, lr=sched.lr, batch_size=sched.batch, epochs=sched.epochs, seed=seed)
    tok = AutoTokenizer.from_pretrained(pool.base_dir)
    torch.manual_seed(seed)
    model = lora_model(load_causal_lm(pool.base_dir), cfg)
    with tempfile.TemporaryDirectory() as tmp:
        folders: dict[str, Path] = {}

        def keep(step: int, total: int, loss: float) -> None:
            if step in sched.keep:
                folders[str(step)] = Path(tmp) / str(step)
                save_adapter(model, folders[str(step)], pool.base_repo)

        started = time.perf_counter()
        result = train(model, tok, examples, cfg, on_step=keep)
        _say(f"    {domain} {sched.name} seed {seed}: {result.steps} steps in {time.perf_counter() - started:.0f} s")
        space = space_for(pool.base_dir, pool.base_repo, "local")
        with ResidentBase(pool.base_dir, space) as rb:
            base = rb.base_activations()
            acts = rb.adapter_activations(folders)
        vectors = {k: delta_vector(v, base).numpy() for k, v in acts.items()}
    np.savez(cache, **vectors)
    return vectors


def unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def score(task: np.ndarray, domain: str, pool: Vectors, labels: dict[str, str]) -> tuple[bool, float]:
    """(top-1 neighbour of the task's domain, precision@5) by cosine against every vector of the pool."""
    ids = sorted(pool)
    matrix = np.stack([unit(pool[i]) for i in ids])
    order = np.argsort(-(matrix @ unit(task)), kind="stable")[:5]
    top = [labels[ids[i]] for i in order]
    return top[0] == domain, sum(t == domain for t in top) / 5


def methods(ckpts: Vectors, typical: float) -> dict[str, np.ndarray]:
    """Every way of making one task vector from the checkpoints, by name; ``typical``: the pool's median norm."""
    steps = sorted(ckpts, key=int)
    norms = {s: float(np.linalg.norm(ckpts[s])) for s in steps}
    out = {f"step {s}": ckpts[s] for s in steps}
    out["last"] = ckpts[steps[-1]]
    reached = next((s for s in steps if norms[s] >= typical), steps[-1])
    out["norm-stop"] = ckpts[reached]
    out["norm-nearest"] = ckpts[min(steps, key=lambda s: abs(np.log(norms[s] / typical)))]
    out["mean-dir-all"] = np.mean([unit(ckpts[s]) for s in steps], axis=0)
    upto = [s for s in steps if int(s) <= int(reached)]
    out["mean-dir-to-norm"] = np.mean([unit(ckpts[s]) for s in upto], axis=0)
    return out


def explore(args: argparse.Namespace) -> None:
    from hubdelta_dev.pool.recipe import DOMAIN_NAMES

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    pools = {p.name: pool_vectors(p, work) for p in args.pool}
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[tuple[str, str, str], list[tuple[bool, float, float]]] = {}
    for sched in SCHEDULES:
        for seed in seeds:
            for domain in DOMAIN_NAMES:
                ckpts = train_checkpoints(args.pool[0], domain, sched, seed, work)
                for name, (vectors, labels) in pools.items():
                    typical = float(np.median([np.linalg.norm(v) for v in vectors.values()]))
                    for method, v in methods(ckpts, typical).items():
                        hit, p5 = score(v, domain, vectors, labels)
                        ratio = float(np.linalg.norm(v)) / typical
                        results.setdefault((sched.name, method, name), []).append((hit, p5, ratio))
    _say(f"\n{'schedule':<9}{'method':<17}" + "".join(f"{n[:22]:>24}" for n in pools))
    for sched_name, method in dict.fromkeys((s, m) for s, m, _ in results):
        cells = []
        for name in pools:
            rows = results[(sched_name, method, name)]
            hits = sum(h for h, _, _ in rows)
            cells.append(f"{hits:>3}/{len(rows)} P@5 {statistics.mean(p for _, p, _ in rows):.2f} "
                         f"x{statistics.median(r for _, _, r in rows):.1f}")  # fmt: skip
        _say(f"{sched_name:<8}{method:<18}" + "".join(f"{c:>24}" for c in cells))
    (work / "explore.json").write_text(json.dumps({" | ".join(k): v for k, v in results.items()}, indent=0))


def final(args: argparse.Namespace) -> None:
    from hubdelta.crawler.api import run_crawl, track
    from hubdelta.embedder.api import run_embed
    from hubdelta.evaluation.pool import Pool
    from hubdelta.kernel.settings import load_settings
    from hubdelta.report.api import run_report
    from hubdelta.task.api import task_search
    from hubdelta_dev.devhub.server import DevhubServer

    seeds = [int(s) for s in args.seeds.split(",")]
    rows: list[dict[str, Any]] = []
    for pool_dir in args.pool:
        labels = json.loads((pool_dir / "labels.json").read_text())
        with DevhubServer(pool_dir / "hub") as hub, tempfile.TemporaryDirectory() as tmp:
            settings = load_settings({"HF_ENDPOINT": hub.url}, home=Path(tmp))
            base = Pool.load(pool_dir).base_repo
            track(settings, base)
            run_crawl(settings)
            run_embed(settings)
            run_report(settings)
            whole_process(settings.home, hub.url, pool_dir, base, args.schedule)
            for seed in seeds:
                for heldout in sorted((pool_dir / "heldout").glob("*.jsonl")):
                    t = time.perf_counter()
                    result = task_search(settings, heldout, base, k=5, seed=seed, schedule=args.schedule)
                    seconds = time.perf_counter() - t
                    top = [labels.get(n.repo_id, "?") for n in result.neighbors]
                    cluster = result.cluster
                    own = Counter(labels.get(m, "?") for m in cluster.members).most_common(1)[0][0] if cluster else None
                    rows.append({"pool": pool_dir.name, "seed": seed, "domain": heldout.stem, "top1": top[0],
                                 "p5": sum(d == heldout.stem for d in top) / 5, "cluster": own,
                                 "seconds": round(seconds, 1)})  # fmt: skip
                    _say(json.dumps(rows[-1]))
    summary(rows)
    (args.work / f"final-{args.schedule or 'auto'}.json").write_text(json.dumps(rows, indent=0))


def whole_process(home: Path, endpoint: str, pool_dir: Path, base: str, schedule: str | None) -> None:
    """``hubdelta task`` as a user runs it, a whole process (imports, base, training, embedding, search): a
    seed no other run uses, then the same again (read from the cache)."""
    import os
    import subprocess

    heldout = sorted((pool_dir / "heldout").glob("*.jsonl"))[0]
    cmd = [sys.executable, "-m", "hubdelta", "task", str(heldout), "--base", base, "--seed", "1000", "--json"]
    cmd += ["--schedule", schedule] if schedule else []
    env = {**os.environ, "HUBDELTA_HOME": str(home), "HF_ENDPOINT": endpoint}
    for what in ("first", "again (cached)"):
        t = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        doc = json.loads(done.stdout)
        _say(f"  whole process, {pool_dir.name}, {heldout.stem}, {what}: {time.perf_counter() - t:.1f} s "
             f"({doc['training']['steps']} steps, cached {doc['cached']})")  # fmt: skip


def summary(rows: list[dict[str, Any]]) -> None:
    """Per pool and seed: the task's domain as top-1 (of 5 domains), mean precision@5, nearest cluster's domain;
    then over seeds, and the seconds a task took."""
    _say(f"\n{'pool':<10}{'seed':>5}{'top-1':>8}{'P@5':>7}{'cluster':>9}{'s (median, max)':>18}")
    for pool in dict.fromkeys(r["pool"] for r in rows):
        mine = [r for r in rows if r["pool"] == pool]
        seeds = sorted({r["seed"] for r in mine})
        p5s = []
        for seed in seeds:
            rs = [r for r in mine if r["seed"] == seed]
            p5s.append(statistics.mean(r["p5"] for r in rs))
            times = [r["seconds"] for r in rs]
            _say(f"{pool:<10}{seed:>5}{sum(r['top1'] == r['domain'] for r in rs):>6}/{len(rs)}{p5s[-1]:>7.2f}"
                 f"{sum(r['cluster'] == r['domain'] for r in rs):>7}/{len(rs)}"
                 f"{statistics.median(times):>10.0f}, {max(times):.0f}")  # fmt: skip
        _say(f"{pool:<10}{'all':>5}{sum(r['top1'] == r['domain'] for r in mine):>6}/{len(mine)}"
             f"{statistics.mean(p5s):>7.2f} (seeds {min(p5s):.2f}-{max(p5s):.2f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("phase", choices=("explore", "final"))
    parser.add_argument("--pool", type=Path, action="append", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--work", type=Path, default=Path("/tmp/task-search"))
    parser.add_argument("--schedule", default=None)
    args = parser.parse_args()
    from hubdelta.kernel.log import configure_logging

    configure_logging(level="warning")
    explore(args) if args.phase == "explore" else final(args)


if __name__ == "__main__":
    main()
