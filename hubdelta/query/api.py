"""The query side's library functions: what ``hubdelta similar/show/status`` and ``hubdelta.similar`` call.

Read-only: the index is opened without the writer lock, so queries never wait for (or block) a running crawl
or embed. Nothing here imports torch or transformers (``--embed`` does, and only when asked).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hubdelta.index.door import SharedReader, reading
from hubdelta.index.labels import ModelLabels
from hubdelta.index.records import ModelRecord, ModelStatus, Relation, visible_to_queries
from hubdelta.index.selectors import IN_LIST_MAX, Selector, by_ids, visible
from hubdelta.index.store import Index
from hubdelta.kernel.errors import HubdeltaError, NotFoundError, StoreError, UsageError
from hubdelta.kernel.settings import Settings
from hubdelta.query.choose import WHERE_FIX, choose_space, close_ids, first_fetch, model_filter, next_fetch
from hubdelta.query.copies import Collapsed, collapsed_nearest, group_of
from hubdelta.query.labels import labels_of_repo, read_labels
from hubdelta.query.records import Neighbor, Similar, VectorInfo

NOT_EMBEDDED_FIX = {
    ModelStatus.DISCOVERED: "it is recorded but not queued (quantized or not embeddable)",
    ModelStatus.QUEUED: "run hubdelta embed",
    ModelStatus.EMBEDDING: "an embed run holds it; wait for it or rerun hubdelta embed",
    ModelStatus.FAILED: "see the reason; hubdelta embed retries only transient failures",
    ModelStatus.SKIPPED: "see the reason",
}


def preferred_params(settings: Settings) -> dict[str, Any]:
    """The space params the current ``[embed]`` settings would produce (layer only when it needs no model)."""
    e = settings.embed
    preferred: dict[str, Any] = {"method": "activations", "position": e.position, "dtype": e.dtype}
    if e.layer == "final":
        preferred["layer"] = None
    elif e.layer.isdigit():
        preferred["layer"] = int(e.layer)
    return preferred


def check_relation(relation: str | None) -> str | None:
    if relation is not None and relation not in {r.value for r in Relation}:
        raise UsageError("--relation", f"unknown relation {relation!r}",
                         fix=f"use one of {', '.join(r.value for r in Relation)}")  # fmt: skip
    return relation


def load_vector(path: Path) -> np.ndarray:
    """A query vector from a ``.npy`` file: one row of floats, never unpickled.

    Raises:
        UsageError: missing, not a .npy array, not 1-D (or 1 x C), not finite, or all zeros.
    """
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(str(path), "no such file", fix="give a .npy file written by numpy.save") from None
    except (OSError, ValueError) as e:
        raise UsageError(str(path), f"not a .npy array ({str(e)[:80]})", fix="write it with numpy.save") from e
    return check_vector(array, str(path))


def check_vector(array: object, label: str) -> np.ndarray:
    """``array`` as one finite, non-zero float32 vector (a 1 x C row is accepted).

    Raises:
        UsageError: not numeric, not one vector, not finite, or all zeros.
    """
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise UsageError(label, "does not hold a numeric array", fix="write one vector with numpy.save")
    vector = array.reshape(-1) if array.ndim == 2 and array.shape[0] == 1 else array
    if vector.ndim != 1 or vector.size == 0:
        raise UsageError(label, f"holds an array of shape {array.shape}, not one vector",
                         fix="save a single vector, shape (C,)")  # fmt: skip
    vector = vector.astype(np.float32)
    if not np.isfinite(vector).all() or not vector.any():
        raise UsageError(label, "the vector is all zeros or not finite", fix="save a real delta vector")
    return vector


@dataclass(frozen=True)
class _Query:
    label: str
    vector: np.ndarray
    space_id: str
    exclude: frozenset[str]
    other_spaces: list[str]


def removed_error(record: ModelRecord) -> HubdeltaError:
    """The refusal to search with a model hidden from queries (removed from the Hub, or no change from its base)."""
    if record.status == ModelStatus.UNCHANGED:
        return HubdeltaError(f"{record.repo_id} has no change from its base ({record.reason}): it is hidden from "
                             "queries", fix=f"hubdelta show {record.repo_id} shows its record; its nearest model "
                             "is the base itself")  # fmt: skip
    seen = f" (last seen {record.last_seen:%Y-%m-%d})" if record.last_seen else ""
    return HubdeltaError(f"{record.repo_id} was removed from the Hub{seen}: it is hidden from queries",
                         fix=f"hubdelta show {record.repo_id} still shows its record; a full crawl brings it back "
                             "if it is listed again")  # fmt: skip


def _repo_query(index: Index, settings: Settings, repo: str, space: str | None) -> _Query:
    record = index.models.get([repo]).get(repo)
    if record is not None and not visible_to_queries(record.status):
        raise removed_error(record)
    vectors = index.vectors.of_repo(repo)
    if not vectors:
        if record is None:
            close = close_ids(repo, index.models.ids(visible()))
            hint = f"; close: {', '.join(close)}" if close else ""
            raise NotFoundError(repo, f"not in the index{hint}",
                             fix="track its base and crawl, or pass --embed to embed it now")  # fmt: skip
        why = f" ({record.reason})" if record.reason else ""
        raise HubdeltaError(f"{repo} is not embedded yet: status {record.status.value}{why}",
                            fix=NOT_EMBEDDED_FIX.get(record.status, "run hubdelta embed"))  # fmt: skip
    spaces = index.vectors.spaces()
    newest = sorted(vectors, key=lambda s: str(spaces[s].created_at) if s in spaces else "", reverse=True)
    available = {s: spaces[s].params if s in spaces else {} for s in newest}
    chosen, others = choose_space(available, space, preferred_params(settings), what=repo)
    vector = vectors[chosen].vector
    if not np.any(vector):
        raise HubdeltaError(f"{repo}'s delta is all zeros: it behaves exactly like its base on the probes",
                            fix="nothing to compare by direction; its nearest model is the base itself")  # fmt: skip
    return _Query(repo, vector, chosen, frozenset([repo]), others)


def _vector_query(index: Index, given: Path | np.ndarray, space: str | None) -> _Query:
    path = "posted" if isinstance(given, np.ndarray) else given  # a web client's vector has no file name
    vector = check_vector(given, "vector") if isinstance(given, np.ndarray) else load_vector(given)
    fitting = {s: r.params for s, r in index.vectors.spaces().items() if r.dim == vector.size}
    if space is None and len(fitting) > 1:
        raise UsageError("--space", f"{len(fitting)} spaces have dimension {vector.size}",
                         fix=f"choose one of: {', '.join(fitting)}")  # fmt: skip
    if not fitting and space is None:
        raise UsageError(str(path), f"no space has dimension {vector.size}", fix="check the file, or hubdelta status")
    if space is not None and space not in fitting:
        known = index.vectors.spaces()
        fix = f"use one of: {', '.join(fitting) or 'none'}"
        if space in known:  # it exists: the vector is what does not fit
            raise UsageError("--space", f"space {space!r} has dimension {known[space].dim}, the vector {vector.size}",
                             fix=fix)  # fmt: skip
        raise NotFoundError("--space", f"space {space!r} does not exist", fix=fix)
    chosen = space or next(iter(fitting))
    return _Query(f"vector:{path}", vector, chosen, frozenset(), [])


_NAMES: dict[tuple[str, str], dict[str, dict[str, str]]] = {}  # (index uri, report id) -> space -> repo -> name
_NAMES_LOCK = threading.Lock()


def cluster_names(index: Index, space_id: str) -> dict[str, str]:
    """repo id -> the name of its cluster in ``space_id`` in the latest report (empty before the first).

    Kept per report for the process's life (the last two): a report is never changed once stored, and at a
    million models reading its member lists costs seconds, which a long-lived reader (the web service) must not
    pay per query.
    """
    report_id = index.reports.latest_id()
    if report_id is None:
        return {}
    key = (index.uri, report_id)
    with _NAMES_LOCK:
        names = _NAMES.get(key)
    if names is None:
        report = index.reports.get(report_id)
        clusters = {} if report is None else report.clusters
        names = {s: {m: c.name for c in cs for m in c.members} for s, cs in clusters.items()}
        with _NAMES_LOCK:
            while len(_NAMES) >= 2:
                _NAMES.pop(next(iter(_NAMES)))
            _NAMES[key] = names
    return names.get(space_id, {})


def nearest_filtered(
    index: Index, space_id: str, vector: np.ndarray, k: int, where: Selector | None, exclude: frozenset[str]
) -> list[tuple[str, float]]:
    """The ``k`` nearest visible rows of a space whose model ``where`` selects (``--where``, ``--relation``).

    The index's search never returns a model hidden from queries (removed from the Hub). The metadata lives in
    the models table only (the crawler keeps it fresh there), so the filter is applied to growing rounds of
    nearest candidates; with exact search the result is the exact filtered top k.
    """
    total = index.vectors.count(space_id)
    fetch: int | None = first_fetch(k, len(exclude), total, where is not None)
    allowed: set[str] | None = None  # every id passing the filter, once a round is too big for an IN list
    found: list[tuple[str, float]] = []
    while fetch:
        hits = [h for h in index.vectors.nearest(space_id, vector, fetch) if h[0] not in exclude]
        if where is not None:
            if allowed is None and len(hits) > IN_LIST_MAX:
                allowed = set(_filtered_ids(index, where))  # one scan serves every later round
            ok = allowed if allowed is not None else set(_filtered_ids(index, where, [h[0] for h in hits]))
            hits = [h for h in hits if h[0] in ok]
        found = hits
        fetch = next_fetch(k, fetch, len(hits), total)
    return found[:k]


def check_filter(index: Index, where: Selector) -> None:
    """Refuse a malformed ``--where`` filter now, even when there is nothing to filter yet.

    Raises:
        UsageError: not valid SQL over the models table.
    """
    _filtered_ids(index, where, ["-"])


def _filtered_ids(index: Index, where: Selector, among: Sequence[str] | None = None) -> list[str]:
    selector = where if among is None else where & by_ids(among)  # the index writes the id list
    try:
        return index.models.ids(selector)
    except (ValueError, RuntimeError, OSError) as e:
        if isinstance(e, StoreError):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise UsageError("--where", f"not a valid filter over the models table: {first}", fix=WHERE_FIX) from e


def similar(
    settings: Settings,
    repo: str | None = None,
    *,
    vector: Path | np.ndarray | None = None,
    k: int = 10,
    where: str | None = None,
    relation: str | None = None,
    space: str | None = None,
    filters: Selector | None = None,
    reader: SharedReader | None = None,
    show_all: bool = False,
) -> Similar:
    """The models nearest to ``repo`` (or to a saved vector) by cosine, within one space.

    Copies (the same weight files, or near-copy vectors: :mod:`hubdelta.index.copies`) are one row: the group's
    representative, its other members found in ``copies``; ``show_all`` gives every model its own row.

    Args:
        settings: where the index is, and the ``[embed]`` settings that pick a default space.
        repo: a repo id in the index, with a vector.
        vector: a ``.npy`` file of one vector (or the vector itself) instead of ``repo``.
        k: how many neighbours.
        where: a SQL filter over the models table (``license = 'mit' AND downloads > 100``).
        relation: only adapters, finetunes, merges (or quantized).
        space: the space id (default: the repo's space that matches the current settings, else its newest).
        filters: structured metadata filters (:func:`hubdelta.index.selectors.by_metadata`): the web
            service's, which never passes SQL text.
        reader: a long-lived process's open index (default: one opened for this query).
        show_all: one row per model, copies included (``similar --all``).

    Raises:
        UsageError: bad arguments, an unknown repo (with close ids), a bad filter or vector file.
        HubdeltaError: the repo is known but has no vector yet (its status and reason), or was removed from the
            Hub (removed models are hidden from queries: never a neighbour, never a query).
    """
    if (repo is None) == (vector is None):
        raise UsageError("similar", "give a repo id or --vector FILE, not both or neither",
                         fix="e.g. hubdelta similar owner/name, or hubdelta similar --vector v.npy")  # fmt: skip
    if k < 1:
        raise UsageError("-k", f"{k} is not a positive count", fix="use e.g. -k 10")
    chosen = model_filter(where, check_relation(relation))
    if filters is not None:
        chosen = filters if chosen is None else chosen & filters
    with reading(settings, reader) as index:
        if repo is not None:
            query = _repo_query(index, settings, repo, space)
        else:
            assert vector is not None
            query = _vector_query(index, vector, space)
        if chosen is not None and index.vectors.count(query.space_id) == 0:
            check_filter(index, chosen)  # nothing to filter: still refuse a malformed filter

        rows = _rows(index, query, k, chosen, show_all)
        records = index.models.get([r.repo_id for r in rows])
        clusters = cluster_names(index, query.space_id)
        labels = read_labels(index, query.space_id, [r.repo_id for r in rows], thorough=False)
    neighbors = [Neighbor.of(i + 1, r.score, records.get(r.repo_id), r.repo_id, clusters.get(r.repo_id), r.copies,
                             labels.get(r.repo_id)) for i, r in enumerate(rows)]  # fmt: skip
    return Similar(query.label, query.space_id, k, where, relation, neighbors, query.other_spaces)


def _rows(index: Index, query: _Query, k: int, chosen: Selector | None, show_all: bool) -> list[Collapsed]:
    """The answer's rows: the k nearest models, each copy group as one row unless ``show_all``."""

    def search(n: int) -> list[tuple[str, float]]:
        return nearest_filtered(index, query.space_id, query.vector, n, chosen, query.exclude)

    if show_all:
        return [Collapsed(rid, score) for rid, score in search(k)]
    return collapsed_nearest(index, query.space_id, k, search)


@dataclass(frozen=True)
class Shown:
    """``hubdelta show``: a model's record, its vectors, and its nearest models in its first space."""

    record: ModelRecord
    vectors: list[VectorInfo]
    neighbors: list[Neighbor]
    hidden: bool = False  # removed from the Hub: hidden from queries (no neighbours are looked up)
    labels: list[ModelLabels] = field(default_factory=list)  # its suggested labels, a space each
    copies: list[str] = field(default_factory=list)  # the other models of its copy group (same weights or behaviour)
    copy_of: str | None = None  # its group's representative (the earliest created), when that is another model
    copied_from: str | None = None  # the model whose vector it reused without download (same weight files)


def show(
    settings: Settings, repo: str, *, k: int = 5, reader: SharedReader | None = None, neighbors: bool = True
) -> Shown:
    """A model's stored record, where it has vectors, and its ``k`` nearest models (none with ``neighbors=False``:
    the caller searches them itself, e.g. filtered).

    A model removed from the Hub is still shown, marked ``hidden``, without neighbours: removed models are
    hidden from queries, so it is nobody's neighbour and is not searched with.

    Raises:
        UsageError: the repo is not in the index (with close ids).
    """
    with reading(settings, reader) as index:
        record = index.models.get([repo]).get(repo)
        if record is None:
            close = close_ids(repo, index.models.ids())
            hint = f"; close: {', '.join(close)}" if close else ""
            raise NotFoundError(repo, f"not in the index{hint}", fix="check the spelling, or hubdelta crawl")
        vectors = index.vectors.of_repo(repo)
        infos = [VectorInfo(s, e.sha, e.embedded_at, float(np.linalg.norm(e.vector))) for s, e in vectors.items()]
        labels = labels_of_repo(index, repo)
    hidden = not visible_to_queries(record.status)
    found: list[Neighbor] = []
    if not (vectors and not hidden):
        return Shown(record, infos, found, hidden, labels)
    answer = similar(settings, repo, k=max(k, 1), reader=reader)
    found = answer.neighbors if neighbors else []
    near = [m for n in answer.neighbors for m in (n.repo_id, *n.copies)]
    with reading(settings, reader) as index:
        group = group_of(index, answer.space_id, repo, near)
        row = index.copies.of_space(answer.space_id, [repo]).get(repo)
    others = [m for m in group.members if m != repo] if group is not None else []
    copy_of = group.representative if group is not None and group.representative != repo else None
    return Shown(record, infos, found, hidden, labels, others, copy_of, row.copy_of if row is not None else None)
