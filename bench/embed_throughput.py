"""Adapters per minute: the reference loop (peft, one adapter and one probe at a time) against hubdelta's embedder.

One run, one pool, one machine; each phase runs in its own subprocess, so the peak RSS printed is that phase's:

- reference: one ``PeftModel.from_pretrained`` per adapter on a shared fp32 base, one probe per forward (batch 1),
  the full CausalLM with its logits, ``unload()`` after each adapter (the base is loaded once);
- hubdelta fp32: a :class:`ResidentBase` (its load and the base activations counted once), then the adapters in
  batches of ``--batch`` through ``adapter_activations``, reading their files included, up to ``--lanes`` batches
  at once as ``hubdelta embed`` runs them (:mod:`hubdelta.embedder.lanes`; default: its automatic choice);
- hubdelta bf16: the same in a bfloat16 space;
- with ``--f-linear``, both again with ``prepack=False``: the Linears on ``F.linear`` (MKL in fp32) instead of
  weights laid out once for oneDNN (:mod:`hubdelta.embedder.packed`), the default's evidence side by side.

Prints per-adapter seconds (end to end: setup included; steady: adapters only), models/minute, the speed-ups,
peak RSS, and how the phases' delta vectors agree (cosine). Asserts nothing. "other CPU" is how many cores other
processes kept busy during a phase: anything well above 0 means the timing is not to be trusted (OpenMP threads
that share their cores with another process slow down many times over).

Every phase runs with the same torch threads (``--threads``) and, unless ``--default-malloc``, the same allocator
setting (:func:`hubdelta.embedder.runtime.keep_freed_memory`; it speeds hubdelta's batched forwards by ~9% here and
the reference by ~1%). hubdelta's phases also run the garbage collector as ``hubdelta embed`` does (paused over the
base load, the heap frozen over the forwards and at exit: :mod:`hubdelta.kernel.collector`); the reference runs
as the paper's code does (frozen over its loop it measured 1.19 and 1.03 s an adapter against 1.16 and 1.14 plain,
2026-12-06: within this machine's noise).

Usage: /work/venv/bin/python bench/embed_throughput.py POOL_DIR [--n N] [--batch 8] [--threads 2] [--no-bf16]
    [--f-linear]
    POOL_DIR: a directory written by `hubdelta devhub build-pool` (or the tests' pool fixture).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections import deque
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hubdelta.embedder.activations import ResidentBase, load_causal_lm
from hubdelta.embedder.bases import space_for
from hubdelta.embedder.delta import delta_vector
from hubdelta.embedder.lanes import lanes_for
from hubdelta.embedder.packed import kernel_dtype, packed, packs
from hubdelta.embedder.packed import linear as packed_linear
from hubdelta.embedder.plan import chunks
from hubdelta.embedder.probes import PAPER_PROBES
from hubdelta.embedder.runtime import keep_freed_memory
from hubdelta.kernel.collector import frozen_gc, paused_gc
from hubdelta_dev.pool.base import BASE_REPO_ID

RESULT = "RESULT "  # prefix of a phase's one JSON line on stdout


@dataclass
class PhaseResult:
    """What one phase measured (seconds, MiB)."""

    name: str
    threads: int
    other_cpu: float  # cores busy with other processes during the phase, on average: contention if > ~0.1
    setup_s: float  # base load (+ tokenizer, probe batch) and base activations, once
    adapter_s: list[float]  # wall time per adapter (reference) or per batch (ours)
    n: int
    rss_start_mib: float  # peak RSS after imports, before any model
    rss_peak_mib: float

    @property
    def steady(self) -> float:
        """Seconds per adapter, adapters only."""
        return sum(self.adapter_s) / self.n

    @property
    def end_to_end(self) -> float:
        """Seconds per adapter with the setup shared over the ``n`` adapters."""
        return (self.setup_s + sum(self.adapter_s)) / self.n


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def busy_cpu_s() -> tuple[float, float]:
    """(CPU seconds the whole machine has been busy, CPU seconds of this process) so far (Linux)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    own = resource.getrusage(resource.RUSAGE_SELF)
    return busy / os.sysconf("SC_CLK_TCK"), own.ru_utime + own.ru_stime


def cpu_name() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    return next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), platform.machine())


F_LINEAR = "-flinear"  # a phase name's suffix: the Linears on F.linear, not prepacked (hubdelta.embedder.packed)


def pool_adapters(pool: Path, n: int | None) -> dict[str, Path]:
    folders = sorted(p.parent for p in (pool / "hub").glob("*/*/adapter_config.json"))
    return {p.name: p for p in folders[:n]}


# ---- phases (each in its own process) --------------------------------------------------------------------------


def reference_acts(model: torch.nn.Module, probe_ids: list[torch.Tensor]) -> torch.Tensor:
    """The paper's way: each probe alone through the full CausalLM (logits included), final state, last token."""
    rows = []
    with torch.inference_mode():
        for ids in probe_ids:  # each (1, T_p)
            out = model(input_ids=ids, output_hidden_states=True)
            assert out.logits.shape[-1] > 0  # the LM head ran, as in the reference loop
            rows.append(out.hidden_states[-1][0, -1])  # (C,)
    return torch.stack(rows)  # (P, C)


def run_reference(pool: Path, adapters: dict[str, Path]) -> tuple[float, list[float], dict[str, torch.Tensor]]:
    from peft import PeftModel
    from transformers import AutoTokenizer

    base_dir = pool / "hub" / BASE_REPO_ID
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = load_causal_lm(base_dir, torch.float32, torch.device("cpu"))
    probe_ids = [tokenizer(text, return_tensors="pt")["input_ids"] for text in PAPER_PROBES.texts]
    base_acts = reference_acts(base, probe_ids)  # (P, C)
    setup = time.perf_counter() - started
    times, vectors = [], {}
    for name, folder in adapters.items():
        started = time.perf_counter()
        model = PeftModel.from_pretrained(base, folder)
        acts = reference_acts(model, probe_ids)  # (P, C)
        base = model.unload()  # the LoRA layers removed, nothing merged: the shared base comes back plain
        times.append(time.perf_counter() - started)
        vectors[name] = delta_vector(acts, base_acts)  # (C,)
    return setup, times, vectors


def run_ours(
    pool: Path, adapters: dict[str, Path], dtype: str, batch: int, *, prepack: bool = True, lanes: int = 0
) -> tuple[float, list[float], dict[str, torch.Tensor]]:
    base_dir = pool / "hub" / BASE_REPO_ID
    started = time.perf_counter()
    with paused_gc():  # the collector as `hubdelta embed` runs it (embedder/worker.py)
        space = space_for(base_dir, BASE_REPO_ID, "bench", dtype=dtype)
        resident = ResidentBase(base_dir, space, prepack=prepack)
    base_acts = resident.base_activations()  # (P, C)
    setup = time.perf_counter() - started
    names, times, vectors = list(adapters), [], {}
    flight: deque[Future[dict[str, torch.Tensor]]] = deque()
    landed = time.perf_counter()

    def land() -> None:  # a chunk's seconds: since the one before it landed (the lanes overlap them)
        nonlocal landed
        acts = flight.popleft().result()
        times.append(time.perf_counter() - landed)
        landed = time.perf_counter()
        vectors.update({k: delta_vector(a, base_acts) for k, a in acts.items()})

    with frozen_gc(), lanes_for(resident.device, lanes) as lane:  # up to lane.n chunks at once, as `embed` runs
        landed = time.perf_counter()
        for chunk in chunks(names, batch, lane.n):  # cut as `embed` cuts them; each: files read, checked, forward
            flight.append(lane.submit(resident.adapter_activations, {k: adapters[k] for k in chunk}))
            while len(flight) >= lane.n:
                land()
        while flight:
            land()
    resident.close()
    return setup, times, vectors


def phase_main(args: argparse.Namespace) -> None:
    """Run one phase and print its :class:`PhaseResult` as one JSON line; vectors go to ``args.vectors``."""
    import transformers

    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # peft on transformers 5
    torch.set_num_threads(args.threads)
    if not args.default_malloc and not keep_freed_memory():
        print("warning: could not tune the allocator (not glibc?)", file=sys.stderr)
    adapters = pool_adapters(args.pool, args.n)
    rss_start, (busy_start, own_start), started = peak_rss_mib(), busy_cpu_s(), time.perf_counter()
    if args.phase == "reference":
        setup, times, vectors = run_reference(args.pool, adapters)
    else:
        dtype, prepack = args.phase.split("-")[1], not args.phase.endswith(F_LINEAR)
        setup, times, vectors = run_ours(args.pool, adapters, dtype, args.batch, prepack=prepack, lanes=args.lanes)
    busy, own = busy_cpu_s()
    other = max(0.0, (busy - busy_start) - (own - own_start)) / (time.perf_counter() - started)
    save_file({k: v.contiguous() for k, v in vectors.items()}, str(args.vectors))
    result = PhaseResult(
        args.phase, torch.get_num_threads(), other, setup, times, len(adapters), rss_start, peak_rss_mib()
    )
    print(RESULT + json.dumps(asdict(result)), flush=True)
    if args.phase != "reference":
        gc.freeze()  # and it exits as hubdelta's CLI does (hubdelta/cli/__init__.py: main)


# ---- the driver ------------------------------------------------------------------------------------------------


def spawn(args: argparse.Namespace, phase: str, out: Path) -> tuple[PhaseResult, dict[str, torch.Tensor]]:
    vectors = out / f"{phase}.safetensors"
    command = [sys.executable, __file__, str(args.pool), "--phase", phase, "--vectors", str(vectors)]
    command += ["--threads", str(args.threads), "--batch", str(args.batch)] + (["--n", str(args.n)] if args.n else [])
    command += ["--default-malloc"] if args.default_malloc else []
    print(f"running {phase} ...", file=sys.stderr, flush=True)
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith(RESULT))
    return PhaseResult(**json.loads(line[len(RESULT) :])), load_file(str(vectors))


def cosines(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([torch.nn.functional.cosine_similarity(a[k], b[k], dim=0) for k in a])  # (N,)


def matmul_gflops(dtype: torch.dtype, threads: int, m: int = 1520, n: int = 1536, k: int = 576) -> float:
    """This CPU's rate for a matmul of the embedder's shape (8 adapters x 5 probes x 38 tokens, an MLP Linear),
    run as the resident base runs it: on a prepacked weight where :func:`packs` (else ``F.linear``)."""
    torch.set_num_threads(threads)
    x, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    fast = packs(x.device, dtype)
    weight = packed(w) if fast else w
    run = packed_linear if fast else torch.nn.functional.linear
    run(x, weight)
    started, repeats = time.perf_counter(), 20
    for _ in range(repeats):
        run(x, weight)
    return 2 * m * n * k * repeats / (time.perf_counter() - started) / 1e9


def report(results: list[PhaseResult], vectors: dict[str, dict[str, torch.Tensor]]) -> None:
    head = f"{'phase':<20}{'setup s':>9}{'s/adapter':>11}{'e2e s/adapter':>15}{'models/min':>12}"
    print(head + f"{'peak RSS MiB':>14}{'(imports)':>11}{'other CPU':>11}")
    for r in results:
        print(
            f"{r.name:<20}{r.setup_s:>9.2f}{r.steady:>11.3f}{r.end_to_end:>15.3f}{60 / r.end_to_end:>12.1f}"
            f"{r.rss_peak_mib:>14.0f}{r.rss_start_mib:>11.0f}{r.other_cpu:>11.2f}"
        )
    ref = results[0]
    for r in results[1:]:
        print(
            f"speed-up {r.name} over {ref.name}: {ref.end_to_end / r.end_to_end:.2f}x end to end, "
            f"{ref.steady / r.steady:.2f}x steady (adapters only)"
        )
    agree = cosines(vectors["reference"], vectors["ours-float32"])
    print(f"delta vectors, hubdelta fp32 vs reference: min cosine {agree.min():.7f}, mean {agree.mean():.7f}")
    if "ours-bfloat16" in vectors:
        bf16 = cosines(vectors["ours-bfloat16"], vectors["ours-float32"])
        print(
            f"delta vectors, hubdelta bf16 vs fp32: min cosine {bf16.min():.5f}, median {bf16.median():.5f}, "
            f"max {bf16.max():.5f}; {int((bf16 < 0.999).sum())}/{len(bf16)} below 0.999"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pool", type=Path)
    parser.add_argument("--n", type=int, default=None, help="adapters to embed (default: all of the pool's)")
    parser.add_argument("--batch", type=int, default=8, help="adapters per forward in hubdelta's phases")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads in every phase")
    parser.add_argument("--lanes", type=int, default=0, help="hubdelta's [embed] lanes (default 0: its automatic)")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 phase")
    parser.add_argument(
        "--default-malloc", action="store_true", help="leave glibc's allocator as is (default: keep_freed_memory)"
    )
    parser.add_argument(
        "--f-linear", action="store_true", help="also hubdelta's phases with prepack=False (F.linear), side by side"
    )
    ours = [f"ours-{d}{s}" for d in ("float32", "bfloat16") for s in ("", F_LINEAR)]
    parser.add_argument("--phase", choices=["reference", *ours], help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        phase_main(args)
        return
    n = len(pool_adapters(args.pool, args.n))
    print(
        f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs ({cpu_name()}); "
        f"pool {args.pool}: {n} adapters, hubdelta batch {args.batch}; allocator in every phase: "
        + ("glibc defaults" if args.default_malloc else "keep_freed_memory()")
    )
    phases = ["reference", "ours-float32"] + ([] if args.no_bf16 else ["ours-bfloat16"])
    phases += [f"{p}{F_LINEAR}" for p in phases[1:]] if args.f_linear else []
    with tempfile.TemporaryDirectory() as tmp:
        runs = {phase: spawn(args, phase, Path(tmp)) for phase in phases}
    report([r for r, _ in runs.values()], {phase: v for phase, (_, v) in runs.items()})
    fp32, bf16 = (matmul_gflops(dtype, args.threads) for dtype in (torch.float32, torch.bfloat16))
    print(
        f"matmul rate on this CPU, {args.threads} threads: fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s "
        f"({bf16 / fp32:.1f}x): the ceiling of bf16's gain on the Linears; a bfloat16 space runs its matmuls on "
        f"{kernel_dtype(torch.device('cpu'), torch.bfloat16)} kernels on this CPU"
    )


if __name__ == "__main__":
    main()
