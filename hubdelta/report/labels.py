"""Each model's suggested labels (:mod:`hubdelta.report.suggest`), computed from the index and stored in it, and
recomputed when its neighbourhood changes.

**When.** Labels are a view of the vectors, like the map's layout: every run that writes vectors (``hubdelta
embed``, the daemon's embed job, ``hubdelta add``) and every report refreshes them afterwards (a report leaves a
whole labelling above ``REPORT_WHOLE_MAX`` vectors to the others), and ``hubdelta labels`` does on
demand. A space whose vectors did not change since (``index.vectors.fingerprint``) costs a
read of its models' documentation (tags, card summary, names: the models table's columns), compared with the
digest of each model's evidence stored with its label (:func:`evidence_digest`). Readers
(``show``, ``similar``, the web API) never compute: they show the stored labels and say ``stale`` when the
fingerprint moved since, which the next refresh fixes (a documentation change alone is not flagged to readers:
the crawl that made it is followed by the next embed's or report's refresh).

**Incremental.** A refresh recomputes only the models whose neighbourhood can have changed:

- the models embedded (or re-embedded) since the last refresh, those never labelled, and those whose
  documentation changed since (a tag or card the crawler updated, documented since or no longer: no vector
  moved, but they are, or stop being, some models' neighbours; :func:`redocumented`);
- the models that listed, as a neighbour, one of those or one that left the space (removed, hidden);
- the models a new (or newly) *documented* vector comes closer to than their ``k``-th neighbour (``kth``,
  stored): one product of those vectors against the space, ``new x N`` (1,000 new against 1M: ~10 s here).

Everything is recomputed when there are no stored labels, the scoring's parameters changed (``RULE``), the
space's common tokens changed, or more than half the space would be anyway. The neighbours are found in blocked
matrix products (:func:`hubdelta.report.probed.search`): exact up to ``EXACT_PAIRS`` model x candidate pairs,
above it searched in the documented models' nearest lists (``N x documented`` exact products at 1M would take
hours). Figures: bench/labels.py, bench/labels_scale.py, docs/evaluation.md and docs/report.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import structlog

from hubdelta.index.door import open_writer
from hubdelta.index.labels import LabelsHead, ModelLabels
from hubdelta.index.store import Index
from hubdelta.kernel.settings import Settings
from hubdelta.report import cluster as clustering
from hubdelta.report import naming, probed, suggest

log = structlog.get_logger(__name__)
COLUMNS = ("repo_id", "tags", "card_summary", "base_models")
BLOCK = 4096  # rows of the space per product when finding who a new vector comes close to
# A report labels a space whole (first time, new scoring rule, moved common tokens) only up to this many vectors:
# ~30 s at 100,000 on 2 cores, ~290 s at 1,000,000, which would take the 1M report past its 10 minutes.
REPORT_WHOLE_MAX = 200_000


@dataclass(frozen=True)
class SpaceDocs:
    """A space's rows (sorted by repo id, unit vectors) and its models' documentation."""

    repo_ids: list[str]
    unit: np.ndarray  # (N, C) float32 unit rows
    embedded_at: list[datetime | None]
    docs: dict[str, dict[str, float]]  # documented models' evidence, common tokens dropped
    common: frozenset[str]


def read_space(index: Index, space_id: str) -> SpaceDocs:
    """The visible vectors of ``space_id`` and the documentation of its models."""
    matrix = index.vectors.visible_matrix(space_id)
    unit = clustering.normalise_in_place(np.ascontiguousarray(matrix.vectors, np.float32))
    docs, common = read_docs(index, space_id, matrix.repo_ids)
    return SpaceDocs(matrix.repo_ids, unit, matrix.embedded_at, docs, common)


def read_docs(
    index: Index, space_id: str, repo_ids: Sequence[str]
) -> tuple[dict[str, dict[str, float]], frozenset[str]]:
    """The documented models of ``repo_ids`` (``space_id``'s) with their evidence, and the space's common tokens
    (a read of the models table, four columns at a time)."""
    space = index.vectors.spaces()[space_id]
    wanted = set(repo_ids)
    described: dict[str, tuple[tuple[str, ...], str]] = {}
    firsts: set[str] = set()
    for batch in index.models.column_batches(COLUMNS):
        for repo_id, tags, card, bases in zip(*(batch[c] for c in COLUMNS), strict=True):
            if repo_id in wanted:
                described[repo_id] = (tags, card or "")
                firsts.update(bases[:1])
    ignore = naming.base_words([str(space.params.get("base_repo", "")), *sorted(firsts)])
    found = {r: suggest.evidence(r, *described.get(r, ((), "")), ignore) for r in repo_ids}
    common = suggest.common_tokens(found.values())
    return suggest.documented(found, common), common


def evidence_digest(found: Mapping[str, float] | None) -> str:
    """A short digest of one model's evidence (pure; "" when it has none: undocumented)."""
    if not found:
        return ""
    text = " ".join(f"{t}={found[t]:g}" for t in sorted(found))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def redocumented(docs: Mapping[str, Mapping[str, float]], stored: Mapping[str, str]) -> frozenset[str]:
    """The labelled models (``stored``: their evidence digests then) whose documentation changed since (pure):
    tags or card changed, documented since, or no longer documented."""
    return frozenset(r for r, was in stored.items() if evidence_digest(docs.get(r)) != was)


def label_rows(space_id: str, data: SpaceDocs, rows: Sequence[int], k: int = suggest.K) -> list[ModelLabels]:
    """The labels of ``rows`` of ``data`` from their ``k`` nearest documented rows (pure)."""
    ids = data.repo_ids
    candidates = np.fromiter((i for i, r in enumerate(ids) if r in data.docs), np.int64)
    found = probed.search(data.unit, list(rows), candidates, k)
    out = []
    for row, near in zip(rows, found, strict=True):
        named = [(ids[j], round(c, 4)) for j, c in near]
        s = suggest.suggest(named, data.docs)
        # Unrounded: rounded up it could sit above the exact k-th cosine, and a newly documented model between the
        # two would not enter (`entered` allows 1e-6, for products of other shapes, not 5e-5).
        kth = near[-1][1] if len(near) >= k else -1.0
        out.append(ModelLabels(space_id, ids[row], s.tags, s.behaves_like, s.confidence,
                               tuple(r for r, _ in named), tuple(c for _, c in named), kth))  # fmt: skip
    return out


def entered(unit: np.ndarray, new_rows: Sequence[int], kth: np.ndarray) -> np.ndarray:
    """Rows whose ``kth`` cosine one of ``new_rows`` beats or ties: their k nearest may now hold it (pure).

    ``kth[i]`` is -1 for a row with fewer than k documented neighbours (any new one enters) and NaN for a row
    never labelled (it is recomputed anyway).
    """
    hit = np.zeros(len(unit), dtype=bool)
    if not len(new_rows):
        return hit
    new = unit[np.asarray(new_rows, np.int64)]
    for start in range(0, len(unit), BLOCK):
        best = (unit[start : start + BLOCK] @ new.T).max(axis=1)
        hit[start : start + BLOCK] = best >= kth[start : start + BLOCK] - 1e-6
    return hit


def to_recompute(
    data: SpaceDocs, stored: tuple[list[str], np.ndarray, list[tuple[str, ...]]], changed: frozenset[str]
) -> tuple[list[int], list[str]]:
    """Rows to label again and stored repo ids to drop, given the ids ``changed`` since the last refresh (pure).

    ``stored``: the labels' repo ids, ``kth`` and neighbour lists (``index.labels.neighbourhoods``).
    """
    ids, kth_stored, lists = stored
    here = set(data.repo_ids)
    gone = [r for r in ids if r not in here]
    moved = changed | frozenset(gone)
    position = {r: i for i, r in enumerate(data.repo_ids)}
    kth = np.full(len(data.repo_ids), np.nan, np.float32)
    redo = np.zeros(len(data.repo_ids), dtype=bool)
    for r, t, near in zip(ids, kth_stored.tolist(), lists, strict=True):
        i = position.get(r)
        if i is not None:
            kth[i] = t
            redo[i] = not moved.isdisjoint(near)
    redo |= np.isnan(kth)  # never labelled
    redo[[position[r] for r in changed if r in position]] = True
    new_docs = [position[r] for r in changed if r in position and r in data.docs]
    redo |= entered(data.unit, new_docs, np.nan_to_num(kth, nan=2.0))
    return np.flatnonzero(redo).tolist(), gone


@dataclass(frozen=True)
class LabelRun:
    """What a refresh did: labels computed per space, and per space whose labels were current."""

    computed: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    full: dict[str, bool] = field(default_factory=dict)  # whether a space was recomputed whole
    stopped: bool = False
    deferred: dict[str, int] = field(default_factory=dict)  # spaces left for a refresh without a deadline: vectors


def refresh_space(
    index: Index, space_id: str, *, force: bool = False, now: datetime | None = None, whole_max: int | None = None
) -> tuple[int, bool] | None:
    """Recompute what changed of ``space_id``'s labels (everything with ``force``) and store it.

    Returns:
        (labels written, whether the space was recomputed whole); None, nothing written, when the space would be
        recomputed whole with more than ``whole_max`` vectors (``refresh``'s).
    """
    head = index.labels.heads().get(space_id)
    source = index.vectors.fingerprint(space_id)  # before the vectors: a write in between only recomputes again
    count = index.vectors.count(space_id)
    data = read_space(index, space_id)
    if force or head is None or (head.rule, head.common) != (suggest.RULE, data.common):
        here = set(data.repo_ids)
        rows, gone = list(range(len(data.repo_ids))), [r for r in index.labels.neighbourhoods(space_id)[0]
                                                        if r not in here]  # fmt: skip
        whole = True
    else:
        changed = frozenset(r for r, t in zip(data.repo_ids, data.embedded_at, strict=True)
                            if head.through is None or t is None or t > head.through)  # fmt: skip
        changed |= redocumented(data.docs, index.labels.evidence(space_id))
        rows, gone = to_recompute(data, index.labels.neighbourhoods(space_id), changed)
        whole = len(rows) > len(data.repo_ids) // 2
        rows = list(range(len(data.repo_ids))) if whole else rows  # as costly: keep every label of one moment
    if whole and not force and whole_max is not None and count > whole_max:
        return None  # e.g. the common tokens moved, or most of the space is new: as costly as a first labelling
    labels = label_rows(space_id, data, rows)
    known = [t for t in data.embedded_at if t is not None]
    when = now or datetime.now(UTC)
    index.labels.put(LabelsHead(space_id, source, max(known, default=None), suggest.RULE, data.common,
                                len(data.repo_ids), when, count), labels, gone,
                     {r: evidence_digest(e) for r, e in data.docs.items()})  # fmt: skip
    return len(labels), whole


def current(index: Index, head: LabelsHead) -> bool:
    """Whether ``head``'s labels still hold: same vectors, same rule, same documentation. With the vectors
    unchanged the space's visible models are the ones labelled, so their ids come from the labels."""
    if (head.source, head.rule) != (index.vectors.fingerprint(head.space_id), suggest.RULE):
        return False
    stored = index.labels.evidence(head.space_id)
    docs, common = read_docs(index, head.space_id, sorted(stored))
    return common == head.common and not redocumented(docs, stored)


def refresh(
    index: Index,
    spaces: Iterable[str] | None = None,
    *,
    force: bool = False,
    should_stop: Callable[[], bool] | None = None,
    now: datetime | None = None,
    whole_max: int | None = None,
) -> LabelRun:
    """Refresh the labels of ``spaces`` (default: all) whose vectors or documentation changed since they were
    computed.

    ``whole_max`` (a report's, ``REPORT_WHOLE_MAX``): a space of more vectors that would be labelled whole (never
    labelled, another scoring rule, its common tokens moved, or most of it changed) is left as it is (``deferred``,
    logged with the fix): its whole labelling (~5 minutes at 1M vectors) is for ``hubdelta labels`` and the refresh
    after an embed run, which have no deadline.

    Raises:
        NotFoundError: a space in ``spaces`` that the index does not hold.
        StoreError: the index is read-only.
    """
    wanted = index.vectors.named(spaces)
    heads = index.labels.heads()
    out = LabelRun()
    for space_id in wanted:
        head = heads.get(space_id)
        if not force and head is not None and current(index, head):
            out.unchanged[space_id] = head.n
            continue
        if should_stop is not None and should_stop():
            return LabelRun(out.computed, out.unchanged, out.full, stopped=True, deferred=out.deferred)
        if (not force and whole_max is not None and (head is None or head.rule != suggest.RULE)
                and index.vectors.count(space_id) > whole_max):  # fmt: skip
            done = None  # never labelled, or by another rule: whole for sure, decided without reading the space
        else:
            done = refresh_space(index, space_id, force=force, now=now, whole_max=whole_max)
        if done is None:
            out.deferred[space_id] = vectors = index.vectors.count(space_id)
            log.warning("labels deferred", space=space_id, vectors=vectors,
                        why="a whole labelling of a space this large takes minutes",
                        fix="run `hubdelta labels` (the refresh after the next embed run does it too)")  # fmt: skip
            continue
        out.computed[space_id], out.full[space_id] = done
        log.info("labels stored", space=space_id, labels=done[0], whole=done[1])
    return out


def refresh_labels(settings: Settings, spaces: Iterable[str] | None = None, *, force: bool = False,
                   command: str = "hubdelta labels") -> LabelRun:  # fmt: skip
    """:func:`refresh` under the writer lock (what ``hubdelta labels`` calls).

    Raises:
        IndexLockedError: another writer holds the index.
        NotFoundError: an unknown space in ``spaces``.
    """
    with open_writer(settings, command) as index:
        return refresh(index, spaces, force=force)


def refresh_after_writes(
    settings: Settings,
    command: str,
    *,
    index: Index | None = None,
    should_stop: Callable[[], bool] | None = None,
    whole_max: int | None = None,
) -> LabelRun | None:
    """Refresh the labels after a run that wrote vectors, never failing that run (as the map's layouts are:
    a failure is logged with its fix; readers meanwhile show the labels as stale). None after a failure.
    ``whole_max``: as :func:`refresh`'s."""
    try:
        if index is not None:
            return refresh(index, should_stop=should_stop, whole_max=whole_max)
        with open_writer(settings, f"{command}: labels") as opened:
            return refresh(opened, should_stop=should_stop, whole_max=whole_max)
    except Exception as e:  # any failure: the run that called it has already succeeded
        log.warning("labels not refreshed", error=f"{type(e).__name__}: {e}",
                    fix="run `hubdelta labels` once the index is free")  # fmt: skip
        return None
