"""``catalog.jsonl`` lines: parsing and validation into typed entries (pure)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hubdelta_dev.errors import CatalogError

CATALOG_FILE = "catalog.jsonl"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
ENTRY_FIX = (
    'one JSON object per line, e.g. {"id": "org/name", "createdAt": "2024-05-01T12:00:00.000Z", '
    '"downloads": 0, "card": {"base_model": "org/base"}, "files": {"model.safetensors": 1024}}'
)


@dataclass(slots=True)
class CatalogEntry:
    """One validated ``catalog.jsonl`` line. None means "not set" (derive it or use the default).

    Never mutated once built (not ``frozen`` only because a frozen init is 3x slower over 100k lines).
    """

    id: str
    created_ms: int | None = None
    modified_ms: int | None = None
    downloads: int | None = None
    likes: int | None = None
    trending: int | None = None
    gated: bool | str | None = None
    private: bool | None = None
    library_name: str | None = None
    pipeline_tag: str | None = None
    card: dict[str, Any] | None = None
    card_text: str | None = None
    files: tuple[tuple[str, int], ...] | None = None
    config: dict[str, Any] | None = None
    sha: str | None = None
    revision: int = 0


def parse_time_ms(value: str) -> int:
    """Parse an ISO-8601 timestamp (``Z`` or an offset; naive means UTC) into epoch milliseconds."""
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def format_time_ms(ms: int) -> str:
    """Epoch milliseconds as the Hub writes them: ``2024-05-01T12:00:00.000Z``."""
    # Not strftime: glibc's %Y writes year 1 as "1", which no Hub client parses; isoformat pads to 4 digits.
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fail(where: str, message: str) -> CatalogError:
    return CatalogError(message, path=where, fix=ENTRY_FIX)


FIELD_TYPES: dict[str, type] = {
    "createdAt": str,
    "lastModified": str,
    "downloads": int,
    "likes": int,
    "trendingScore": int,
    "private": bool,
    "library_name": str,
    "pipeline_tag": str,
    "card": dict,
    "card_text": str,
    "files": dict,
    "config": dict,
    "sha": str,
    "revision": int,
}
COUNTS = ("downloads", "likes", "trendingScore", "revision")


def _check_types(data: dict[str, Any], where: str) -> None:
    # One pass with exact type checks: this runs 100k times when a synthetic catalog loads.
    for key, value in data.items():
        expected = FIELD_TYPES.get(key)
        if expected is not None and value is not None and type(value) is not expected:
            raise _fail(where, f"'{key}' must be {expected.__name__}, got {value!r}")
    for key in COUNTS:
        value = data.get(key)
        if value is not None and value < 0:
            raise _fail(where, f"'{key}' must be >= 0, got {value}")


def _time(data: dict[str, Any], key: str, where: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    try:
        return parse_time_ms(value)
    except ValueError:
        raise _fail(where, f"'{key}' is not an ISO-8601 time: {value!r}") from None


def _files(files: dict[str, Any] | None, where: str) -> tuple[tuple[str, int], ...] | None:
    if files is None:
        return None
    for path, size in files.items():
        bad_path = not path or path[0] == "/" or (".." in path and ".." in path.split("/"))
        if bad_path or type(size) is not int or size < 0:
            raise _fail(where, f"'files' must map relative paths to sizes >= 0, got {path!r}: {size!r}")
    return tuple(sorted(files.items()))


def parse_entry(data: Any, where: str) -> CatalogEntry:
    """Validate one decoded catalog object.

    Args:
        data: the decoded JSON value.
        where: ``file:line``, used in error messages.

    Raises:
        CatalogError: a missing or malformed field, naming ``where`` and the expected shape.
    """
    if type(data) is not dict:
        raise _fail(where, f"expected a JSON object, got {type(data).__name__}")
    repo_id = data.get("id")
    if not isinstance(repo_id, str) or not REPO_ID_RE.match(repo_id):
        raise _fail(where, f"'id' must be 'org/name' (letters, digits, '.', '_', '-'), got {repo_id!r}")
    _check_types(data, where)
    gated = data.get("gated")
    if not (gated is None or gated is False or gated in ("auto", "manual")):
        raise _fail(where, f'\'gated\' must be false, "auto" or "manual", got {gated!r}')
    sha = data.get("sha")
    if sha is not None and not SHA_RE.match(sha):
        raise _fail(where, f"'sha' must be 40 lowercase hex digits, got {sha!r}")
    return CatalogEntry(
        id=repo_id,
        created_ms=_time(data, "createdAt", where),
        modified_ms=_time(data, "lastModified", where),
        downloads=data.get("downloads"),
        likes=data.get("likes"),
        trending=data.get("trendingScore"),
        gated=gated,
        private=data.get("private"),
        library_name=data.get("library_name"),
        pipeline_tag=data.get("pipeline_tag"),
        card=data.get("card"),
        card_text=data.get("card_text"),
        files=_files(data.get("files"), where),
        config=data.get("config"),
        sha=sha,
        revision=data.get("revision") or 0,
    )


def parse_line(line: str, where: str) -> CatalogEntry:
    """Decode and validate one ``catalog.jsonl`` line (see :func:`parse_entry`)."""
    try:
        data = json.loads(line)
    except ValueError as e:
        raise _fail(where, f"not valid JSON ({e})") from None
    return parse_entry(data, where)
