"""An activation space's rows in the index: the queue a run takes models from, and what it writes back.

Statuses live in ``models`` and vectors in ``emb_<space>``. :class:`SpaceLedger` is the
:class:`~hubdelta.embedder.run.Ledger` of one activation space: a claim marks rows ``embedding`` (attempts + 1),
a commit writes the chunk's vectors, then its statuses. A run killed anywhere leaves rows ``embedding``; the next
run re-claims them (:func:`select_queued`), finds their vectors stored at the same sha (:meth:`SpaceLedger.reuse`)
and marks them embedded without recomputing. Key: (repo_id, sha, space).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from hubdelta.embedder import plan
from hubdelta.embedder.options import EmbedOptions
from hubdelta.embedder.plan import Failure
from hubdelta.embedder.run import ChunkOutput, Outcome, RunCounts
from hubdelta.embedder.space import Space
from hubdelta.embedder.vetting import base_scale, check_vector
from hubdelta.index.copies import CopyRow
from hubdelta.index.embeddings import Embedding, SpaceRow
from hubdelta.index.records import ModelRecord, ModelStatus
from hubdelta.index.selectors import by_ids, by_status
from hubdelta.index.store import Index


@dataclass
class EmbedSummary:
    """What one ``hubdelta embed`` run did (its ``--json`` document)."""

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
    unchanged: int = 0  # no change from base: no vector, hidden from queries (status unchanged)
    bases_failed: int = 0  # bases that could not be fetched, loaded or run, or a bad [embed] option
    exit_code: int = 0  # the command's exit status: see run_exit_code
    timings: dict[str, float] = field(default_factory=dict)  # where the seconds went (embedder.pipeline.Timings)
    copied: int = 0  # copies found before download (same weight files as a model embedded): vector reused

    @classmethod
    def of(cls, counts: RunCounts, *, spaces: Sequence[str], seconds: float, workers: int = 0,
           worker_deaths: int = 0, timings: dict[str, float] | None = None) -> EmbedSummary:  # fmt: skip
        """The summary of a run that counted ``counts``."""
        return cls(counts.embedded, counts.reused, counts.failed, counts.skipped, counts.requeued, list(spaces),
                   list(counts.failures), seconds, counts.stopped, workers, worker_deaths, counts.unchanged,
                   counts.bases_failed, run_exit_code(counts), dict(timings or {}), counts.copied)  # fmt: skip


def run_exit_code(counts: RunCounts) -> int:
    """THE exit rule of an embed run: 1 when a base failed (unloadable, or a bad ``[embed]`` option), or when
    models failed and none got a result (embedded, reused or found unchanged); else 0.

    So a run that is all errors never ends in success, while one bad model among good ones is only reported.
    """
    if counts.bases_failed:
        return 1
    settled = counts.embedded + counts.reused + counts.unchanged + counts.copied
    return 1 if (counts.failed or counts.requeued) and not settled else 0


def select_queued(index: Index, opts: EmbedOptions, counts: RunCounts, *, only: Sequence[str] | None,
                  extra_bases: Sequence[str]) -> dict[str, list[ModelRecord]]:  # fmt: skip
    """The claimable models (up to ``opts.limit``) grouped by base; models with no tracked base fail here."""
    where = by_status(ModelStatus.QUEUED, ModelStatus.EMBEDDING)
    if only is not None:
        where &= by_ids(only)  # an empty list selects nothing
    todo = plan.claimable(index.models.select(where).values())[: opts.limit]
    groups, orphans = plan.group_by_base(todo, [*(t.base for t in index.tracked.all()), *extra_bases])
    index.models.put([plan.failed(r, "none of its base models is tracked", transient=False, max_attempts=0)
                      for r in orphans])  # fmt: skip
    counts.failed += len(orphans)
    return groups


class SpaceLedger:
    """One activation space's rows: models' statuses in ``models``, their vectors in ``emb_<space>``.

    Args:
        index: the index, open for writing.
        space: the space.
        max_attempts: how many times network trouble is retried before a model fails.
    """

    def __init__(self, index: Index, space: Space, *, max_attempts: int) -> None:
        self.index, self.space, self.max_attempts = index, space, max_attempts
        self.row: SpaceRow | None = index.vectors.spaces().get(space.id)

    def base(self, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The space's stored base activations, ``(P, C)``: every vector subtracts these. A new space stores
        ``compute()``, so base activations are computed once per space."""
        if self.row is None:
            self.row = SpaceRow(self.space.id, self.space.to_dict(), compute(), datetime.now(UTC))
            self.index.vectors.put_space(self.row)
        return self.row.base_activations

    def reuse(self, records: Sequence[ModelRecord]) -> tuple[list[Outcome], list[ModelRecord]]:
        """Settle what needs no compute: (their outcomes, the rest to claim).

        Models whose vector is already stored at their sha (a killed run's work) are embedded; then a row a dead
        run left ``embedding`` after ``max_attempts`` claims fails (:func:`hubdelta.embedder.plan.capped`), so a
        model that kills its worker cannot crash-loop it — and one whose vector was stored before the kill is
        never failed by the cap.
        """
        stored = self.index.vectors.get(self.space.id, [r.repo_id for r in records])
        done = [plan.embedded(r) for r in records if r.repo_id in stored and stored[r.repo_id].sha == r.model.sha]
        ids = {r.repo_id for r in done}
        rest, dead = plan.capped([r for r in records if r.repo_id not in ids], self.max_attempts)
        self.index.models.put(done + dead)
        return [Outcome(r, "reused") for r in done] + [Outcome.of(r) for r in dead], rest

    def claim(self, records: Sequence[ModelRecord]) -> list[ModelRecord]:
        """Mark ``records`` as being embedded, counting the attempt."""
        claimed = plan.claim(records)
        self.index.models.put(claimed)
        return claimed

    def known_copies(self) -> dict[str, tuple[str, str]]:
        """fingerprint -> (the model embedded in this space with it, its sha): a run downloads none of these again."""
        return self.index.copies.known(self.space.id)

    def commit(self, claimed: Sequence[ModelRecord], out: ChunkOutput) -> list[Outcome]:
        """Record a chunk's results: fingerprints, then vectors (a kill then leaves them to be reused), then
        statuses. A copy found before download gets its original's vector (:func:`resolve_copies`).

        A claimed model the chunk says nothing about (a worker lost it) is retried like network trouble.
        """
        from hubdelta.embedder.delta_path import vector  # torch: not imported before a run's downloads start

        assert self.row is not None, f"no base activations for {self.space.id}: call base() first"
        now = datetime.now(UTC)
        base = self.row.base_activations
        failures, unchanged, vectors = dict(out.failures), {}, {}
        scale = base_scale(base)
        for k, (sha, a) in out.arrays.items():  # every vector is checked before the write: one NaN spoils it
            v = vector(a, base)
            verdict = check_vector(v, scale)
            if verdict.kind == "ok":
                vectors[k] = Embedding(k, sha, v, now)
            elif verdict.kind == "unchanged":
                unchanged[k] = verdict.reason
            else:
                failures[k] = Failure(verdict.reason)
        before = self.index.vectors.get(self.space.id, {o for _, o, _ in out.copies.values()} - set(vectors))
        resolve_copies(out.copies, before, vectors, unchanged, failures, now)
        copied = {k: vectors[k] for k in out.copies if k in vectors}
        self.index.copies.put([CopyRow(self.space.id, k, e.sha, out.prints[k].value, out.prints[k].weight_bytes,
                                       out.copies[k][1] if k in copied else None, now)
                               for k, e in vectors.items() if k in out.prints])  # fmt: skip
        self.index.vectors.put(self.space.id, list(vectors.values()))
        missing = Failure("the worker returned no activations for it", transient=True)
        outcomes = [plan.embedded(r, out.notes.get(r.repo_id, "")) if r.repo_id in vectors
                    else r.with_status(ModelStatus.UNCHANGED, unchanged[r.repo_id]) if r.repo_id in unchanged
                    else plan.settle(r, failures.get(r.repo_id, missing), max_attempts=self.max_attempts)
                    for r in claimed]  # fmt: skip
        self.index.models.put(outcomes)
        return [Outcome(r, "copied", r.reason) if r.repo_id in copied else Outcome.of(r) for r in outcomes]

    def fail(self, records: Sequence[ModelRecord], reason: str) -> list[Outcome]:
        """Fail ``records`` for good (e.g. a model that keeps killing Ray workers)."""
        failed = [plan.failed(r, reason, transient=False, max_attempts=0) for r in records]
        self.index.models.put(failed)
        return [Outcome.of(r) for r in failed]

    def restore(self, records: Sequence[ModelRecord]) -> None:
        """Put ``records`` back as they were read, unclaimed (their base could not be loaded: no one is to blame)."""
        self.index.models.put(records)


def resolve_copies(copies: Mapping[str, tuple[str, str, str]], stored: Mapping[str, Embedding],
                   vectors: dict[str, Embedding], unchanged: dict[str, str], failures: dict[str, Failure],
                   now: datetime) -> None:  # fmt: skip
    """Give each copy (repo -> (sha, original, the original's revision with the same files)) its original's
    outcome, in place.

    Its vector only where the original's vector (computed in this commit: ``vectors``, or ``stored`` before) is at
    that revision: the original may have been re-embedded at another sha since, and a vector of other weights is
    never a copy's. Else the original's "no change from base" or failure in this commit (the original's outcome at
    that revision: a vector at it would have come first). Else the copy is retried: the next run downloads it if
    its original still has no vector with these files (it failed in an earlier commit, or moved to another sha).
    """
    for k, (sha, original, original_sha) in copies.items():
        found = vectors.get(original) or stored.get(original)
        if found is not None and found.sha == original_sha:
            vectors[k] = Embedding(k, sha, found.vector, now)
        elif original in unchanged:
            unchanged[k] = f"a copy of {original}; {unchanged[original]}"
        elif original in failures:
            why = failures[original]
            failures[k] = Failure(f"a copy of {original}, which failed: {why.reason}", transient=why.transient)
        else:
            failures[k] = Failure(f"a copy of {original}@{original_sha[:12]}, whose vector at that sha is not "
                                  "in this space", transient=True)  # fmt: skip
