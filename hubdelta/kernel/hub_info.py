"""``model_info`` that survives what an untrusted repo writes in its card.

huggingface_hub builds its ``ModelInfo`` from the whole answer, card data included, and raises on cards the Hub
itself serves (``tags: 2024``, ``ignore_metadata_errors: false``, dates it cannot parse). A model whose files are
fine must not fail for its card, so when the client cannot build the record, it is built again from the fields
that describe the repo's files and access, and the card is left out. The crawler reads listings field by field
(``crawler/wire.py``); this is the same containment for the one-repo calls of both stages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from hubdelta.kernel.errors import HubdeltaError

if TYPE_CHECKING:
    from huggingface_hub import HfApi, ModelInfo

# What a download needs: the repo, its revision, its files (with sizes when asked) and whether it may be read.
FILE_FIELDS = ("id", "modelId", "sha", "siblings", "private", "gated", "disabled")


def model_info(
    api: HfApi, repo_id: str, *, revision: str | None = None, files_metadata: bool = False, timeout: float = 30.0
) -> ModelInfo:
    """``api.model_info(repo_id, revision=..., files_metadata=..., timeout=...)``, one request, whatever the card.

    Raises:
        huggingface_hub's errors, as ``HfApi.model_info`` (not found, gated, HTTP and network failures);
        HubdeltaError: the answer is not a JSON object (not a Hub, or a broken one).
    """
    from huggingface_hub import ModelInfo
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    path = f"{api.endpoint}/api/models/{repo_id}"
    if revision is not None:
        path += f"/revision/{quote(revision, safe='')}"
    params = {"blobs": True} if files_metadata else {}
    r = get_session().get(path, headers=build_hf_headers(token=api.token), timeout=timeout, params=params)
    hf_raise_for_status(r)
    try:
        data: Any = r.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise HubdeltaError(f"{path} answered with no JSON object for {repo_id}", fix="check HF_ENDPOINT")
    try:
        return ModelInfo(**data)
    except Exception:  # the client cannot read the card or a field of it: the files are still what they are
        return ModelInfo(**{k: v for k, v in data.items() if k in FILE_FIELDS})
