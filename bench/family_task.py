"""Task search across architectures: a task trained on one base, searched in a family's meaning space (issue 19).

Usage: .venv/bin/python bench/family_task.py --work DIR [--seeds 0,1,2] [--bases smollm2,gemma3]
                                            [--out docs/evaluation.md] [--render]

DIR is what ``bench/family_index.py --work DIR`` left: the 20 split adapters (5 domains x 2 on
SmolLM2-135M-Instruct and on Gemma-3-270M, trained on the same data) served by devhub, crawled, embedded and
scored into the family ``pool`` with the default ``[family]`` settings. Each domain's task is its 20 held-out
examples (no model of the pool was trained on them). For each base, seed and domain it runs the real
``task_search(..., family="pool")`` with the default schedule and ranks all 20 models, then reports:

- top-1: the nearest model has the task's domain (of either base; chance 0.2);
- P@4: the share of the task's domain among the 4 nearest (each domain has 4 models: 2 per base);
- cross-base top-1: the nearest model *of the other base* has the task's domain (chance 0.2): a task in one
  architecture finding finetunes of another;
- activations top-1: the same task's adapter in its own base's activation space (10 models: it cannot see the
  other base), for comparison;
- seconds: the family task search (training, the activation measure, scoring on the family's texts, search).

It also times ``hubdelta task --family`` as a user runs it, a whole process, first and again (cached).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from family_index import ADAPTERS
from family_pool import write_section

MARK_BEGIN = "<!-- family-task: written by bench/family_task.py -->"
MARK_END = "<!-- family-task: end -->"
FAMILY = "pool"
BASES = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct", "gemma3": "google/gemma-3-270m"}


def _say(text: str) -> None:
    print(text, flush=True)


def _arch(repo_id: str) -> str:
    return repo_id.split("/")[-1].split("-")[0]  # hubdelta-pool/<arch>-lora-<domain>-<split>


def one_task(settings: Any, heldout: Path, arch: str, seed: int) -> dict[str, Any]:
    """The family search and the activation search of one task, scored against the labels."""
    from hubdelta.task.api import task_search

    t = time.perf_counter()
    fam = task_search(settings, heldout, BASES[arch], k=len(ADAPTERS), seed=seed, family=FAMILY)
    seconds = time.perf_counter() - t
    act = task_search(settings, heldout, BASES[arch], k=5, seed=seed)  # the adapter is cached now
    domain = heldout.stem
    ranked = [n.repo_id for n in fam.neighbors]
    other = next(r for r in ranked if _arch(r) != arch)
    return {"base": arch, "seed": seed, "domain": domain, "top1": ADAPTERS[ranked[0]],
            "p4": sum(ADAPTERS[r] == domain for r in ranked[:4]) / 4, "cross_top1": ADAPTERS[other],
            "act_top1": ADAPTERS[act.neighbors[0].repo_id], "steps": fam.training.steps,
            "seconds": round(seconds, 1), "top4": ranked[:4]}  # fmt: skip


def whole_process(work: Path, endpoint: str, arch: str) -> list[float]:
    """``hubdelta task --family`` as a user runs it: a seed no other run uses, then the same again (cached)."""
    heldout = sorted((work / "pool" / "heldout").glob("*.jsonl"))[0]
    cmd = [sys.executable, "-m", "hubdelta", "task", str(heldout), "--base", BASES[arch], "--family", FAMILY,
           "--seed", "1000", "--json"]  # fmt: skip
    env = {**os.environ, "HUBDELTA_HOME": str(work / "home"), "HF_ENDPOINT": endpoint}
    out = []
    for what in ("first", "again (cached)"):
        t = time.perf_counter()
        doc = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout)
        out.append(round(time.perf_counter() - t, 1))
        _say(f"  whole process, {arch}, {heldout.stem}, {what}: {out[-1]:.1f} s ({doc['training']['steps']} steps, "
             f"cached {doc['cached']})")  # fmt: skip
    return out


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Per base: each measure over all tasks (5 domains x seeds), P@4's range over seeds, the seconds."""
    lines = ["| task trained on | tasks | top-1 | P@4 (seeds' range) | cross-base top-1 | activations top-1 "
             "(own base) | s (median, max) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for arch in dict.fromkeys(r["base"] for r in rows):
        mine = [r for r in rows if r["base"] == arch]
        seeds = sorted({r["seed"] for r in mine})
        p4s = [statistics.mean(r["p4"] for r in mine if r["seed"] == s) for s in seeds]
        n = len(mine)

        def hits(key: str, rs: list[dict[str, Any]] = mine) -> str:
            return f"{sum(r[key] == r['domain'] for r in rs)}/{len(rs)}"

        secs = [r["seconds"] for r in mine]
        lines.append(f"| {BASES[arch]} | {n} | {hits('top1')} | {statistics.mean(p4s):.2f} ({min(p4s):.2f}-"
                     f"{max(p4s):.2f}) | {hits('cross_top1')} | {hits('act_top1')} | {statistics.median(secs):.0f}, "
                     f"{max(secs):.0f} |")  # fmt: skip
    return lines


def render(doc: dict[str, Any]) -> str:
    rows, whole = doc["rows"], doc["whole_process_s"]
    misses = [f"{r['base']} {r['domain']} seed {r['seed']}: nearest of the other base is {r['cross_top1']}"
              for r in rows if r["cross_top1"] != r["domain"]]  # fmt: skip
    lines = [MARK_BEGIN, "", "### Task search across architectures (a family's meaning space)", "",
             "`hubdelta task EXAMPLES --base B --family pool` on the family index of `bench/family_index.py` (20 "
             "adapters: 5 domains x 2 per base), default settings, seeds " + ", ".join(map(str, doc["seeds"])) +
             ". Each domain's task is its 20 held-out examples. Chance is 0.20 for top-1 and cross-base top-1. "
             "Regenerate: `.venv/bin/python bench/family_task.py --work DIR --out docs/evaluation.md`.", "",
             *summary(rows), "",
             "Whole process (`hubdelta task --family`, first / cached): " + ", ".join(
                 f"{BASES[a]} {t[0]:.0f} s / {t[1]:.0f} s" for a, t in whole.items()) + ".",
             "", "Cross-base misses: " + ("; ".join(misses) if misses else "none") + ".", "", MARK_END]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="bench/family_index.py's --work")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--bases", default="smollm2,gemma3")
    ap.add_argument("--out", type=Path, default=None, help="update this Markdown file's family-task section")
    ap.add_argument("--render", action="store_true", help="only render --work's family-task.json into --out")
    args = ap.parse_args()
    if args.render:
        write_section(
            args.out or Path("docs/evaluation.md"),
            render(json.loads((args.work / "family-task.json").read_text())),
            MARK_BEGIN,
            MARK_END,
        )
        return
    from hubdelta.kernel.log import configure_logging
    from hubdelta.kernel.settings import load_settings
    from hubdelta_dev.devhub.server import DevhubServer

    configure_logging(level="warning")
    if not (args.work / "home" / "index").exists():
        raise SystemExit(f"{args.work}: no family index; run bench/family_index.py --work {args.work} first")
    seeds, archs = [int(s) for s in args.seeds.split(",")], args.bases.split(",")
    rows, whole = [], {}
    with DevhubServer(args.work / "pool" / "hub") as hub:
        settings = load_settings({"HF_ENDPOINT": hub.url}, home=args.work / "home")
        for arch in archs:
            whole[arch] = whole_process(args.work, hub.url, arch)
            for seed in seeds:
                for heldout in sorted((args.work / "pool" / "heldout").glob("*.jsonl")):
                    rows.append(one_task(settings, heldout, arch, seed))
                    _say(json.dumps(rows[-1]))
    doc = {"seeds": seeds, "rows": rows, "whole_process_s": whole}
    (args.work / "family-task.json").write_text(json.dumps(doc, indent=1))
    section = render(doc)
    _say(section)
    if args.out:
        write_section(args.out, section, MARK_BEGIN, MARK_END)


if __name__ == "__main__":
    main()
