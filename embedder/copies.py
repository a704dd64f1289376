"""Copies found before download: a repo's fingerprint from its listing, and who downloads which fingerprint.

**Fingerprint** (:func:`fingerprint`): the sha256 the Hub lists for every weight file (LFS metadata of
``model_info(files_metadata=True)``), plus the git blob id of every other file but the card and git's own
bookkeeping (:data:`IGNORED_SUFFIXES`, :data:`IGNORED_NAMES`). Names are part of it. A re-upload under a new
name with a new card has the same fingerprint; byte-identical safetensors under another ``lora_alpha``, another
shard index or another tokenizer do not (any file the embedder reads may change what the weights compute, or
whether they pass its checks: a copy inherits its original's outcome, refusals included). No fingerprint without
a sha256 for every weight file and a blob id for every other counted file (a Hub that does not list them, a
weight outside LFS): such a repo is downloaded as before.

**Who downloads** (:class:`CopyRegistry`): one download per fingerprint in a space. A fingerprint already embedded
in the space (``index.copies.known``) is never downloaded again: the repo is a copy of the first model embedded
with it, **at the sha that row names**. Within one run, the original is the first of the fingerprint's repos **in
the run's order** (discovery order: first seen, then repo id; suspects first), at the revision it listed: a repo
waits, after its listing, until every repo before it in the run has listed, so which one downloads does not depend
on which download thread was quicker. Downloads start in the run's order, so the wait is for listings already under
way (one request each), never for a download. A copy takes its original's vector only at that revision (the
original may be re-embedded at another sha meanwhile: :func:`hubdelta.embedder.ledger.resolve_copies`).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack")
# Files that change nothing the embedder reads: the card (any markdown) and git's bookkeeping.
IGNORED_SUFFIXES = (".md",)
IGNORED_NAMES = frozenset({".gitattributes", ".gitignore"})
WAIT_S = 20.0  # longest wait for the listings before a repo (a run stopping cancels some: they never list);
# a listing still missing after one repo's full wait is skipped for every repo after it


@dataclass(frozen=True)
class ListedFile:
    """One file of a listing: its name, size, git blob id and LFS sha256 (None outside LFS)."""

    name: str
    size: int | None
    blob_id: str | None
    sha256: str | None


@dataclass(frozen=True)
class Fingerprint:
    """A repo's fingerprint at one sha, and the bytes of the weight files it covers."""

    value: str
    weight_bytes: int


def fingerprint(files: Iterable[ListedFile]) -> Fingerprint | None:
    """The fingerprint of a listing (pure), or None when a weight file has no sha256 or there is no weight file."""
    parts: list[tuple[str, str]] = []
    weight_bytes = 0
    for f in files:
        leaf = f.name.rsplit("/", 1)[-1]
        if f.name.lower().endswith(WEIGHT_SUFFIXES):
            if not f.sha256 or f.size is None:
                return None
            parts.append((f.name, "sha256:" + f.sha256))
            weight_bytes += f.size
        elif not (leaf in IGNORED_NAMES or leaf.lower().endswith(IGNORED_SUFFIXES)):
            if not f.blob_id:
                return None
            parts.append((f.name, "blob:" + f.blob_id))
    if not any(v.startswith("sha256:") for _, v in parts):
        return None
    digest = hashlib.sha256(json.dumps(sorted(parts)).encode()).hexdigest()
    return Fingerprint(digest, weight_bytes)


def listed_files(siblings: Iterable[Any]) -> list[ListedFile]:
    """``ModelInfo.siblings`` (with file metadata) as :class:`ListedFile` rows."""
    return [
        ListedFile(s.rfilename, s.size, getattr(s, "blob_id", None),
                   getattr(getattr(s, "lfs", None), "sha256", None))
        for s in siblings
    ]  # fmt: skip


class CopyRegistry:
    """Which repo of a run downloads each fingerprint; the others are copies of it (see the module's docstring).

    Shared by one run's download threads; pickled once into a download process (its lock is made anew there).

    Args:
        order: the run's repo ids, in the order their downloads are submitted.
        known: fingerprint -> (the model already embedded with it in the space, the sha it was embedded at).
        wait_s: the longest wait for earlier repos' listings.
    """

    def __init__(self, order: Sequence[str], known: Mapping[str, tuple[str, str]], wait_s: float = WAIT_S) -> None:
        self._order = list(dict.fromkeys(order))
        self._position = {k: i for i, k in enumerate(self._order)}
        self._known = dict(known)
        self._wait_s = wait_s
        self._init_state()

    def _init_state(self) -> None:
        self._cond = threading.Condition()
        self._listed: dict[str, str | None] = {}  # repo -> its fingerprint (None: none, or no listing)
        self._shas: dict[str, str] = {}  # repo -> the revision it listed at
        self._next = 0  # every repo before this position has listed

    def __getstate__(self) -> dict[str, Any]:
        return {"order": self._order, "known": self._known, "wait_s": self._wait_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["order"], state["known"], state["wait_s"])  # type: ignore[misc]

    def decide(self, repo_id: str, sha: str, fp: str | None) -> tuple[str, str] | None:
        """After ``repo_id``'s listing at revision ``sha``: (the repo it is a copy of, that repo's revision with
        these files) — no download — or None (it downloads)."""
        if fp is not None and fp in self._known and self._known[fp][0] != repo_id:
            self.listed(repo_id, None)
            return self._known[fp]
        with self._cond:
            self._shas[repo_id] = sha
        self.listed(repo_id, fp)
        if fp is None or repo_id not in self._position:
            return None
        mine = self._position[repo_id]
        deadline = time.monotonic() + self._wait_s
        with self._cond:
            while self._next < mine and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            self._give_up(mine)
            before = [k for k, f in self._listed.items() if f == fp and self._position.get(k, mine) < mine]
            first = min(before, key=self._position.__getitem__) if before else None
            return (first, self._shas[first]) if first is not None else None

    def _give_up(self, mine: int) -> None:
        """The repos before position ``mine`` still without a listing after a full wait are skipped for everyone
        (as if they had ended unlisted, so none of them is an original): each later repo would otherwise wait its
        own full ``wait_s`` for the same stuck listing. Called holding the lock."""
        if self._next >= mine:
            return
        for k in self._order[self._next : mine]:
            self._listed.setdefault(k, None)
        self._advance()

    def listed(self, repo_id: str, fp: str | None) -> None:
        """``repo_id`` has listed (or ended before it could: ``fp`` None); repos after it may decide."""
        with self._cond:
            self._listed.setdefault(repo_id, fp)
            self._advance()

    def _advance(self) -> None:
        """Move past the repos that have listed (or were skipped); wake the waiters. Called holding the lock."""
        while self._next < len(self._order) and self._order[self._next] in self._listed:
            self._next += 1
        self._cond.notify_all()
