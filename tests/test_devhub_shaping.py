"""Network shaping: per-request latency and per-connection bandwidth, against a real devhub server.

Timing bounds: lower bounds are what shaping guarantees; upper bounds sit well below what a serialized (or
shared-bandwidth) server would take, with room for a loaded 2-core machine.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from huggingface_hub import HfApi, hf_hub_download
from typer.testing import CliRunner

from hubdelta.cli import app
from hubdelta_dev.devhub import server as server_module
from hubdelta_dev.devhub.faults import FaultConfig
from hubdelta_dev.devhub.server import DevhubServer
from hubdelta_dev.devhub.shaping import paced, parse_bandwidth
from hubdelta_dev.errors import DevhubError
from tests.helpers import BASE, TinyRoot, one_line_error

BIG_REPO = "zed/big"
BIG_SIZE = 2_000_000
RATE = 4_000_000  # 2 MB at 4 MB/s: 0.5 s


@pytest.fixture
def big(tiny: TinyRoot) -> bytes:
    """A 2 MB file (not LFS: no weights suffix) in its own repo of the tiny root; returns its bytes."""
    data = random.Random(7).randbytes(BIG_SIZE)
    repo = tiny.path / BIG_REPO
    repo.mkdir(parents=True)
    (repo / "README.md").write_text("---\nlicense: mit\n---\n")
    (repo / "blob.bin").write_bytes(data)
    return data


def fetch(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[bytes, float]:
    """One request on a fresh connection; returns (body, seconds)."""
    started = time.monotonic()
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}, method=method)) as r:
        body = r.read()
    return body, time.monotonic() - started


def in_parallel(calls: list[Callable[[], Any]]) -> tuple[list[Any], float]:
    """Run the calls at once, one thread each; returns their results and the wall time of the whole batch."""
    barrier = threading.Barrier(len(calls) + 1)
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.monotonic()
    for t in threads:
        t.join(timeout=30)
    return results, time.monotonic() - started


def control(server: DevhubServer, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{server.url}/_devhub/{path}", data=data)) as r:
        return json.loads(r.read())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- latency ----------------------------------------------------------------------------------------------------


def test_latency_applies_to_api_and_resolve_requests_whatever_the_fault_path(
    tiny: TinyRoot, serve: Callable[..., DevhubServer], tmp_path: Path
) -> None:
    # path_regex scopes the random faults, never shaping.
    server = serve(tiny.path, faults=FaultConfig(shape_latency_ms=200, path_regex=r"^/no-such-path"))
    api = HfApi(endpoint=server.url)
    t0 = time.monotonic()
    api.model_info(BASE)
    t1 = time.monotonic()
    list(api.list_models(limit=1))
    t2 = time.monotonic()
    path = hf_hub_download(BASE, "config.json", endpoint=server.url, cache_dir=tmp_path)  # HEAD + GET
    t3 = time.monotonic()
    assert Path(path).read_bytes() == (tiny.path / BASE / "config.json").read_bytes()
    assert t1 - t0 >= 0.2 and t2 - t1 >= 0.2 and t3 - t2 >= 0.4
    kinds = [(r.kind, r.method) for r in server.request_records()]
    assert kinds == [("model_info", "GET"), ("list", "GET"), ("resolve", "HEAD"), ("resolve", "GET")]
    assert server.requests()["faults"] == {}  # shaping is not a fault
    server.set_faults(shape_latency_ms=3000)
    _, seconds = fetch(f"{server.url}/_devhub/health")
    assert seconds < 1.5  # control requests are never shaped


def test_parallel_requests_each_wait_their_own_latency(tiny: TinyRoot, serve: Callable[..., DevhubServer]) -> None:
    server = serve(tiny.path, faults=FaultConfig(shape_latency_ms=200))
    urls = [f"{server.url}/api/models/{BASE}"] * 4 + [f"{server.url}/{BASE}/resolve/main/config.json"] * 4
    results, total = in_parallel([functools.partial(fetch, u) for u in urls])
    assert all(seconds >= 0.2 for _, seconds in results)
    assert total < 0.8  # serialized, 8 x 200 ms would take 1.6 s
    assert sorted(r.status for r in server.request_records()) == [200] * 8


# ---- bandwidth --------------------------------------------------------------------------------------------------


def test_bandwidth_paces_a_download_and_keeps_its_bytes(
    tiny: TinyRoot, big: bytes, serve: Callable[..., DevhubServer]
) -> None:
    server = serve(tiny.path, faults=FaultConfig(shape_bandwidth=RATE))
    url = f"{server.url}/{BIG_REPO}/resolve/main/blob.bin"
    body, seconds = fetch(url)
    assert sha(body) == sha(big) and 0.45 <= seconds < 3.0
    assert [(r.status, r.bytes, r.fault) for r in server.request_records()] == [(200, BIG_SIZE, None)]
    results, total = in_parallel([lambda: fetch(url), lambda: fetch(url)])
    assert all(sha(b) == sha(big) and s >= 0.45 for b, s in results)
    assert total < 0.9  # per connection: a shared 4 MB/s would need 1 s for both


def test_bandwidth_paces_ranges_but_not_heads(tiny: TinyRoot, big: bytes, serve: Callable[..., DevhubServer]) -> None:
    server = serve(tiny.path, faults=FaultConfig(shape_bandwidth=RATE))
    url = f"{server.url}/{BIG_REPO}/resolve/main/blob.bin"
    body, seconds = fetch(url, {"Range": "bytes=1000000-1999999"})
    assert body == big[1_000_000:2_000_000] and seconds >= 0.22
    started = time.monotonic()
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as r:
        assert r.headers["Content-Length"] == str(BIG_SIZE) and r.read() == b""
    assert time.monotonic() - started < 0.4  # pacing the announced (unsent) body would take 0.5 s
    assert [(r.method, r.status, r.bytes) for r in server.request_records()] == [
        ("GET", 206, 1_000_000),
        ("HEAD", 200, 0),
    ]


def test_a_truncated_body_is_paced_up_to_the_cut(
    tiny: TinyRoot, big: bytes, serve: Callable[..., DevhubServer]
) -> None:
    faults = FaultConfig(shape_bandwidth=RATE, truncate_rate=1.0, max_faults=1, path_regex="/resolve/")
    server = serve(tiny.path, faults=faults)
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=10)
    started = time.monotonic()
    conn.request("GET", f"/{BIG_REPO}/resolve/main/blob.bin")
    response = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    seconds = time.monotonic() - started
    conn.close()
    assert cut.value.partial == big[: BIG_SIZE // 2] and seconds >= 0.22
    assert [(r.status, r.bytes, r.fault) for r in server.request_records()] == [(200, BIG_SIZE // 2, "truncate")]


def test_the_hub_like_preset_through_the_client(
    tiny: TinyRoot, big: bytes, serve: Callable[..., DevhubServer], tmp_path: Path
) -> None:
    server = serve(tiny.path, faults=FaultConfig(shape_latency_ms=100, shape_bandwidth=RATE))
    started = time.monotonic()
    path = hf_hub_download(BIG_REPO, "blob.bin", endpoint=server.url, cache_dir=tmp_path)
    seconds = time.monotonic() - started
    assert sha(Path(path).read_bytes()) == sha(big)
    assert seconds >= 0.2 + 0.45  # two round trips (HEAD, GET) and the paced body


def test_shaping_is_off_by_default(tiny: TinyRoot, big: bytes, serve: Callable[..., DevhubServer]) -> None:
    server = serve(tiny.path)
    assert (server.faults.shape_latency_ms, server.faults.shape_bandwidth) == (0, 0)
    body, seconds = fetch(f"{server.url}/{BIG_REPO}/resolve/main/blob.bin")
    assert sha(body) == sha(big) and seconds < 0.4


def test_small_answers_on_a_kept_alive_connection_are_not_held_back(
    tiny: TinyRoot, serve: Callable[..., DevhubServer]
) -> None:
    """Headers and body are two writes: with Nagle's algorithm on, the body of every small answer on a reused
    connection waited for the client's delayed ACK (40 ms on Linux). 20 answers with that stall take >= 0.8 s."""
    server = serve(tiny.path)
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    started = time.monotonic()
    for _ in range(20):
        conn.request("GET", f"/api/models/{BASE}")
        answer = conn.getresponse()
        assert answer.status == 200 and json.loads(answer.read())["id"] == BASE
    conn.close()
    assert time.monotonic() - started < 0.6


# ---- the three ways to set it -----------------------------------------------------------------------------------


def test_control_endpoint_and_python_api_set_and_refuse_shaping(
    tiny: TinyRoot, serve: Callable[..., DevhubServer]
) -> None:
    server = serve(tiny.path)
    config = control(server, "faults", {"shape_latency_ms": 150, "shape_bandwidth": 50_000_000})["config"]
    assert (config["shape_latency_ms"], config["shape_bandwidth"]) == (150, 50_000_000)
    _, seconds = fetch(f"{server.url}/api/models/{BASE}")
    assert seconds >= 0.15
    assert control(server, "faults")["injected"] == {}
    for bad in ({"shape_bandwidth": -1}, {"shape_latency_ms": "fast"}, {"shape_latency_ms": float("inf")}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            control(server, "faults", bad)
        assert refused.value.code == 400
        assert "shape_" in json.loads(refused.value.read())["error"]
    assert server.faults.shape_latency_ms == 150  # a refused change leaves the config as it was
    for bad_change in ({"shape_latency_ms": -5}, {"shape_bandwidth": True}):
        with pytest.raises(DevhubError, match="must be a finite number >= 0"):
            server.set_faults(**bad_change)
    assert server.set_faults(shape_latency_ms=0, shape_bandwidth=0).shape_latency_ms == 0


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("50000000", 50_000_000),
        ("50MB", 50_000_000),
        ("500KB", 500_000),
        ("1GB", 10**9),
        ("1.5MiB", 1_572_864),
        ("4 mb/s", 4_000_000),
        ("0", 0),
        ("0.1B", 1),
    ],
)
def test_parse_bandwidth(text: str, rate: int) -> None:
    assert parse_bandwidth(text) == rate


class _FakeServer:
    """Stands in for DevhubServer in the CLI: records what it was given, serves nothing."""

    given: ClassVar[dict[str, Any]] = {}
    url = "http://127.0.0.1:1"
    snapshot = type("Snap", (), {"repos": ()})()

    def __init__(self, root: Path, **kwargs: Any) -> None:
        _FakeServer.given = kwargs

    def serve_forever(self) -> None:
        pass

    def stop(self) -> None:
        pass


def test_cli_sets_shaping_and_refuses_bad_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    serve = ["devhub", "serve", "--root", str(tmp_path), "--port", "0"]
    for args, message in [
        (["--bandwidth", "fast"], "--bandwidth 'fast' is not a rate"),
        (["--bandwidth", "5TB"], "--bandwidth '5TB' is not a rate"),
        (["--bandwidth=-5MB"], "--bandwidth must be >= 0"),
        (["--latency-ms=-5"], "shape_latency_ms must be a finite number >= 0"),
    ]:
        line = one_line_error(runner.invoke(app, [*serve, *args]))
        assert message in line and "--bandwidth" in line  # the fix names the flags
    monkeypatch.setattr(server_module, "DevhubServer", _FakeServer)
    monkeypatch.setattr("hubdelta.cli.devhub.signal.signal", lambda *args: None)
    result = runner.invoke(app, [*serve, "--latency-ms", "100", "--bandwidth", "50MB"])
    assert result.exit_code == 0, result.output
    assert "shaped: +100 ms per request, 50,000,000 B/s per connection" in result.output
    faults = _FakeServer.given["faults"]
    assert (faults.shape_latency_ms, faults.shape_bandwidth, faults.latency_ms) == (100, 50_000_000, 0)
    result = runner.invoke(app, [*serve, "--fault-latency-ms", "5", "--fault-path", "^/api/"])
    assert result.exit_code == 0 and "shaped" not in result.output
    faults = _FakeServer.given["faults"]
    assert (faults.latency_ms, faults.path_regex, faults.shape_latency_ms) == (5, "^/api/", 0)


# ---- the pacer, on a fake clock -------------------------------------------------------------------------------


class _Clock:
    """A clock that only moves when slept on, or by ``work`` seconds per slice the consumer handles."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize("work_s", [0.0, 0.005])
def test_paced_takes_size_over_rate_and_absorbs_overhead(work_s: float) -> None:
    clock = _Clock()
    chunks = [bytes(100_000), bytes(50_000)]
    out: list[bytes] = []
    for part in paced(chunks, 100_000, clock=clock, sleep=clock.sleep):
        assert clock.now >= (sum(len(p) for p in out) + len(part)) / 100_000 - 1e-9  # never ahead of the rate
        out.append(part)
        clock.now += work_s  # writing the slice: overhead that must not add up
    assert b"".join(out) == b"".join(chunks)
    assert max(len(part) for part in out) == 2_000  # 20 ms of data per slice
    assert clock.now == pytest.approx(1.5 + work_s)  # 150 kB at 100 kB/s; only the last slice's work shows


def test_paced_without_a_rate_passes_chunks_through() -> None:
    chunks = [b"a" * 10, b"b" * 5]
    assert list(paced(chunks, 0, sleep=lambda s: pytest.fail("slept"))) == chunks
