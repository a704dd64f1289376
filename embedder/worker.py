"""``hubdelta embed``: turn queued models into vectors, one resident base per space, the index the only writer.

Order of writes, for a worker that may be killed anywhere: a chunk's rows are claimed (``embedding``), its
vectors are committed, then its statuses. A rerun re-claims rows left ``embedding`` and finds their vectors
already stored at the same sha, so nothing is embedded twice and nothing is lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import structlog
import torch

from hubdelta.embedder import plan
from hubdelta.embedder.activations import ResidentBase, space_for
from hubdelta.embedder.delta import delta_vector
from hubdelta.embedder.fetch import FetchedModel, fetch, release
from hubdelta.embedder.local import base_info_from_folder
from hubdelta.embedder.plan import Failure
from hubdelta.embedder.safety import Limits
from hubdelta.embedder.safety_records import BaseInfo, RepoKind
from hubdelta.embedder.space import Space
from hubdelta.index.embeddings import Embedding, SpaceRow
from hubdelta.index.records import ModelRecord, ModelStatus
from hubdelta.index.store import Index
from hubdelta.kernel.errors import one_line
from hubdelta.kernel.settings import Settings

log = structlog.get_logger(__name__)

BASE_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.jinja", "*.model", "*.txt"]
Progress = Callable[[str, ModelRecord], None]  # (outcome, record) after each model


@dataclass(frozen=True)
class EmbedOptions:
    """How to embed: parsed once from settings and flags."""

    batch: int = 8
    device: str = "cpu"
    dtype: str = "float32"
    layer: str | None = None  # None = final layer (after the final norm)
    position: str = "last"
    limit: int | None = None
    max_attempts: int = 3


@dataclass
class EmbedSummary:
    """What one run did."""

    embedded: int = 0
    reused: int = 0  # a vector for the same (repo, sha, space) already existed
    failed: int = 0
    skipped: int = 0
    requeued: int = 0
    spaces: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    stopped: bool = False  # should_stop ended the run early
    workers: int = 0  # Ray workers that took part (0: this process embedded)
    worker_deaths: int = 0  # Ray workers lost mid-run; their batches went to another worker


def download_base(
    settings: Settings, base: str, *, revision: str | None = None, patterns: Sequence[str] = BASE_FILES
) -> tuple[Path, str]:
    """A base repo's files at ``revision`` (default: its current one), in ``<cache>/hub``: (folder, sha).

    Raises:
        huggingface_hub's errors: the repo does not exist, is gated, or the Hub cannot be reached.
    """
    from huggingface_hub import HfApi, snapshot_download

    token = settings.hf_token or False
    sha = revision or HfApi(endpoint=settings.hf_endpoint, token=token).model_info(base, timeout=30).sha
    assert sha is not None, base
    folder = snapshot_download(base, revision=sha, allow_patterns=list(patterns), cache_dir=settings.cache_dir / "hub",
                               endpoint=settings.hf_endpoint, token=token)  # fmt: skip
    return Path(folder), sha


@dataclass
class ChunkOutput:
    """What embedding one chunk on a resident base produced: plain arrays, so it can cross processes."""

    activations: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)  # repo -> (sha, (P, C) fp32)
    failures: dict[str, Failure] = field(default_factory=dict)


def embed_chunk(rb: ResidentBase, items: Sequence[tuple[str, str]], *, settings: Settings, limits: Limits,
                info: BaseInfo) -> ChunkOutput:  # fmt: skip
    """Fetch and run ``items`` (repo id, revision) on ``rb``. Touches no index: a Ray worker runs it too.

    A bad model never stops the chunk: its exception becomes its :class:`Failure`.
    """
    out = ChunkOutput()
    fetched: dict[str, FetchedModel] = {}
    for repo_id, sha in items:
        try:
            fetched[repo_id] = fetch(repo_id, sha, endpoint=settings.hf_endpoint, token=settings.hf_token,
                                     cache_dir=settings.cache_dir / "hub", limits=limits, base=info)  # fmt: skip
        except Exception as e:
            out.failures[repo_id] = Failure.of(e)
    adapters = {k: f.path for k, f in fetched.items() if f.kind == RepoKind.ADAPTER}
    acts: dict[str, torch.Tensor] = {}
    try:
        acts.update(rb.adapter_activations(adapters))
    except Exception:  # one bad adapter spoils the batch: find it by running them one at a time
        for k, path in adapters.items():
            try:
                acts.update(rb.adapter_activations({k: path}))
            except Exception as e:
                out.failures[k] = Failure.of(e)
    for k, f in fetched.items():
        if f.kind != RepoKind.ADAPTER:
            try:
                acts[k] = rb.model_activations(f.path, item=k)
            except Exception as e:
                out.failures[k] = Failure.of(e)
            finally:
                release(f)  # full weights are deleted from the cache after use
    out.activations = {k: (fetched[k].sha, a.numpy()) for k, a in acts.items()}
    return out


def select_queued(index: Index, opts: EmbedOptions, summary: EmbedSummary, *, only: Sequence[str] | None,
                  extra_bases: Sequence[str]) -> dict[str, list[ModelRecord]]:  # fmt: skip
    """The claimable models (up to ``opts.limit``) grouped by base; models with no tracked base fail here."""
    where = "status IN ('queued', 'embedding')"
    if only is not None:
        where += f" AND {index.in_list('repo_id', only)}" if only else " AND false"
    todo = plan.claimable(index.select_models(where).values())[: opts.limit]
    groups, orphans = plan.group_by_base(todo, [*(t.base for t in index.tracked()), *extra_bases])
    index.put_models([plan.failed(r, "none of its base models is tracked", transient=False, max_attempts=0)
                      for r in orphans])  # fmt: skip
    summary.failed += len(orphans)
    return groups


class _Run:
    """One base's share of an embedding run: the resident base, its space and the index."""

    def __init__(self, index: Index, settings: Settings, opts: EmbedOptions, summary: EmbedSummary,
                 should_stop: Callable[[], bool] = lambda: False) -> None:  # fmt: skip
        self.index, self.settings, self.opts, self.summary = index, settings, opts, summary
        self.should_stop = should_stop
        self.limits = Limits.from_embed_settings(settings.embed)

    def base_folder(self, base: str) -> tuple[Path, str]:
        return download_base(self.settings, base)

    def space(self, rb: ResidentBase) -> SpaceRow:
        """The space's row, with base activations computed once per space and cached in the index."""
        return self.space_row(rb.space, lambda: rb.base_activations().numpy())

    def space_row(self, space: Space, base_activations: Callable[[], np.ndarray]) -> SpaceRow:
        """The stored row of ``space``, or a new one with ``base_activations()``: every vector uses the stored one."""
        stored = self.index.spaces().get(space.id)
        if stored is not None:
            return stored
        row = SpaceRow(space.id, space.to_dict(), base_activations(), datetime.now(UTC))
        self.index.put_space(row)
        return row

    def embed_base(self, base: str, records: Sequence[ModelRecord], progress: Progress | None) -> None:
        base_dir, sha = self.base_folder(base)
        info = base_info_from_folder(base_dir, base)
        space = space_for(base_dir, base, sha, layer=self.opts.layer, position=self.opts.position,
                          dtype=self.opts.dtype)  # fmt: skip
        with ResidentBase(base_dir, space, device=self.opts.device) as rb:
            row = self.space(rb)
            self.summary.spaces.append(space.id)
            todo = self.reuse(space, records, progress)
            for chunk in plan.chunks(todo, self.opts.batch):
                if self.should_stop():  # between chunks: what is claimed is finished, the rest stays queued
                    self.summary.stopped = True
                    break
                self._chunk(rb, space, row, info, chunk, progress)

    def reuse(self, space: Space, records: Sequence[ModelRecord], progress: Progress | None) -> list[ModelRecord]:
        """Mark models whose vector is already stored at their sha (a killed run's work); return the rest."""
        stored = self.index.get_embeddings(space.id, [r.repo_id for r in records])
        done = [plan.embedded(r) for r in records if r.repo_id in stored and stored[r.repo_id].sha == r.model.sha]
        self.index.put_models(done)
        self.summary.reused += len(done)
        for r in done:
            _report(progress, "reused", r)
        ids = {r.repo_id for r in done}
        return [r for r in records if r.repo_id not in ids]

    def _chunk(self, rb: ResidentBase, space: Space, row: SpaceRow, info: BaseInfo,
               chunk: list[ModelRecord], progress: Progress | None) -> None:  # fmt: skip
        claimed = plan.claim(chunk)
        self.index.put_models(claimed)
        items = [(r.repo_id, r.model.sha or "main") for r in claimed]
        out = embed_chunk(rb, items, settings=self.settings, limits=self.limits, info=info)
        self.commit(space.id, row, claimed, out, progress)

    def commit(self, space_id: str, row: SpaceRow, claimed: Sequence[ModelRecord], out: ChunkOutput,
               progress: Progress | None) -> None:  # fmt: skip
        """Record a chunk's results: its vectors first (a kill then leaves them to be reused), then its statuses."""
        now = datetime.now(UTC)
        # torch.tensor copies: arrays from a Ray worker are read-only views of its object store
        base = torch.tensor(row.base_activations)
        vectors = [Embedding(k, sha, delta_vector(torch.tensor(a), base).numpy(), now)
                   for k, (sha, a) in out.activations.items()]  # fmt: skip
        self.index.put_embeddings(space_id, vectors)
        missing = Failure("the worker returned no activations for it", transient=True)
        outcomes = [plan.embedded(r) if r.repo_id in out.activations
                    else plan.settle(r, out.failures.get(r.repo_id, missing), max_attempts=self.opts.max_attempts)
                    for r in claimed]  # fmt: skip
        self.index.put_models(outcomes)
        for r in outcomes:
            self.count(r, progress)

    def count(self, r: ModelRecord, progress: Progress | None) -> None:
        """Add ``r``'s outcome to the summary and report it."""
        if r.status == ModelStatus.EMBEDDED:
            self.summary.embedded += 1
        elif r.status == ModelStatus.SKIPPED:
            self.summary.skipped += 1
        elif r.status == ModelStatus.QUEUED:
            self.summary.requeued += 1
        else:
            self.summary.failed += 1
            self.summary.failures.append((r.repo_id, r.reason))
        _report(progress, r.status.value, r)


def _report(progress: Progress | None, outcome: str, record: ModelRecord) -> None:
    log.info("embed.model", repo=record.repo_id, outcome=outcome, reason=record.reason or None)
    if progress is not None:
        progress(outcome, record)


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
    that cannot be loaded leaves its models queued and is reported in ``failures``.

    Args:
        only: embed only these repo ids (if queued), e.g. one model asked for by ``similar --embed``.
        extra_bases: bases to embed against as if tracked (the base of such a model may not be).
        should_stop: asked before each chunk (a daemon's shutdown): True ends the run, leaving the rest queued.
    """
    started = time.perf_counter()
    summary = EmbedSummary()
    groups = select_queued(index, opts, summary, only=only, extra_bases=extra_bases)
    run = _Run(index, settings, opts, summary, should_stop)
    for base, records in groups.items():
        if should_stop():
            summary.stopped = True
            break
        try:
            run.embed_base(base, records, progress)
        except Exception as e:  # the base itself: unreachable, refused or unloadable; other bases go on
            summary.failures.append((base, f"base not loaded: {one_line(e)}"))
            log.warning("embed.base_failed", base=base, error=one_line(e))
    summary.seconds = round(time.perf_counter() - started, 2)
    return summary
