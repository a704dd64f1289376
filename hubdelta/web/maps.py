"""The map's data as the browser takes it: a space's stored layout (``index.layouts``), packed once per layout
version into one binary payload, and the lookups hover and search need. Nothing is computed per request: the
layout is computed when vectors change and stored in the index; this only caches its bytes."""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from hubdelta.index.layouts import Layout
from hubdelta.index.store import Index
from hubdelta.kernel.errors import NotFoundError
from hubdelta.web.names import IdText

FIND_MAX = 100_000  # highlighted points a search returns


@dataclass(frozen=True)
class PackedLayout:
    version: str
    meta: dict[str, Any]
    payload: bytes  # float32 x[n], float32 y[n], int32 cluster[n], uint8 new[n]; little-endian
    repo_ids: list[str]
    ids: IdText
    cluster: np.ndarray
    cluster_names: list[str]
    new: np.ndarray


def pack(layout: Layout) -> PackedLayout:
    """A stored layout as the browser's payload and the server's lookups."""
    sizes = layout.cluster_sizes()
    meta = {
        "space_id": layout.space_id,
        "n": layout.n,
        "version": layout.version,
        "computed_at": layout.computed_at.isoformat(),
        "report_id": layout.report_id,
        "clusters": [{"index": i, "name": c, "size": sizes[i]} for i, c in enumerate(layout.cluster_names)],
        "new": int(layout.new.sum()),
        "bounds": list(layout.bounds()),
    }
    ids = list(layout.repo_ids)
    return PackedLayout(layout.version, meta, layout.packed(), ids, IdText(ids), layout.cluster,
                        list(layout.cluster_names), layout.new.astype(bool))  # fmt: skip


class LayoutCache:
    """Packed layouts by space, replaced when the index holds a newer version (checked on each request)."""

    def __init__(self) -> None:
        self._packed: dict[str, PackedLayout] = {}
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, index: Index, space_id: str) -> PackedLayout:
        """The space's packed layout.

        Raises:
            NotFoundError: the space has no stored layout (none computed yet, or no such space).
        """
        version = index.layouts.versions().get(space_id)
        if version is None:
            spaces = index.vectors.spaces()
            what = "has no map yet" if space_id in spaces else "does not exist"
            fix = "run hubdelta layout (embed and report runs refresh it)" if space_id in spaces else "see /api/spaces"
            raise NotFoundError("space", f"space {space_id!r} {what}", fix=fix)
        with self._lock:
            cached = self._packed.get(space_id)
            loading = self._loading.setdefault(space_id, threading.Lock())
        if cached is not None and cached.version == version:
            return cached
        with loading:  # one request reads and packs a new version (a million points: ~0.3 s, ~150 MB); others wait
            with self._lock:
                cached = self._packed.get(space_id)
            if cached is not None and cached.version == version:
                return cached
            layout = index.layouts.get(space_id)
            if layout is None:  # replaced between the two reads: the next request sees the new one
                raise NotFoundError("space", f"space {space_id!r}'s map is being replaced", fix="retry in a moment")
            packed = pack(layout)
            with self._lock:
                self._packed[space_id] = packed
        return packed


def position_of(packed: PackedLayout, repo_id: str) -> int | None:
    """The point number of ``repo_id`` on the map, or None (a stored layout's rows are in repo-id order)."""
    i = bisect.bisect_left(packed.repo_ids, repo_id)
    return i if i < len(packed.repo_ids) and packed.repo_ids[i] == repo_id else None


def points(packed: PackedLayout, wanted: list[int]) -> list[dict[str, Any]]:
    """Repo id, cluster name and newness of the points numbered ``wanted`` (unknown numbers left out)."""
    out = []
    for i in wanted:
        if 0 <= i < len(packed.repo_ids):
            c = int(packed.cluster[i])
            name = packed.cluster_names[c] if 0 <= c < len(packed.cluster_names) else None
            out.append({"i": i, "repo_id": packed.repo_ids[i], "cluster": name, "new": bool(packed.new[i])})
    return out


def find(packed: PackedLayout, text: str, limit: int) -> list[int]:
    """Points whose repo id contains ``text`` (case-insensitive), in layout order."""
    return [int(i) for i in packed.ids.containing(text, limit)]
