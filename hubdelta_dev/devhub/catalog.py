"""A devhub root scanned into an immutable snapshot of repos, rescanned when its files change."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from hubdelta_dev.devhub import blobs, cards
from hubdelta_dev.devhub.entries import CATALOG_FILE, REPO_ID_RE, CatalogEntry, parse_line, parse_time_ms
from hubdelta_dev.devhub.listing import ListingIndex
from hubdelta_dev.errors import CatalogError, DevhubError

log = structlog.get_logger(__name__)

# The Hub reports this creation date for repos created before dates were stored.
DEFAULT_CREATED_MS = parse_time_ms("2022-03-02T23:29:04.000Z")
MAX_CONFIG_BYTES = 1 << 20
FILE_CACHE_REPOS = 20_000  # metadata-only repos whose file tables stay materialized

FileStat = tuple[str, int, int]  # (path in repo, size, mtime_ns)


@dataclass(slots=True)
class RepoRecord:
    """Everything devhub serves about one model repo (files of catalog-only repos are built on demand).

    Never mutated once built. Not ``frozen``: a frozen init costs 3x and a synthetic load builds 100k.
    """

    id: str
    sha: str
    created_ms: int
    modified_ms: int
    downloads: int
    likes: int
    trending: int
    gated: bool | str
    private: bool
    library_name: str | None
    pipeline_tag: str | None
    tags: tuple[str, ...]
    card: dict[str, Any]
    card_text: str
    lineage: cards.Lineage | None
    config: dict[str, Any] | None
    paths: tuple[str, ...]  # every file path in the repo, sorted
    files: tuple[blobs.FileEntry, ...] | None  # folder repos: hashed at scan time
    virtual: tuple[tuple[str, int], ...] = ()  # catalog-only repos: declared (path, size)

    @property
    def author(self) -> str:
        return self.id.split("/", 1)[0]


@dataclass(frozen=True)
class RootListing:
    """The cheap signature of a root: catalog stat and every repo file's (path, size, mtime)."""

    catalog: tuple[int, int, int] | None
    folders: tuple[tuple[str, tuple[FileStat, ...]], ...]


@dataclass
class Snapshot:
    """One consistent view of the root. Never mutated after construction, except the file-table cache."""

    repos: dict[str, RepoRecord]
    listing: RootListing
    generation: int
    loaded_at: float = field(default_factory=time.time)
    index: ListingIndex = field(init=False)
    _files: dict[str, dict[str, blobs.FileEntry]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = ListingIndex(self.repos)

    def files(self, repo: RepoRecord) -> dict[str, blobs.FileEntry]:
        """The repo's files by path (sorted); catalog-only contents are rendered or synthesized here."""
        table = self._files.get(repo.id)
        if table is None:
            entries = repo.files if repo.files is not None else _virtual_files(repo)
            table = {e.path: e for e in sorted(entries, key=lambda e: e.path)}
            if len(self._files) >= FILE_CACHE_REPOS:
                self._files.clear()  # bounded memory; rebuilding a table is cheap
            self._files[repo.id] = table
        return table


def _virtual_files(repo: RepoRecord) -> list[blobs.FileEntry]:
    seed = f"{repo.id}@{repo.sha}"
    out = [blobs.entry_from_bytes("README.md", cards.render_card(repo.card, repo.card_text).encode())]
    if repo.config is not None:
        out.append(blobs.entry_from_bytes("config.json", json.dumps(repo.config, indent=2).encode()))
    out.extend(blobs.virtual_entry(seed, p, s) for p, s in repo.virtual if p not in ("README.md", "config.json"))
    return out


def list_root(root: Path) -> RootListing:
    """Stat the catalog and walk ``<root>/<org>/<name>/`` folders, skipping hidden names."""
    cat = root / CATALOG_FILE
    try:
        st = cat.stat()
        catalog = (st.st_mtime_ns, st.st_size, st.st_ino)
    except FileNotFoundError:
        catalog = None
    folders = []
    for org in _subdirs(root):
        for name in _subdirs(org):
            repo_id = f"{org.name}/{name.name}"
            if REPO_ID_RE.match(repo_id):
                folders.append((repo_id, _walk_files(name)))
    return RootListing(catalog, tuple(sorted(folders)))


def _subdirs(path: Path) -> list[Path]:
    with os.scandir(path) as it:
        return sorted(Path(e.path) for e in it if e.is_dir() and not e.name.startswith("."))


def _walk_files(folder: Path) -> tuple[FileStat, ...]:
    """The repo's regular files. A repo folder may itself be a link (pools publish repos so); inside it, a link
    whose target lies outside the folder's real path is not a repo file (os.walk does not enter linked folders)."""
    out = []
    real = os.path.realpath(folder)
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = os.path.relpath(dirpath, folder)
        for fn in filenames:
            if fn.startswith("."):
                continue
            path = os.path.join(dirpath, fn)
            try:
                if os.path.islink(path) and not blobs.inside(path, real):
                    log.warning("devhub.link_outside_repo", path=path)
                    continue
                st = os.stat(path)
            except FileNotFoundError:
                continue  # removed while walking (or a dangling link): the next check sees the final state
            if not stat.S_ISREG(st.st_mode):
                continue  # a FIFO or device: reading it would block or never end
            rel = fn if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{fn}"
            out.append((rel, st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


def _card_fields(
    entry: CatalogEntry | None, card: dict[str, Any], paths: tuple[str, ...], config: dict[str, Any] | None
) -> dict[str, Any]:
    """Lineage, library, pipeline and tags: the catalog entry wins over the card, the card over inference."""
    facts = cards.path_facts(paths)
    lineage = cards.derive_lineage(card, facts, config)
    card_lib, card_pipe = card.get("library_name"), card.get("pipeline_tag")
    library = entry.library_name if entry is not None else None
    library = library or (card_lib if isinstance(card_lib, str) else None) or cards.infer_library(facts, lineage)
    pipeline = entry.pipeline_tag if entry is not None else None
    pipeline = pipeline or (card_pipe if isinstance(card_pipe, str) else None)
    tags = cards.derive_tags(card, facts, lineage, library, pipeline)
    return {"lineage": lineage, "library_name": library, "pipeline_tag": pipeline, "tags": tags}


def _entry_fields(entry: CatalogEntry | None, created: int, modified: int) -> dict[str, Any]:
    e = entry or CatalogEntry(id="")
    return {
        "created_ms": e.created_ms if e.created_ms is not None else created,
        "modified_ms": e.modified_ms if e.modified_ms is not None else modified,
        "downloads": e.downloads or 0,
        "likes": e.likes or 0,
        "trending": e.trending or 0,
        "gated": e.gated or False,
        "private": bool(e.private),
    }


def build_virtual_record(entry: CatalogEntry) -> RepoRecord:
    """A catalog-only repo: README rendered from ``card``/``card_text``, other files virtual."""
    card = entry.card or {}
    declared = entry.files or ()
    paths = {p for p, _ in declared} | {"README.md"} | ({"config.json"} if entry.config is not None else set())
    ordered = tuple(sorted(paths))
    payload = [card, entry.card_text, declared, entry.config, entry.revision]
    # Key order is content here: the README renders keys in order, so reordering a card changes it.
    digest = hashlib.sha1(json.dumps(payload).encode(), usedforsecurity=False).hexdigest()
    created = entry.created_ms if entry.created_ms is not None else DEFAULT_CREATED_MS
    return RepoRecord(
        id=entry.id,
        sha=entry.sha or digest,
        card=card,
        card_text=entry.card_text or "",
        config=entry.config,
        paths=ordered,
        files=None,
        virtual=declared,
        **_entry_fields(entry, created, created),
        **_card_fields(entry, card, ordered, entry.config),
    )


def _read_card(disk: Path) -> tuple[dict[str, Any], str]:
    text = disk.read_text(encoding="utf-8", errors="replace")
    try:
        return cards.split_front_matter(text)
    except (ValueError, RecursionError) as e:
        # The Hub serves such a repo and lists it, without cardData (so without card-derived tags): so does devhub.
        log.warning("devhub.card_invalid", path=str(disk), error=str(e)[:200])
        return {}, text


def _read_config(disk: Path) -> dict[str, Any] | None:
    try:
        if disk.stat().st_size > MAX_CONFIG_BYTES:
            return None
        data = json.loads(disk.read_bytes())
    except (OSError, ValueError, RecursionError):  # a hostile, deeply nested config must not stop a scan
        return None  # the Hub serves repos with broken configs too; it just reports no config
    return data if isinstance(data, dict) else None


class Catalog:
    """The repos under a root, as a :class:`Snapshot` swapped atomically when the root changes.

    Args:
        root: ``<root>/<org>/<name>/`` folders and/or ``<root>/catalog.jsonl``.
        check_interval_s: how often (at most) :meth:`current` compares the root's signature.

    Raises:
        DevhubError: the root is missing or not a directory.
        CatalogError: a malformed catalog line (on the first scan); a card whose front matter is not YAML is
            served without cardData, as the Hub does.
    """

    def __init__(self, root: Path, *, check_interval_s: float = 0.5) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DevhubError(
                "devhub root does not exist or is not a directory",
                path=str(root),
                fix="create it (hubdelta devhub synth --root DIR) or pass --root with <org>/<name>/ folders",
            )
        self.root = root
        self.check_interval_s = check_interval_s
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._hashes: dict[str, tuple[int, int, blobs.FileEntry]] = {}
        self._lines: dict[str, CatalogEntry] = {}
        self._virtual: dict[str, RepoRecord] = {}
        self._last_check = time.monotonic()
        self._failed: RootListing | None = None
        self._snapshot = self._scan(list_root(root), generation=1)

    def current(self) -> Snapshot:
        """The latest snapshot, rescanning first when the root changed (checked at most every interval)."""
        now = time.monotonic()
        if now - self._last_check >= self.check_interval_s and self._lock.acquire(blocking=False):
            try:
                self._last_check = now
                listing = list_root(self.root)
                if listing != self._snapshot.listing and listing != self._failed:
                    self._swap(listing)
            finally:
                self._lock.release()
        return self._snapshot

    def reload(self) -> Snapshot:
        """Rescan now, whatever the signature says.

        Raises:
            CatalogError: the root holds a malformed catalog entry (the previous snapshot stays served).
        """
        with self._lock:
            self._snapshot = self._scan(list_root(self.root), self._snapshot.generation + 1)
            self.last_error = None
            return self._snapshot

    def _swap(self, listing: RootListing) -> None:
        try:
            self._snapshot = self._scan(listing, self._snapshot.generation + 1)
            self.last_error = None
            log.info("devhub.rescanned", repos=len(self._snapshot.repos), generation=self._snapshot.generation)
        except CatalogError as e:
            # Keep serving the last good snapshot: a half-written card must not take the server down.
            # The failing state is remembered so it is retried only once the root changes again.
            self._failed = listing
            self.last_error = e.one_line()
            log.warning("devhub.rescan_failed", error=self.last_error)

    def _scan(self, listing: RootListing, generation: int) -> Snapshot:
        try:
            return self._build(listing, generation)
        except (OSError, UnicodeDecodeError) as e:
            # Typically a file removed or rewritten between the listing and the read: the next check retries.
            msg = f"cannot read the root ({e})"
            raise CatalogError(msg, path=str(self.root), fix="retry the reload") from e

    def _build(self, listing: RootListing, generation: int) -> Snapshot:
        started = time.perf_counter()
        entries = self._read_catalog() if listing.catalog is not None else {}
        repos: dict[str, RepoRecord] = {}
        for repo_id, stats in listing.folders:
            line_entry = entries.get(repo_id)
            repos[repo_id] = self._folder_record(repo_id, stats, line_entry[1] if line_entry else None)
        virtual: dict[str, RepoRecord] = {}
        for line, entry in entries.values():
            if entry.id not in repos:
                rec = self._virtual.get(line) or build_virtual_record(entry)
                virtual[line] = repos[entry.id] = rec
        self._virtual = virtual
        snap = Snapshot(repos, listing, generation)
        log.debug("devhub.scanned", repos=len(repos), seconds=round(time.perf_counter() - started, 3))
        return snap

    def _read_catalog(self) -> dict[str, tuple[str, CatalogEntry]]:
        path = self.root / CATALOG_FILE
        out: dict[str, tuple[str, CatalogEntry]] = {}
        first_line: dict[str, int] = {}
        cache: dict[str, CatalogEntry] = {}
        with path.open(encoding="utf-8") as f:
            for lineno, raw in enumerate(f, 1):
                line = raw.strip()
                if not line:
                    continue
                entry = self._lines.get(line) or parse_line(line, f"{path}:{lineno}")
                cache[line] = entry
                if entry.id in first_line:
                    raise CatalogError(
                        f"duplicate id {entry.id!r} (first on line {first_line[entry.id]})",
                        path=f"{path}:{lineno}",
                        fix="keep one line per repo id",
                    )
                first_line[entry.id] = lineno
                out[entry.id] = (line, entry)
        self._lines = cache
        return out

    def _hash(self, folder: Path, rel: str, size: int, mtime_ns: int) -> blobs.FileEntry:
        disk = folder / rel
        key = str(disk)
        hit = self._hashes.get(key)
        if hit is not None and hit[0] == size and hit[1] == mtime_ns:
            return hit[2]
        entry = blobs.hash_disk_file(rel, disk)
        self._hashes[key] = (size, mtime_ns, entry)
        return entry

    def _folder_record(self, repo_id: str, stats: tuple[FileStat, ...], entry: CatalogEntry | None) -> RepoRecord:
        folder = self.root / repo_id
        files = tuple(self._hash(folder, rel, size, mtime) for rel, size, mtime in stats)
        paths = tuple(f.path for f in files)
        card, text = _read_card(folder / "README.md") if "README.md" in paths else ({}, "")
        config = _read_config(folder / "config.json") if "config.json" in paths else None
        mtimes = [m // 1_000_000 for _, _, m in stats] or [DEFAULT_CREATED_MS]
        revision = entry.revision if entry else 0
        tree = "".join(f"{f.path}\0{f.oid}\n" for f in files) + f"revision {revision}"
        sha = (entry and entry.sha) or hashlib.sha1(tree.encode(), usedforsecurity=False).hexdigest()
        return RepoRecord(
            id=repo_id,
            sha=sha,
            card=card,
            card_text=text,
            config=config,
            paths=paths,
            files=files,
            **_entry_fields(entry, min(mtimes), max(mtimes)),
            **_card_fields(entry, card, paths, config),
        )


def repo_summary(repos: Mapping[str, RepoRecord]) -> dict[str, int]:
    """Counts for logs and the health endpoint."""
    return {
        "repos": len(repos),
        "private": sum(r.private for r in repos.values()),
        "gated": sum(bool(r.gated) for r in repos.values()),
    }
