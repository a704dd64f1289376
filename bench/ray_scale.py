"""Models per minute with 1 and 2 Ray workers (and this process alone), measured side by side in one run.

Every phase is the product: ``hubdelta embed [--ray local --workers N] --json`` in its own process, on a fresh
home whose index holds the same crawled models (the pool, ``--copies`` times under new repo ids, served by
devhub), so every phase downloads, checks and embeds the same models. A phase prints:

- end to end: queued models / the command's wall time (Ray's start, the workers' base loads included);
- steady: models between the first and the last commit / the time between them (the workers' rate).

Then a capacity note from measured per-model costs (in this process, on this machine's CPU): the base's load
rate (GB/s from safetensors on local disk), one adapter's forward on a resident base (in batches), one full
finetune's load + forward. What a GPU would do with an 8B model cannot be measured here (no GPU, no 8B
checkpoint): the note states its assumptions (download bandwidth, GPU throughput) next to each figure.

Usage: .venv/bin/python bench/ray_scale.py [POOL_DIR] [--copies 3] [--batch 4] [--out docs/scaleout.md]
    POOL_DIR: written by `hubdelta devhub build-pool` (default: the tests' cache, ~/.cache/hubdelta-test/pool-out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK_START, MARK_END = "<!-- bench: ray -->", "<!-- /bench -->"


@dataclass
class Phase:
    name: str
    models: int
    wall_s: float
    steady_models: int
    steady_s: float
    workers: int
    deaths: int
    busy_cores: float  # cores the machine kept busy during the phase, on average

    @property
    def per_min(self) -> float:
        return 60 * self.models / self.wall_s

    @property
    def steady_per_min(self) -> float:
        return 60 * self.steady_models / self.steady_s if self.steady_s > 0 else float("nan")


def publish_copies(pool: Path, root: Path, copies: int) -> int:
    """devhub's root: the pool's repos, each also as ``<name>-c<k>`` (same files, another repo id)."""
    lines = [json.loads(ln) for ln in (pool / "hub" / "catalog.jsonl").read_text().splitlines()]
    out = []
    for entry in lines:
        repo = entry["id"]
        ids = [repo] if not repo.startswith("hubdelta-pool/") else [repo, *(f"{repo}-c{k}" for k in range(1, copies))]
        for rid in ids:
            target = root / rid
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(pool / "hub" / repo, target_is_directory=True)
            out.append({**entry, "id": rid})
    (root / "catalog.jsonl").write_text("".join(json.dumps(e) + "\n" for e in out))
    return sum(1 for e in out if e["id"].startswith("hubdelta-pool/"))


def cpu_busy() -> float:
    """Busy jiffies of the whole machine since boot (all but idle and iowait)."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def run_phase(name: str, home: Path, url: str, args: list[str]) -> Phase:
    env = {**os.environ, "HUBDELTA_HOME": str(home), "HF_ENDPOINT": url, "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "hubdelta", "--log-json", "embed", "--json", *args]
    busy0 = cpu_busy()
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    busy1 = cpu_busy()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout)
    stamps = []
    for line in proc.stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "embed.model":
                stamps.append(datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp())
    busy = (busy1 - busy0) / os.sysconf("SC_CLK_TCK") / wall  # the whole machine's, Ray's own processes included
    # Commits land a batch at a time: the steady rate counts the models after the first commit.
    first, last = (min(stamps), max(stamps)) if stamps else (0.0, 0.0)
    after_first = sum(1 for s in stamps if s > first)
    return Phase(name, summary["embedded"], wall, after_first, last - first, summary.get("workers", 0),
                 summary.get("worker_deaths", 0), busy)  # fmt: skip


def fresh_home(base: Path, name: str, url: str) -> Path:
    from hubdelta.crawler.api import run_crawl, track
    from hubdelta.kernel.settings import load_settings
    from hubdelta_dev.pool.base import BASE_REPO_ID

    home = base / name
    settings = load_settings({"HF_ENDPOINT": url}, home=home)
    track(settings, BASE_REPO_ID)
    run_crawl(settings)
    return home


@dataclass
class Costs:
    base_gb: float
    base_load_s: float
    adapter_s: float  # per adapter, in batches, on the resident base
    full_gb: float
    full_s: float  # one full finetune: load + forward + its delta
    probe_tokens: int


def measure_costs(pool: Path, batch: int) -> Costs:
    """Per-model costs in this process (2 torch threads), from the pool's files on local disk."""
    from hubdelta.embedder.activations import ResidentBase
    from hubdelta.embedder.bases import space_for
    from hubdelta.embedder.runtime import keep_freed_memory
    from hubdelta_dev.pool.base import BASE_REPO_ID

    keep_freed_memory()
    hub = pool / "hub"
    base_dir = hub / BASE_REPO_ID
    gb = sum(p.stat().st_size for p in base_dir.glob("*.safetensors")) / 1e9
    space = space_for(base_dir, BASE_REPO_ID, "bench")
    started = time.perf_counter()
    rb = ResidentBase(base_dir, space)
    load_s = time.perf_counter() - started
    tokens = int(rb.batch.attention_mask.sum())
    adapters = {p.parent.name: p.parent for p in sorted(hub.glob("hubdelta-pool/*-lora-*/adapter_config.json"))}
    names = list(adapters)[: 2 * batch]
    rb.adapter_activations({k: adapters[k] for k in names[:batch]})  # warm up
    started = time.perf_counter()
    for i in range(0, len(names), batch):
        rb.adapter_activations({k: adapters[k] for k in names[i : i + batch]})
    adapter_s = (time.perf_counter() - started) / len(names)
    full = next(p.parent for p in sorted(hub.glob("hubdelta-pool/*-full-*/config.json")))
    full_gb = sum(p.stat().st_size for p in full.glob("*.safetensors")) / 1e9
    started = time.perf_counter()
    rb.model_activations(full, item=full.name)
    full_s = time.perf_counter() - started
    rb.close()
    return Costs(gb, load_s, adapter_s, full_gb, full_s, tokens)


def capacity(c: Costs, overhead_s: float) -> list[str]:
    """Models/day/GPU for adapters and 8B full finetunes: measured rates here, stated assumptions for the rest.

    Args:
        overhead_s: a model's time in a worker besides its forward, measured here (1 worker's steady time per
            model minus an adapter's forward): fetching over loopback, safety checks, hashing.
    """
    day = 86_400
    load_gbps = c.full_gb / max(c.full_s, 1e-9)  # disk → memory → model, measured (an upper bound on its cost)
    # An 8B model (Llama-3-8B shape): 16.1 GB in bf16; a rank-16 LoRA on all its linears: 42 M params, 84 MB.
    full_gb, lora_gb = 16.1, 0.084
    tokens = max(c.probe_tokens, 1)
    flop = 2 * 8.0e9 * tokens  # one forward of the probe batch through 8B parameters
    gpu_flops = 0.3 * 989e12  # H100 SXM bf16 dense at 30% utilisation (assumed)
    fwd_s = flop / gpu_flops
    lines = []
    for gbit in (1, 10):
        gbs = gbit / 8
        # Full finetune: download, then load (at the rate measured here), then one forward; nothing overlaps.
        full_s = full_gb / gbs + full_gb / load_gbps + fwd_s + overhead_s
        # Adapter: download, then a forward on the resident base (batched, so its share of one batch forward).
        lora_s = lora_gb / gbs + fwd_s + overhead_s
        lines.append(
            f"| {gbit} Gbit/s | {day / lora_s:,.0f} ({lora_s:.2f} s each) | {day / full_s:,.0f} ({full_s:.0f} s each) |"
        )
    return [
        f"Measured here (this process, 2 CPU threads): the base ({c.base_gb:.2f} GB fp32) loads in "
        f"{c.base_load_s:.1f} s; "
        f"an adapter on the resident base takes {c.adapter_s:.2f} s (batches of the pool's LoRAs); a full finetune "
        f"({c.full_gb:.2f} GB) takes {c.full_s:.1f} s to load and run ({c.full_gb / c.full_s:.2f} GB/s end to end); "
        f"the probe batch is {c.probe_tokens} tokens.",
        "",
        "Per GPU, for an 8B base (16.1 GB bf16; a rank-16 all-linear LoRA is 84 MB), a model's time is its download "
        "at the stated bandwidth, plus (full finetunes) its load at the rate measured above, plus one forward of the "
        "probe "
        f"batch: {flop / 1e12:.1f} TFLOP, {fwd_s * 1000:.0f} ms on an H100 at an assumed 30% of its 989 bf16 TFLOP/s. "
        f"Each model also costs the {overhead_s:.2f} s measured here besides its forward (one worker's steady time "
        "per model minus an adapter's forward: the fetch's requests, safety checks and hashing, on one CPU thread). "
        "Downloads, loads and forwards do not overlap in the worker today.",
        "",
        "| download bandwidth per GPU | adapters / day / GPU | 8B full finetunes / day / GPU |",
        "|---|---|---|",
        *lines,
        "",
        "The Hub bounds a crawler's account too: 1,000 API requests per 5 minutes for a free account (docs/"
        "crawler.md), one per model's metadata, so ~288,000 models a day per token however many GPUs fetch.",
    ]


def render(phases: list[Phase], costs: Costs | None, args: argparse.Namespace, models: int) -> str:
    cpu = platform.processor() or platform.machine()
    out = [
        MARK_START,
        f"Measured by `bench/ray_scale.py --copies {args.copies} --batch {args.batch}` on this machine "
        f"({os.cpu_count()} cores, {cpu}): {models} queued models (the pool's 26 × {args.copies}: adapters, two full "
        "finetunes and two merges each time), each phase a fresh home and its own `hubdelta embed` process. "
        "Ray workers get one CPU (one torch thread) each; the process alone uses both cores.",
        "",
        "| phase | workers | models | end to end: s | models/min | steady models/min | busy cores |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in phases:
        out.append(
            f"| {p.name} | {p.workers or '-'} | {p.models} | {p.wall_s:.1f} | {p.per_min:.0f} | "
            f"{p.steady_per_min:.0f} | {p.busy_cores:.1f} |"
        )
    ray = {p.name: p for p in phases}
    if "ray 1 worker" in ray and "ray 2 workers" in ray:
        one, two = ray["ray 1 worker"], ray["ray 2 workers"]
        out += [
            "",
            f"2 workers / 1 worker: {two.per_min / one.per_min:.2f}× end to end, "
            f"{two.steady_per_min / one.steady_per_min:.2f}× steady.",
        ]
    if costs is not None and "ray 1 worker" in ray:
        overhead = max(0.0, 60 / ray["ray 1 worker"].steady_per_min - costs.adapter_s)
        out += ["", *capacity(costs, overhead)]
    out.append(MARK_END)
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pool", nargs="?", type=Path, default=Path.home() / ".cache/hubdelta-test/pool-out")
    ap.add_argument("--copies", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--phases", default="local,ray1,ray2")
    ap.add_argument("--out", type=Path, help="replace the marked section of this Markdown file")
    args = ap.parse_args()
    from hubdelta_dev.devhub.server import DevhubServer

    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        root = Path(tmp) / "hub"
        models = publish_copies(args.pool, root, args.copies)
        phases = []
        with DevhubServer(root) as hub:
            todo = {
                "local": ("this process", ["--batch", str(args.batch)]),
                "ray1": ("ray 1 worker", ["--ray", "local", "--workers", "1", "--batch", str(args.batch)]),
                "ray2": ("ray 2 workers", ["--ray", "local", "--workers", "2", "--batch", str(args.batch)]),
            }
            for key in args.phases.split(","):
                name, flags = todo[key]
                home = fresh_home(Path(tmp), key, hub.url)
                phase = run_phase(name, home, hub.url, flags)
                print(f"{name}: {phase.models} models in {phase.wall_s:.1f} s = {phase.per_min:.0f}/min end to end, "
                      f"{phase.steady_per_min:.0f}/min steady", flush=True)  # fmt: skip
                phases.append(phase)
        costs = measure_costs(args.pool, args.batch)
    text = render(phases, costs, args, models)
    print(text)
    if args.out:
        doc = args.out.read_text()
        if MARK_START not in doc:
            raise SystemExit(f"{args.out} has no {MARK_START} … {MARK_END} section to replace")
        head, rest = doc.split(MARK_START, 1)
        tail = rest.split(MARK_END, 1)[1]
        args.out.write_text(head + text + tail)


if __name__ == "__main__":
    main()
