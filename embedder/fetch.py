"""Download one model repo at one sha, safely: decide on metadata first, then fetch only the planned files.

The order keeps every weight byte behind a decision: the file listing (``model_info(files_metadata=True)``), then
the small JSON configs (``hf_hub_download``), then the safetensors headers (``parse_safetensors_file_metadata``:
a ranged GET, no weights), then the disk budget, and only then the plan's exact files (``hf_hub_download`` each,
into the snapshot folder of the pinned sha). The download is verified (sizes, exact header layout) before it is
handed out, and :func:`release` deletes full-finetune weights once the vector is stored (never a base's: see
``BASE_MARK``).
Each request that fails for a transient reason (5xx, 429, the network) is sent again with backoff
(:mod:`~hubdelta.embedder.hub_retry`), so a flaky Hub does not fail a model.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

import structlog
from huggingface_hub import HfApi, ModelInfo, hf_hub_download
from huggingface_hub.errors import SafetensorsParsingError
from huggingface_hub.utils import SafetensorsFileMetadata

from hubdelta.embedder import safety, safety_adapter
from hubdelta.embedder.copies import CopyRegistry, Fingerprint, fingerprint, listed_files
from hubdelta.embedder.disk import disk_ledger
from hubdelta.embedder.hub_retry import Backoff, retried
from hubdelta.embedder.local import verify_folder
from hubdelta.embedder.safety import BaseInfo, Limits, Plan, Refusal, RepoKind, Rule, Triage, refuse
from hubdelta.kernel.errors import ModelRefused
from hubdelta.kernel.hub_errors import classify_hub_error, http_status, model_hub_errors
from hubdelta.kernel.hub_info import model_info

log = structlog.get_logger(__name__)
SNAPSHOT_THREADS = 8  # one repo's files downloaded at once (a sharded checkpoint), as snapshot_download does


@dataclass(frozen=True)
class FetchedModel:
    """A downloaded, verified repo: the snapshot folder and exactly which files of it may be loaded."""

    repo_id: str
    sha: str
    kind: RepoKind
    path: Path  # the snapshot folder (huggingface_hub cache layout: links into ../../blobs)
    files: tuple[str, ...]
    weights: tuple[str, ...]
    bytes: int
    params: int | None  # None for opted-in pickle weights
    pickle: bool
    base: bool = False  # the repo is the run's base itself: its files are never released
    declared_base: str | None = None  # an adapter naming a mirror of the base (accepted: its shapes fit)
    fingerprint: Fingerprint | None = None  # from the listing (hubdelta.embedder.copies)
    copy_of: str | None = None  # a copy of this model: nothing was downloaded (path, files: empty)
    copy_of_sha: str | None = None  # the revision of ``copy_of`` whose files these are (its vector must be at it)


def _parsing_reason(e: SafetensorsParsingError) -> str:
    """The why of the client's "Failed to parse safetensors header for 'f' (repo ..., revision ...): why. Please..."."""
    text = " ".join(str(e).split())
    text = re.sub(r"^Failed to parse safetensors header for .*?\): ", "", text)
    return text.split(". Please")[0][:160]


def _raise(repo_id: str, refusal: Refusal) -> NoReturn:
    raise ModelRefused(repo_id, refusal.reason, rule=refusal.rule, file=refusal.file, retryable=refusal.retryable)


@dataclass(frozen=True)
class _Hub:
    """One repo at one sha on one endpoint: the arguments every client call repeats."""

    api: HfApi
    repo_id: str
    sha: str
    endpoint: str
    token: str | bool
    cache_dir: Path
    timeout_s: float
    backoff: Backoff | None = None

    def listing(self) -> tuple[dict[str, int], Fingerprint | None]:
        """Each file's size, and the repo's fingerprint (its weight files' sha256: one request for both)."""

        def one() -> ModelInfo:
            return model_info(self.api, self.repo_id, revision=self.sha, files_metadata=True, timeout=self.timeout_s)

        info = retried(one, what=f"{self.repo_id} listing", backoff=self.backoff)
        siblings = info.siblings or []
        # A size the listing does not give is -1, which triage refuses: sizes bound everything downstream.
        sizes = {s.rfilename: s.size if s.size is not None else -1 for s in siblings}
        return sizes, fingerprint(listed_files(siblings))

    def download(self, name: str) -> Path:
        def one() -> str:
            return hf_hub_download(self.repo_id, name, revision=self.sha, cache_dir=self.cache_dir,
                                   endpoint=self.endpoint, token=self.token, etag_timeout=self.timeout_s)  # fmt: skip

        return Path(retried(one, what=f"{self.repo_id}/{name}", backoff=self.backoff))

    def snapshot(self, files: tuple[str, ...]) -> Path:
        """The planned files at the pinned sha, in its snapshot folder, a few at a time.

        File by file rather than ``snapshot_download``, which would first ask for the repo's listing again: one
        API request less a model (the Hub's API quota is the scarcer one), and one round trip less.
        """
        with ThreadPoolExecutor(min(SNAPSHOT_THREADS, max(1, len(files)))) as pool:
            paths = list(pool.map(self.download, files))
        if not paths:
            raise ValueError(f"{self.repo_id}: the plan names no file")
        return paths[0].parents[len(PurePosixPath(files[0]).parts) - 1]

    def _remote_header(self, name: str) -> SafetensorsFileMetadata:
        return self.api.parse_safetensors_file_metadata(
            self.repo_id, name, revision=self.sha, token=self.token, timeout=self.timeout_s
        )

    def header(self, name: str) -> dict[str, Any] | Refusal:
        """The remote safetensors header of ``name`` (a ranged GET of its first bytes), as a plain dict."""
        try:
            meta = retried(lambda: self._remote_header(name), what=f"{self.repo_id}/{name} header",
                           backoff=self.backoff)  # fmt: skip
            header: dict[str, Any] = {
                k: {"dtype": t.dtype, "shape": t.shape, "data_offsets": list(t.data_offsets)}
                for k, t in meta.tensors.items()
            }
        except Exception as e:
            refusal = _header_refusal(e, name)
            if refusal is None:
                raise
            return refusal
        if meta.metadata:  # only when present: an added empty one would raise the header's length bound
            header["__metadata__"] = meta.metadata
        return header


def _header_refusal(e: Exception, name: str) -> Refusal | None:
    """A remote header the client could not read, as a refusal; None for the Hub's or the network's own failures."""
    if http_status(e) == 416:  # a ranged GET past the file's end: the header's length field lies
        return refuse(Rule.CORRUPT, "the header runs past the end of the file", name)
    if classify_hub_error(e) is not None:  # first: some of the client's HTTP errors are ValueErrors too
        return None
    if isinstance(e, SafetensorsParsingError):
        return refuse(Rule.CORRUPT, _parsing_reason(e), name)
    if isinstance(e, TypeError | ValueError | AttributeError):  # a header the client's parser chokes on
        return refuse(Rule.CORRUPT, f"malformed safetensors header ({type(e).__name__})", name)
    return None


def _configs(hub: _Hub, t: Triage, limits: Limits) -> dict[str, Any]:
    configs: dict[str, Any] = {}
    for name in t.configs:
        with hub.download(name).open("rb") as f:
            raw = f.read(limits.max_config_bytes + 1)
        cfg = safety.parse_json_config(name, raw, limits)
        if isinstance(cfg, Refusal):
            _raise(hub.repo_id, cfg)
        configs[name] = cfg
    return configs


def _declared_mirror(configs: dict[str, Any], base: BaseInfo) -> str | None:
    """The base an accepted adapter names when that is not the tracked base's own id (a mirror of it)."""
    name = safety_adapter.declared_base(configs.get(safety_adapter.CONFIG) or {})
    return name if name is not None and name.lower() not in base.names() else None


def _plan(hub: _Hub, files: dict[str, int], limits: Limits, base: BaseInfo) -> tuple[Plan, str | None]:
    """Every decision before the weights: triage of the listing, configs, headers. Raises ModelRefused at the first
    refusal."""
    t = safety.triage(files, limits)
    if isinstance(t, Refusal):
        _raise(hub.repo_id, t)
    configs = _configs(hub, t, limits)
    refusal = safety.check_configs(t, configs, base, limits)
    if refusal:
        _raise(hub.repo_id, refusal)
    weights = safety.weight_files(t, configs, files, limits)
    if isinstance(weights, Refusal):
        _raise(hub.repo_id, weights)
    headers: dict[str, Any] = {}
    for name in weights if not t.pickle else ():
        header = hub.header(name)
        if isinstance(header, Refusal):
            _raise(hub.repo_id, header)
        headers[name] = header
    plan = safety.check_weights(t, weights, configs, headers, files, base, limits)
    if isinstance(plan, Refusal):
        _raise(hub.repo_id, plan)
    return plan, _declared_mirror(configs, base) if plan.kind is RepoKind.ADAPTER else None


def _download(hub: _Hub, plan: Plan, limits: Limits) -> Path:
    """The plan's files, once the disk budget allows them (counting downloads still running)."""
    ledger = disk_ledger(hub.cache_dir)
    refusal = ledger.reserve(plan.bytes, limits)
    if refusal:
        _raise(hub.repo_id, refusal)
    stored = False
    try:
        folder = hub.snapshot(plan.files)
        stored = True
        return folder
    finally:
        ledger.settle(plan.bytes, stored=stored)


def fetch(
    repo_id: str,
    sha: str,
    *,
    endpoint: str,
    token: str | None,
    cache_dir: Path,
    limits: Limits,
    base: BaseInfo,
    timeout_s: float = 30.0,
    backoff: Backoff | None = None,
    copies: CopyRegistry | None = None,
) -> FetchedModel:
    """Decide on a repo from its metadata, download only what the plan names, verify it.

    With ``copies``, a repo whose fingerprint another repo of the space downloads (or already embedded) is
    answered from its listing alone: a :class:`FetchedModel` with ``copy_of`` set and nothing downloaded.

    Args:
        repo_id: the model repo.
        sha: the commit to fetch (every request is pinned to it).
        endpoint: the Hub (or devhub) URL; passed explicitly, never read from HF_ENDPOINT.
        token: a Hub token, or None for anonymous requests (a stored token is never picked up).
        cache_dir: huggingface_hub cache folder downloads go to.
        limits: the safety bounds.
        base: the tracked base this repo is embedded against.
        timeout_s: per-request timeout.
        backoff: how a request that failed for a transient reason (5xx, 429, network) is sent again (default:
            ``hub_retry.DEFAULT_BACKOFF``).
        copies: the run's :class:`~hubdelta.embedder.copies.CopyRegistry` (None: every repo is downloaded).

    Returns:
        The verified snapshot and which of its files may be loaded.

    Raises:
        ModelRefused: a safety rule refused the repo (``retryable`` only for the disk budget); the message is the
            one-line status reason.
        ModelUnavailable: the Hub or the network failed it (gated, not found, revision gone, file missing, HTTP
            or transport errors) after each request's retries (``backoff``); ``retryable`` says whether a later
            attempt can succeed.
    """
    auth: str | bool = token or False
    hub = _Hub(HfApi(endpoint=endpoint, token=auth), repo_id, sha, endpoint, auth, cache_dir, timeout_s, backoff)
    with model_hub_errors(repo_id):
        files, fp, original = _listing(hub, copies)
        if original is not None:
            return _copy(repo_id, sha, files, fp, original)
        plan, declared = _plan(hub, files, limits, base)
        folder = _download(hub, plan, limits)
    is_base = repo_id.lower() in base.names()
    fetched = FetchedModel(repo_id, sha, plan.kind, folder, plan.files, plan.weights, plan.bytes, plan.params,
                           plan.pickle, is_base, declared, fp)  # fmt: skip
    if declared is not None:  # accepted on its shapes: say which name it gave, for whoever reads the log
        log.info("fetch.mirror_base", repo=repo_id, declared_base=declared, base=base.repo_id)
    refusal = verify_folder(folder, plan, files, limits)
    if refusal:
        disk_ledger(cache_dir).freed(delete_weights(fetched))  # no bytes that failed verification stay loadable
        _raise(repo_id, refusal)
    return fetched


def _listing(hub: _Hub, copies: CopyRegistry | None) -> tuple[dict[str, int], Fingerprint | None,
                                                              tuple[str, str] | None]:  # fmt: skip
    """The listing's sizes and fingerprint, and (the model this repo is a copy of, its revision) (None: it is to
    be downloaded)."""
    try:
        files, fp = hub.listing()
        if copies is None:
            return files, fp, None
        return files, fp, copies.decide(hub.repo_id, hub.sha, fp.value if fp else None)
    finally:
        if copies is not None:
            copies.listed(hub.repo_id, None)  # a repo that failed before its listing must not hold later ones up


def _copy(repo_id: str, sha: str, files: dict[str, int], fp: Fingerprint | None,
          original: tuple[str, str]) -> FetchedModel:  # fmt: skip
    """A repo answered from its listing: a copy of ``original`` (repo, revision), nothing downloaded."""
    kind = RepoKind.ADAPTER if safety_adapter.CONFIG in files else RepoKind.FULL
    log.info("fetch.copy", repo=repo_id, copy_of=original[0], copy_of_sha=original[1],
             weight_bytes=fp.weight_bytes if fp else 0)  # fmt: skip
    return FetchedModel(repo_id, sha, kind, Path(), (), (), 0, None, False, fingerprint=fp, copy_of=original[0],
                        copy_of_sha=original[1])  # fmt: skip


def delete_weights(fetched: FetchedModel) -> int:
    """Delete the weight files of a fetched repo (links and the blobs they point to); returns bytes freed."""
    blobs = fetched.path.parent.parent / "blobs"
    freed = 0
    for name in fetched.weights:
        link = fetched.path / name
        if link.is_symlink():
            target = link.resolve()
            link.unlink()
            # Only a blob of this repo's own cache folder is deleted, whatever a link says.
            if target.parent == blobs.resolve() and target.is_file():
                freed += target.stat().st_size
                target.unlink()
        elif link.is_file():
            freed += link.stat().st_size
            link.unlink()
    return freed


# In a repo's cache folder: its files serve as a base (download_base writes it). release() never deletes the files
# of such a repo: a tracked base may itself be a finetune of another tracked base, fetched as that base's child.
BASE_MARK = ".hubdelta-base"


def repo_cache_folder(cache_dir: Path, repo_id: str) -> Path:
    """``<cache>/models--owner--name``: huggingface_hub's folder of a model repo."""
    return cache_dir / f"models--{repo_id.replace('/', '--')}"


def mark_base(cache_dir: Path, repo_id: str) -> None:
    """Record that ``repo_id``'s cached files are a base's, so :func:`release` keeps them."""
    folder = repo_cache_folder(cache_dir, repo_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / BASE_MARK).touch()


def is_base_download(fetched: FetchedModel) -> bool:
    """Whether ``fetched``'s cache folder holds a base's files (the run's base, or any base downloaded here)."""
    return fetched.base or (fetched.path.parent.parent / BASE_MARK).exists()


def release(fetched: FetchedModel) -> int:
    """After embedding: delete a full finetune's weights from the cache (JSON and tokenizer files stay).

    Adapters are kept: they are small, and a new space can reuse them. A repo that is also a base (the run's base,
    or one downloaded as a base into this cache) is kept whole. Returns the bytes freed.
    """
    if fetched.kind is not RepoKind.FULL or is_base_download(fetched):
        return 0
    freed = delete_weights(fetched)
    disk_ledger(fetched.path.parents[2]).freed(freed)  # <cache>/models--o--n/snapshots/<sha>
    return freed
