"""The daemon: crawl, embed, report and compaction jobs on the ``[daemon]`` schedule, until SIGTERM or SIGINT.

What runs the jobs (one at a time, daily slots, catch-up, stopping) is :mod:`hubdelta.daemon.runner`; this module
gives it the jobs, each a library call, and the signals.

SIGTERM or SIGINT: no new job starts; the running one stops at its next safe point (the embed worker between
chunks: what it claimed is finished and committed, the rest stays queued), the lock is released as its
``with`` block ends, and the process exits 0, or 1 if the job overran ``stop_timeout_s``.

One daemon a home: a second one is refused (:mod:`hubdelta.daemon.lock`) before it writes anything.
"""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING, Any

from hubdelta.daemon.lock import DaemonLock
from hubdelta.daemon.runner import Clock, Job, JobRunner, local_now
from hubdelta.daemon.slots import parse_hhmm
from hubdelta.daemon.web_child import WebChild
from hubdelta.kernel.settings import Settings

if TYPE_CHECKING:
    from hubdelta.embedder.scaleout import RayWorkers

COMMAND = "hubdelta daemon"


class Daemon:
    """Build with settings; :meth:`run` blocks until a signal (or :meth:`stop`)."""

    def __init__(self, settings: Settings, clock: Clock = local_now) -> None:
        self.settings = settings
        d = settings.daemon
        full_crawl_at = parse_hhmm(d.full_crawl_at, "daemon.full_crawl_at")
        report_at = parse_hhmm(d.report_at, "daemon.report_at")
        report = (Job("report", self.report, every_s=d.report_every_s) if d.report_every_s > 0
                  else Job("report", self.report, daily_at=report_at))  # fmt: skip
        jobs = [
            Job("crawl", self.crawl, every_s=d.crawl_every_s, first_after_s=0),
            Job("embed", self.embed, every_s=d.embed_every_s, first_after_s=1),
            Job("compact", self.compact, every_s=d.compact_every_s),
            Job("full_crawl", self.full_crawl, daily_at=full_crawl_at),
            report,
        ]
        self.runner = JobRunner(settings.home, jobs, stop_timeout_s=d.stop_timeout_s, clock=clock)
        self.stopping = self.runner.stopping
        self._workers: RayWorkers | None = None
        self._layouts_at = -float("inf")  # when the embed job last refreshed the maps (monotonic)

    # ---- the jobs: each a library call ----

    def crawl(self) -> dict[str, Any]:
        from hubdelta.crawler.api import run_crawl

        s = run_crawl(self.settings, command=f"{COMMAND}: crawl")
        return {"new": s.total("new"), "updated": s.total("updated"), "requests": s.requests, "errors": s.errors}

    def full_crawl(self) -> dict[str, Any]:
        from hubdelta.crawler.api import run_crawl

        s = run_crawl(self.settings, full=True, command=f"{COMMAND}: full crawl")
        return {"new": s.total("new"), "updated": s.total("updated"), "removed": s.total("removed")}

    def embed(self) -> dict[str, Any]:
        from hubdelta.embedder.api import run_embed
        from hubdelta.embedder.family import embed_families
        from hubdelta.embedder.runtime import keep_freed_memory

        keep_freed_memory()
        limit = self.settings.daemon.embed_limit
        s = run_embed(self.settings, limit=limit, command=f"{COMMAND}: embed", should_stop=self.stopping.is_set,
                      workers=self._ray_workers())  # fmt: skip
        out: dict[str, Any] = {"embedded": s.embedded, "copied": s.copied, "failed": s.failed, "reused": s.reused,
                               "stopped": s.stopped}  # fmt: skip
        if s.workers:
            out |= {"workers": s.workers, "worker_deaths": s.worker_deaths}
        settled = s.embedded + s.copied + s.failed
        if not s.stopped and settled < limit:  # families fill from what their bases' spaces hold
            families = embed_families(self.settings, limit=limit, command=f"{COMMAND}: family embed",
                                      should_stop=self.stopping.is_set)  # fmt: skip
            if families:
                out["family_embedded"] = sum(f.embedded for f in families)
                out["stopped"] = out["stopped"] or any(f.stopped for f in families)
        if out["embedded"] or out["copied"] or out.get("family_embedded"):
            out["layouts"] = self._layouts()
            out["labels"] = self._labels()
        return out

    def _layouts(self) -> dict[str, int] | str:
        """Refresh the maps after an embed job wrote vectors, at most every ``[daemon] layout_every_s`` (a full
        projection: ~9 s a million vectors, and the points of an open map move): points per space recomputed,
        "later" (too soon after the last), or "failed" (logged). The nightly report always refreshes them."""
        from hubdelta.report.layout import refresh_after_writes

        now = time.monotonic()
        if now - self._layouts_at < self.settings.daemon.layout_every_s:
            return "later"
        self._layouts_at = now
        done = refresh_after_writes(self.settings, f"{COMMAND}: embed", should_stop=self.stopping.is_set)
        return "failed" if done is None else done.computed

    def _labels(self) -> dict[str, int] | str:
        """Refresh the suggested labels after an embed job wrote vectors: incremental (the new models and those
        whose neighbourhood they entered), so every job; labels per space recomputed, or "failed" (logged)."""
        from hubdelta.report.labels import refresh_after_writes

        done = refresh_after_writes(self.settings, f"{COMMAND}: embed", should_stop=self.stopping.is_set)
        return "failed" if done is None else done.computed

    def _ray_workers(self) -> RayWorkers | None:
        """With ``[ray] enabled``, the daemon's Ray workers: started at the first embed job and kept, so their
        bases stay resident between runs; a job that cannot reach the cluster fails and the next one tries again."""
        if not self.settings.ray.enabled:
            return None
        if self._workers is None:
            from hubdelta.embedder.api import options, ray_options
            from hubdelta.embedder.scaleout import RayWorkers

            opts = options(self.settings, limit=None, device=None, batch=None, on_ray=True)
            self._workers = RayWorkers(self.settings, opts, ray_options(self.settings))
        return self._workers

    def report(self) -> dict[str, Any]:
        from hubdelta.report.api import run_report, summary

        return summary(run_report(self.settings, command=f"{COMMAND}: report"))

    def compact(self) -> dict[str, Any]:
        from hubdelta.index.door import open_writer

        with open_writer(self.settings, f"{COMMAND}: compact") as index:
            return {"compacted": index.maintenance.maybe_compact(), "ann": index.vectors.maintain_ann(),
                    "key_indexes": index.maintenance.key_indexes()}  # fmt: skip

    # ---- running them ----

    def stop(self, *_: object) -> None:
        """Stop scheduling; the running job ends at its next safe point. Safe from a signal handler."""
        self.runner.stop()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or :meth:`stop`). Returns the exit code.

        Raises:
            DaemonRunningError: another daemon runs on this home (refused before anything is written).
        """
        lock = DaemonLock(self.settings.home).acquire()
        previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        web = WebChild(self.settings) if self.settings.serve.enabled else None
        if web is not None:
            web.start()
        try:
            code = self.runner.serve()
        except BaseException:
            lock.release()
            raise
        finally:
            if web is not None:
                web.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if code == 0:
            if self._workers is not None:
                self._workers.close()
            lock.release()
        # else a job overran the stop timeout and still runs (and writes daemon.json when it ends): the caller
        # exits at once, and the kernel releases the lock with the process, never before that job is gone.
        return code
