"""The one shape of every embedding run: claim → compute → commit → count.

- **claim**: the ledger marks a chunk's rows as being embedded (the activation queue counts the attempt there).
- **compute**: each model is fetched and run on the resident base (:func:`compute_chunk`); a bad model becomes
  its :class:`~hubdelta.embedder.plan.Failure`, never the chunk's.
- **commit**: the ledger writes the chunk's vectors, then its statuses. A run killed in between leaves vectors
  that the next run reuses without recomputing: the key is (repo_id, sha, space), so nothing is embedded twice.
- **count**: each outcome is counted (:class:`RunCounts`), logged (``<events>.model``) and given to progress.

Who uses it: ``hubdelta embed`` in this process (:mod:`~hubdelta.embedder.worker`: :meth:`Run.chunks`) and on Ray
(:mod:`~hubdelta.embedder.scaleout`: the workers compute, the driver claims and commits as batches return),
``hubdelta add`` (a local folder: compute, commit, count; nothing queued, so nothing to claim), and family runs
(:mod:`~hubdelta.embedder.family_run`). ``hubdelta task`` only reads the index, so it takes the compute step
alone (:mod:`~hubdelta.embedder.delta_path`).

Where the rows live is the ledger's business (:class:`Ledger`): an activation space (``models`` and
``emb_<space>``: :class:`~hubdelta.embedder.ledger.SpaceLedger`) or a family space (``space_members``:
:class:`~hubdelta.embedder.family_run.MemberLedger`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import structlog

from hubdelta.embedder import hub_retry, plan
from hubdelta.embedder.copies import CopyRegistry, Fingerprint
from hubdelta.embedder.disk import disk_ledger
from hubdelta.embedder.fetch import FetchedModel, fetch, release
from hubdelta.embedder.plan import Failure
from hubdelta.embedder.safety import Limits
from hubdelta.embedder.safety_records import BaseInfo, RepoKind
from hubdelta.embedder.vetting import activations_problem
from hubdelta.index.records import ModelRecord
from hubdelta.kernel.errors import ConfigError, one_line
from hubdelta.kernel.settings import Settings

log = structlog.get_logger(__name__)
T = TypeVar("T")

Progress = Callable[[str, ModelRecord], None]  # (outcome, record) after each model
Fetch = Callable[[str, str], FetchedModel]  # (repo id, revision) -> its verified download


@dataclass(frozen=True)
class Outcome:
    """What became of one model in a run."""

    record: ModelRecord  # as written (an activation space) or as read (a family space)
    outcome: str  # embedded, copied, reused, skipped, unchanged, queued (to be retried) or failed
    reason: str = ""

    @classmethod
    def of(cls, record: ModelRecord) -> Outcome:
        """The outcome a model's status says."""
        return cls(record, record.status.value, record.reason)


@dataclass
class RunCounts:
    """What a run did, counted as it commits."""

    embedded: int = 0
    reused: int = 0  # a vector for the same (repo, sha, space) was already stored
    failed: int = 0
    skipped: int = 0
    requeued: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (repo id, or a base that failed, why)
    stopped: bool = False  # should_stop ended the run early
    unchanged: int = 0  # no change from base (hubdelta.embedder.vetting): no vector, hidden from queries
    bases_failed: int = 0  # bases that could not be fetched, loaded or run (or a bad [embed] option)
    copied: int = 0  # copies found before download: the vector of the model with the same weight files

    def add(self, o: Outcome) -> None:
        """Count one model's outcome."""
        if o.outcome == "embedded":
            self.embedded += 1
        elif o.outcome == "reused":
            self.reused += 1
        elif o.outcome == "skipped":
            self.skipped += 1
        elif o.outcome == "queued":
            self.requeued += 1
        elif o.outcome == "unchanged":
            self.unchanged += 1
        elif o.outcome == "copied":
            self.copied += 1
        else:
            self.failed += 1
            self.failures.append((o.record.repo_id, o.reason))


@dataclass
class ChunkOutput:
    """What computing one chunk on a resident base produced: plain arrays, so it can cross processes."""

    # repo -> (sha, its array on the base: (P, C) activations, or a meaning profile)
    arrays: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # repo -> a line its embedded record keeps as its reason
    # repo -> (sha, the model it is a copy of, that model's revision with these files): found from its listing,
    # nothing downloaded; its vector is the other's at that revision
    copies: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    prints: dict[str, Fingerprint] = field(default_factory=dict)  # repo -> its fingerprint, where the listing gave one

    @classmethod
    def merged(cls, outputs: Iterable[ChunkOutput]) -> ChunkOutput:
        """Several chunks' outputs as one (their models are distinct), to be committed together."""
        out = cls()
        for o in outputs:
            out.arrays.update(o.arrays)
            out.failures.update(o.failures)
            out.notes.update(o.notes)
            out.copies.update(o.copies)
            out.prints.update(o.prints)
        return out

    def only(self, repo_id: str) -> ChunkOutput:
        """What this output says about ``repo_id`` alone."""

        def mine(d: Mapping[str, T]) -> dict[str, T]:
            return {k: v for k, v in d.items() if k == repo_id}

        return ChunkOutput(mine(self.arrays), mine(self.failures), mine(self.notes), mine(self.copies),
                           mine(self.prints))  # fmt: skip


class Runner(Protocol):
    """Runs downloaded models on a resident base: adapters several per forward, full models one at a time."""

    def adapters(self, folders: Mapping[str, Path]) -> dict[str, np.ndarray]: ...

    def model(self, folder: Path, item: str) -> np.ndarray: ...


class Ledger(Protocol):
    """Where a run's rows live: the claim before computing, the commit after."""

    def claim(self, records: Sequence[ModelRecord]) -> list[ModelRecord]: ...

    def commit(self, claimed: Sequence[ModelRecord], out: ChunkOutput) -> list[Outcome]: ...


def fetcher(settings: Settings, limits: Limits, base: BaseInfo, copies: CopyRegistry | None = None) -> Fetch:
    """Fetch a model repo at a revision, safely, against ``base`` (see :func:`~hubdelta.embedder.fetch.fetch`).
    The cache's disk use is walked afresh at the first download (another process may have changed it). Plain
    data only, the retry policy included: it runs as well in a download process as on a thread."""
    disk_ledger(settings.cache_dir / "hub").rescan()
    return functools.partial(fetch, endpoint=settings.hf_endpoint, token=settings.hf_token,
                             cache_dir=settings.cache_dir / "hub", limits=limits, base=base,
                             backoff=hub_retry.DEFAULT_BACKOFF, copies=copies)  # fmt: skip


def revisions(records: Iterable[ModelRecord]) -> list[tuple[str, str]]:
    """(repo id, revision) of each record: the sha the crawler saw, ``main`` where the Hub gave none."""
    return [(r.repo_id, r.model.sha or "main") for r in records]


def compute_chunk(runner: Runner, items: Sequence[tuple[str, str]], fetch_one: Fetch) -> ChunkOutput:
    """Fetch ``items`` (repo id, revision) one after another and run them on ``runner``'s base (a Ray worker's
    chunk: it touches no index). ``hubdelta embed`` fetches ahead instead (:mod:`~hubdelta.embedder.pipeline`)."""
    fetched: dict[str, FetchedModel] = {}
    failures: dict[str, Failure] = {}
    for repo_id, sha in items:
        try:
            fetched[repo_id] = fetch_one(repo_id, sha)
        except Exception as e:
            failures[repo_id] = Failure.of(e)
    return run_fetched(runner, fetched, failures)


def run_fetched(runner: Runner, fetched: Mapping[str, FetchedModel],
                failures: Mapping[str, Failure] | None = None) -> ChunkOutput:  # fmt: skip
    """Run downloaded models on ``runner``'s base; ``failures`` are the chunk's models that could not be fetched.

    A bad model never stops the chunk: its exception becomes its :class:`Failure`. One bad adapter spoils a
    batched forward, so after a failed batch the adapters run one at a time to find it. Full models run one at a
    time, and their downloaded weights are deleted after.
    """
    out = ChunkOutput(failures=dict(failures or {}))
    out.copies = {k: (f.sha, f.copy_of, f.copy_of_sha or "") for k, f in fetched.items() if f.copy_of is not None}
    out.prints = {k: f.fingerprint for k, f in fetched.items() if f.fingerprint is not None}
    fetched = {k: f for k, f in fetched.items() if f.copy_of is None}  # a copy has no files: nothing to run
    adapters = {k: f.path for k, f in fetched.items() if f.kind == RepoKind.ADAPTER}
    arrays: dict[str, np.ndarray] = {}
    try:
        arrays.update(runner.adapters(adapters))
    except Exception:
        for k, path in adapters.items():
            try:
                arrays.update(runner.adapters({k: path}))
            except Exception as e:
                out.failures[k] = Failure.of(e)
    for k in list(arrays):
        _vet(out, arrays, k, adapters[k])
    for k, f in fetched.items():
        if f.kind != RepoKind.ADAPTER:
            try:
                arrays[k] = runner.model(f.path, k)
                _vet(out, arrays, k, f.path)  # before release(): the reason names the weight file at fault
            except Exception as e:
                out.failures[k] = Failure.of(e)
            finally:
                release(f)
    out.arrays = {k: (fetched[k].sha, a) for k, a in arrays.items()}
    out.notes = {k: mirror_note(f.declared_base) for k, f in fetched.items() if f.declared_base and k in arrays}
    out.notes.update({k: copy_note(original) for k, (_, original, _) in out.copies.items()})
    return out


def copy_note(original: str) -> str:
    """What a copy found before download keeps on its record (``show`` prints it)."""
    return f"a copy of {original}: the same weight files (sha256), not downloaded; its vector reused"


def mirror_note(declared: str) -> str:
    """What an embedded adapter that names a mirror of the tracked base keeps on its record (``show`` prints it)."""
    return f"adapter_config.json names {declared}, a mirror of the tracked base (its shapes fit)"


def _vet(out: ChunkOutput, arrays: dict[str, np.ndarray], key: str, folder: Path) -> None:
    """Move ``key``'s activations to the failures when they are not finite (one NaN spoils a whole write)."""
    problem = activations_problem(arrays[key], folder)
    if problem is not None:
        del arrays[key]
        out.failures[key] = Failure(problem)


def _commit_alone(ledger: Ledger, record: ModelRecord, out: ChunkOutput) -> list[Outcome]:
    """Commit one model of a chunk whose write failed; if its own write fails too, it fails with the store's why."""
    mine = out.only(record.repo_id)
    try:
        return ledger.commit([record], mine)
    except Exception as e:
        why = Failure(f"its result could not be stored: {one_line(e)}")
        return ledger.commit([record], ChunkOutput(failures={record.repo_id: why}))


class Run:
    """One run's bookkeeping: claim → compute → commit → count over ledgers, outcomes counted and reported.

    Args:
        events: the log events' prefix: ``<events>.model`` after each model, ``<events>.base_failed``.
        context: fields added to those events (e.g. the family).
        progress: called after each model with (outcome, record).
        should_stop: asked between chunks and bases (a daemon's shutdown): True ends the run, leaving the rest.
    """

    def __init__(
        self,
        *,
        events: str = "embed",
        context: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.counts = RunCounts()
        self.events = events
        self.context = dict(context or {})
        self.progress = progress
        self._should_stop = should_stop

    def stopping(self) -> bool:
        """Whether the run was asked to stop (remembered in ``counts.stopped``)."""
        if not self.counts.stopped and self._should_stop():
            self.counts.stopped = True
        return self.counts.stopped

    def chunks(self, ledger: Ledger, records: Sequence[ModelRecord], size: int,
               compute: Callable[[Sequence[ModelRecord]], ChunkOutput]) -> None:  # fmt: skip
        """:meth:`step` over ``records`` in chunks of ``size``, until done or asked to stop.

        The stop is checked between chunks: what is claimed is finished, the rest stays as it was.
        """
        for chunk in plan.chunks(records, size):
            if self.stopping():
                return
            self.step(ledger, chunk, compute)

    def step(self, ledger: Ledger, chunk: Sequence[ModelRecord],
             compute: Callable[[Sequence[ModelRecord]], ChunkOutput]) -> None:  # fmt: skip
        """Claim ``chunk``, compute it, commit it, count it. Claimed rows always end settled, never ``embedding``."""
        claimed = ledger.claim(chunk)
        try:
            out = compute(claimed)
        except Exception as e:  # compute_chunk contains each model's failure: this is the chunk's own
            why = Failure(f"its chunk could not be computed: {one_line(e)}", transient=True)
            out = ChunkOutput(failures={r.repo_id: why for r in claimed})
        self.commit(ledger, claimed, out)

    def commit(self, ledger: Ledger, claimed: Sequence[ModelRecord], out: ChunkOutput) -> list[Outcome]:
        """Commit a computed chunk (vectors, then statuses), count its outcomes and return them.

        A write the store refuses is retried model by model, so one model's bad row fails that model alone.
        """
        try:
            outcomes = ledger.commit(claimed, out)
        except Exception as e:
            log.warning(f"{self.events}.commit_failed", **self.context, error=one_line(e), models=len(claimed))
            outcomes = [o for r in claimed for o in _commit_alone(ledger, r, out)]
        self.record(outcomes)
        return outcomes

    def record(self, outcomes: Iterable[Outcome]) -> None:
        """Count, log and report outcomes already written."""
        for o in outcomes:
            self.counts.add(o)
            log.info(f"{self.events}.model", **self.context, repo=o.record.repo_id, outcome=o.outcome,
                     reason=o.reason or None)  # fmt: skip
            if self.progress is not None:
                self.progress(o.outcome, o.record)

    def base_failed(self, base: str, error: BaseException | str) -> None:
        """A base that could not be fetched, loaded or run: listed in the failures; its models are not counted."""
        why = error if isinstance(error, str) else one_line(error)
        self.counts.bases_failed += 1
        what = "not embedded" if isinstance(error, ConfigError) else "base not loaded"  # a setting, not the base
        self.counts.failures.append((base, f"{what}: {why}"))
        log.warning(f"{self.events}.base_failed", **self.context, base=base, error=why)

    @contextmanager
    def guard(self, base: str, settle: Callable[[Failure], Sequence[Outcome]] | None = None) -> Iterator[None]:
        """Run one base's share: its failure (unreachable, refused, unloadable) is recorded and other bases go on.

        Args:
            settle: given the failure a final answer about the base leaves on its models
                (:func:`hubdelta.embedder.plan.base_failure`), writes it on those still queued; their outcomes are
                counted. Without it (or for a passing failure) they stay queued for the next run.
        """
        try:
            yield
        except Exception as e:
            self.base_failed(base, e)
            final = plan.base_failure(base, e)
            if final is not None and settle is not None:
                self.record(settle(final))
