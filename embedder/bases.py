"""A base model: its files at one revision, and the space its finetunes' vectors go into.

``hubdelta embed``, ``add``, ``task``, family runs and the Ray workers all reach a base through here, so they agree
on its revision, hence on its space.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubdelta.embedder.disk import cache_bytes
from hubdelta.embedder.fetch import mark_base, repo_cache_folder
from hubdelta.embedder.hub_retry import retried
from hubdelta.embedder.local import LOCAL_SHA, local_base_id, read_json
from hubdelta.embedder.probes import PAPER_PROBES, ProbeSet
from hubdelta.embedder.safety import check_disk, human_bytes, path_problem
from hubdelta.embedder.safety_records import Limits, Refusal, Rule, refuse
from hubdelta.embedder.space import LayerSpec, Space
from hubdelta.index.records import check_repo_id
from hubdelta.kernel.errors import HubdeltaError, ModelRefused
from hubdelta.kernel.hub_errors import hub_errors
from hubdelta.kernel.hub_info import model_info
from hubdelta.kernel.settings import Settings

if TYPE_CHECKING:
    from hubdelta.embedder.options import EmbedOptions

BASE_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.jinja", "*.model", "*.txt"]
COMPOSITE_KEYS = ("decoder", "encoder", "generator", "text_encoder", "vision_config", "audio_config")
BASE_FIX = "a base gets the bounds of any downloaded model: [embed] disk_budget_gb, free disk (docs/untrusted.md)"


def base_download_problem(files: Mapping[str, int], chosen: Sequence[str], limits: Limits) -> Refusal | None:
    """Why the ``chosen`` files of a base's listing (path -> declared size) must not be downloaded, or None.

    A base is as untrusted as any model when a card names it: the same name, file and total bounds apply.
    """
    for name in chosen:
        problem = path_problem(name)
        if problem:
            return refuse(Rule.PATH, problem, name)
        size = files[name]
        if size < 0:
            return refuse(Rule.SIZE, "the Hub gives no size for it", name)
        if size > limits.max_file_bytes:
            return refuse(Rule.SIZE, f"{human_bytes(size)}, over max_file_bytes {human_bytes(limits.max_file_bytes)}",
                          name)  # fmt: skip
    total = sum(files[n] for n in chosen)
    if total > limits.max_total_bytes:
        return refuse(Rule.SIZE, f"the download is {human_bytes(total)}, over max_total_bytes "
                                 f"{human_bytes(limits.max_total_bytes)} ([embed] disk_budget_gb)")  # fmt: skip
    return None


def _checked_listing(settings: Settings, base: str, revision: str | None,
                     patterns: Sequence[str]) -> tuple[str, bool]:  # fmt: skip
    """The sha to download and whether every file of it is cached already, after every bound, from one
    ``model_info(files_metadata=True)``: no weight byte is requested before the sizes the Hub declares are
    checked against the limits and the free disk.

    Raises:
        ModelRefused: a file name, a size or the disk refuses the download (the disk only for now: retryable).
    """
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    api = HfApi(endpoint=settings.hf_endpoint, token=settings.hf_token or False)
    info = retried(lambda: model_info(api, base, revision=revision, files_metadata=True, timeout=30),
                   what=f"{base} listing")  # fmt: skip
    sha = revision or info.sha
    if sha is None:  # the Hub always sends one; a server that does not is not one we can pin a space to
        raise HubdeltaError(f"{settings.hf_endpoint} gave no revision (sha) for {base}", fix="check HF_ENDPOINT")
    files = {s.rfilename: s.size if s.size is not None else -1 for s in info.siblings or []}
    chosen = sorted(filter_repo_objects(files, allow_patterns=list(patterns)))
    limits = Limits.from_embed_settings(settings.embed)
    cache = settings.cache_dir / "hub"
    snapshot = repo_cache_folder(cache, base) / "snapshots" / sha
    missing = [n for n in chosen if not (snapshot / n).is_file()]  # a base cached by an earlier run: no new space
    refusal = base_download_problem(files, chosen, limits)
    if refusal is None:
        cache.mkdir(parents=True, exist_ok=True)
        need = sum(files[n] for n in missing)
        refusal = check_disk(need, cache_bytes(cache), shutil.disk_usage(cache).free, limits) if need else None
    if refusal is not None:
        raise ModelRefused(base, f"base {base} not downloaded: {refusal.reason}", rule=refusal.rule, file=refusal.file,
                           retryable=refusal.retryable, fix=BASE_FIX)  # fmt: skip
    return sha, bool(chosen) and not missing


def download_base(
    settings: Settings, base: str, *, revision: str | None = None, patterns: Sequence[str] = BASE_FILES
) -> tuple[Path, str]:
    """A base repo's files at ``revision`` (default: its current one), in ``<cache>/hub``: (folder, sha).

    Bounded like any model's download: the Hub's declared sizes are checked (per file, in all, against the disk
    budget and the free disk) before any file is requested, and transient failures (5xx, 429, the network) are
    retried with backoff. The repo's cache folder is marked as a base's, so a run never releases its weights.

    Raises:
        ModelRefused: the base breaks a bound (rule ``size``, ``path`` or ``disk``) before anything is downloaded.
        huggingface_hub's errors: the repo does not exist, is gated, or the Hub cannot be reached (after retries).
    """
    from huggingface_hub import snapshot_download

    sha, cached = _checked_listing(settings, base, revision, patterns)
    cache = settings.cache_dir / "hub"
    mark_base(cache, base)
    if cached:  # every file at this sha is there: no second listing (snapshot_download's) and no HEADs
        return repo_cache_folder(cache, base) / "snapshots" / sha, sha
    folder = retried(lambda: snapshot_download(base, revision=sha, allow_patterns=list(patterns), cache_dir=cache,
                                               endpoint=settings.hf_endpoint, token=settings.hf_token or False),
                     what=f"{base} snapshot")  # fmt: skip
    return Path(folder), sha


@dataclass(frozen=True)
class BaseRef:
    """A base checkpoint resolved to a local folder: what every vector of its space is computed against."""

    folder: Path
    repo_id: str  # the Hub repo id, or ``local/<folder name>`` for a local checkpoint folder
    sha: str  # the Hub revision, or ``"local"`` (the user vouches for the folder)

    @property
    def local(self) -> bool:
        return self.sha == LOCAL_SHA


def resolve_base(settings: Settings, base: str) -> BaseRef:
    """``base`` as a local checkpoint: a folder as given, or a repo id downloaded at its current revision.

    This is how ``hubdelta embed``, ``add`` and ``task`` agree on a base, hence on its space.

    Raises:
        UsageError: a malformed repo id, or a repo the Hub does not have.
        HubdeltaError: the Hub cannot be reached, refuses, or the repo is gated.
    """
    if Path(base).is_dir():
        return BaseRef(Path(base), local_base_id(Path(base)), LOCAL_SHA)
    check_repo_id(base)
    endpoint = settings.hf_endpoint
    with hub_errors(base, endpoint=endpoint, action=f"download the base {base} from {endpoint}",
                    fix="check HF_ENDPOINT and the network, or give a local checkpoint folder",
                    not_found_fix="check the spelling, or give a local checkpoint folder"):  # fmt: skip
        folder, sha = download_base(settings, base)
    return BaseRef(folder, base, sha)


def base_space(ref: BaseRef, opts: EmbedOptions) -> Space:
    """The space ``hubdelta embed`` puts vectors of ``ref``'s children in, under ``opts``."""
    return space_for(ref.folder, ref.repo_id, ref.sha, layer=opts.layer, position=opts.position, dtype=opts.dtype)


def space_for(base_dir: Path, base_repo: str, base_sha: str, *, probes: ProbeSet = PAPER_PROBES,
              layer: LayerSpec = None, position: str = "last", dtype: str = "float32") -> Space:  # fmt: skip
    """The space of a local base checkpoint: dimension and depth (for a fractional ``layer``) from its config.

    Read from ``config.json`` itself where it states both (torch is not imported: ``hubdelta embed`` starts its
    downloads before it pays for torch); transformers' reading of the config otherwise (values left to a
    model class's defaults).

    Raises:
        ValueError: an option is malformed or out of range.
    """
    dims = text_dims(read_json(Path(base_dir) / "config.json", "config.json", Limits()))
    if dims is None:
        from hubdelta.embedder.activations import text_config

        config = text_config(base_dir)
        dims = config.hidden_size, config.num_hidden_layers
    return Space.create(base_repo, base_sha, probes=probes, dim=dims[0], num_layers=dims[1], layer=layer,
                        position=position, dtype=dtype)  # fmt: skip


def text_dims(config: dict[str, Any] | Refusal) -> tuple[int, int] | None:
    """(hidden size, decoder layers) of a config's text model as its JSON states them (a multimodal config's
    ``text_config``, as transformers' ``get_text_config`` takes it), or None when either is not stated or the
    config has other sub-configs (encoder-decoder, a vision tower without ``text_config``)."""
    if isinstance(config, Refusal):
        return None
    if any(k in config for k in COMPOSITE_KEYS):  # which sub-config is the text model is transformers' to say
        return None
    text = config.get("text_config", config)
    if not isinstance(text, dict):
        return None
    hidden, layers = text.get("hidden_size"), text.get("num_hidden_layers")
    return (hidden, layers) if type(hidden) is int and type(layers) is int else None
