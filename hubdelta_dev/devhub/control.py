"""``/_devhub/*`` control endpoints: health, reload, faults, request log. Never faulted, never logged."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from hubdelta_dev.devhub.catalog import repo_summary
from hubdelta_dev.devhub.listing import truthy
from hubdelta_dev.devhub.routes import Response, error, json_response
from hubdelta_dev.errors import DevhubError

if TYPE_CHECKING:
    from hubdelta_dev.devhub.server import DevhubServer


def handle(server: DevhubServer, method: str, path: str, params: Mapping[str, list[str]], body: bytes) -> Response:
    """Answer one control request.

    Endpoints: ``GET health``; ``POST reload``; ``GET``/``POST faults`` (JSON with any FaultConfig fields);
    ``GET requests`` (``?raw=1`` adds the entries, ``?since=<epoch s>`` filters); ``POST requests/reset``.
    """
    name = path.removeprefix("/_devhub/").strip("/")
    try:
        if (method, name) == ("GET", "health"):
            snap = server.snapshot
            summary = repo_summary(snap.repos)
            return json_response(
                {"ok": True, "generation": snap.generation, "error": server.catalog.last_error, **summary}
            )
        if (method, name) == ("POST", "reload"):
            snap = server.reload()
            return json_response({"generation": snap.generation, **repo_summary(snap.repos)})
        if (method, name) == ("GET", "faults"):
            return json_response(server.injector.describe())
        if (method, name) == ("POST", "faults"):
            changes = json.loads(body or b"{}")
            if not isinstance(changes, dict):
                raise DevhubError(
                    "the body must be a JSON object of FaultConfig fields", fix='e.g. {"error_rate": 0.1}'
                )
            server.set_faults(**changes)
            return json_response(server.injector.describe())
        if (method, name) == ("GET", "requests"):
            since = params.get("since", [None])[-1]
            records = server.request_records(since=float(since) if since else None)
            data = server.requests(since=float(since) if since else None)
            if truthy(params.get("raw", [None])[-1]):
                data["entries"] = [dataclasses.asdict(r) for r in records]
            return json_response(data)
        if (method, name) == ("POST", "requests/reset"):
            server.reset_requests()
            return json_response({"ok": True})
    except DevhubError as e:
        return error(400, e.one_line())
    except ValueError as e:
        return error(400, f"bad request ({e})")
    return error(404, f"no control endpoint {method} /_devhub/{name}")
