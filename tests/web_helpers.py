"""A real index for the web service's tests, and ``hubdelta serve`` as a process on a free port.

The index: planted domains (math, code, legal, chemistry) in one space, a first report that names three
clusters, then a second batch (chemistry, new), so pages and maps have named clusters and new models; plus a
model whose card is an XSS attempt, a failed one and a queued one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hubdelta.index.door import open_writer
from hubdelta.index.records import HubModel, ModelRecord, ModelStatus, Relation
from tests.helpers import REPO_ROOT, REPORT_BASE, PlantedPool, Processes, free_port, pool_names, settings_for

XSS_REPO = "mallory/card-xss"
XSS_CARD = "<script>alert('card')</script><img src=x onerror=\"alert('img')\"> plain words"


def build_web_index(home: Path) -> dict[str, str | None]:
    """Write the index (two batches, a report after each; the layout refreshed by them). Returns repo -> domain."""
    from hubdelta.report.api import run_report

    settings = settings_for(home, "http://127.0.0.1:9")
    pool = PlantedPool()
    first = pool_names("math", [1, 2, 3, 4]) | pool_names("code", [1, 2, 3, 4]) | pool_names("legal", [1, 2, 3, 4])
    pool.put(settings, first | {"someone/odd-merge": None}, datetime.now(UTC) - timedelta(hours=3))
    run_report(settings, command="test", now=datetime.now(UTC) - timedelta(hours=2))
    second = pool_names("chemistry", [1, 2, 3, 4]) | {XSS_REPO: "math"}
    pool.put(settings, second, datetime.now(UTC) - timedelta(hours=1))
    with open_writer(settings, "test") as index:
        broken = HubModel("x/broken", "e" * 40, Relation.ADAPTER, (REPORT_BASE,), card_summary="broken")
        waiting = HubModel("x/waiting", "f" * 40, Relation.ADAPTER, (REPORT_BASE,))
        index.models.put([ModelRecord(broken, ModelStatus.FAILED, reason="corrupt safetensors header"),
                          ModelRecord(waiting, ModelStatus.QUEUED)])  # fmt: skip
        record = index.models.get([XSS_REPO])[XSS_REPO]
        model = replace(record.model, card_summary=XSS_CARD, license="mit", downloads=900)
        index.models.put([ModelRecord(model, ModelStatus.EMBEDDED, first_seen=record.first_seen)])
    run_report(settings, command="test")
    return first | {"someone/odd-merge": None} | second


@dataclass
class Server:
    proc: subprocess.Popen[Any]
    url: str
    log: Path

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return request(self.url + path, headers=headers)


def request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
            method: str | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """One HTTP request; the status, headers (lower-case names) and body, also for 4xx/5xx answers."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def get_json(server: Server, path: str, status: int = 200) -> Any:
    code, _, body = server.get(path)
    assert code == status, f"{path}: {code} {body[:300]!r}"
    return json.loads(body)


def start_serve(processes: Processes, home: Path, *args: str, timeout: float = 60) -> Server:
    """``hubdelta serve`` on a free port (unless ``args`` name one), ready to answer."""
    port = free_port()
    log = home / f"serve-{port}.log"
    argv = [sys.executable, "-m", "hubdelta", "--home", str(home), "serve", "--port", str(port), *args]
    with log.open("w") as sink:
        proc = processes.popen(argv, cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT,
                               env={**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9"})  # fmt: skip
    host = next((args[i + 1] for i, a in enumerate(args) if a == "--host"), "127.0.0.1")
    server = Server(proc, f"http://{host}:{port}", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"hubdelta serve exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            server.get("/static/style.css")
            return server
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"hubdelta serve did not answer in {timeout} s: {log.read_text()[-2000:]}")
