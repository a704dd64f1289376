"""The one boundary between the Hub client and hubdelta's errors: huggingface_hub's and httpx's exceptions in, ours out.

The crawler and the embedder both talk to the Hub and may not import each other, so the translation lives here,
below both. :func:`classify_hub_error` is the only function that names the client's and the transport's
exception types; everything else builds on its :class:`HubFailure`:

- a model being embedded: :func:`model_hub_errors` turns a failure into :class:`ModelUnavailable`, its status;
- a repo a command was given (a base to track, download or read): :func:`hub_errors` turns it into a
  :class:`UsageError` (no such repo) or a :class:`HubdeltaError` with the fix;
- a request the crawler sends itself: :func:`request_refused` and :func:`is_transport_failure`.

huggingface_hub and httpx2 are imported when an exception is classified, not when the kernel loads.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, NamedTuple

from hubdelta.kernel.errors import HubdeltaError, HubRequestError, ModelUnavailable, UsageError

if TYPE_CHECKING:
    import httpx2

_GATED = "gated repo: this token may not download it (request access on the Hub, set HF_TOKEN)"
_REVISION_GONE = "this revision no longer exists (the repo changed; a crawl requeues it)"


class HubFailure(NamedTuple):
    """What went wrong talking to the Hub, as plain data."""

    code: str  # gated, not_found, revision_gone, missing_file, http, transport, disk
    retryable: bool  # trying the same request later can succeed (network trouble, rate limits, a full disk)
    reason: str  # one line, fit for a model's status


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else type(e).__name__


def retryable_status(status: int | None) -> bool:
    """Whether a request answered with ``status`` is worth sending again: a timeout, a rate limit, a server error.

    The one rule for the crawler's own requests and the client's downloads. 501 and 505 say the server will never
    do it, so they are final like a 4xx.
    """
    return status is not None and (status in (408, 429) or (500 <= status < 600 and status not in (501, 505)))


def http_status(e: BaseException) -> int | None:
    """The HTTP status of the client's error for a Hub response; None for anything else."""
    from huggingface_hub.errors import HfHubHTTPError

    if not isinstance(e, HfHubHTTPError):
        return None
    status = getattr(getattr(e, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def classify_hub_error(e: BaseException) -> HubFailure | None:
    """The failure an exception of the Hub client or the transport stands for; None for any other exception.

    Args:
        e: an exception raised while talking to the Hub (or devhub).

    Returns:
        ``(code, retryable, reason)``; None when ``e`` is not the Hub's or the network's (a bug, a refusal).
    """
    import httpx2
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # Most specific first: a gated repo is a RepositoryNotFoundError, which is an HfHubHTTPError, an httpx2 error.
    if isinstance(e, GatedRepoError):
        return HubFailure("gated", False, _GATED)
    if isinstance(e, RepositoryNotFoundError):
        return HubFailure("not_found", False, "repo not found (deleted, renamed or private)")
    if isinstance(e, RevisionNotFoundError):
        return HubFailure("revision_gone", False, _REVISION_GONE)
    if isinstance(e, LocalEntryNotFoundError):  # the client's answer to a network failure with no cached copy
        return HubFailure("transport", True, f"network failure: {_first_line(e)}")
    if isinstance(e, EntryNotFoundError):
        return HubFailure("missing_file", False, f"a listed file is missing on the Hub: {_first_line(e)}")
    if isinstance(e, HfHubHTTPError):
        status = http_status(e)
        return HubFailure("http", retryable_status(status), f"HTTP {status}: {_first_line(e)}")
    if isinstance(e, httpx2.TransportError | TimeoutError | ConnectionError):
        return HubFailure("transport", True, f"network failure: {_first_line(e)}")
    if isinstance(e, httpx2.HTTPError):  # too many redirects, an undecodable body: sending it again will not help
        return HubFailure("http", False, f"bad response: {_first_line(e)}")
    if isinstance(e, OSError):  # a full disk mid-download, a consistency check of the client
        code = "disk" if e.errno == errno.ENOSPC else "transport"
        return HubFailure(code, True, f"download failed: {_first_line(e)}")
    return None


def is_transport_failure(e: BaseException) -> bool:
    """The network failed (no answer, a cut connection, a timeout): a request worth sending again.

    Narrower than a ``transport`` :class:`HubFailure`: an OSError of a download (a file check) is not the network.
    """
    import httpx2

    return isinstance(e, httpx2.TransportError | TimeoutError | ConnectionError)


@contextmanager
def _translated(convert: Callable[[HubFailure], HubdeltaError]) -> Iterator[None]:
    """Raise ``convert(failure)`` for an exception :func:`classify_hub_error` knows; let every other one through."""
    try:
        yield
    except HubdeltaError:
        raise
    except Exception as e:
        found = classify_hub_error(e)
        if found is None:
            raise
        raise convert(found) from e


def model_hub_errors(repo_id: str) -> AbstractContextManager[None]:
    """Turn the client's and the transport's exceptions into :class:`ModelUnavailable`: a model's status.

    Raises:
        ModelUnavailable: gated, not found, revision gone, a file missing, HTTP or transport errors; ``code`` and
            ``retryable`` as :func:`classify_hub_error` says.
    """
    return _translated(lambda f: ModelUnavailable(repo_id, f.reason, code=f.code, retryable=f.retryable))


def hub_errors(repo_id: str, *, endpoint: str, action: str, fix: str,
               not_found_fix: str = "check the spelling") -> AbstractContextManager[None]:  # fmt: skip
    """Turn the client's and the transport's exceptions about a repo a command was given into one-line errors.

    Args:
        repo_id: the repo the command names.
        endpoint: the Hub it asked.
        action: what it was doing, after "could not", e.g. ``download the base X from URL``.
        fix: the fix for the Hub or the network failing.
        not_found_fix: the fix for a repo the Hub does not have.

    Raises:
        UsageError: the Hub has no such repo.
        HubdeltaError: the repo is gated, or the Hub or the network failed.
    """

    def convert(found: HubFailure) -> HubdeltaError:
        if found.code == "gated":
            return HubdeltaError(f"{repo_id} is gated on {endpoint}",
                                 fix="accept its terms on the Hub and set HF_TOKEN")  # fmt: skip
        if found.code == "not_found":
            return UsageError(repo_id, f"not found on {endpoint}", fix=not_found_fix)
        return HubdeltaError(f"could not {action} ({found.reason[:120]})", fix=fix)

    return _translated(convert)


def request_refused(url: str, response: httpx2.Response) -> HubRequestError:
    """A refused request (a 4xx other than 408/429: retrying will not help) as one typed error, in the client's
    wording where it has one."""
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import hf_raise_for_status

    try:
        hf_raise_for_status(response)
    except HfHubHTTPError as e:
        error = HubRequestError(url, response.status_code, str(e).splitlines()[0])
        error.__cause__ = e  # as ``raise error from e`` would, where the caller raises it
        return error
    return HubRequestError(url, response.status_code, response.reason_phrase)
