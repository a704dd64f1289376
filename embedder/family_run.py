"""Filling a family's meaning space: sample its continuations once, then score each member against its own base.

A family run is a :class:`~hubdelta.embedder.run.Run` (claim → compute → commit → count) whose ledger is the
family space's ``space_members`` table (:class:`MemberLedger`). Those rows are the truth of a family space: each
chunk commits its members' states and own vectors there, each row whole, and the space's vectors (what
``similar`` searches) are then derived from them, with each base's mean subtracted (``Recipe.per_base``), all
rewritten at the end of a run that wrote members. A run killed between the two finds nothing left to score, sees
the space's vectors out of date and derives them again.
Members are models already embedded in their base's activation space: they passed the safety rules there, and
the same verified files are fetched (from the cache) again here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import structlog

from hubdelta.embedder.bases import download_base
from hubdelta.embedder.continuations import ContinuationSet, Sampling, sample_continuations
from hubdelta.embedder.local import base_info_from_folder
from hubdelta.embedder.meaning import Recipe, TextScores, centre_by_base, meaning_vector, vector_dim
from hubdelta.embedder.probes import PAPER_PROBES
from hubdelta.embedder.run import ChunkOutput, Outcome, Run, compute_chunk, fetcher, revisions
from hubdelta.embedder.safety import Limits
from hubdelta.embedder.space import Space
from hubdelta.index.embeddings import Embedding, SpaceRow
from hubdelta.index.families import BaseProfile, Family, Member, MemberStatus
from hubdelta.index.records import EMBEDDABLE, ModelRecord, ModelStatus
from hubdelta.index.store import Index
from hubdelta.kernel.errors import StoreError
from hubdelta.kernel.settings import Settings

if TYPE_CHECKING:
    from hubdelta.embedder.scoring import ResidentScorer

log = structlog.get_logger(__name__)

FamilyProgress = Callable[[str, str], None]  # (outcome, repo id) after each model


@dataclass
class FamilySummary:
    """What one family run did."""

    family: str
    space_id: str = ""
    sampled: bool = False  # the continuation set was sampled (and the space created) in this run
    embedded: int = 0
    failed: int = 0
    pending: int = 0  # left for a later run (limit or stop)
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    stopped: bool = False


def family_options(family: Family) -> tuple[Sampling, Recipe]:
    o = family.options
    sampling = Sampling(n=int(o.get("n", Sampling.n)), tokens=int(o.get("tokens", Sampling.tokens)),
                        temperature=float(o.get("temperature", 1.0)), seed=int(o.get("seed", 0)))  # fmt: skip
    return sampling, Recipe.parse(str(o.get("recipe", "default")))


def pending_members(
    models: Sequence[ModelRecord], family: Family, members: dict[str, Member]
) -> dict[str, list[ModelRecord]]:
    """Per base, the family's models embedded in their base space but not yet in the family space at their sha.

    A failure is final for that sha (as in the activation space); a new revision is tried again.
    """
    out: dict[str, list[ModelRecord]] = {}
    for r in sorted(models, key=lambda r: r.repo_id):
        base = r.model.base_models[0] if r.model.base_models else None
        if base not in family.bases or r.status != ModelStatus.EMBEDDED or r.model.relation not in EMBEDDABLE:
            continue
        m = members.get(r.repo_id)
        if m is None or m.sha != r.model.sha:
            out.setdefault(base, []).append(r)
    return out


@dataclass(frozen=True)
class _Profiles:
    """A resident scorer as a :class:`~hubdelta.embedder.run.Runner`: each model's profile of the texts."""

    scorer: ResidentScorer
    cset: ContinuationSet
    recipe: Recipe
    per_forward: int

    def _profile(self, scores: TextScores) -> np.ndarray:
        return scores.profile(self.cset.texts, self.recipe).astype(np.float32)

    def adapters(self, folders: Mapping[str, Path]) -> dict[str, np.ndarray]:
        scored = self.scorer.adapter_scores(folders, per_forward=self.per_forward)
        return {k: self._profile(s) for k, s in scored.items()}

    def model(self, folder: Path, item: str) -> np.ndarray:
        return self._profile(self.scorer.model_scores(folder, item=item))


class MemberLedger:
    """A family space's rows for one base: each member's state and own vector, one ``space_members`` row each.

    A row is written whole (state and vector in one commit), so there is nothing to claim: a chunk killed before
    its commit is simply still pending at the next run (:func:`pending_members`).
    """

    def __init__(self, index: Index, space: Space, base_profile: np.ndarray, recipe: Recipe) -> None:
        self.index, self.space, self.base_profile, self.recipe = index, space, base_profile, recipe
        self.written = False  # members were written: the space's vectors must be derived again

    def claim(self, records: Sequence[ModelRecord]) -> list[ModelRecord]:
        """Nothing to mark: a member row only ever appears whole, at its commit."""
        return list(records)

    def commit(self, claimed: Sequence[ModelRecord], out: ChunkOutput) -> list[Outcome]:
        """Each scored member's own vector (its profile minus its base's), and each failure with its reason."""
        now = datetime.now(UTC)
        record = {r.repo_id: r for r in claimed}
        members = []
        for k, (_, profile) in out.arrays.items():
            raw = meaning_vector(profile, self.base_profile.reshape(profile.shape), self.recipe)
            members.append(self._member(record[k], MemberStatus.EMBEDDED, "", raw, now))
        members += [self._member(record[k], MemberStatus.FAILED, f.reason[:500], None, now)
                    for k, f in out.failures.items()]  # fmt: skip
        self.index.families.put_members(members)
        self.written = True
        return [Outcome(record[m.repo_id], m.status.value, m.reason) for m in members]

    def _member(self, r: ModelRecord, status: MemberStatus, reason: str, raw: np.ndarray | None,
                now: datetime) -> Member:  # fmt: skip
        # the sha as crawled (not the revision fetched): pending_members compares it
        return Member(self.space.id, r.repo_id, r.model.sha, r.model.base_models[0], status, reason, raw, now)


class FamilyRun:
    """One run over one family: its space, then each base's pending members on a resident scorer."""

    def __init__(self, index: Index, settings: Settings, family: Family, *, device: str = "cpu", batch: int = 4,
                 limit: int | None = None, should_stop: Callable[[], bool] = lambda: False,
                 progress: FamilyProgress | None = None) -> None:  # fmt: skip
        self.index, self.settings, self.family = index, settings, family
        self.device, self.batch, self.limit = device, batch, limit
        self.summary = FamilySummary(family.name)
        report = (lambda outcome, r: progress(outcome, r.repo_id)) if progress is not None else None
        self.core = Run(events="family", context={"family": family.name}, progress=report, should_stop=should_stop)
        self.changed = False  # members were written: the space's vectors must be derived again
        self.limits = Limits.from_embed_settings(settings.embed)

    def space(self) -> tuple[Space, ContinuationSet]:
        """The family's space and continuation set: read back, or sampled and stored on the first run."""
        stored = self.index.vectors.spaces().get(self.family.space_id or "")
        if stored is not None:
            space = Space.from_dict(stored.params)
            doc = self.index.families.continuation_set(space.continuations or "")
            if doc is None:
                raise StoreError(f"space {space.id} names continuation set {space.continuations}, which is missing",
                                 uri=self.index.uri, fix=f"hubdelta family remove {self.family.name}, then create "
                                 "it again (its space keeps its vectors)")  # fmt: skip
            return space, ContinuationSet.from_dict(doc)
        sampling, recipe = family_options(self.family)
        sources = []
        for repo in self.family.samplers:
            folder, sha = download_base(self.settings, repo)
            sources.append((repo, sha, folder))
        t0 = time.perf_counter()
        cset = sample_continuations(sources, PAPER_PROBES, sampling, device=self.device)
        log.info("family.sampled", family=self.family.name, texts=sampling.n, tokens=sampling.tokens,
                 seconds=round(time.perf_counter() - t0, 1), hash=cset.hash)  # fmt: skip
        first = self.family.bases[0]
        first_sha = next((sha for repo, sha, _ in sources if repo == first), None)
        first_sha = first_sha or download_base(self.settings, first)[1]
        space = Space(base_repo=first, base_sha=first_sha, probes=PAPER_PROBES.version, probes_hash=PAPER_PROBES.hash,
                      dim=vector_dim(recipe, cset.texts), method="meaning", family=self.family.name,
                      continuations=cset.hash, recipe=str(recipe))  # fmt: skip
        self.index.families.put_continuation_set(cset.hash, cset.to_dict())
        empty = np.zeros((0, space.dim), np.float32)  # no activations: base profiles live per base
        self.index.vectors.put_space(SpaceRow(space.id, space.to_dict(), empty, datetime.now(UTC)))
        self.family = replace(self.family, space_id=space.id)
        self.index.families.put(self.family)
        self.summary.sampled = True
        return space, cset

    def run(self) -> FamilySummary:
        started = time.perf_counter()
        space, cset = self.space()
        self.summary.space_id = space.id
        recipe = Recipe.parse(space.recipe or "default")
        models = {k: r for base in self.family.bases for k, r in self.index.models.for_base(base).items()}
        todo = pending_members(list(models.values()), self.family, self.index.families.members(space.id))
        budget = self.limit
        for base, records in todo.items():
            if budget is not None:
                records, budget = records[:budget], budget - min(budget, len(records))
            if not records or self.core.stopping():
                continue
            with self.core.guard(base):  # the base itself: unreachable or unloadable; other bases go on
                self._base(space, cset, recipe, base, records)
        self._derive(space, recipe)
        c, s = self.core.counts, self.summary
        s.embedded, s.failed, s.failures, s.stopped = c.embedded, c.failed, list(c.failures), c.stopped
        s.pending = sum(len(v) for v in todo.values()) - (c.embedded + c.failed)
        s.seconds = round(time.perf_counter() - started, 2)
        return s

    def _base(self, space: Space, cset: ContinuationSet, recipe: Recipe, base: str,
              records: list[ModelRecord]) -> None:  # fmt: skip
        from hubdelta.embedder.scoring import ResidentScorer

        folder, sha = download_base(self.settings, base)
        with ResidentScorer(folder, PAPER_PROBES, cset, device=self.device,
                            memory_gb=self.settings.family.memory_gb) as scorer:  # fmt: skip
            ledger = MemberLedger(self.index, space, self._base_profile(space, base, sha, scorer, recipe, cset), recipe)
            runner = _Profiles(scorer, cset, recipe, self.batch)
            fetch_one = fetcher(self.settings, self.limits, base_info_from_folder(folder, base))
            try:
                self.core.chunks(ledger, records, self.batch,
                                 lambda claimed: compute_chunk(runner, revisions(claimed), fetch_one))  # fmt: skip
            finally:
                self.changed |= ledger.written

    def _base_profile(self, space: Space, base: str, sha: str, scorer: ResidentScorer, recipe: Recipe,
                      cset: ContinuationSet) -> np.ndarray:  # fmt: skip
        cached = self.index.families.base_profiles(space.id).get(base)
        if cached is not None and cached.sha == sha:
            return cached.profile
        scores = scorer.base_scores()
        profile = scores.profile(cset.texts, recipe).astype(np.float32).ravel()
        self.index.families.put_base_profile(BaseProfile(space.id, base, sha, profile, datetime.now(UTC)))
        return profile

    def _derive(self, space: Space, recipe: Recipe) -> None:
        """Rewrite the space's vectors from its members' own vectors (each base's mean subtracted, per recipe)."""
        stored = self.index.families.members(space.id)
        members = {k: m for k, m in stored.items() if m.status == MemberStatus.EMBEDDED and m.raw is not None}
        if not self.changed and self.index.vectors.count(space.id) == len(members):
            return
        raw = {k: m.raw for k, m in members.items() if m.raw is not None}
        base_of = {k: m.base for k, m in members.items()}
        vectors = centre_by_base(raw, base_of) if recipe.per_base else raw
        now = datetime.now(UTC)
        self.index.vectors.put(space.id, [Embedding(k, members[k].sha, v, members[k].updated_at or now)
                                             for k, v in vectors.items()])  # fmt: skip
        log.info("family.derived", family=self.family.name, space=space.id, vectors=len(vectors))
