"""JSON bodies in the Hub's wire format: list items, model info, siblings, tree entries (pure)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

from hubdelta_dev.devhub import blobs
from hubdelta_dev.devhub.catalog import RepoRecord, Snapshot
from hubdelta_dev.devhub.entries import format_time_ms

# Every property huggingface_hub's ExpandModelProperty_T names.
EXPAND_MODEL = frozenset(
    {
        "author", "baseModels", "cardData", "childrenModelCount", "config", "createdAt", "disabled",
        "downloads", "downloadsAllTime", "evalResults", "gated", "gguf", "inference",
        "inferenceProviderMapping",
        "lastModified", "library_name", "likes", "mask_token", "model-index", "pipeline_tag", "private",
        "resourceGroup", "safetensors", "sha", "siblings", "spaces", "tags", "transformersInfo",
        "trendingScore", "usedStorage", "widgetData",
    }
)  # fmt: skip
LIST_ONLY_ON_INFO = frozenset({"baseModels", "childrenModelCount", "usedStorage"})  # rejected by /api/models
LIST_DEFAULT = (
    "likes",
    "trendingScore",
    "private",
    "downloads",
    "tags",
    "pipeline_tag",
    "library_name",
    "createdAt",
)
LIST_FULL = (*LIST_DEFAULT, "author", "gated", "lastModified", "sha", "disabled", "siblings")
INFO_DEFAULT = (
    "private", "pipeline_tag", "library_name", "tags", "downloads", "likes", "author", "sha", "lastModified",
    "gated", "disabled", "cardData", "config", "siblings", "spaces", "createdAt", "safetensors",
)  # fmt: skip
COMMIT_TITLE = "devhub snapshot"


def object_id(repo_id: str) -> str:
    """A stable 24-hex ``_id`` like the Hub's Mongo ids."""
    return hashlib.sha1(repo_id.encode(), usedforsecurity=False).hexdigest()[:24]


def siblings(repo: RepoRecord, snap: Snapshot, blobs_meta: bool) -> list[dict[str, Any]]:
    """``siblings``: file names, plus size/blobId/lfs when the client asked for file metadata."""
    if not blobs_meta:
        return [{"rfilename": p} for p in repo.paths]
    out = []
    for f in snap.files(repo).values():
        item: dict[str, Any] = {"rfilename": f.path, "size": f.size, "blobId": f.oid}
        if f.lfs is not None:
            item["lfs"] = {"sha256": f.lfs.sha256, "size": f.lfs.size, "pointerSize": f.lfs.pointer_size}
        out.append(item)
    return out


def safetensors_info(repo: RepoRecord, snap: Snapshot) -> dict[str, Any] | None:
    """``safetensors``: parameter counts per dtype summed over every safetensors file's header."""
    totals: dict[str, int] = {}
    if not any(p.endswith(".safetensors") for p in repo.paths):
        return None
    for f in snap.files(repo).values():
        header = blobs.read_header(f)
        for dtype, n in (blobs.safetensors_parameters(header) if header else {}).items():
            totals[dtype] = totals.get(dtype, 0) + n
    return {"parameters": totals, "total": sum(totals.values())} if totals else None


def base_models(repo: RepoRecord) -> dict[str, Any] | None:
    """``baseModels``: the relation and the direct bases."""
    if repo.lineage is None:
        return None
    return {"relation": repo.lineage.relation, "models": [{"id": b} for b in repo.lineage.bases]}


def _children(repo: RepoRecord, snap: Snapshot) -> int:
    return len(snap.index.by_tag.get(f"base_model:{repo.id}", ()))


def _used_storage(repo: RepoRecord, snap: Snapshot) -> int:
    return sum(f.size for f in snap.files(repo).values())


Field = Callable[[RepoRecord, Snapshot, bool], Any]
FIELDS: dict[str, Field] = {
    "author": lambda r, s, b: r.author,
    "baseModels": lambda r, s, b: base_models(r),
    "cardData": lambda r, s, b: r.card or None,
    "childrenModelCount": lambda r, s, b: _children(r, s),
    "config": lambda r, s, b: r.config,
    "createdAt": lambda r, s, b: format_time_ms(r.created_ms),
    "disabled": lambda r, s, b: False,
    "downloads": lambda r, s, b: r.downloads,
    "downloadsAllTime": lambda r, s, b: r.downloads,
    "gated": lambda r, s, b: r.gated,
    "lastModified": lambda r, s, b: format_time_ms(r.modified_ms),
    "library_name": lambda r, s, b: r.library_name,
    "likes": lambda r, s, b: r.likes,
    "pipeline_tag": lambda r, s, b: r.pipeline_tag,
    "private": lambda r, s, b: r.private,
    "safetensors": lambda r, s, b: safetensors_info(r, s),
    "sha": lambda r, s, b: r.sha,
    "siblings": lambda r, s, b: siblings(r, s, b),
    "spaces": lambda r, s, b: [],
    "tags": lambda r, s, b: list(r.tags),
    "trendingScore": lambda r, s, b: r.trending,
    "usedStorage": lambda r, s, b: _used_storage(r, s),
}
OMIT_WHEN_NONE = frozenset({"baseModels", "cardData", "config", "safetensors", "pipeline_tag", "library_name"})


def model_json(
    repo: RepoRecord,
    snap: Snapshot,
    fields: Iterable[str],
    *,
    blobs_meta: bool = False,
    model_id: bool = True,
) -> dict[str, Any]:
    """A model object with ``_id``, ``id`` and the given fields (unknown or absent ones are omitted).

    ``modelId`` (a legacy copy of ``id``) is added unless the client chose fields with ``expand``.
    """
    out: dict[str, Any] = {"_id": object_id(repo.id), "id": repo.id}
    for name in fields:
        fn = FIELDS.get(name)
        if fn is None:
            continue
        value = fn(repo, snap, blobs_meta)
        if value is None and name in OMIT_WHEN_NONE:
            continue
        out[name] = value
    if model_id:
        out["modelId"] = repo.id
    return out


def list_fields(options: dict[str, Any]) -> tuple[str, ...]:
    """Fields of one list item for the request's full/cardData/config/expand options."""
    if options["expand"]:
        return tuple(dict.fromkeys(options["expand"]))
    fields = LIST_FULL if options["full"] else LIST_DEFAULT
    extra = (("cardData",) if options["cardData"] else ()) + (("config",) if options["config"] else ())
    return (*fields, *extra)


def bad_expand(expand: Iterable[str], *, listing: bool) -> list[str]:
    """Expand values the endpoint rejects (unknown ones, and info-only ones on the list endpoint)."""
    allowed = EXPAND_MODEL - LIST_ONLY_ON_INFO if listing else EXPAND_MODEL
    return [e for e in expand if e not in allowed]


def tree_entries(
    repo: RepoRecord, snap: Snapshot, folder: str, *, recursive: bool, expand: bool
) -> list[dict[str, Any]] | None:
    """Entries under ``folder`` ("" = root): directories first, then files, each sorted by path.

    Returns:
        None when ``folder`` is not a directory of the repo.
    """
    files = snap.files(repo)
    prefix = f"{folder}/" if folder else ""
    dirs: dict[str, list[str]] = {}
    out_files: list[blobs.FileEntry] = []
    for path, f in files.items():
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix) :].split("/")
        for depth in range(1, len(rest) if recursive else min(2, len(rest))):
            dirs.setdefault(prefix + "/".join(rest[:depth]), []).append(f.oid)
        if recursive or len(rest) == 1:
            out_files.append(f)
    if folder and not out_files and not dirs:
        return None
    commit = {"id": repo.sha, "title": COMMIT_TITLE, "date": format_time_ms(repo.modified_ms)}
    entries: list[dict[str, Any]] = []
    for path in sorted(dirs):
        oid = hashlib.sha1(f"{path}\0{''.join(dirs[path])}".encode(), usedforsecurity=False).hexdigest()
        entries.append({"type": "directory", "oid": oid, "size": 0, "path": path})
    for f in out_files:
        item: dict[str, Any] = {"type": "file", "oid": f.oid, "size": f.size, "path": f.path}
        if f.lfs is not None:
            item["lfs"] = {"oid": f.lfs.sha256, "size": f.lfs.size, "pointerSize": f.lfs.pointer_size}
        entries.append(item)
    if expand:
        for item in entries:
            item["lastCommit"] = commit
    return entries
