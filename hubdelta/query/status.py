"""``hubdelta status``: the index at a glance, read without the writer lock."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hubdelta.index.door import SharedReader, reading
from hubdelta.index.location import local_path
from hubdelta.index.records import ModelStatus
from hubdelta.index.store import Index
from hubdelta.kernel.settings import Settings
from hubdelta.query.records import SpaceStatus, Status


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (0 when it does not exist; links not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # removed while we walked (a compaction, a cache cleanup)
                continue
    return total


def _layer(value: object) -> str:
    return "final" if value is None else str(value)


def space_statuses(index: Index) -> list[SpaceStatus]:
    """Every space of the index: its base, dimension, vector count and how it is searched."""
    spaces = []
    for space_id, row in index.vectors.spaces().items():
        ann = index.vectors.ann_status(space_id)
        p = row.params
        spaces.append(
            SpaceStatus(
                space_id=space_id,
                base=f"family {p['family']}" if p.get("family") else str(p.get("base_repo", "")),
                dim=row.dim,
                vectors=index.vectors.count(space_id),
                layer=_layer(p.get("layer")),
                position=str(p.get("position", "")),
                dtype=str(p.get("dtype", "")),
                ann_index=None if ann is None else ann.index_type,
                unindexed=0 if ann is None or ann.index_type is None else ann.unindexed_rows,
                method=str(p.get("method", "activations")) + (f" ({p['recipe']})" if p.get("recipe") else ""),
            )
        )
    return spaces


def status(settings: Settings, *, daemon: dict[str, Any] | None, reader: SharedReader | None = None) -> Status:
    """Counts by status and space, queue length, last crawl, disk use; ``daemon`` is the daemon's health as the
    face read it (:func:`hubdelta.daemon.state.daemon_health`: the read side does not import the daemon).

    Raises:
        IndexNotFoundError: no index yet (the fix says how to create one).
    """
    with reading(settings, reader) as index:
        counts = index.models.count_by_status()
        tracked = index.tracked.all()
        reports = index.reports.heads()  # not latest(): that reads every cluster's member list
        spaces = space_statuses(index)
    crawls = [t.last_crawl for t in tracked if t.last_crawl is not None]
    uri = settings.index_uri
    folder = local_path(uri)
    return Status(
        index=uri,
        models=sum(counts.values()),
        by_status={s.value: counts[s] for s in ModelStatus},
        queue=counts[ModelStatus.QUEUED] + counts[ModelStatus.EMBEDDING],
        tracked=len(tracked),
        last_crawl=max(crawls) if crawls else None,
        last_report=reports[0]["created_at"] if reports else None,
        spaces=spaces,
        index_bytes=None if folder is None else tree_bytes(folder),  # not measured on object storage
        cache_bytes=tree_bytes(settings.cache_dir),
        daemon=daemon,
    )
