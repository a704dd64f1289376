"""A whole embed run as a user runs it: devhub serves N adapters, then ``track`` → ``crawl`` → ``embed`` processes.

One command, one machine, every figure measured in the same run:

- **the paper's loop** (peft, batch 1, one probe at a time, base load excluded) on the pool's adapters, and
  **hubdelta's compute alone**: the same N adapters' files on local disk embedded by one process (imports, base
  load and batched forwards; no index, no network), timed whole: both through ``bench/embed_throughput.py``'s
  phases, each in its own process;
- **end to end**: a fresh ``HUBDELTA_HOME`` per run, devhub serving a tree of N repos (hard-linked copies of the
  pool's LoRA adapters, each in its own repo with its own card), and ``hubdelta track``, ``crawl`` and
  ``embed --json`` timed as whole processes (imports, index, downloads, commits included). The base's files are
  already in the run's Hub cache (hard links of one download, as on a box that embedded before): the base's own
  download is timed once and printed apart;
- devhub in this process, sharing the two cores with the run (``--devhub-idle``: its threads at SCHED_IDLE, taking
  only cycles the run leaves idle, as the Hub's own machines would; with shaping its sleeps and pacing then
  starve, so use it over loopback only);
- for each dtype (``--dtypes``), over loopback and with Hub-like shaping (``--latency-ms`` per request and
  ``--bandwidth`` bytes/s per connection), unless ``--no-shaped``.

Prints per-adapter seconds (embed process; track + crawl + embed), the speed-up over the paper's loop (and
compute only's own, the most end to end can reach on this machine), the ratio of the embed process's seconds
to the compute-only process's, Lance commits per 100 models (table versions the embed process added), and the
run's own timings (its ``--json`` summary: forwards, waiting for downloads, commits, base). Asserts nothing.
Run it on a quiet machine: "other CPU" above ~0.1 means another process shared the cores.

Usage: .venv/bin/python bench/pipeline.py [--n 230] [--dtypes float32,bfloat16] [--pool DIR] [--no-shaped]
    [--latency-ms 100] [--bandwidth 50000000] [--batch B] [--workers W] [--repeat R] [--keep DIR]
    [--product CHECKOUT] [--devhub-idle] [--downloads process,threads] [--variant NAME:KEY=VALUE[;KEY=VALUE]]

``--repeat R`` runs every phase R times in turn and ends with each figure's median: this machine's speed drifts
by up to 40% between two processes a minute apart, so one repetition's ratios move with it.

Before/after: ``git worktree add /tmp/before <rev>`` and ``--product /tmp/before`` runs that commit's hubdelta (its
CLI and its embedder in the compute-only phase) under this checkout's benchmark and devhub.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = "hubdelta-bench"  # the org of the copies
RESULT = "RESULT "
PRODUCT: dict[str, Any] = {}  # --product: the checkout whose hubdelta the processes run (cwd and PYTHONPATH)


OPENMP_ENV = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")  # change the phases' speeds, not alike


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a measured process: this one's, plus ``extra``, plus --product's PYTHONPATH."""
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", **extra}
    if PRODUCT:
        env["PYTHONPATH"] = str(PRODUCT["dir"])
    return env


@dataclass
class EndToEnd:
    """One configuration's whole run."""

    name: str
    n: int
    track_s: float
    crawl_s: float
    embed_s: float
    summary: dict[str, Any]
    commits: int  # Lance commits of the embed process (table versions it added)
    devhub_cpu_s: float  # CPU the devhub server (this process's threads) spent serving the embed run
    embed_cpu_s: float = 0.0  # CPU the embed process itself spent (user + system, all its threads)

    @property
    def per_adapter(self) -> float:
        return self.embed_s / self.n

    @property
    def whole_per_adapter(self) -> float:
        return (self.track_s + self.crawl_s + self.embed_s) / self.n

    def at_its_own_speed(self, compute: dict[str, Any]) -> float:
        """End to end ÷ compute only, with the compute-only process's forwards taken at the speed this run's own
        forwards went (its ``compute_s``): what each process spends around its forwards (imports, base, index,
        claims, commits), free of the machine's drift between processes (up to 40% here). It leaves out, too,
        how much slower the forwards themselves go beside the downloads: the plain ratio holds that."""
        around = compute["wall_s"] - sum(compute["adapter_s"])  # the compute-only process, besides its forwards
        return self.embed_s / (float(self.summary["timings"]["compute_s"]) + around)


def build_pool(out: Path) -> Path:
    from hubdelta_dev.pool.build import build_pool as build

    cache = Path(os.environ.get("HUBDELTA_TEST_CACHE", Path.home() / ".cache" / "hubdelta-test")) / "pool"
    build(out, cache_dir=cache, seed=0)  # the tests' cache: trained once (~10 minutes cold), linked after
    return out


def distinct_weights(path: Path, i: int) -> None:
    """Rewrite the hard link ``path`` as its own file whose first tensor's first two elements differ in their
    lowest mantissa bits by ``i``: another upload (another sha256) of nearly the same adapter, as the Hub's many
    LoRA finetunes of one base are, rather than a re-upload that would be found as a copy before download."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(path, "pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    first = min(tensors)
    ints = {2: torch.int16, 4: torch.int32}[tensors[first].element_size()]
    bits = tensors[first].contiguous().view(ints).view(-1)
    bits[0] ^= i & 0x3F
    bits[1] ^= (i >> 6) & 0x3F
    tensors[first] = bits.view(tensors[first].dtype).view(tensors[first].shape)
    path.unlink()
    save_file(tensors, str(path), metadata=metadata)


def make_tree(pool: Path, root: Path, n: int) -> list[str]:
    """A devhub root: the base, and ``n`` adapter repos hard-linked from the pool's adapters in turn (each beyond
    the pool's own with byte-distinct weights: :func:`distinct_weights`)."""
    from datetime import UTC, datetime, timedelta

    from hubdelta_dev.pool.base import BASE_REPO_ID
    from hubdelta_dev.pool.publish import card_text, link_tree, write_jsonl

    sources = sorted(p.parent for p in (pool / "hub").glob("*/*/adapter_config.json"))
    shutil.copytree(pool / "hub" / BASE_REPO_ID, root / BASE_REPO_ID, copy_function=os.link)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    stamp = "%Y-%m-%dT%H:%M:%S.000Z"
    entries = [{"id": BASE_REPO_ID, "createdAt": "2024-10-31T12:00:00.000Z", "downloads": 1000, "likes": 10}]
    ids = []
    for i in range(n):
        repo_id = f"{REPO}/adapter-{i:04d}"
        src, dst = sources[i % len(sources)], root / REPO / f"adapter-{i:04d}"
        link_tree(src, dst)
        if i >= len(sources):  # byte-identical copies would be found before download (docs/embedder.md: Copies)
            distinct_weights(dst / "adapter_model.safetensors", i)
        (dst / "README.md").unlink(missing_ok=True)
        meta = {"base_model": BASE_REPO_ID, "library_name": "peft", "license": "apache-2.0", "tags": ["bench"]}
        (dst / "README.md").write_text(card_text(meta, repo_id, f"A copy of {src.name}."))
        created = (start + timedelta(minutes=i)).strftime(stamp)
        entries.append({"id": repo_id, "createdAt": created, "lastModified": created, "downloads": i, "likes": 0})
        ids.append(repo_id)
    write_jsonl(root / "catalog.jsonl", entries)
    return ids


def hubdelta(home: Path, endpoint: str, *args: str) -> tuple[float, str]:
    """Run ``hubdelta ARGS`` as a process; (wall seconds, stdout)."""
    env = child_env(HUBDELTA_HOME=str(home), HF_ENDPOINT=endpoint)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hubdelta", *args], env=env, capture_output=True, text=True,
                          cwd=PRODUCT.get("dir"))  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"hubdelta {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def table_versions(home: Path) -> int:
    """Lance versions of every table of the index (each commit adds one)."""
    return sum(len(list((t / "_versions").glob("*.manifest"))) for t in (home / "index").glob("*.lance"))


def base_cache(pool_root: Path, endpoint: str, work: Path) -> tuple[Path, float]:
    """Download the base once through hubdelta (whole process); (its Hub cache folder, seconds)."""
    from hubdelta_dev.pool.base import BASE_REPO_ID

    home = work / "base-home"
    home.mkdir()
    started = time.perf_counter()
    code = (
        "from hubdelta.kernel.settings import load_settings\n"
        "from hubdelta.embedder.bases import download_base\n"
        f"download_base(load_settings(), {BASE_REPO_ID!r})\n"
    )
    env = child_env(HUBDELTA_HOME=str(home), HF_ENDPOINT=endpoint)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=PRODUCT.get("dir"))
    seconds = time.perf_counter() - started
    folder = next((home / "cache" / "hub").glob("models--*"))
    return folder, seconds


def end_to_end(name: str, work: Path, endpoint: str, base_folder: Path, dtype: str, n: int, batch: int | None,
               workers: int | None, rep: int = 0, settings: str = "") -> EndToEnd:  # fmt: skip
    from hubdelta_dev.pool.base import BASE_REPO_ID

    home = work / f"{name}-{rep}"
    (home / "cache" / "hub").mkdir(parents=True)
    shutil.copytree(base_folder, home / "cache" / "hub" / base_folder.name, copy_function=os.link, symlinks=True)
    toml = f'[embed]\ndtype = "{dtype}"\n' + (f"batch = {batch}\n" if batch else "")
    toml += f"download_workers = {workers}\n" if workers else ""
    toml += settings
    (home / "hubdelta.toml").write_text(toml)
    track_s, _ = hubdelta(home, endpoint, "track", BASE_REPO_ID)
    crawl_s, _ = hubdelta(home, endpoint, "crawl")
    before, cpu = table_versions(home), resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    embed_s, out = hubdelta(home, endpoint, "embed", "--json")
    now, kids_now = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    devhub_cpu = now.ru_utime + now.ru_stime - cpu.ru_utime - cpu.ru_stime
    embed_cpu = kids_now.ru_utime + kids_now.ru_stime - kids.ru_utime - kids.ru_stime
    summary = json.loads(out)
    if summary.get("embedded") != n:
        raise SystemExit(f"{name}: embedded {summary.get('embedded')} of {n}: {summary.get('failures', [])[:3]}")
    return EndToEnd(name, n, track_s, crawl_s, embed_s, summary, table_versions(home) - before, devhub_cpu, embed_cpu)


def phase(pool: Path, name: str, batch: int | None, n: int | None = None) -> dict[str, Any]:
    """One of ``bench/embed_throughput.py``'s phases in its own process; its result, and ``wall_s`` (the whole
    process: imports, base load, forwards)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(BENCH / "embed_throughput.py"), str(pool), "--phase", name,
               "--vectors", str(Path(tmp) / "v.safetensors"), "--batch", str(batch or 8)]  # fmt: skip
        started, kids = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(cmd + (["--n", str(n)] if n else []), check=True, capture_output=True, text=True,
                              env=child_env(), cwd=PRODUCT.get("dir"))  # fmt: skip
        wall, now = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in done.stdout.splitlines() if x.startswith(RESULT))
    result: dict[str, Any] = json.loads(line[len(RESULT) :])
    cpu = now.ru_utime + now.ru_stime - kids.ru_utime - kids.ru_stime
    return {**result, "wall_s": wall, "cpu_s": cpu}


def steady(result: dict[str, Any]) -> float:
    return float(sum(result["adapter_s"]) / result["n"])


def ceiling(ref: float, compute: dict[str, Any]) -> float:
    """The compute-only process's speed-up over the paper's loop: no end-to-end run, which also downloads and
    writes the index, can beat it on the same machine."""
    return float(ref / (compute["wall_s"] / compute["n"]))


def print_table(reference: dict[str, Any], compute: dict[str, dict[str, Any]], runs: list[EndToEnd]) -> None:
    ref = steady(reference)
    print(f"\npaper's loop (peft, batch 1, one probe a forward, base load excluded): {ref:.3f} s/adapter")
    print("compute only: the same adapters' files on local disk, one process (imports and base load included)")
    print("same speed: end to end / compute only, the compute-only forwards taken at the end-to-end run's own speed")
    for d, c in compute.items():
        print(f"  {d}: {c['wall_s']:.1f} s for {c['n']} = {c['wall_s'] / c['n']:.3f} s/adapter, "
              f"{ceiling(ref, c):.2f}x the paper's loop: the most end to end can reach (forwards alone "
              f"{steady(c):.3f}, setup {c['setup_s']:.1f} s, other CPU {c['other_cpu']:.2f}, process CPU "
              f"{c['cpu_s']:.1f} s)")  # fmt: skip
    head = f"{'run':<22}{'embed s':>9}{'s/adapter':>11}{'x paper':>9}{'e2e/compute':>13}{'same speed':>12}"
    print(head + f"{'whole s/ad':>12}{'x paper':>9}{'commits/100':>13}")
    for r in runs:
        c = compute[r.name.split("-")[0]]
        print(
            f"{r.name:<22}{r.embed_s:>9.1f}{r.per_adapter:>11.3f}{ref / r.per_adapter:>9.2f}"
            f"{r.embed_s / c['wall_s']:>13.2f}{r.at_its_own_speed(c):>12.2f}"
            f"{r.whole_per_adapter:>12.3f}{ref / r.whole_per_adapter:>9.2f}"
            f"{100 * r.commits / r.n:>13.1f}"
        )
    for r in runs:
        timings = r.summary.get("timings", {})
        print(f"{r.name}: track {r.track_s:.1f} s, crawl {r.crawl_s:.1f} s; embed's own timings: {timings}; devhub "
              f"used {r.devhub_cpu_s:.1f} s of CPU serving it (on these same cores: the Hub would not); the embed "
              f"process {r.embed_cpu_s:.1f} s")  # fmt: skip


def measure(args: argparse.Namespace, pool: Path, work: Path, hub: Any, base_folder: Path,
            rep: int) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[EndToEnd]]:  # fmt: skip
    """One repetition: the paper's loop, compute only per dtype, then every end-to-end run."""
    from hubdelta_dev.devhub.faults import FaultConfig

    dtypes = args.dtypes.split(",")
    print(f"repetition {rep + 1} of {args.repeat}", flush=True)
    reference = phase(pool, "reference", args.batch)
    compute = {d: phase(work / "tree", f"ours-{d}", args.batch, args.n) for d in dtypes}
    shapes: list[tuple[str, dict[str, Any]]] = [("loopback", {})]
    if not args.no_shaped:
        shapes.append((f"{args.latency_ms}ms", {"shape_latency_ms": args.latency_ms,
                                                "shape_bandwidth": args.bandwidth}))  # fmt: skip
    runs = []
    for shape, faults in shapes:
        hub.set_faults(FaultConfig(**faults))
        for d in dtypes:
            for variant, settings in variants(args).items():
                name = f"{d}-{shape}" + (f"-{variant}" if variant else "")
                print(f"running {name} ...", flush=True)
                runs.append(end_to_end(name, work, hub.url, base_folder, d, args.n, args.batch, args.workers, rep,
                                       settings))  # fmt: skip
    return reference, compute, runs


def variants(args: argparse.Namespace) -> dict[str, str]:
    """Each end-to-end configuration's name and its ``[embed]`` lines, run side by side in every repetition:
    ``--downloads`` (one run per download mode) and ``--variant NAME:KEY=VALUE[;KEY=VALUE]`` (each beside the
    defaults' unnamed run, as its help says, unless ``--downloads`` already runs them); one unnamed run when
    neither is given."""
    out = {m: f"download_process = {str(m == 'process').lower()}\n" for m in (args.downloads or "").split(",") if m}
    out = out or {"": ""}
    for v in args.variant:
        name, _, pairs = v.partition(":")
        out[name] = "".join(f"{p.strip()}\n" for p in pairs.split(";") if p.strip())
    return out


def idle_if(hub: Any, idle: bool) -> Any:
    """Start ``hub``'s serving thread from a thread at SCHED_IDLE when ``idle``: the threads it starts (one a
    request) inherit the policy, this process's others keep theirs."""
    import threading

    def start() -> None:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: the calling thread, on Linux
        hub.start()

    if idle:
        starter = threading.Thread(target=start)
        starter.start()
        starter.join()
    return hub


def print_medians(tables: list[tuple[dict[str, Any], dict[str, dict[str, Any]], list[EndToEnd]]]) -> None:
    """Each run's figures as the median over the repetitions (each figure a ratio within its repetition)."""
    print(f"\nmedians over {len(tables)} repetitions (the machine's speed drifts between them):")
    print(f"{'run':<22}{'x paper':>9}{'e2e/compute':>13}{'same speed':>12}{'whole x paper':>15}"
          f"{'compute only x paper':>22}")  # fmt: skip
    for i, first in enumerate(tables[0][2]):
        rows = [(steady(ref), comp[t[i].name.split("-")[0]], t[i]) for ref, comp, t in tables]
        paper = statistics.median(ref / r.per_adapter for ref, _, r in rows)
        plain = statistics.median(r.embed_s / c["wall_s"] for _, c, r in rows)
        same = statistics.median(r.at_its_own_speed(c) for _, c, r in rows)
        whole = statistics.median(ref / r.whole_per_adapter for ref, _, r in rows)
        top = statistics.median(ceiling(ref, c) for ref, c, _ in rows)
        print(f"{first.name:<22}{paper:>9.2f}{plain:>13.2f}{same:>12.2f}{whole:>15.2f}{top:>22.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devhub-idle", action="store_true",
                        help="serve devhub at SCHED_IDLE, its CPU (another machine's on the Hub) taken only from "
                        "cycles the run leaves idle; loopback only: shaped runs then starve its pacing")  # fmt: skip
    parser.add_argument("--n", type=int, default=230, help="adapter repos devhub serves (default 230)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--pool", type=Path, help="a built pool (default: build one from the test pool's cache)")
    parser.add_argument("--no-shaped", action="store_true", help="loopback only")
    parser.add_argument("--latency-ms", type=int, default=100, help="shaped runs: latency per request")
    parser.add_argument("--bandwidth", type=int, default=50_000_000, help="shaped runs: bytes/s per connection")
    parser.add_argument("--batch", type=int, help="[embed] batch (default: hubdelta's default)")
    parser.add_argument("--workers", type=int, help="[embed] download_workers (default: hubdelta's default)")
    parser.add_argument(
        "--downloads",
        help="process,threads: each run once per [embed] download_process value, "
        "side by side (default: hubdelta's default only)",
    )
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME:KEY=VALUE[;KEY=VALUE]: each run also with these [embed] values, side by side "
                        "(repeatable), e.g. --variant 'window:prefetch_gb=0'")  # fmt: skip
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temporary folder)")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of every phase, then each figure's "
                        "median (the machine's speed drifts by up to 40%% between processes)")  # fmt: skip
    parser.add_argument("--product", type=Path, help="run the hubdelta of this checkout (e.g. a worktree of an "
                        "older commit), against this checkout's devhub and phases")  # fmt: skip
    args = parser.parse_args()
    if args.product:
        PRODUCT["dir"] = args.product.resolve()
    from hubdelta_dev.devhub.server import DevhubServer

    work = Path(tempfile.mkdtemp(prefix="pipeline-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        pool = args.pool or build_pool(work / "pool")
        dtypes = args.dtypes.split(",")
        print(f"{os.cpu_count()} CPUs; {args.n} adapters; dtypes {dtypes}; work {work}", flush=True)
        for name in (n for n in OPENMP_ENV if n in os.environ):  # every phase inherits it, users' embed does not
            print(f"warning: {name} is set: unset it to measure what users run (PASSIVE: paper's loop 1.4x slower)")
        root = work / "tree" / "hub"  # a pool's layout: embed_throughput's phases read the same files
        make_tree(pool, root, args.n)
        tables = []
        with idle_if(DevhubServer(root), args.devhub_idle) as hub:
            base_folder, base_s = base_cache(root, hub.url, work)
            print(f"base download (once, whole process): {base_s:.1f} s", flush=True)
            for rep in range(args.repeat):
                tables.append(measure(args, pool, work, hub, base_folder, rep))
                print_table(*tables[-1])
        if args.repeat > 1:
            print_medians(tables)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
