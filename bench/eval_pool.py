"""Does Delta Activations group the pool by domain, better than the obvious alternatives? (issue 7)

Usage: .venv/bin/python bench/eval_pool.py POOL_DIR [--out docs/evaluation.md] [--parts compare,ablations,...]

On a built pool (``hubdelta devhub build-pool --out POOL_DIR``), one run computes and prints:

1. Delta Activations against the paper's baselines (flattened adapter weights, salient mask, output sentence
   embeddings) and Delta Logits: silhouette (cosine) by domain and leave-one-out nearest-neighbour accuracy,
   on the 15 split adapters (the paper's pool shape: 5 domains x 3) and on all 20 single-domain adapters;
2. the paper's ablations, one factor at a time from its setting: number of probes, probe text, layer, token;
3. the additive property of the two mixed-domain adapters;
4. task search: each domain's held-out examples, through ``hubdelta task``'s API, against the embedded pool;

and writes all of it, with t-SNE maps, to ``--out`` (a Markdown file; the maps go to ``docs/img/``) and the numbers
to the same name with ``.json``. ``--parts`` reruns some parts and keeps the others from that JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from eval_results import TABLE_HEAD, row_md, write_results  # bench/: the script's folder is on sys.path

from hubdelta.embedder.activations import load_causal_lm
from hubdelta.embedder.lora import read_adapter
from hubdelta.embedder.probes import PAPER_PROBES, ProbeSet
from hubdelta.embedder.quality import cosine_distances
from hubdelta.evaluation import baselines as bl
from hubdelta.evaluation.plot import Panel, draw_panels
from hubdelta.evaluation.pool import Pool, PoolModel, activations
from hubdelta.evaluation.probesets import BY_CONTENT, BY_COUNT
from hubdelta.evaluation.scores import LabelScore, Scores, score_distances
from hubdelta.kernel.log import configure_logging

ANSWER_TOKENS = (16, 48)  # min and max greedy tokens per probe for the sentence-embedding baseline
Additive = tuple[str, str, str, float, float, float]  # mixed repo, D1, D2, cos(mixed, D1), cos(.., D2), cos(.., D1+D2)


@dataclass(frozen=True)
class Row:
    """One method or setting, scored on the split adapters (15) and on all single-domain adapters (20)."""

    name: str
    dim: int
    s15: Scores
    s20: Scores
    seconds: float


def _scored(name: str, dim: int, d15: np.ndarray, d20: np.ndarray, l15: list[str], l20: list[str], t: float) -> Row:
    return Row(name, dim, score_distances(d15, l15), score_distances(d20, l20), time.perf_counter() - t)


def _vectors_row(name: str, vectors: dict[str, np.ndarray], set15: list[str], set20: list[str],
                 labels: dict[str, str], started: float) -> Row:  # fmt: skip
    d15 = cosine_distances(bl.stack(vectors, set15))
    d20 = cosine_distances(bl.stack(vectors, set20))
    dim = next(iter(vectors.values())).size
    return _scored(name, dim, d15, d20, [labels[i] for i in set15], [labels[i] for i in set20], started)


def _say(text: str) -> None:
    print(text, flush=True)


# ---- the comparison ------------------------------------------------------------------------------------------


def compare(pool: Pool, adapters: list[PoolModel], set15: list[str], labels: dict[str, str],
            maps: dict[str, dict[str, np.ndarray]]) -> list[Row]:  # fmt: skip
    """Delta Activations, Delta Logits and the three baselines on the single-domain adapters."""
    set20 = [m.repo_id for m in adapters]
    rows = []
    t = time.perf_counter()
    acts = activations(pool, adapters)
    da = acts.vectors()
    rows.append(_vectors_row("Delta Activations", da, set15, set20, labels, t))
    maps["Delta Activations"] = da
    t = time.perf_counter()
    base = load_causal_lm(pool.base_dir, torch.float32, torch.device("cpu"))
    head = base.get_output_embeddings().weight.detach()  # (V, C)
    logits = {k: bl.delta_logits(v, acts.base, head) for k, v in acts.models.items()}
    rows.append(_vectors_row("Delta Logits", logits, set15, set20, labels, t))
    maps["Delta Logits"] = logits
    t = time.perf_counter()
    read = {m.repo_id: read_adapter(m.repo_id, m.folder, base) for m in adapters}
    flat = {k: bl.flattened_weights(a) for k, a in read.items()}
    rows.append(_vectors_row("flattened adapter weights", flat, set15, set20, labels, t))
    maps["flattened adapter weights"] = flat
    t = time.perf_counter()
    masks = {k: bl.salient_mask(bl.update_magnitudes(a)) for k, a in read.items()}
    n_bits = bl.update_magnitudes(next(iter(read.values()))).size
    d20 = bl.binary_cosine_distances([masks[i] for i in set20])
    pos = [set20.index(i) for i in set15]
    rows.append(_scored("salient mask (top 1% of ΔW by magnitude)", n_bits, d20[np.ix_(pos, pos)], d20,
                        [labels[i] for i in set15], [labels[i] for i in set20], t))  # fmt: skip
    t = time.perf_counter()
    tok = _tokenizer(pool.base_dir)
    encoder = bl.SentenceEncoder()
    answers, sentences = {}, {}
    for repo, adapter in read.items():
        with bl.lora_merged(base, adapter) as merged:
            answers[repo] = bl.greedy_answers(merged, tok, PAPER_PROBES.texts, ANSWER_TOKENS[1], ANSWER_TOKENS[0])
        sentences[repo] = bl.sentence_embedding(encoder, answers[repo])
    rows.append(_vectors_row("output sentence embeddings (all-MiniLM-L6-v2)", sentences, set15, set20, labels, t))
    maps["output sentence embeddings"] = sentences
    for domain in sorted({labels[i] for i in set20}):
        first = next(i for i in set20 if labels[i] == domain)
        _say(f"    answer of {first} to probe 1: {answers[first][0][:100]!r}")
    return rows


def _tokenizer(base_dir: Path) -> bl.PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tok: bl.PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    return tok


# ---- ablations -------------------------------------------------------------------------------------------------


def ablations(pool: Pool, adapters: list[PoolModel], set15: list[str], labels: dict[str, str]) -> dict[str, list[Row]]:
    """The paper's one-factor ablations from its setting (5 Alpaca probes, final layer, last token)."""
    set20 = [m.repo_id for m in adapters]

    def run(name: str, probes: ProbeSet = PAPER_PROBES, layer: str | None = None, position: str = "last") -> Row:
        t = time.perf_counter()
        vectors = activations(pool, adapters, probes=probes, layer=layer, position=position).vectors()
        row = _vectors_row(name, vectors, set15, set20, labels, t)
        _say(f"    {name:28s} silhouette(15) {row.s15.silhouette:6.3f}  (20) {row.s20.silhouette:6.3f}  "
             f"NN acc(20) {row.s20.nn_accuracy:.2f}  {row.seconds:4.0f} s")  # fmt: skip
        return row

    tables: dict[str, list[Row]] = {}
    _say("  probes: how many")
    tables["number of probes"] = [run(f"{n} probe{'s' if n != '1' else ''}", p) for n, p in BY_COUNT.items()]
    _say("  probes: what text")
    tables["probe text"] = [run(name, p) for name, p in BY_CONTENT.items()]
    _say("  layer")
    tables["layer"] = [run(f"layer {f}", layer=f) for f in ("1/3", "1/2", "2/3")] + [run("last (final norm)")]
    _say("  token")
    tables["token"] = [run(f"{p} token" if p != "mean" else "mean over tokens", position=p)
                       for p in ("first", "mean", "last")]  # fmt: skip
    return tables


# ---- additivity ------------------------------------------------------------------------------------------------


def additive(pool: Pool, da: dict[str, np.ndarray]) -> list[Additive]:
    """For each mixed adapter and each split k: cos(mixed, D1_k), cos(mixed, D2_k), cos(mixed, D1_k + D2_k)."""

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    rows = []
    for mixed in pool.select(lambda m: m.kind == "lora" and not m.single_domain):
        d1, d2 = mixed.label.split("+")
        for k in ("1", "2", "3"):
            v1 = da[next(m.repo_id for m in pool.split_adapters if m.label == d1 and m.split == k)]
            v2 = da[next(m.repo_id for m in pool.split_adapters if m.label == d2 and m.split == k)]
            v = da[mixed.repo_id]
            rows.append((mixed.repo_id, d1, d2 + f" (split {k})", cos(v, v1), cos(v, v2), cos(v, v1 + v2)))
    return rows


# ---- task search -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskTrial:
    setting: str
    domain: str
    cluster: str | None
    cluster_domain: str | None
    top1_domain: str
    precision5: float
    norm_ratio: float  # the task vector's norm over the mean norm of its domain's split adapters
    seconds: float


def task_settings() -> dict[str, str]:
    """``hubdelta task``'s schedules, described: auto (the default), the paper's and the first pool's own."""
    return {
        "auto: the paper's rate until the vector is as long as the space's median (the default)": "auto",
        "paper: lr 3.3e-3, batch 1, 5 epochs (100 steps)": "paper",
        "light: lr 1e-3, batch 4, 3 epochs (15 steps; the pool's own few-shot recipe)": "light",
    }


def task_retrieval(pool_dir: Path, labels: dict[str, str], da: dict[str, np.ndarray]) -> list[TaskTrial]:
    """Each domain's first 20 held-out examples as a task, against the embedded pool, in both training settings."""
    from hubdelta.crawler.api import run_crawl, track
    from hubdelta.embedder.api import run_embed
    from hubdelta.kernel.settings import load_settings
    from hubdelta.report.api import run_report
    from hubdelta.task.api import task_search
    from hubdelta_dev.devhub.server import DevhubServer

    trials = []
    with DevhubServer(pool_dir / "hub") as hub, tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        settings = load_settings({"HF_ENDPOINT": hub.url}, home=home)
        pool = Pool.load(pool_dir)
        track(settings, pool.base_repo)
        run_crawl(settings)
        run_embed(settings)
        run_report(settings)
        for setting, name in task_settings().items():
            _say(f"  {setting}")
            for heldout in sorted((pool_dir / "heldout").glob("*.jsonl")):
                domain = heldout.stem
                t = time.perf_counter()
                result = task_search(settings, heldout, pool.base_repo, k=5, schedule=name)
                seconds = time.perf_counter() - t
                top = [labels.get(n.repo_id, "?") for n in result.neighbors]
                cluster = result.cluster
                own = Counter(labels.get(m, "?") for m in cluster.members).most_common(1)[0][0] if cluster else None
                peers = [np.linalg.norm(da[m.repo_id]) for m in pool.split_adapters if m.label == domain]
                trial = TaskTrial(setting.split(":")[0], domain, cluster.name if cluster else None, own, top[0],
                                  sum(d == domain for d in top) / len(top),
                                  float(np.linalg.norm(result.vector) / np.mean(peers)), seconds)  # fmt: skip
                _say(f"    {domain:10s} cluster {trial.cluster!s:24s} ({own}) top-1 {trial.top1_domain:10s} "
                     f"P@5 {trial.precision5:.1f}  norm x{trial.norm_ratio:.1f}  {seconds:4.0f} s")  # fmt: skip
                trials.append(trial)
    return trials


# ---- the results file --------------------------------------------------------------------------------------


PARTS = ("compare", "ablations", "additive", "task")


def _load_saved(path: Path) -> dict[str, Any]:
    """Parts of an earlier run (``docs/evaluation.json``), to keep those not rerun now."""
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text())

    def row(d: dict[str, Any]) -> Row:
        def sc(x: dict[str, Any]) -> Scores:
            return Scores(**{**x, "per_label": tuple(LabelScore(**p) for p in x["per_label"])})

        return Row(d["name"], d["dim"], sc(d["s15"]), sc(d["s20"]), d["seconds"])

    return {
        "compare": [row(r) for r in saved.get("compare", [])],
        "ablations": {k: [row(r) for r in v] for k, v in saved.get("ablations", {}).items()},
        "additive": [tuple(a) for a in saved.get("additive", [])],
        "task": [TaskTrial(**t) for t in saved.get("task", [])],
        "context": saved.get("context", {}),
    }


def _context(pool_dir: Path, parts: list[str], saved: dict[str, Any]) -> dict[str, Any]:
    """How and when each part was measured (parts not rerun keep their earlier date)."""
    return {
        "command": ".venv/bin/python bench/eval_pool.py POOL_DIR",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "pool": json.loads((pool_dir / "manifest.json").read_text()).get("base", "?"),
        "parts": {p: time.strftime("%Y-%m-%d") for p in parts}
        | {p: d for p, d in saved.get("context", {}).get("parts", {}).items() if p not in parts},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pool", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/evaluation.md"))
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="rerun only these (the others are kept from OUT's .json): " + ",".join(PARTS))  # fmt: skip
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]  # none: only rewrite OUT from its .json
    if not set(parts) <= set(PARTS):
        parser.error(f"--parts: choose from {','.join(PARTS)}")
    configure_logging(json=False, level="warning")
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # tables, not a bar per download or checkpoint
    transformers.logging.disable_progress_bar()
    torch.manual_seed(0)
    started = time.perf_counter()
    pool = Pool.load(args.pool)
    labels = {m.repo_id: m.label for m in pool.models}
    adapters = pool.domain_adapters
    set15 = [m.repo_id for m in pool.split_adapters]
    saved = _load_saved(args.out.with_suffix(".json"))
    _say(f"pool {args.pool}: {len(set15)} split adapters, {len(adapters)} single-domain adapters")
    plot = args.out.parent / "img" / "eval-tsne.png"
    rows = saved.get("compare", [])
    if "compare" in parts:
        _say("baselines")
        maps: dict[str, dict[str, np.ndarray]] = {}
        rows = compare(pool, adapters, set15, labels, maps)
        _say(TABLE_HEAD)
        for r in rows:
            _say(row_md(r))
        set20 = [m.repo_id for m in adapters]
        draw_panels([Panel(name, bl.stack(v, set20), [labels[i] for i in set20]) for name, v in maps.items()], plot,
                    columns=4)  # fmt: skip
    tables = saved.get("ablations", {})
    if "ablations" in parts:
        _say("ablations")
        tables = ablations(pool, adapters, set15, labels)
    adds = saved.get("additive", [])
    if "additive" in parts:
        _say("additive property")
        adds = additive(pool, activations(pool, pool.select(lambda m: m.kind == "lora")).vectors())
        for a in adds:
            _say(f"    {a[0]:44s} {a[2]:18s} cos D1 {a[3]:.3f}  D2 {a[4]:.3f}  D1+D2 {a[5]:.3f}")
    trials = saved.get("task", [])
    if "task" in parts:
        _say("task search")
        trials = task_retrieval(args.pool, labels, activations(pool, pool.split_adapters).vectors())
    context = _context(args.pool, parts, saved)
    write_results(args.out, rows, tables, adds, trials, context, plot)
    doc = {"compare": [asdict(r) for r in rows], "ablations": {k: [asdict(r) for r in v] for k, v in tables.items()},
           "additive": [list(a) for a in adds], "task": [asdict(t) for t in trials], "context": context}  # fmt: skip
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1, allow_nan=True) + "\n")
    _say(f"wrote {args.out}, {args.out.with_suffix('.json')} and {plot} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
