"""A base model: its files at one revision, and the space its finetunes' vectors go into.

``hubdelta embed``, ``add``, ``task``, family runs and the Ray workers all reach a base through here, so they agree
on its revision, hence on its space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hubdelta.embedder.local import LOCAL_SHA, local_base_id
from hubdelta.index.records import check_repo_id
from hubdelta.kernel.errors import HubdeltaError
from hubdelta.kernel.hub_errors import hub_errors
from hubdelta.kernel.settings import Settings

if TYPE_CHECKING:
    from hubdelta.embedder.options import EmbedOptions
    from hubdelta.embedder.space import Space

BASE_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.jinja", "*.model", "*.txt"]


def download_base(
    settings: Settings, base: str, *, revision: str | None = None, patterns: Sequence[str] = BASE_FILES
) -> tuple[Path, str]:
    """A base repo's files at ``revision`` (default: its current one), in ``<cache>/hub``: (folder, sha).

    Raises:
        huggingface_hub's errors: the repo does not exist, is gated, or the Hub cannot be reached.
    """
    from huggingface_hub import HfApi, snapshot_download

    token = settings.hf_token or False
    sha = revision or HfApi(endpoint=settings.hf_endpoint, token=token).model_info(base, timeout=30).sha
    if sha is None:  # the Hub always sends one; a server that does not is not one we can pin a space to
        raise HubdeltaError(f"{settings.hf_endpoint} gave no revision (sha) for {base}", fix="check HF_ENDPOINT")
    folder = snapshot_download(base, revision=sha, allow_patterns=list(patterns), cache_dir=settings.cache_dir / "hub",
                               endpoint=settings.hf_endpoint, token=token)  # fmt: skip
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
    from hubdelta.embedder.activations import space_for

    return space_for(ref.folder, ref.repo_id, ref.sha, layer=opts.layer, position=opts.position, dtype=opts.dtype)
