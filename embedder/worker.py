"""``hubdelta embed`` in this process: queued models into vectors, one resident base per space.

A :class:`~hubdelta.embedder.run.Run` over each base's :class:`~hubdelta.embedder.ledger.SpaceLedger`: a chunk's
rows are claimed (``embedding``), computed on the resident base, its vectors committed, then its statuses. A
rerun re-claims rows left ``embedding`` and finds their vectors already stored at the same sha, so nothing is
embedded twice and nothing is lost, however the worker is killed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial

from hubdelta.embedder import plan
from hubdelta.embedder.bases import download_base, space_for
from hubdelta.embedder.copies import CopyRegistry
from hubdelta.embedder.ledger import EmbedSummary, SpaceLedger, select_queued
from hubdelta.embedder.local import base_info_from_folder
from hubdelta.embedder.options import EmbedOptions
from hubdelta.embedder.pipeline import Pipeline, Timings, run_order
from hubdelta.embedder.plan import Failure
from hubdelta.embedder.run import Outcome, Progress, Run, fetcher
from hubdelta.embedder.safety import Limits
from hubdelta.index.records import ModelRecord, ModelStatus
from hubdelta.index.selectors import by_ids, by_status
from hubdelta.index.store import Index
from hubdelta.kernel.collector import frozen_gc, paused_gc
from hubdelta.kernel.errors import ConfigError
from hubdelta.kernel.settings import Settings


def embed_queued(
    index: Index,
    settings: Settings,
    opts: EmbedOptions,
    progress: Progress | None = None,
    *,
    only: Sequence[str] | None = None,
    extra_bases: Sequence[str] = (),
    should_stop: Callable[[], bool] = lambda: False,
) -> EmbedSummary:
    """Embed the queued models of every tracked base (up to ``opts.limit``).

    Failures of one model (refused, broken, unreachable) become its status and reason; the run goes on. A base
    that cannot be loaded is reported in ``failures``; its models stay queued, unless the Hub's answer about the
    base is final (not found, gated, over a bound: :func:`hubdelta.embedder.plan.base_failure`), which fails them.

    Args:
        only: embed only these repo ids (if queued), e.g. one model asked for by ``similar --embed``.
        extra_bases: bases to embed against as if tracked (the base of such a model may not be).
        should_stop: asked before each base and chunk (a daemon's shutdown): True ends the run, leaving the rest
            queued.
    """
    started = time.perf_counter()
    run, timings = Run(progress=progress, should_stop=should_stop), Timings()
    groups = select_queued(index, opts, run.counts, only=only, extra_bases=extra_bases)
    spaces: list[str] = []
    for base, records in groups.items():
        if run.stopping():
            break
        settle = partial(_settle_queued, index, records, max_attempts=opts.max_attempts)
        with run.guard(base, settle):  # the base itself: unreachable, refused or unloadable; other bases go on
            _embed_base(run, index, settings, opts, base, records, spaces, timings)
    return EmbedSummary.of(run.counts, spaces=spaces, seconds=round(time.perf_counter() - started, 2),
                           timings=timings.to_dict())  # fmt: skip


def _settle_queued(index: Index, records: Sequence[ModelRecord], failure: Failure, *,
                   max_attempts: int) -> list[Outcome]:  # fmt: skip
    """Write a base's final failure on those of ``records`` still waiting: queued, or left ``embedding`` by a dead
    run (a base fails before anything of this run is claimed)."""
    waiting = by_status(ModelStatus.QUEUED, ModelStatus.EMBEDDING)
    still = index.models.select(by_ids([r.repo_id for r in records]) & waiting).values()
    settled = [plan.settle(r, failure, max_attempts=max_attempts) for r in still]
    index.models.put(settled)
    return [Outcome.of(r) for r in settled]


def _embed_base(run: Run, index: Index, settings: Settings, opts: EmbedOptions, base: str,
                records: Sequence[ModelRecord], spaces: list[str], timings: Timings) -> None:  # fmt: skip
    """One base's share of the run: its space, the models already embedded there, then the rest, pipelined: their
    downloads start before the base is loaded (:mod:`~hubdelta.embedder.pipeline`)."""
    with timings.timed("base_s"):
        base_dir, sha = download_base(settings, base)
        info = base_info_from_folder(base_dir, base)
    try:
        space = space_for(base_dir, base, sha, layer=opts.layer, position=opts.position, dtype=opts.dtype)
    except ValueError as e:  # an [embed] option that does not fit this base: the run's error, no model's
        raise ConfigError("[embed] layer/position/dtype", str(e), fix="fix it in hubdelta.toml") from e
    ledger = SpaceLedger(index, space, max_attempts=opts.max_attempts)
    reused, todo = ledger.reuse(records)
    run.record(reused)
    with Pipeline(run, ledger, opts, timings) as pipeline:
        copies = CopyRegistry(run_order(todo, opts.batch), ledger.known_copies())  # one download a fingerprint
        fetch_one = fetcher(settings, Limits.from_embed_settings(settings.embed), info, copies)
        pipeline.start(todo, fetch_one, settings.cache_dir / "hub")
        with paused_gc():
            # torch and transformers only now: their import (2-3 s on a CPU box) runs beside the first downloads.
            from hubdelta.embedder.activations import ResidentBase
            from hubdelta.embedder.delta_path import Activations
            from hubdelta.embedder.lanes import lanes_for

            with timings.timed("base_s"):
                rb = ResidentBase(base_dir, space, device=opts.device, prepack=opts.prepack)
        with rb, frozen_gc(), lanes_for(rb.device, opts.lanes) as lanes:
            with timings.timed("base_s"):
                ledger.base(lambda: rb.base_activations().numpy())
            spaces.append(space.id)
            pipeline.go(Activations(rb), lanes)
