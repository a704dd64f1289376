"""Fault injection seen through the real huggingface_hub client: 429s, 5xx, latency, truncation, hangs."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import get_session, parse_ratelimit_headers

from hubdelta_dev.devhub.faults import FaultConfig
from hubdelta_dev.devhub.server import DevhubServer
from tests.helpers import BASE, TinyRoot


def control(server: DevhubServer, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call a /_devhub endpoint (GET, or POST with a JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{server.url}/_devhub/{path}", data=data)) as r:
        return json.loads(r.read())


def statuses(server: DevhubServer, kind: str) -> list[int]:
    return [r.status for r in server.request_records() if r.kind == kind]


def test_list_paging_beyond_the_quota_waits_for_the_reset(tiny: TinyRoot, serve: Callable[..., DevhubServer]) -> None:
    server = serve(tiny.path, page_size=2, faults=FaultConfig(rate_limit=3, rate_window_s=2))
    started = time.monotonic()
    listed = [m.id for m in HfApi(endpoint=server.url).list_models()]
    assert sorted(listed) == sorted(tiny.public)  # nothing lost or repeated across the 429
    records = server.request_records()
    limited = [r for r in records if r.status == 429]
    assert limited and {r.kind for r in limited} == {"list"}
    assert statuses(server, "list").count(200) == -(-len(tiny.public) // 2)
    for r in limited:  # the client slept the announced reset time (+1 s) before the retry
        retry = next(x for x in records if x.t > r.t)
        assert r.retry_after is not None and retry.t - r.t >= r.retry_after
    assert time.monotonic() - started >= min(r.retry_after or 0 for r in limited)


def test_model_info_is_not_retried_but_the_first_list_page_is(
    tiny: TinyRoot, serve: Callable[..., DevhubServer]
) -> None:
    """huggingface_hub 2.4.0: model_info is a bare GET (no retry); list pages go through http_backoff."""
    server = serve(tiny.path, faults=FaultConfig(rate_limit=2, rate_window_s=2))
    api = HfApi(endpoint=server.url)
    api.model_info(BASE)
    api.model_info(BASE)
    with pytest.raises(HfHubHTTPError) as err:
        api.model_info(BASE)
    assert err.value.response.status_code == 429
    assert "rate limit" in str(err.value) and "0/2 requests remaining" in str(err.value)
    assert statuses(server, "model_info") == [200, 200, 429]  # raised at once, never retried
    assert {m.id for m in api.list_models()} == tiny.public
    assert statuses(server, "list") == [429, 200]  # the FIRST page was retried after the reset


def test_buckets_are_separate_and_every_response_carries_ratelimit_headers(
    tiny: TinyRoot, serve: Callable[..., DevhubServer], tmp_path: Path
) -> None:
    server = serve(tiny.path, faults=FaultConfig(rate_limit=2, rate_window_s=60, resolver_rate_limit=5))
    response = get_session().get(f"{server.url}/api/models/{BASE}")
    info = parse_ratelimit_headers(response.headers)
    assert info is not None and (info.resource_type, info.remaining, info.limit, info.window_seconds) == (
        "api",
        1,
        2,
        60,
    )
    get_session().get(f"{server.url}/api/models/{BASE}")  # the api bucket is now empty
    path = hf_hub_download(BASE, "config.json", endpoint=server.url, cache_dir=tmp_path)  # HEAD + GET: resolvers
    assert Path(path).read_bytes() == (tiny.path / BASE / "config.json").read_bytes()
    assert statuses(server, "resolve") == [200, 200]
    limited = get_session().get(f"{server.url}/api/models/{BASE}")
    assert limited.status_code == 429 and limited.headers["Retry-After"].isdigit()
    assert parse_ratelimit_headers(limited.headers).remaining == 0  # type: ignore[union-attr]


def test_server_errors_are_retried_by_list_and_raised_by_model_info(
    tiny: TinyRoot, serve: Callable[..., DevhubServer]
) -> None:
    server = serve(tiny.path, faults=FaultConfig(error_rate=1.0, max_faults=2, seed=3))
    assert {m.id for m in HfApi(endpoint=server.url).list_models()} == tiny.public  # backoff 1 s + 2 s
    codes = statuses(server, "list")
    assert len(codes) == 3 and all(c in (500, 502, 503) for c in codes[:2]) and codes[2] == 200
    server.set_faults(error_rate=1.0)
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=server.url).model_info(BASE)
    assert err.value.response.status_code in (500, 502, 503)
    assert server.requests()["faults"]["error"] == 3


def test_latency_applies_only_to_matching_paths(tiny: TinyRoot, serve: Callable[..., DevhubServer]) -> None:
    server = serve(tiny.path, faults=FaultConfig(latency_ms=400, path_regex=r"^/api/models/"))
    api = HfApi(endpoint=server.url)
    t0 = time.monotonic()
    api.model_info(BASE)
    slow = time.monotonic() - t0
    t0 = time.monotonic()
    list(api.list_models(limit=1))
    fast = time.monotonic() - t0
    assert slow >= 0.4 > fast
    assert server.requests()["faults"] == {"latency": 1}


def test_truncated_download_is_resumed_with_a_range_request(
    tiny: TinyRoot, serve: Callable[..., DevhubServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client writes whole 10 MB chunks and drops a partial one on error; small chunks make it resume here.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64)
    server = serve(tiny.path, faults=FaultConfig(truncate_rate=1.0, max_faults=1, path_regex="/resolve/"))
    path = hf_hub_download("alice/base-lora", "adapter_model.safetensors", endpoint=server.url, cache_dir=tmp_path)
    assert Path(path).read_bytes() == (tiny.path / "alice/base-lora/adapter_model.safetensors").read_bytes()
    resolves = [r for r in server.request_records() if r.kind == "resolve"]
    assert [(r.method, r.status, r.fault) for r in resolves] == [
        ("HEAD", 200, None),
        ("GET", 200, "truncate"),
        ("GET", 206, None),
    ]
    size = (tiny.path / "alice/base-lora/adapter_model.safetensors").stat().st_size
    kept = size // 2 // 64 * 64  # whole chunks the client wrote before the connection closed
    assert resolves[1].bytes == size // 2 and resolves[2].bytes == size - kept


def test_truncated_api_body_and_hang_surface_as_transport_errors(
    tiny: TinyRoot, serve: Callable[..., DevhubServer]
) -> None:
    server = serve(tiny.path, faults=FaultConfig(truncate_rate=1.0, path_regex=r"^/api/models/"))
    with pytest.raises(httpx2.RemoteProtocolError):
        HfApi(endpoint=server.url).model_info(BASE)
    server.set_faults(FaultConfig(hang_rate=1.0, hang_s=1.0, path_regex=r"^/api/models/"))
    with pytest.raises(httpx2.TimeoutException):
        HfApi(endpoint=server.url).model_info(BASE, timeout=0.3)
    records = server.request_records()
    assert [(r.fault, r.status) for r in records] == [("truncate", 200), ("hang", 0)]


def test_control_endpoints(tiny: TinyRoot, serve: Callable[..., DevhubServer], tmp_path: Path) -> None:
    log_file = tmp_path / "requests.jsonl"
    server = serve(tiny.path, request_log=log_file)
    api = HfApi(endpoint=server.url)
    api.model_info(BASE)
    mark = time.time()
    list(api.list_models())
    summary = control(server, "requests?raw=1")
    assert summary["total"] == 2 and summary["by_kind_status"] == {
        "model_info": {"200": 1},
        "list": {"200": 1},
    }
    assert [e["kind"] for e in summary["entries"]] == ["model_info", "list"]
    assert control(server, f"requests?since={mark}")["by_kind"] == {"list": 1}
    assert [json.loads(line)["kind"] for line in log_file.read_text().splitlines()] == ["model_info", "list"]
    assert control(server, "faults", {"error_rate": 1.0, "path_regex": "^/api/models/"})["config"]["error_rate"] == 1
    with pytest.raises(HfHubHTTPError):
        api.model_info(BASE)
    assert control(server, "faults")["injected"] == {"error": 1}
    with pytest.raises(urllib.error.HTTPError) as bad:
        control(server, "faults", {"error_rate": 2.0})
    assert bad.value.code == 400
    control(server, "faults", {"error_rate": 0.0})
    assert control(server, "requests/reset", {})["ok"] is True
    assert control(server, "reload", {})["repos"] == len(tiny.catalog)
    assert control(server, "health")["ok"] is True
    assert control(server, "requests")["total"] == 0  # control calls are never logged
