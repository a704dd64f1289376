"""``hubdelta serve`` under load: ``/api/similar`` latency with concurrent clients, and a space's map in Chromium.

Usage: .venv/bin/python bench/serve_bench.py [--sizes 100000,1000000] [--duration 60] [--clients 32] [--k 10]
    [--single 10] [--rates R1,R2] [--seed 0] [--no-map] [--keep DIR]

For each size N, in a temporary home (``--keep DIR``: in DIR, kept, and reused by a later run with the same DIR):

- **build**, each step timed: N vectors of 576 float32 with planted clusters (``bench/report_scale.py``'s space,
  the last 1,000 new) and their records written through the Index API in batches of 50,000; the daemon's
  ``compact`` job (``Daemon.compact``: the ANN index above ``[index] ann_threshold``, as the product builds it);
  ``hubdelta report`` (clusters; it refreshes the map's layout) and ``hubdelta layout`` as child processes;
- **serve**: ``hubdelta serve`` as a whole process, ``[serve] rate_per_s`` and ``burst`` set far above the load
  in the home's hubdelta.toml (the per-address limit would answer 429: the clients share one address);
- **load**: ``GET /api/similar?repo=R&k=10``, R a random repo id of the index, from threads each holding one
  keep-alive ``http.client`` connection, after a warm-up: one client for ``--single`` s (latency without
  queueing), then ``--clients`` clients for ``--duration`` s, each asking again as soon as answered (a closed
  loop: by Little's law p50 ~ clients / throughput, so 32 clients at 20 ms need 1,600 requests a second); with
  ``--rates`` also those clients at a fixed total rate (open loop, latency counted from when a request was due).
  Prints p50/p90/p99/max, requests a second, errors (not 200, or a broken connection) and the CPU in cores of
  the server, of this client process and of everything else on the machine (/proc/stat), which share the cores;
- **map**: ``/spaces/<space>`` in headless Chromium (Debian's, driven by Playwright, WebGL by SwiftShader) in a
  fresh browser context, twice (first with the server's layout cache cold): the time from navigation start to
  ``canvas.dataset.ready == "1"`` (stamped in the page by a mutation observer, so polling adds nothing), the
  points drawn, and when ``layout.bin`` arrived.

Asserts nothing. Heavy: run it under ``flock /tmp/heavy.lock``; at 1M the index takes 3 GB of disk and the build
~5 minutes (the report ~3 of them), the whole run ~9.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from report_scale import planted, repo_ids, write_index  # bench/: the script's folder is on sys.path

from hubdelta.index.door import open_reader
from hubdelta.index.selectors import visible
from hubdelta.kernel.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
NEW = 1000  # models embedded an hour ago: new in the report and marked on the map
CONFIG = """# bench/serve_bench.py: the guard's per-address rate limit lifted far above the benchmark's load
[serve]
rate_per_s = 1000000000.0
burst = 1000000000
"""
CHROMIUM = "/usr/bin/chromium"
GL_FLAGS = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]
# Runs before the page's scripts: stamps the moment any canvas gets data-ready="1" (performance.now() counts from
# navigation start), so the figure does not depend on how often the driver polls.
READY_PROBE = """(() => {
  new MutationObserver(() => {
    if (window.__mapReady === undefined && document.querySelector('canvas[data-ready="1"]'))
      window.__mapReady = performance.now();
  }).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ["data-ready"]});
})();"""


def child_env() -> dict[str, str]:  # no Hub: nothing here may reach the network
    return {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_ENDPOINT": "http://127.0.0.1:9"}


def hubdelta(home: Path, *args: str) -> tuple[float, str]:
    """``hubdelta --home HOME ARGS`` as a child process: its wall seconds and stdout (exits on failure)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hubdelta", "--home", str(home), *args], cwd=REPO_ROOT,
                          env=child_env(), capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"hubdelta {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout


def build(n: int, seed: int, root: Path) -> tuple[Path, dict[str, float]]:
    """The home of an index of ``n`` vectors, built and timed step by step (reused when a run left it built)."""
    home = root / f"home-{n}"
    marker = home / "serve-bench-built.json"
    if marker.exists():
        print(f"N={n:,}: reusing the index built in {home}", flush=True)
        return home, json.loads(marker.read_text())
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "hubdelta.toml").write_text(CONFIG)
    settings = load_settings({}, home=home)
    steps: dict[str, float] = {}
    started = time.perf_counter()
    space = planted(n, seed)
    ids = repo_ids(n, seed)
    steps["vectors generated"] = time.perf_counter() - started
    steps["index written"] = write_index(settings, space, ids, NEW, datetime.now(UTC) - timedelta(hours=1))
    del space, ids
    from hubdelta.daemon.service import Daemon  # the daemon's own compaction job, ANN upkeep included

    started = time.perf_counter()
    compacted = Daemon(settings).compact()
    steps["compact + ANN index"] = time.perf_counter() - started
    print(f"N={n:,}: compact job: {compacted}", flush=True)
    steps["hubdelta report"], _ = hubdelta(home, "--log-json", "report", "--out", str(root / f"report-{n}"))
    steps["hubdelta layout"], said = hubdelta(home, "layout")
    print(f"N={n:,}: hubdelta layout: {said.strip()}", flush=True)
    steps["index on disk (GB)"] = sum(f.stat().st_size for f in home.rglob("*") if f.is_file()) / 1e9
    marker.write_text(json.dumps(steps))
    return home, steps


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat), all processes together."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def rss_gb(pid: int) -> tuple[float, float]:
    """A process's resident memory now and at its peak, GB."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 2**20, int(status["VmHWM"].split()[0]) / 2**20


@dataclass
class Server:
    """A running ``hubdelta serve``."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    up_s: float

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)  # uvicorn finishes what is in flight and exits
        self.proc.wait()


def serve(home: Path) -> Server:
    """``hubdelta serve`` on a free port, once it answers ``/api/status``."""
    (home / "hubdelta.toml").write_text(CONFIG)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    started = time.perf_counter()
    with (home / "serve-bench.log").open("wb") as log:
        argv = [sys.executable, "-m", "hubdelta", "--home", str(home), "serve", "--port", str(port)]
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=child_env(), stdout=log, stderr=subprocess.STDOUT)
    while time.perf_counter() - started < 120:
        if proc.poll() is not None:
            raise SystemExit(f"hubdelta serve exited {proc.returncode}: see {home / 'serve-bench.log'}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/api/status")
            if conn.getresponse().status == 200:
                return Server(proc, "127.0.0.1", port, time.perf_counter() - started)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("hubdelta serve did not answer /api/status in 120 s")


@dataclass
class Load:
    clients: int
    rate: float = 0.0  # requests a second offered in all (open loop); 0: each client back to back
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    other_cpu_s: float = 0.0  # every other process of the machine: another job skews the figures
    lock: threading.Lock = field(default_factory=threading.Lock)

    def failed(self, what: str) -> None:
        with self.lock:
            self.errors += 1
            self.first_error = self.first_error or what


@dataclass
class Plan:
    """What every client of one load run does."""

    ids: list[str]  # repo ids to ask about, drawn at random
    k: int  # neighbours a request
    interval: float  # seconds between one client's requests (open loop); 0: back to back (closed loop)
    start: threading.Barrier
    until: list[float] = field(default_factory=lambda: [float("inf")])  # set once every client is ready


def client(server: Server, plan: Plan, seed: int, out: Load) -> None:
    """One client: one keep-alive connection, requests until ``plan.until[0]``.

    Open loop: a latency counts from when the request was due, not from when it was sent, so a server that
    falls behind its schedule is charged for the wait (no coordinated omission).
    """
    rng = random.Random(seed)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    mine: list[float] = []
    plan.start.wait()
    due = time.perf_counter() + rng.uniform(0, plan.interval)
    while due < plan.until[0] and time.perf_counter() < plan.until[0]:  # an overloaded server: stop on time
        path = f"/api/similar?repo={urllib.parse.quote(rng.choice(plan.ids), safe='')}&k={plan.k}"
        time.sleep(max(0.0, due - time.perf_counter()))
        t0 = due if plan.interval else time.perf_counter()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as e:
            out.failed(f"{type(e).__name__}: {e}")
            conn.close()
            conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
            continue
        done = time.perf_counter()
        due = due + plan.interval if plan.interval else done
        if response.status != 200 or b'"neighbors"' not in body:
            out.failed(f"{response.status}: {body[:200]!r}")
        else:
            mine.append(done - t0)
    conn.close()
    with out.lock:
        out.latencies.extend(mine)


def load(server: Server, ids: list[str], k: int, clients: int, duration: float, seed: int, rate: float = 0) -> Load:
    """``clients`` clients for ``duration`` seconds (``rate`` > 0: that many requests a second in all, open loop);
    latencies of the successful requests, errors, CPU."""
    out = Load(clients, rate)
    plan = Plan(ids, k, clients / rate if rate > 0 else 0.0, threading.Barrier(clients + 1))
    threads = [threading.Thread(target=client, args=(server, plan, seed * 1000 + i, out)) for i in range(clients)]
    for t in threads:
        t.start()
    plan.start.wait()
    cpu0, server0, busy0, t0 = os.times(), cpu_s(server.proc.pid), machine_busy_s(), time.perf_counter()
    plan.until[0] = t0 + duration
    for t in threads:
        t.join()
    cpu1 = os.times()
    out.wall_s = time.perf_counter() - t0
    out.client_cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    out.server_cpu_s = cpu_s(server.proc.pid) - server0
    out.other_cpu_s = machine_busy_s() - busy0 - out.server_cpu_s - out.client_cpu_s
    return out


def load_row(n: int, run: Load) -> str:
    ms = np.asarray(run.latencies) * 1000
    p50, p90, p99 = np.percentile(ms, [50, 90, 99]) if len(ms) else (np.nan,) * 3
    top = ms.max() if len(ms) else np.nan
    clients = f"{run.clients} @{run.rate:g}/s" if run.rate else str(run.clients)
    return (f"| {n:>9,} | {clients:>7} | {len(ms) + run.errors:>8,} | {p50:7.1f} | {p90:7.1f} | {p99:7.1f} | "
            f"{top:7.1f} | {(len(ms) + run.errors) / run.wall_s:7.1f} | {run.errors:>6} | "
            f"{run.server_cpu_s / run.wall_s:10.2f} | {run.client_cpu_s / run.wall_s:10.2f} | "
            f"{max(0.0, run.other_cpu_s) / run.wall_s:9.2f} |")  # fmt: skip


def first_space(server: Server) -> str:
    """The space to map: the index has one."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    conn.request("GET", "/api/spaces")
    spaces = json.loads(conn.getresponse().read())["spaces"]
    return str(spaces[0]["space_id"])


def map_ready(server: Server, space: str, timeout_s: float) -> list[str]:
    """The map page in Chromium, twice (fresh browser contexts): one line each on when it was ready."""
    from playwright.sync_api import sync_playwright

    url = f"{server.url}/spaces/{urllib.parse.quote(space, safe='')}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=GL_FLAGS)
        labels = ("first load (server's layout cache cold)", "again (fresh browser context)")
        return [f"{label}: {open_map(browser, url, timeout_s)}" for label in labels]  # closed with playwright


def open_map(browser: Any, url: str, timeout_s: float) -> str:
    """One load of the map page: when ``canvas.dataset.ready`` became "1", the points drawn, layout.bin's timing."""
    from playwright.sync_api import Error as PlaywrightError

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    errors: list[str] = []

    def console(message: Any) -> None:
        if message.type == "error":
            errors.append(str(message.text))

    try:
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", console)
        page.add_init_script(READY_PROBE)
        try:
            page.goto(url, wait_until="commit", timeout=timeout_s * 1000)
        except PlaywrightError as e:
            return f"not loaded ({str(e).splitlines()[0][:120]})"
        # Polled from here: wait_for_function evaluates a string in the page, which the CSP (rightly) refuses;
        # the probe stamped the time itself, so the polling interval does not enter the figure.
        deadline = time.monotonic() + timeout_s
        while page.evaluate("() => window.__mapReady") is None:
            if time.monotonic() > deadline:
                return f"not ready in {timeout_s:.0f} s; page errors: {errors[:3]}"
            page.wait_for_timeout(50)
        ready, points, binary = page.evaluate("""() => {
            const c = document.querySelector('canvas[data-ready="1"]');
            const e = performance.getEntriesByType('resource').find(r => r.name.includes('layout.bin'));
            return [window.__mapReady, c.dataset.points, e ? [e.startTime, e.responseEnd, e.encodedBodySize] : null];
        }""")
    finally:
        context.close()
    got = (f"layout.bin {binary[2] / 1e6:.1f} MB fetched {binary[0] / 1000:.2f}-{binary[1] / 1000:.2f} s"
           if binary else "layout.bin not seen")  # fmt: skip
    said = f"; page errors: {errors[:3]}" if errors else ""
    return f"ready in {ready / 1000:.2f} s, {points} points drawn ({got}){said}"


def bench(n: int, args: argparse.Namespace, root: Path) -> None:
    home, steps = build(n, args.seed, root)
    for step, value in steps.items():
        unit = "" if "GB" in step else " s"
        print(f"N={n:,}: {step:<22} {value:8.1f}{unit}", flush=True)
    with open_reader(load_settings({}, home=home)) as index:
        ids = sorted(index.models.ids(visible()))  # every model is embedded in the one space
    server = serve(home)
    try:
        print(f"N={n:,}: hubdelta serve answered in {server.up_s:.1f} s; [serve] rate_per_s and burst set to 1e9 "
              f"(no rate limiting); queries: {len(ids):,} repo ids, k={args.k}", flush=True)  # fmt: skip
        load(server, ids, args.k, 1, 3.0, args.seed + 99)  # warm-up: imports, caches, first index reads
        rows = [load(server, ids, args.k, 1, args.single, args.seed)]
        rows.append(load(server, ids, args.k, args.clients, args.duration, args.seed + 1))
        for number, rate in enumerate(float(r) for r in args.rates.split(",") if r):
            rows.append(load(server, ids, args.k, args.clients, args.duration, args.seed + 2 + number, rate))
        now, peak = rss_gb(server.proc.pid)
        print(f"\n| N         | clients | requests |  p50 ms |  p90 ms |  p99 ms |  max ms |     rps | errors | "
              f"server CPU | client CPU | other CPU |\n|{'---|' * 12}")  # fmt: skip
        for run in rows:
            print(load_row(n, run))
        print(f"\nN={n:,}: server RSS {now:.2f} GB (peak {peak:.2f} GB); CPU in cores (this machine has "
              f"{os.cpu_count()})", flush=True)  # fmt: skip
        for run in (r for r in rows if r.first_error):
            print(f"N={n:,}: {run.clients} clients: first error: {run.first_error}")
        if not args.no_map:
            for line in map_ready(server, first_space(server), args.map_timeout):
                print(f"N={n:,}: map: {line}", flush=True)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated index sizes")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load with --clients clients")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--single", type=float, default=10.0, help="seconds of load with one client")
    parser.add_argument("--rates", default="", help="also --clients clients at these total requests a second, "
                        "comma-separated (open loop: latency counted from when a request was due)")  # fmt: skip
    parser.add_argument("--k", type=int, default=10, help="neighbours a request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-map", action="store_true", help="skip the map in Chromium")
    parser.add_argument("--map-timeout", type=float, default=60.0, help="seconds to wait for the map")
    parser.add_argument("--keep", type=Path, help="build (or reuse) the indexes in this folder and keep them")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="serve-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            bench(n, args, root)
            if args.keep is None:  # free the disk before the next size (1M: ~3 GB)
                shutil.rmtree(root / f"home-{n}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
