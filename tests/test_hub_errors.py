"""The one boundary where the Hub client's and the transport's exceptions become hubdelta's errors."""

from __future__ import annotations

import httpx2
import pytest
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

from hubdelta.kernel.errors import HubdeltaError, HubRequestError, ModelUnavailable, UsageError
from hubdelta.kernel.hub_errors import hub_errors, is_transport_failure, model_hub_errors, request_refused


def _http(cls: type, status: int) -> Exception:
    response = httpx2.Response(status, request=httpx2.Request("GET", "http://hub/x"))
    return cls(f"{status} Client Error\nmore lines", response=response)


def _command(e: Exception) -> HubdeltaError:
    with pytest.raises(HubdeltaError) as err, hub_errors("a/b", endpoint="http://hub", action="download a/b",
                                                       fix="check HF_ENDPOINT"):  # fmt: skip
        raise e
    return err.value


@pytest.mark.parametrize(
    ("error", "kind", "needle"),
    [
        (_http(RepositoryNotFoundError, 404), UsageError, "a/b: not found on http://hub"),
        (_http(GatedRepoError, 403), HubdeltaError, "a/b is gated on http://hub"),
        (_http(HfHubHTTPError, 500), HubdeltaError, "could not download a/b (HTTP 500: 500 Client Error)"),
        (httpx2.ConnectError("refused"), HubdeltaError, "could not download a/b (network failure: refused)"),
    ],
)
def test_a_commands_repo_gets_one_line_errors(error: Exception, kind: type, needle: str) -> None:
    got = _command(error)
    assert type(got) is kind and needle in got.one_line() and "(fix: " in got.one_line()
    assert got.__cause__ is error


def test_a_model_gets_a_status_and_other_errors_pass_through() -> None:
    with pytest.raises(ModelUnavailable) as err, model_hub_errors("a/b"):
        raise _http(HfHubHTTPError, 429)
    assert err.value.code == "http" and err.value.retryable and err.value.repo_id == "a/b"
    with pytest.raises(ValueError), model_hub_errors("a/b"):
        raise ValueError("a bug, not the Hub")
    with pytest.raises(UsageError), hub_errors("a/b", endpoint="e", action="a", fix="f"):
        raise UsageError("x", "ours already")


def test_the_crawlers_own_requests() -> None:
    assert is_transport_failure(httpx2.ReadTimeout("slow")) and not is_transport_failure(_http(HfHubHTTPError, 503))
    response = httpx2.Response(401, request=httpx2.Request("GET", "http://hub/api/models"))
    refused = request_refused("http://hub/api/models", response)
    assert isinstance(refused, HubRequestError) and refused.status == 401 and "HF_TOKEN" in refused.one_line()
