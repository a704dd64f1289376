"""``hubdelta serve``'s JSON API over a real index, through a real server process (uvicorn on a free port).

Every route and its errors; the CLI's ``--json`` and the API give the same document; filters arrive as
structured values and SQL-looking ones are plain data; new vectors are seen without a restart; the guard's
headers, body and rate limits, and the token asked for off loopback.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from hubdelta.cli import app
from hubdelta.index.door import open_reader, open_writer
from hubdelta.index.embeddings import Embedding
from hubdelta.index.records import HubModel, ModelRecord, ModelStatus, Relation
from tests.helpers import REPORT_BASE, REPORT_SPACE, Processes, settings_for
from tests.web_helpers import XSS_REPO, Server, build_web_index, get_json, request, start_serve

runner = CliRunner()
Served = tuple[Server, Path, dict[str, str | None]]
MATH = "hubdelta-pool/smollm2-lora-math-1"


def cli_json(home: Path, *args: str) -> Any:
    result = runner.invoke(app, ["--home", str(home), *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def error(server: Server, path: str, status: int, **kwargs: Any) -> dict[str, str]:
    code, headers, body = request(server.url + path, **kwargs)
    assert code == status, f"{path}: {code} {body[:300]!r}"
    assert headers["content-type"].startswith("application/json")
    doc = json.loads(body)
    assert set(doc) == {"error", "fix"} and doc["error"] and doc["fix"], doc
    return doc


# ---- the same answers as the CLI ----------------------------------------------------------------------------


def test_similar_show_and_spaces_are_the_cli_documents(served: Served) -> None:
    server, home, names = served
    api = get_json(server, f"/api/similar?repo={MATH}&k=5")
    cli = cli_json(home, "similar", MATH, "-k", "5")
    assert {k: v for k, v in api.items() if k != "filters"} == cli and api["filters"] == {}
    assert [names.get(n["repo_id"]) for n in api["neighbors"][:3]] == ["math"] * 3
    assert get_json(server, f"/api/models/{MATH}?k=5") == cli_json(home, "show", MATH, "-k", "5")
    # Suggested labels (stored by the reports that built the index) ride along in both.
    (labels,) = get_json(server, f"/api/models/{MATH}?k=5")["labels"]
    assert labels["tags"][0]["tag"] == "math" and 0 < labels["confidence"] <= 1 and MATH not in labels["neighbours"]
    assert all(n["labels"]["tags"][0]["tag"] == "math" for n in api["neighbors"][:3])
    spaces = get_json(server, "/api/spaces")["spaces"]
    assert [s["space_id"] for s in spaces] == [REPORT_SPACE] and spaces[0]["vectors"] == len(names)
    status = get_json(server, "/api/status")
    assert status["models"] == len(names) + 2 and status["by_status"]["failed"] == 1 and status["queue"] == 1


def test_a_neighbours_cluster_comes_from_the_latest_report(served: Served) -> None:
    server, _, names = served
    doc = get_json(server, "/api/similar?repo=hubdelta-pool/smollm2-lora-chemistry-1&k=3")
    assert [names[n["repo_id"]] for n in doc["neighbors"]] == ["chemistry"] * 3
    assert {n["cluster"] for n in doc["neighbors"]} == {"chemistry"}


# ---- filters: structured, never SQL ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "keep"),
    [
        ("license=mit", lambda n: n["license"] == "mit"),
        ("min_downloads=500", lambda n: n["downloads"] >= 500),
        ("relation=adapter&tag=full&tag=peft", lambda n: n["repo_id"] in {"someone/odd-merge", XSS_REPO}),
    ],
)
def test_filters_select_what_they_say(served: Served, query: str, keep: Any) -> None:
    server, _, _ = served
    doc = get_json(server, f"/api/similar?repo={MATH}&k=30&{query}")
    assert doc["neighbors"] and all(keep(n) for n in doc["neighbors"]), doc
    assert doc["filters"]


def test_an_impossible_filter_selects_nothing_and_no_filter_selects_everything(served: Served) -> None:
    server, _, names = served
    assert len(get_json(server, f"/api/similar?repo={MATH}&k=50&tag=peft")["neighbors"]) == len(names) - 1
    assert get_json(server, f"/api/similar?repo={MATH}&k=50&min_likes=1")["neighbors"] == []  # nobody has a like
    assert get_json(server, f"/api/similar?repo={MATH}&k=50&tag=lora&tag=full")["neighbors"] == []  # every tag


def test_created_after_filters_by_time(served: Served) -> None:
    server, _, _ = served
    everything = get_json(server, f"/api/similar?repo={MATH}&k=50")["neighbors"]
    assert get_json(server, f"/api/similar?repo={MATH}&k=50&created_after=2000-01-01")["neighbors"] == everything
    assert get_json(server, f"/api/similar?repo={MATH}&k=50&created_after=2999-01-01")["neighbors"] == []


@pytest.mark.parametrize(
    "query",
    [
        "license=mit%27%20OR%20%271%27%3D%271",  # mit' OR '1'='1
        "tag=x%27)%20OR%20true%20OR%20(%27",  # x') OR true OR ('
        "license=%27%3B%20DROP%20TABLE%20models%3B%20--",  # '; DROP TABLE models; --
    ],
)
def test_sql_looking_filter_values_are_plain_data(served: Served, query: str) -> None:
    server, _, names = served
    assert get_json(server, f"/api/similar?repo={MATH}&k=10&{query}")["neighbors"] == []
    assert len(get_json(server, f"/api/similar?repo={MATH}&k=50")["neighbors"]) == len(names) - 1  # nothing dropped


def test_a_posted_vector_finds_the_same_neighbours_as_its_repo(served: Served) -> None:
    server, home, _ = served
    with open_reader(settings_for(home, "http://127.0.0.1:9")) as index:
        vector = index.vectors.of_repo(MATH)[REPORT_SPACE].vector
    body = json.dumps({"vector": vector.tolist(), "k": 6, "tag": ["lora"]}).encode()
    code, _, raw = request(server.url + "/api/similar", data=body, headers={"content-type": "application/json"})
    assert code == 200, raw
    doc = json.loads(raw)
    by_repo = get_json(server, f"/api/similar?repo={MATH}&k=5&tag=lora")
    assert doc["query"] == "vector:posted" and doc["neighbors"][0]["repo_id"] == MATH
    assert [n["repo_id"] for n in doc["neighbors"][1:]] == [n["repo_id"] for n in by_repo["neighbors"]]


# ---- errors: JSON with a fix, the right status ----------------------------------------------------------------


def test_an_oversized_body_still_being_sent_gets_its_413_not_a_broken_pipe(served: Served) -> None:
    server, _, _ = served
    host, port = server.url.removeprefix("http://").split(":")
    body = b"[" + b"1.0," * 400_000 + b"1.0]"
    head = (f"POST /api/similar HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + body[:65536])
        time.sleep(0.5)  # the server has seen the length and refused: it must still take the rest of the body
        sock.sendall(body[65536:])  # answered without taking the body, this blocked or broke the pipe
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"].startswith("the request body is over")


def test_errors_are_json_with_a_fix_and_the_right_status(served: Served) -> None:
    server, _, _ = served
    assert "not in the index" in error(server, "/api/similar?repo=nobody/nothing", 404)["error"]
    assert "not in the index" in error(server, "/api/models/nobody/nothing", 404)["error"]
    assert "not embedded yet" in error(server, "/api/similar?repo=x/waiting", 409)["error"]
    assert "k" in error(server, f"/api/similar?repo={MATH}&k=0", 400)["error"]
    assert "k" in error(server, f"/api/similar?repo={MATH}&k=100000", 400)["error"]
    assert "not a Hub repo id" in error(server, "/api/similar?repo=a%20b%3Cscript%3E", 400)["error"]
    assert "relation" in error(server, f"/api/similar?repo={MATH}&relation=cousin", 400)["error"]
    assert "min_downloads" in error(server, f"/api/similar?repo={MATH}&min_downloads=-1", 400)["error"]
    assert "no vector in space" in error(server, f"/api/similar?repo={MATH}&space=nope", 400)["error"]
    error(server, "/api/reports/nope", 404)
    error(server, "/api/clusters?space=nope", 404)
    error(server, "/api/spaces/nope/layout", 404)
    error(server, "/api/spaces/nope/export?format=csv", 404)
    error(server, f"/api/spaces/{REPORT_SPACE}/export?format=pickle", 400)
    error(server, "/api/no-such-route", 404)
    json_headers = {"content-type": "application/json"}
    error(server, "/api/similar", 400, data=b"{not json", headers=json_headers)
    error(server, "/api/similar", 400, data=json.dumps({"vector": [0.0] * 32}).encode(), headers=json_headers)
    error(server, "/api/similar", 400, data=json.dumps({"vector": [1.0] * 7}).encode(), headers=json_headers)
    error(server, "/api/similar", 400, data=json.dumps({"vector": [1.0], "where": "1=1"}).encode(),
          headers=json_headers)  # fmt: skip
    error(server, "/api/similar", 413, data=b"[" + b"1.0," * 400_000 + b"1.0]", headers=json_headers)
    error(server, "/api/status", 405, data=b"{}", headers=json_headers)
    assert (
        "1970-9999"
        in error(server, f"/api/similar?repo={MATH}&created_after=0001-01-01T00:00:00%2B14:00", 400)["error"]
    )
    assert "1970-9999" in error(server, f"/api/similar?repo={MATH}&created_after=0500-01-01", 400)["error"]
    dims = json.dumps({"vector": [1.0] * 7, "space": REPORT_SPACE}).encode()
    assert "has dimension" in error(server, "/api/similar", 400, data=dims, headers=json_headers)["error"]


def test_a_body_without_a_length_is_counted_and_refused_past_the_limit(served: Served) -> None:
    server, _, _ = served
    host, port = server.url.removeprefix("http://").split(":")

    def chunked(size: int) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        body = (b"[" + b"1.0," * (size // 4) + b"1.0]") if size else b"{}"
        conn.putrequest("POST", "/api/similar")
        conn.putheader("content-type", "application/json")
        conn.putheader("transfer-encoding", "chunked")
        conn.endheaders()
        for i in range(0, len(body), 65536):
            part = body[i : i + 65536]
            conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        doc = json.loads(resp.read())
        conn.close()
        return resp.status, doc

    status, doc = chunked(2_000_000)
    assert status == 413 and "over 1,000,000 bytes" in doc["error"] and doc["fix"]
    status, doc = chunked(0)
    assert status == 400 and "vector" in doc["error"]  # a small body reaches the route whole


def test_only_localhost_is_answered_without_a_token(served: Served) -> None:
    server, _, _ = served
    code, _, body = server.get("/api/spaces", headers={"host": "attacker.example:8000"})
    assert code == 421 and "localhost" in json.loads(body)["error"]  # a DNS-rebound page reads nothing
    for host in ("localhost:1", "127.0.0.1", "[::1]:8000"):
        assert server.get("/api/spaces", headers={"host": host})[0] == 200, host


def test_map_routes_refuse_a_stale_version_and_find_a_model_exactly(served: Served) -> None:
    server, _, _ = served
    meta = get_json(server, f"/api/spaces/{REPORT_SPACE}/layout")
    at = get_json(server, f"/api/spaces/{REPORT_SPACE}/position?repo={MATH}&v={meta['version']}")
    assert at["version"] == meta["version"]
    point = get_json(server, f"/api/spaces/{REPORT_SPACE}/points?i={at['i']}&v={meta['version']}")["points"][0]
    assert point["repo_id"] == MATH
    assert "recomputed" in error(server, f"/api/spaces/{REPORT_SPACE}/points?i=0&v=0000", 409)["error"]
    error(server, f"/api/spaces/{REPORT_SPACE}/find?q=math&v=0000", 409)
    error(server, f"/api/spaces/{REPORT_SPACE}/position?repo=nobody/nothing", 404)


# ---- the other routes -----------------------------------------------------------------------------------------


def test_complete_reports_clusters_and_export(served: Served) -> None:
    server, _, names = served
    assert get_json(server, "/api/complete?q=HUBDELTA-pool/smollm2-lora-leg&limit=3")["repo_ids"] == [
        f"hubdelta-pool/smollm2-lora-legal-{i}" for i in (1, 2, 3)
    ]
    assert get_json(server, "/api/complete?q=card-x")["repo_ids"] == [XSS_REPO]
    reports = get_json(server, "/api/reports")["reports"]
    assert len(reports) == 2 and reports[0]["created_at"] > reports[1]["created_at"]
    latest = get_json(server, f"/api/reports/{reports[0]['report_id']}")
    assert {c["name"] for c in latest["clusters"][REPORT_SPACE]} >= {"math", "code", "legal", "chemistry"}
    assert "files" not in latest  # a path on the server: not sent
    clusters = get_json(server, f"/api/clusters?space={REPORT_SPACE}")
    assert clusters["report_id"] == reports[0]["report_id"]
    chemistry = next(c for c in clusters["clusters"] if c["name"] == "chemistry")
    assert sorted(chemistry["members"]) == sorted(r for r, d in names.items() if d == "chemistry")
    code, headers, body = server.get(f"/api/spaces/{REPORT_SPACE}/export?format=parquet")
    assert code == 200 and "attachment" in headers["content-disposition"]
    table = pq.read_table(io.BytesIO(body))
    assert sorted(table["repo_id"].to_pylist()) == sorted(names)
    code, _, body = server.get(f"/api/spaces/{REPORT_SPACE}/export?format=npz")
    with np.load(io.BytesIO(body), allow_pickle=False) as npz:
        assert code == 200 and sorted(npz["model_names"].tolist()) == sorted(names)
    code, headers, body = server.get(f"/api/spaces/{REPORT_SPACE}/export?format=csv")
    assert code == 200 and headers["content-type"].startswith("text/csv") and body.count(b"\n") == len(names) + 1


def test_openapi_describes_every_route(served: Served) -> None:
    server, _, _ = served
    paths = set(get_json(server, "/api/openapi.json")["paths"])
    assert {"/api/similar", "/api/models/{repo_id}", "/api/status", "/api/spaces", "/api/complete", "/api/reports",
            "/api/reports/{report_id}", "/api/clusters", "/api/spaces/{space_id}/export",
            "/api/spaces/{space_id}/layout", "/api/spaces/{space_id}/layout.bin"} <= paths  # fmt: skip


def test_the_map_layout_matches_the_index(served: Served) -> None:
    server, _, names = served
    meta = get_json(server, f"/api/spaces/{REPORT_SPACE}/layout")
    n = meta["n"]
    assert n == len(names) and {c["name"] for c in meta["clusters"]} >= {"math", "code", "legal", "chemistry"}
    code, headers, payload = server.get(f"/api/spaces/{REPORT_SPACE}/layout.bin")
    assert code == 200 and len(payload) == n * 13 and headers["x-layout-version"] == meta["version"]
    cluster = np.frombuffer(payload, dtype="<i4", count=n, offset=8 * n)
    found = get_json(server, f"/api/spaces/{REPORT_SPACE}/find?q=chemistry")["indices"]
    assert len(found) == 4
    points = get_json(server, f"/api/spaces/{REPORT_SPACE}/points?i={','.join(map(str, found))}")["points"]
    assert {p["repo_id"] for p in points} == {r for r, d in names.items() if d == "chemistry"}
    assert {meta["clusters"][cluster[i]]["name"] for i in found} == {"chemistry"} == {p["cluster"] for p in points}
    error(server, f"/api/spaces/{REPORT_SPACE}/points?i=1;DROP", 400)


# ---- the guard -------------------------------------------------------------------------------------------------


def test_every_answer_carries_the_security_headers(served: Served) -> None:
    server, _, _ = served
    for path in ("/api/status", "/api/nope", f"/models/{MATH}", "/static/style.css", "/nope"):
        _, headers, _ = server.get(path, headers={"accept": "text/html"})
        csp = headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp, path
        assert headers.get("x-content-type-options") == "nosniff", path


def test_new_vectors_are_seen_without_a_restart(processes: Processes, tmp_path: Path) -> None:
    home = tmp_path / "home"
    build_web_index(home)
    server = start_serve(processes, home)
    assert get_json(server, f"/api/similar?repo={MATH}&k=1")["neighbors"][0]["repo_id"] != "late/arrival"
    settings = settings_for(home, "http://127.0.0.1:9")
    with open_reader(settings) as index:
        vector = index.vectors.of_repo(MATH)[REPORT_SPACE].vector
    fresh = HubModel("late/arrival", "a" * 40, Relation.ADAPTER, (REPORT_BASE,), created_at=datetime.now(UTC))
    with open_writer(settings, "test") as index:
        index.models.put([ModelRecord(fresh, ModelStatus.EMBEDDED)])
        index.vectors.put(REPORT_SPACE, [Embedding(fresh.repo_id, fresh.sha, vector * 2, datetime.now(UTC))])
    assert get_json(server, f"/api/similar?repo={MATH}&k=1")["neighbors"][0]["repo_id"] == "late/arrival"


def test_rate_limit_answers_429_with_retry_after(served: Served, processes: Processes, tmp_path: Path) -> None:
    _, home, _ = served
    limited = tmp_path / "limited"
    limited.mkdir()
    toml = f'[index]\nuri = "{home / "index"}"\n[serve]\nrate_per_s = 0.01\nburst = 4\n'
    (limited / "hubdelta.toml").write_text(toml)
    server = start_serve(processes, limited)  # its readiness probe is the first of the 4
    codes = [server.get("/api/spaces")[0] for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429], codes
    code, headers, body = server.get("/api/spaces")
    assert code == 429 and int(headers["retry-after"]) >= 1 and json.loads(body)["fix"]


def test_a_token_is_required_off_loopback(served: Served, processes: Processes, tmp_path: Path) -> None:
    _, home, _ = served
    result = runner.invoke(app, ["--home", str(home), "serve", "--host", "0.0.0.0"])
    assert result.exit_code != 0 and "token" in result.output and "Traceback" not in result.output
    short = tmp_path / "short"
    short.write_text("abc\n")
    result = runner.invoke(app, ["--home", str(home), "serve", "--host", "0.0.0.0", "--token-file", str(short)])
    assert result.exit_code != 0 and "16+" in result.output
    token_file = tmp_path / "token"
    token = "t0ken-" + "x" * 26
    token_file.write_text(token + "\n")
    server = start_serve(processes, home, "--host", "0.0.0.0", "--token-file", str(token_file))
    server.url = server.url.replace("0.0.0.0", "127.0.0.1")
    assert error(server, "/api/status", 401)["fix"].startswith("send Authorization")
    error(server, "/api/status", 401, headers={"authorization": f"Bearer {token}x"})
    assert request(server.url + "/api/status", headers={"authorization": f"Bearer {token}"})[0] == 200
    code, headers, _ = server.get(f"/models/{MATH}")
    assert code == 303 and headers["location"].startswith("/login?next=")
    login = f"token={token}&next=/api/status".encode()
    code, headers, _ = request(server.url + "/login", data=login, method="POST")
    assert code == 303 and headers["location"] == "/api/status"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and token not in cookie
    assert request(server.url + "/api/status", headers={"cookie": cookie.split(";")[0]})[0] == 200
    code, headers, _ = request(server.url + "/login", data=b"token=wrong&next=//evil.example/", method="POST")
    assert code == 303 and headers["location"].startswith("/login?failed=1") and "evil" not in headers["location"]


def test_no_index_yet_is_503_until_one_exists(processes: Processes, tmp_path: Path) -> None:
    home = tmp_path / "empty"
    home.mkdir()
    server = start_serve(processes, home)
    assert "hubdelta" in error(server, "/api/spaces", 503)["fix"]
    build_web_index(home)
    assert get_json(server, "/api/spaces")["spaces"]  # the same process: no restart
