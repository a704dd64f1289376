"""Filling a family's meaning space: sample its continuations once, then score each member against its own base.

The ``space_members`` rows are the truth of a family space: each chunk commits its members' states and own
vectors there, and the space's vectors (what ``similar`` searches) are then derived from them, with each base's
mean subtracted (``Recipe.per_base``), all rewritten at the end of a run that wrote members. A run killed between
the two finds nothing left to score, sees the space's vectors out of date and derives them again.
Members are models already embedded in their base's activation space: they passed the safety rules there, and
the same verified files are fetched (from the cache) again here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import structlog

from hubdelta.embedder.continuations import ContinuationSet, Sampling, sample_continuations
from hubdelta.embedder.fetch import FetchedModel, fetch, release
from hubdelta.embedder.local import base_info_from_folder
from hubdelta.embedder.meaning import Recipe, TextScores, centre_by_base, meaning_vector, vector_dim
from hubdelta.embedder.probes import PAPER_PROBES
from hubdelta.embedder.safety import Limits
from hubdelta.embedder.safety_records import RepoKind
from hubdelta.embedder.space import Space
from hubdelta.embedder.worker import download_base
from hubdelta.index.embeddings import Embedding, SpaceRow
from hubdelta.index.families import BaseProfile, Family, Member
from hubdelta.index.records import EMBEDDABLE, ModelRecord, ModelStatus
from hubdelta.index.store import Index
from hubdelta.kernel.errors import one_line
from hubdelta.kernel.settings import Settings

if TYPE_CHECKING:
    from hubdelta.embedder.safety_records import BaseInfo
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


class FamilyRun:
    """One run over one family: its space, then each base's pending members on a resident scorer."""

    def __init__(self, index: Index, settings: Settings, family: Family, *, device: str = "cpu", batch: int = 4,
                 limit: int | None = None, should_stop: Callable[[], bool] = lambda: False,
                 progress: FamilyProgress | None = None) -> None:  # fmt: skip
        self.index, self.settings, self.family = index, settings, family
        self.device, self.batch, self.limit = device, batch, limit
        self.should_stop, self.progress = should_stop, progress
        self.summary = FamilySummary(family.name)
        self.changed = False  # members were written: the space's vectors must be derived again
        self.limits = Limits.from_embed_settings(settings.embed)

    def space(self) -> tuple[Space, ContinuationSet]:
        """The family's space and continuation set: read back, or sampled and stored on the first run."""
        stored = self.index.spaces().get(self.family.space_id or "")
        if stored is not None:
            space = Space.from_dict(stored.params)
            doc = self.index.continuation_set(space.continuations or "")
            if doc is None:
                raise RuntimeError(f"space {space.id} names continuation set {space.continuations}, which is missing")
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
        self.index.put_continuation_set(cset.hash, cset.to_dict())
        empty = np.zeros((0, space.dim), np.float32)  # no activations: base profiles live per base
        self.index.put_space(SpaceRow(space.id, space.to_dict(), empty, datetime.now(UTC)))
        self.family = replace(self.family, space_id=space.id)
        self.index.put_family(self.family)
        self.summary.sampled = True
        return space, cset

    def run(self) -> FamilySummary:
        started = time.perf_counter()
        space, cset = self.space()
        self.summary.space_id = space.id
        recipe = Recipe.parse(space.recipe or "default")
        models = {k: r for base in self.family.bases for k, r in self.index.models_for_base(base).items()}
        todo = pending_members(list(models.values()), self.family, self.index.members(space.id))
        budget = self.limit
        for base, records in todo.items():
            if budget is not None:
                records, budget = records[:budget], budget - min(budget, len(records))
            if not records or self.should_stop():
                continue
            try:
                self._base(space, cset, recipe, base, records)
            except Exception as e:  # the base itself: unreachable or unloadable; other bases go on
                self.summary.failures.append((base, f"base not loaded: {one_line(e)}"))
                log.warning("family.base_failed", family=self.family.name, base=base, error=one_line(e))
        self._derive(space, recipe)
        done = self.summary.embedded + self.summary.failed
        self.summary.pending = sum(len(v) for v in todo.values()) - done
        self.summary.seconds = round(time.perf_counter() - started, 2)
        return self.summary

    def _base(self, space: Space, cset: ContinuationSet, recipe: Recipe, base: str,
              records: list[ModelRecord]) -> None:  # fmt: skip
        from hubdelta.embedder.scoring import ResidentScorer

        folder, sha = download_base(self.settings, base)
        with ResidentScorer(folder, PAPER_PROBES, cset, device=self.device) as scorer:
            profile = self._base_profile(space, base, sha, scorer, recipe, cset)
            info = base_info_from_folder(folder, base)
            for i in range(0, len(records), self.batch):
                if self.should_stop():
                    self.summary.stopped = True
                    return
                self._chunk(space, scorer, info, profile, recipe, cset, records[i : i + self.batch])

    def _base_profile(self, space: Space, base: str, sha: str, scorer: ResidentScorer, recipe: Recipe,
                      cset: ContinuationSet) -> np.ndarray:  # fmt: skip
        cached = self.index.base_profiles(space.id).get(base)
        if cached is not None and cached.sha == sha:
            return cached.profile
        scores = scorer.base_scores()
        profile = scores.profile(cset.texts, recipe).astype(np.float32).ravel()
        self.index.put_base_profile(BaseProfile(space.id, base, sha, profile, datetime.now(UTC)))
        return profile

    def _chunk(self, space: Space, scorer: ResidentScorer, info: BaseInfo, base_profile: np.ndarray, recipe: Recipe,
               cset: ContinuationSet, records: list[ModelRecord]) -> None:  # fmt: skip
        now = datetime.now(UTC)
        failed: dict[str, str] = {}
        fetched: dict[str, FetchedModel] = {}
        for r in records:
            try:
                fetched[r.repo_id] = fetch(r.repo_id, r.model.sha or "main", endpoint=self.settings.hf_endpoint,
                                           token=self.settings.hf_token, cache_dir=self.settings.cache_dir / "hub",
                                           limits=self.limits, base=info)  # fmt: skip
            except Exception as e:  # a bad model must never stop the run
                failed[r.repo_id] = one_line(e)
        scores: dict[str, TextScores] = {}
        adapters = {k: f.path for k, f in fetched.items() if f.kind == RepoKind.ADAPTER}
        try:
            scores.update(scorer.adapter_scores(adapters, per_forward=self.batch))
        except Exception:  # one bad adapter spoils the batch: find it
            for k, path in adapters.items():
                try:
                    scores.update(scorer.adapter_scores({k: path}))
                except Exception as e:
                    failed[k] = one_line(e)
        for k, f in fetched.items():
            if f.kind != RepoKind.ADAPTER:
                try:
                    scores[k] = scorer.model_scores(f.path, item=k)
                except Exception as e:
                    failed[k] = one_line(e)
                finally:
                    release(f)
        base_of = {r.repo_id: r.model.base_models[0] for r in records}
        sha_of = {r.repo_id: r.model.sha for r in records}
        members = []
        for k, s in scores.items():
            profile = s.profile(cset.texts, recipe).astype(np.float32)
            raw = meaning_vector(profile, base_profile.reshape(profile.shape), recipe)
            members.append(Member(space.id, k, sha_of[k], base_of[k], "embedded", "", raw, now))
        members += [Member(space.id, k, sha_of[k], base_of[k], "failed", why[:500], None, now)
                    for k, why in failed.items()]  # fmt: skip
        self.index.put_members(members)
        self.changed = True
        for m in members:
            if m.status == "embedded":
                self.summary.embedded += 1
            else:
                self.summary.failed += 1
                self.summary.failures.append((m.repo_id, m.reason))
            self._report(m.status, m.repo_id)

    def _derive(self, space: Space, recipe: Recipe) -> None:
        """Rewrite the space's vectors from its members' own vectors (each base's mean subtracted, per recipe)."""
        members = {
            k: m for k, m in self.index.members(space.id).items() if m.status == "embedded" and m.raw is not None
        }
        if not self.changed and self.index.count_embeddings(space.id) == len(members):
            return
        raw = {k: m.raw for k, m in members.items() if m.raw is not None}
        base_of = {k: m.base for k, m in members.items()}
        vectors = centre_by_base(raw, base_of) if recipe.per_base else raw
        now = datetime.now(UTC)
        self.index.put_embeddings(space.id, [Embedding(k, members[k].sha, v, members[k].updated_at or now)
                                             for k, v in vectors.items()])  # fmt: skip
        log.info("family.derived", family=self.family.name, space=space.id, vectors=len(vectors))

    def _report(self, outcome: str, repo: str) -> None:
        log.info("family.model", family=self.family.name, repo=repo, outcome=outcome)
        if self.progress is not None:
            self.progress(outcome, repo)
