"""kill -9 at random points of crawl, embed, retry and the daemon, on the hostile devhub corpus (slow: minutes).

Two embed phases aim at the pipelined run's stages: ``download`` kills it at a random point over a shaped devhub
(40 ms a request, 200 kB/s a connection: the run is mostly downloads), ``commit`` the moment its k-th new file
appears in the index's tables (k random in ``COMMIT_KILL``: between a commit's data and its manifest, or just
after). The ``partial`` column counts the downloads a kill cut short (``.incomplete`` files left in the cache).

For each phase, ``--trials`` times: copy a prepared home, start the command as a process, SIGKILL it after a random
delay, check that the index opens, finish the work uninterrupted, and compare with one uninterrupted run: every
repo in the same status, every embedded repo with exactly one vector (nothing lost, nothing doubled).

    .venv/bin/python bench/kill9.py --trials 10 [--out /tmp/kill9]

Prints one row a trial and exits 1 when any trial differs from the reference.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubdelta.crawler.api import track
from hubdelta.index.door import open_reader
from hubdelta.kernel.settings import load_settings
from hubdelta_dev.devhub.faults import FaultConfig
from hubdelta_dev.devhub.hostile import TRACKED, write_hostile_root
from hubdelta_dev.devhub.server import DevhubServer

REPO = Path(__file__).resolve().parents[1]
DAEMON_TOML = "[daemon]\ncrawl_every_s = 5.0\nembed_every_s = 1.0\n"
# phase -> (the home it starts from, the command killed, kill window, the commands that finish the work). The
# window is a fraction of the command's own uninterrupted run, timed in prepare() (the daemon never ends: seconds),
# so a kill lands mid-run on any machine (a rerun is often quicker than the timed one: the window ends early).
PHASES: dict[str, tuple[str, tuple[str, ...], tuple[float, float], tuple[tuple[str, ...], ...]]] = {
    "crawl": ("tracked", ("crawl",), (0.35, 0.85), (("crawl",), ("embed",))),
    "embed": ("crawled", ("embed",), (0.35, 0.85), (("embed",),)),
    "retry": ("embedded", ("retry",), (0.35, 0.85), (("retry",), ("embed",))),
    "daemon": ("tracked", ("daemon",), (3.0, 30.0), (("crawl",), ("embed",))),
    # embed over a shaped devhub (SHAPED): the run is mostly downloads, so a kill lands mid-download
    "download": ("crawled", ("embed",), (0.35, 0.85), (("embed",),)),
    # embed killed the moment the k-th new file appears in the index's tables (k in COMMIT_KILL): mid-commit
    "commit": ("crawled", ("embed",), (0.0, 0.0), (("embed",),)),
}
# shaping only while the killed run runs (its finish goes at loopback speed)
SHAPED: dict[str, dict[str, Any]] = {"download": {"shape_latency_ms": 40, "shape_bandwidth": 200_000}}
COMMIT_KILL = (1, 8)


@dataclass
class State:
    statuses: dict[str, str]
    vectors: dict[str, int]


@dataclass
class Trial:
    phase: str
    n: int
    kill_at: float
    killed: bool
    opens: bool
    lost: list[str]
    doubled: list[str]
    differ: list[str]
    partial: int = 0  # downloads cut by the kill (.incomplete files it left in the Hub cache)

    @property
    def ok(self) -> bool:
        return self.opens and not (self.lost or self.doubled or self.differ)


def hubdelta(home: Path, url: str, *args: str, timeout: float = 600) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HUBDELTA_HOME=str(home), HF_ENDPOINT=url, HF_HOME=str(home / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
    return subprocess.Popen([sys.executable, "-m", "hubdelta", "--log-json", *args], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=(home / "stderr.log").open("a"))  # fmt: skip


def finish(home: Path, url: str, steps: tuple[tuple[str, ...], ...]) -> float:
    """Run ``steps`` one after the other; the seconds they took."""
    started = time.monotonic()
    for step in steps:
        hubdelta(home, url, *step).wait(timeout=600)
    return time.monotonic() - started


def read(home: Path, url: str) -> State:
    with open_reader(load_settings({"HF_ENDPOINT": url}, home=home)) as index:
        statuses = {k: r.status.value for k, r in index.models.get().items()}
        vectors: dict[str, int] = {}
        for space in index.vectors.spaces():
            for repo in index.vectors.get(space):
                vectors[repo] = vectors.get(repo, 0) + 1
    return State(statuses, vectors)


def prepare(work: Path, hub: DevhubServer) -> tuple[dict[str, Path], dict[str, float]]:
    """Homes at the start of each phase: tracked, crawled, embedded (the last is the reference too); and how long
    crawl, embed, retry and a shaped embed take uninterrupted from them."""
    url = hub.url
    homes = {name: work / name for name in ("tracked", "crawled", "embedded")}
    settings = load_settings({"HF_ENDPOINT": url}, home=homes["tracked"])
    homes["tracked"].mkdir(parents=True)
    for base, check in TRACKED:
        track(settings, base, check=check)
    shutil.copytree(homes["tracked"], homes["crawled"])
    seconds = {"crawl": finish(homes["crawled"], url, (("crawl",),))}
    shutil.copytree(homes["crawled"], homes["embedded"])
    seconds["embed"] = finish(homes["embedded"], url, (("embed",),))
    shutil.copytree(homes["embedded"], work / "retried")
    seconds["retry"] = finish(work / "retried", url, (("retry",),))
    shutil.copytree(homes["crawled"], work / "shaped")
    hub.set_faults(FaultConfig(**SHAPED["download"]))
    seconds["download"] = finish(work / "shaped", url, (("embed",),))
    hub.set_faults(FaultConfig())
    return homes, seconds


def table_files(home: Path) -> set[str]:
    """Every file of the index's tables (data, manifests, transactions): a commit adds some."""
    found: set[str] = set()
    for table in (home / "index").glob("*.lance"):
        for sub in ("data", "_versions", "_transactions"):
            try:
                found.update(f"{table.name}/{sub}/{e.name}" for e in os.scandir(table / sub))
            except FileNotFoundError:
                continue
    return found


def kill_when(proc: subprocess.Popen[bytes], home: Path, *, after_s: float | None, new_files: int) -> bool:
    """SIGKILL ``proc`` after ``after_s`` seconds, or (None) once ``new_files`` files appeared in its index's
    tables; True when it was still running then."""
    deadline, before = time.monotonic() + (after_s or 600.0), table_files(home)
    while proc.poll() is None and time.monotonic() < deadline:
        if after_s is None and len(table_files(home) - before) >= new_files:
            break
        time.sleep(0.05 if after_s is not None else 0.001)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return killed


def trial(phase: str, n: int, homes: dict[str, Path], work: Path, hub: DevhubServer, ref: State,
          rng: random.Random, seconds: dict[str, float]) -> Trial:  # fmt: skip
    start, command, (lo, hi), steps = PHASES[phase]
    if phase in seconds:
        lo, hi = lo * seconds[phase], hi * seconds[phase]
    home, url = work / f"{phase}-{n}", hub.url
    shutil.copytree(homes[start], home)
    if phase == "daemon":
        (home / "hubdelta.toml").write_text(DAEMON_TOML)
    hub.set_faults(FaultConfig(**SHAPED.get(phase, {})))
    proc = hubdelta(home, url, *command)
    if phase == "commit":
        kill_at = float(rng.randint(*COMMIT_KILL))  # the k-th new table file, not seconds
        killed = kill_when(proc, home, after_s=None, new_files=int(kill_at))
    else:
        kill_at = rng.uniform(lo, hi)
        killed = kill_when(proc, home, after_s=kill_at, new_files=0)
    hub.set_faults(FaultConfig())
    partial = sum(1 for _ in (home / "cache").rglob("*.incomplete"))
    try:
        read(home, url)
        opens = True
    except Exception:
        opens = False
    finish(home, url, steps)
    got = read(home, url)
    lost = sorted(k for k, v in ref.vectors.items() if got.vectors.get(k, 0) < v)
    doubled = sorted(k for k, v in got.vectors.items() if v > ref.vectors.get(k, 0))
    differ = sorted(k for k in ref.statuses.keys() | got.statuses.keys() if ref.statuses.get(k) != got.statuses.get(k))
    shutil.rmtree(home, ignore_errors=True)
    return Trial(phase, n, kill_at, killed, opens, lost, doubled, differ, partial)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="kill9-"))
    write_hostile_root(work / "hub")
    rng, rows = random.Random(args.seed), []
    show: Callable[[Trial], str] = lambda t: (  # noqa: E731
        f"{t.phase:<7} {t.n:>3} {t.kill_at:>7.1f} {'yes' if t.killed else 'no':>6} {'yes' if t.opens else 'NO':>5} "
        f"{len(t.lost):>4} {len(t.doubled):>7} {len(t.differ):>6} {t.partial:>7}  "
        f"{'ok' if t.ok else 'DIFFERS ' + ','.join(t.differ)}"
    )
    with DevhubServer(work / "hub") as hub:
        homes, seconds = prepare(work, hub)
        ref = read(homes["embedded"], hub.url)
        print(
            f"reference: {len(ref.statuses)} models, {sum(ref.vectors.values())} vectors; uninterrupted: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
        )
        print(f"{'phase':<7} {'n':>3} {'kill_s':>7} {'killed':>6} {'opens':>5} {'lost':>4} {'doubled':>7} "
              f"{'differ':>6} {'partial':>7}  outcome")  # fmt: skip
        for phase in args.phases.split(","):
            for n in range(args.trials):
                rows.append(trial(phase, n, homes, work, hub, ref, rng, seconds))
                print(show(rows[-1]), flush=True)
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)
    bad = [t for t in rows if not t.ok]
    print(f"{len(rows) - len(bad)}/{len(rows)} trials ok; {sum(t.killed for t in rows)} killed mid-run; "
          f"{sum(t.partial > 0 for t in rows)} cut a download")  # fmt: skip
    for phase in args.phases.split(","):
        mine = [t for t in rows if t.phase == phase]
        print(f"  {phase}: {sum(t.ok for t in mine)}/{len(mine)} ok, {sum(t.killed for t in mine)} killed mid-run")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
