"""``hubdelta task``: find the indexed models nearest to a task given by a few examples.

As in the paper (Delta Activations, "task embedding"): a LoRA is trained on the few examples with the few-shot
setting (:mod:`hubdelta.task.adapter`), embedded in the base's space exactly as ``hubdelta embed`` embeds an
adapter (same base revision, probes, layer, position, dtype; the space's stored base activations), and the
index is searched by cosine. The nearest cluster is the latest report's cluster of that space whose centroid is
nearest; before any report, the space is clustered now the way the report does it.

Only reads the index (no writer lock: it never waits for a crawl or embed run). Refusals that need no model
(bad examples, a bad filter, nothing embedded for the base) come before anything is downloaded or trained.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import structlog

from hubdelta.embedder.local import local_base_id
from hubdelta.embedder.meaning import CENTRE_MIN
from hubdelta.embedder.training import Example
from hubdelta.index.door import open_reader
from hubdelta.index.embeddings import SpaceRow
from hubdelta.index.records import check_repo_id
from hubdelta.index.selectors import Selector
from hubdelta.index.store import Index
from hubdelta.kernel.errors import (
    EmbedError,
    IndexNotFoundError,
    MissingDependencyError,
    NothingEmbeddedError,
    UsageError,
)
from hubdelta.kernel.settings import Settings
from hubdelta.query.api import check_filter, check_relation, nearest_filtered
from hubdelta.query.choose import model_filter
from hubdelta.query.records import Neighbor
from hubdelta.report.cluster import centroid, normalise
from hubdelta.task.adapter import FewShotAdapter, fewshot_adapter
from hubdelta.task.examples import PAPER_EXAMPLES, check_lengths, load
from hubdelta.task.explain import explain as explain_task
from hubdelta.task.family import FamilyTarget, check_revision, family_target, meaning_of
from hubdelta.task.records import ClusterMember, TaskCluster, TaskExplain, TaskResult, Training
from hubdelta.task.schedule import TaskSchedule, resolve
from hubdelta.task.tracking import StepProgress, Stop, typical_norm

if TYPE_CHECKING:
    from hubdelta.embedder.space import Space

log = structlog.get_logger(__name__)

TOP_MEMBERS = 10  # members of the nearest cluster listed, nearest to the task first
ON_THE_FLY_MAX = 20_000  # vectors a space may hold to be clustered now when no report has clustered it


@dataclass(frozen=True)
class SpaceCluster:
    """A cluster of one space with its members' unit vectors (members without a vector are left out)."""

    id: str
    name: str
    members: tuple[str, ...]
    unit: np.ndarray  # (M, C) unit vectors, rows in ``members`` order


def task_search(
    settings: Settings,
    examples: Path,
    base: str,
    *,
    k: int = 10,
    where: str | None = None,
    relation: str | None = None,
    max_examples: int = PAPER_EXAMPLES,
    progress: StepProgress | None = None,
    schedule: str | None = None,
    steps: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    explain: bool = False,
    family: str | None = None,
) -> TaskResult:
    """The indexed models nearest to the task that ``examples`` show, and the nearest cluster.

    Args:
        settings: the index, the cache (adapters in ``<cache>/tasks``), the Hub endpoint, the ``[embed]`` settings.
        examples: a JSONL file of ``{"instruction", "input", "output"}`` or ``{"prompt", "completion"}`` lines.
        base: the base to train on and search under: a repo id (its current revision) or a local checkpoint.
        k, where, relation: how many neighbours; a SQL filter over the models table; one relation (as ``similar``).
        max_examples, progress: train on the first this many (the paper: 20); called with (step, total, loss).
        schedule, steps, lr, seed: how the adapter is trained (:func:`hubdelta.task.schedule.resolve`).
        explain: also say how long the vector is against the space and how stable its top-k was along training.
        family: search this family's meaning space (all its bases' finetunes; ``base`` must be one of its bases).

    Returns:
        The result; ``.vector`` is the task's delta vector in ``.space_id``. A rerun is read from the cache.

    Raises:
        UsageError: a bad line in ``examples`` (``FILE:LINE``), too few examples, a bad option or filter.
        NothingEmbeddedError: the index holds no vector of the base's space under the current settings.
    """
    started, examples = time.perf_counter(), Path(examples)
    if k < 1:
        raise UsageError("-k", f"{k} is not a positive count", fix="use e.g. -k 10")
    chosen = load(examples, max_examples)
    plan = resolve(schedule, len(chosen.examples), steps=steps, lr=lr, seed=seed)
    chosen_filter = model_filter(where, check_relation(relation))
    base_id = local_base_id(Path(base)) if Path(base).is_dir() else check_repo_id(base)
    target = _check_index(settings, base_id, chosen_filter, family)

    made = _task_vector(settings, base, base_id, chosen.examples, str(examples), plan, progress, target)
    space_id, vector, family_notes = _placed(made, target, base_id, settings.family.memory_gb)
    with open_reader(settings) as index:
        neighbors, clusters, source, note = search_space(index, space_id, vector, k, chosen_filter)
        why = _explain(index, made, plan, k, chosen_filter, neighbors, target is None) if explain else None
    cluster = nearest_cluster(clusters, vector, source)
    seconds = round(time.perf_counter() - started, 2)
    a = made.adapter
    log.info("task.done", space=space_id, cached=a.cached, neighbors=len(neighbors),
             cluster=cluster.name if cluster else None, seconds=seconds)  # fmt: skip
    notes = chosen.notes + made.notes + family_notes + ((note,) if note else ())
    return TaskResult(f"task:{examples.name}", base_id, space_id, str(examples), chosen.total,
                      len(chosen.examples), a.key, a.path, a.cached, a.seconds,
                      Training(a.steps, a.first_loss, a.last_loss, a.trained_seconds), seconds, k, where, relation,
                      neighbors, cluster, notes, plan.describe(), why, vector, family)  # fmt: skip


def _placed(made: _Made, target: FamilyTarget | None, base_id: str,
            memory_gb: float) -> tuple[str, np.ndarray, tuple[str, ...]]:  # fmt: skip
    """The space searched, the task's vector there, and a note: the base's own space, or the family's."""
    if target is None:
        return made.space_id, made.vector, ()
    vector, scored_before = meaning_of(target, made.folder, made.adapter.path, made.device, memory_gb)
    centre = (f"centred by the mean of its {target.members} {base_id} members" if target.centre is not None
              else f"not centred: {target.members} {base_id} members, centring waits for {CENTRE_MIN}")  # fmt: skip
    again = "; its scores read from the cache" if scored_before else ""
    return target.space_id, vector, (f"searched family {target.family}'s meaning space {target.space_id} "
                                     f"({centre}{again})",)  # fmt: skip


def _explain(index: Index, made: _Made, plan: TaskSchedule, k: int, where: Selector | None,
             neighbors: Sequence[Neighbor], searched_here: bool) -> TaskExplain:  # fmt: skip
    """Measured in the base's activation space, where training is measured (also when a family's was searched:
    then the final top-k compared with is the activation space's own)."""

    def top(v: np.ndarray) -> list[str]:
        return [h[0] for h in nearest_filtered(index, made.space_id, v, k, where, frozenset())]

    final = [n.repo_id for n in neighbors] if searched_here else top(made.vector)
    return explain_task(made.space_id, plan.describe(), made.space_norm, made.vector, made.adapter.steps,
                        made.adapter.checkpoints, final, top)  # fmt: skip


@dataclass(frozen=True)
class _Made:
    space_id: str
    adapter: FewShotAdapter
    vector: np.ndarray
    space_norm: float | None
    notes: tuple[str, ...]
    folder: Path  # the base checkpoint
    device: str


def _task_vector(settings: Settings, base: str, base_id: str, examples: Sequence[Example], examples_name: str,
                 plan: TaskSchedule, progress: StepProgress | None, target: FamilyTarget | None) -> _Made:  # fmt: skip
    """Train (or find cached) the few-shot adapter and embed it in the base's space."""
    from hubdelta.embedder.bases import base_space, resolve_base
    from hubdelta.embedder.options import options

    ref = resolve_base(settings, base)
    opts = options(settings, limit=None, device=None, batch=None)
    space = base_space(ref, opts)
    row, space_norm = _space_row(settings, base_id, space.id)
    if target is not None:
        check_revision(target, base_id, ref.sha)
    notes = _check_lengths(ref.folder, examples, examples_name, plan)
    log.info("task.start", examples=len(examples), base=base_id, space=space.id, schedule=plan.describe(),
             space_norm=space_norm)  # fmt: skip
    # Rounded once, here: the value auto stops at is the value in the cache key (3 significant digits).
    stop = Stop(space, row.base_activations, float(f"{space_norm:.3g}") if space_norm else None)
    adapter = fewshot_adapter(settings.cache_dir, examples, ref.folder, ref.repo_id, ref.sha, schedule=plan,
                              stop=stop, progress=progress)  # fmt: skip
    vector = embed_adapter(ref.folder, space, row, adapter.path, opts.device)
    return _Made(space.id, adapter, vector, space_norm, notes, ref.folder, opts.device)


def _check_lengths(base_folder: Path, examples: Sequence[Example], name: str, plan: TaskSchedule) -> tuple[str, ...]:
    """Refuse an example longer than the base's context (before any training); note those training cuts."""
    from transformers import AutoTokenizer

    from hubdelta.embedder.activations import text_config
    from hubdelta.embedder.training import encode

    tok = AutoTokenizer.from_pretrained(base_folder, trust_remote_code=False, local_files_only=True)
    lengths = [len(encode(tok, ex, 1 << 30)[0]) for ex in examples]
    context = int(getattr(text_config(base_folder), "max_position_embeddings", 0) or 1 << 30)
    return check_lengths(lengths, name, context, plan.train.max_len)


def search_space(
    index: Index, space_id: str, vector: np.ndarray, k: int, where: Selector | None
) -> tuple[list[Neighbor], list[SpaceCluster], str, str | None]:
    """The ``k`` visible models nearest to a task vector (named by their cluster), and the space's clusters.

    Models removed from the Hub are hidden from queries: never a neighbour, never a cluster member.

    Returns:
        (neighbours best first, clusters, their source, a note when there are none) as :func:`space_clusters`.
    """
    hits = nearest_filtered(index, space_id, vector, k, where, frozenset())
    records = index.models.get([h[0] for h in hits])
    clusters, source, note = space_clusters(index, space_id)
    names = {m: c.name for c in clusters for m in c.members}
    neighbors = [Neighbor.of(i + 1, score, records.get(rid), rid, names.get(rid))
                 for i, (rid, score) in enumerate(hits)]  # fmt: skip
    return neighbors, clusters, source, note


def _base_spaces(index: Index, base_id: str) -> dict[str, SpaceRow]:
    """The base's own activation spaces (a family space names its first base too, but it is not the base's)."""
    return {s: r for s, r in index.vectors.spaces().items()
            if r.params.get("base_repo") == base_id and not r.params.get("family")}  # fmt: skip


def _check_index(settings: Settings, base_id: str, where: Selector | None, family: str | None) -> FamilyTarget | None:
    """Refuse before any download or training: no vector of the base at all, or a malformed filter; the family's
    space as the task needs it (or None: the base's own space is searched)."""
    try:
        index = open_reader(settings)
    except IndexNotFoundError:
        raise NothingEmbeddedError(base_id, tracked=False) from None
    with index:
        if not any(index.vectors.count(s) for s in _base_spaces(index, base_id)):
            raise NothingEmbeddedError(base_id, tracked=any(t.base == base_id for t in index.tracked.all()))
        if where is not None:
            check_filter(index, where)
        return family_target(index, family, base_id) if family is not None else None


def _space_row(settings: Settings, base_id: str, space_id: str) -> tuple[SpaceRow, float | None]:
    """The space's stored row (its base activations: those every vector in it was computed against) and its
    typical vector length (the median norm: where ``auto`` stops)."""
    with open_reader(settings) as index:
        row = index.vectors.spaces().get(space_id)
        if row is None or index.vectors.count(space_id) == 0:
            others = tuple(s for s in _base_spaces(index, base_id) if s != space_id and index.vectors.count(s))
            raise NothingEmbeddedError(base_id, space_id=space_id, others=others)
        return row, typical_norm(index.vectors.norms(space_id))


def embed_adapter(base_folder: Path, space: Space, row: SpaceRow, adapter: Path, device: str) -> np.ndarray:
    """An adapter folder's delta vector in ``space`` against the space's stored base activations.

    The embedder's one delta path, as ``hubdelta embed`` takes it for an adapter; nothing is written (``task`` only
    reads the index), so there is nothing to claim or commit.

    Raises:
        EmbedError: the adapter does not fit the base, or changes nothing on the probes (a zero vector).
    """
    from hubdelta.embedder.activations import ResidentBase
    from hubdelta.embedder.delta_path import Activations
    from hubdelta.embedder.delta_path import vector as delta_of
    from hubdelta.embedder.safety_records import RepoKind

    with ResidentBase(base_folder, space, device=device) as rb:
        acts = Activations(rb).folder(adapter, RepoKind.ADAPTER, "task")  # (P, C)
    vector = delta_of(acts, row.base_activations)  # (C,)
    if not np.isfinite(vector).all() or not vector.any():
        raise EmbedError("the task's adapter leaves the base unchanged on the probes: nothing to search with",
                         item=str(adapter))  # fmt: skip
    return vector


def space_clusters(index: Index, space_id: str) -> tuple[list[SpaceCluster], str, str | None]:
    """The clusters of a space: the latest report's, or computed now as the report would (small spaces).

    Only models visible to queries are members: one removed from the Hub since the report is left out.

    Returns:
        (clusters, source, note): source is ``report <id>`` or ``computed now``; note says why there are none.
    """
    report = index.reports.latest()
    stored = report.clusters.get(space_id, ()) if report is not None else ()
    if report is not None and stored:
        members = {m for c in stored for m in c.members}
        vectors = {r: e.vector for r, e in index.vectors.visible(space_id, members).items()}
        found = [(c.id, c.name, tuple(m for m in c.members if m in vectors)) for c in stored]
        return [_cluster(cid, name, ms, vectors) for cid, name, ms in found if ms], f"report {report.report_id}", None
    count = index.vectors.count(space_id)
    if count > ON_THE_FLY_MAX:
        return [], "", f"no clusters yet for {space_id} ({count:,} vectors): run hubdelta report"
    try:
        computed = _cluster_now(index, space_id)
    except MissingDependencyError as e:
        return [], "", f"no clusters yet (run hubdelta report; clustering now needs {e.package})"
    vectors = {r: e.vector for r, e in index.vectors.visible(space_id).items()}
    clusters = [_cluster(cid, name, ms, vectors) for cid, name, ms in computed]
    return clusters, "computed now", None if clusters else f"no clusters in {space_id} yet ({count} vectors)"


def _cluster(cid: str, name: str, members: Sequence[str], vectors: dict[str, np.ndarray]) -> SpaceCluster:
    return SpaceCluster(cid, name, tuple(members), normalise(np.stack([vectors[m] for m in members])))


def _cluster_now(index: Index, space_id: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """The space clustered and named as ``hubdelta report`` would (nothing is stored)."""
    from hubdelta.report.build import ReportParams, SpaceInput, analyse_space

    embeddings = index.vectors.visible(space_id)  # as the report: removed models keep vectors but are left out
    records = index.models.get(list(embeddings))
    ids = sorted(embeddings)
    if not ids:
        return []
    base = str(index.vectors.spaces()[space_id].params.get("base_repo", ""))
    vectors = np.stack([embeddings[r].vector for r in ids])  # (N, C)
    when = [embeddings[r].embedded_at for r in ids]
    data = SpaceInput(space_id, base, ids, vectors, when, {r: records[r] for r in ids if r in records})
    result = analyse_space(data, since=datetime.now(UTC), previous=(), next_number=1,
                           previously_clustered=frozenset(ids), params=ReportParams())  # fmt: skip
    return [(c.id, c.name, c.members) for c in result.clusters]


def nearest_cluster(clusters: Sequence[SpaceCluster], vector: np.ndarray, source: str) -> TaskCluster | None:
    """The cluster whose centroid has the highest cosine to ``vector`` (None without clusters)."""
    norm = float(np.linalg.norm(vector))
    if not clusters or norm == 0:
        return None
    query = (vector / norm).astype(np.float64)  # (C,)
    scored = [(float(centroid(c.unit) @ query), c) for c in clusters]
    similarity, best = max(scored, key=lambda item: item[0])
    scores = best.unit @ query  # (M,)
    order = np.argsort(-scores, kind="stable")[:TOP_MEMBERS]
    top = tuple(ClusterMember(best.members[i], round(float(scores[i]), 6)) for i in order)
    return TaskCluster(best.id, best.name, round(similarity, 6), tuple(sorted(best.members)), top, source)
