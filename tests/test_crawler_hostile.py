"""Issue 16 for the crawler: hostile listing metadata costs one repo at most (real client, devhub, real index)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hubdelta.cli import app
from hubdelta.crawler.api import run_crawl, track
from hubdelta.crawler.decide import CLOCK_SKEW, newest_dated, plausible_date, usable_cursor
from hubdelta.crawler.wire import INT64_MAX, Listed, Unreadable, read_item
from hubdelta.index.door import open_reader
from hubdelta.index.records import Cursor, HubModel, ModelStatus, Relation
from hubdelta_dev.devhub.server import DevhubServer
from tests.helpers import settings_for

NOW = datetime(2026, 6, 1, tzinfo=UTC)
BASE = "acme/self-base"
SHA = "a" * 40
FT = Relation.FINETUNE


def _card(meta: dict[str, Any]) -> str:
    import yaml

    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n# card\n"


def hostile_root(root: Path) -> dict[str, dict[str, Any]]:
    """A base whose card names itself, and one child per hostile value of issue 16 (item 2), plus a good one."""
    (root / BASE).mkdir(parents=True)
    (root / BASE / "README.md").write_text(_card({"base_model": BASE, "license": "mit"}))
    (root / BASE / "config.json").write_text('{"model_type": "llama"}')
    card = {"base_model": BASE}
    children: dict[str, dict[str, Any]] = {
        "h/tags-int": {"card": {**card, "tags": 2024}},
        "h/eval-int": {"card": {**card, "eval_results": 5}},
        "h/ignore-errors": {"card": {**card, "ignore_metadata_errors": False}},
        "h/year-one": {"card": card, "createdAt": "0001-01-01T00:00:00.000Z"},
        "h/year-9999": {"card": card, "createdAt": "9999-12-31T00:00:00.000Z"},
        "h/huge-downloads": {"card": card, "downloads": 2**70},
        "h/good": {"card": {**card, "license": "apache-2.0"}},
    }
    lines = [{"id": k, "createdAt": "2025-01-02T00:00:00.000Z", **v} for k, v in children.items()]
    (root / "catalog.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    return children


def rows(settings: Any) -> dict[str, Any]:
    with open_reader(settings) as index:
        return index.models.get()


def test_a_hostile_listing_is_crawled_whole_and_the_crawl_exits_0(
    serve: Callable[..., DevhubServer], tmp_path: Path
) -> None:
    children = hostile_root(tmp_path / "hub")
    hub = serve(tmp_path / "hub", check_interval_s=0.1)
    settings = settings_for(tmp_path / "home", hub.url)
    track(settings, BASE, (FT,))
    summary = run_crawl(settings)
    assert summary.errors == [] and summary.total("new") == len(children)
    got = rows(settings)
    assert set(got) == set(children)  # every hostile repo recorded; the base is not its own child
    assert {r.status for r in got.values()} == {ModelStatus.QUEUED}
    assert got["h/huge-downloads"].model.downloads == INT64_MAX
    assert got["h/year-one"].model.created_at is None and got["h/year-9999"].model.created_at is None
    assert got["h/good"].model.license == "apache-2.0" and got["h/tags-int"].model.base_models == (BASE,)
    assert summary.total("repaired") == 3  # year 1, year 9999, 2**70
    with open_reader(settings) as index:
        (tracked,) = index.tracked.all()
    assert tracked.cursors[FT].created_at.year == 2025  # not the year-9999 repo

    # An incremental crawl still finds a repo published now, below the year-9999 one in the listing.
    with (tmp_path / "hub" / "catalog.jsonl").open("a") as f:
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        f.write(json.dumps({"id": "h/new-today", "createdAt": created, "card": {"base_model": BASE}}) + "\n")
    hub.reload()
    again = run_crawl(settings)
    assert again.errors == [] and again.total("new") == 1 and "h/new-today" in rows(settings)


def test_the_cli_crawl_of_a_hostile_listing_prints_no_traceback(
    serve: Callable[..., DevhubServer], tmp_path: Path
) -> None:
    hostile_root(tmp_path / "hub")
    hub = serve(tmp_path / "hub")
    home = tmp_path / "home"
    env = {"HF_ENDPOINT": hub.url}
    runner = CliRunner()
    assert runner.invoke(app, ["--home", str(home), "track", BASE, "--relations", "finetune"], env=env).exit_code == 0
    result = runner.invoke(app, ["--home", str(home), "crawl", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    doc = json.loads(result.stdout)
    assert doc["errors"] == [] and doc["new"] == 7 and doc["bases"][0]["repaired"] == 3


def _item(**fields: Any) -> dict[str, Any]:
    return {"id": "org/m", "sha": SHA, "createdAt": "2025-01-01T00:00:00.000Z", "tags": ["base_model:finetune:b/b"],
            **fields}  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "note", "check"),
    [
        ({"cardData": {"tags": 2024, "ignore_metadata_errors": False, "eval_results": 5}}, None, None),
        ({"cardData": [1, 2]}, "cardData is a list", None),
        ({"createdAt": "0001-01-01T00:00:00.000Z"}, "createdAt", lambda m: m.created_at is None),
        ({"createdAt": "9999-12-31T00:00:00.000Z"}, "not a plausible date", lambda m: m.created_at is None),
        ({"lastModified": "garbage"}, "lastModified", lambda m: m.last_modified is None),
        ({"downloads": 2**70}, "clamped", lambda m: m.downloads == INT64_MAX),
        ({"likes": -3}, "likes -3", lambda m: m.likes == 0),
        ({"downloads": 1.5}, "not an integer", lambda m: m.downloads == 0),
        ({"tags": 5}, "tags is a int", lambda m: m.base_models == ("b/b",) and m.tags == ()),
        ({"tags": ["ok", 7, "x" * 999]}, "tags: 2", lambda m: "ok" in m.tags),
        ({"tags": ["base_model:finetune:org/m"]}, None, lambda m: m.base_models == ()),  # never its own base
        ({"gated": True}, "gated", lambda m: m.gated == "manual"),
        ({"private": "no"}, "private", lambda m: m.private is True),
        ({"library_name": "\ud800peft"}, None, lambda m: m.library == "?peft"),  # a lone surrogate
        ({"pipeline_tag": {"a": 1}}, "pipeline_tag", lambda m: m.pipeline_tag is None),
    ],
)
def test_read_item_drops_or_clamps_one_bad_field(fields: dict, note: str | None, check: Any) -> None:
    read = read_item(_item(**fields), FT, "b/b", NOW)
    assert isinstance(read, Listed) and read.problem == ""
    if note is None:
        assert read.notes == ()
    else:
        assert any(note in n for n in read.notes), read.notes
    assert check is None or check(read.model)


@pytest.mark.parametrize(
    ("item", "outcome"),
    [
        (_item(sha="../../etc"), "sha is not a 40-hex commit id"),
        (_item(sha=5), "sha is not a 40-hex commit id"),
        (_item(id="../../etc/passwd"), Unreadable),
        (_item(id=None), Unreadable),
        ([1, 2], Unreadable),
    ],
)
def test_read_item_skips_a_repo_it_cannot_key_and_never_raises(item: Any, outcome: Any) -> None:
    read = read_item(item, FT, "b/b", NOW)
    if outcome is Unreadable:
        assert isinstance(read, Unreadable) and read.what
    else:
        assert isinstance(read, Listed) and read.problem == f"listing metadata: {outcome}"


# --- issue 16 item 16: the cursor ignores the future -----------------------------------------------------------


def _dated(name: str, t: datetime | None) -> HubModel:
    return HubModel(f"org/{name}", SHA, FT, ("b/b",), created_at=t)


@pytest.mark.parametrize(
    ("created", "plausible", "cursor_ok"),
    [
        (NOW, True, True),
        (NOW - timedelta(days=400), True, True),
        (NOW + CLOCK_SKEW - timedelta(seconds=1), True, True),  # clock skew tolerated
        (NOW + CLOCK_SKEW + timedelta(seconds=1), False, False),
        (datetime(9999, 12, 31, tzinfo=UTC), False, False),
        (datetime(1, 1, 1, tzinfo=UTC), False, True),  # nonsense, but in the past: harmless as a cursor
        (None, False, False),
    ],
)
def test_future_dates_never_become_the_cursor(created: datetime | None, plausible: bool, cursor_ok: bool) -> None:
    assert plausible_date(created, NOW) is plausible
    if created is not None:
        assert (usable_cursor(Cursor(created, "org/x"), NOW) is not None) is cursor_ok
    listing = [_dated("first", created), _dated("second", NOW - timedelta(days=1))]
    assert newest_dated(listing, NOW) == (listing[0] if cursor_ok else listing[1])


@pytest.mark.parametrize(
    ("body", "needle"),
    [(b'{"not": "a list"}', "not a JSON list"), (b"[" * 100_000 + b"]" * 100_000, "nested too deeply")],
)
def test_a_page_that_is_no_listing_is_one_error_for_its_sweep(body: bytes, needle: str) -> None:
    import httpx2

    from hubdelta.crawler.hub import HubLister
    from hubdelta.crawler.politeness import Politeness
    from hubdelta.kernel.errors import HubUnavailableError

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "application/json"})

    policy = Politeness(max_attempts=2, backoff_base_s=0.001, backoff_cap_s=0.002)
    lister = HubLister("http://hub.test", None, policy, session=httpx2.Client(transport=httpx2.MockTransport(handler)))
    with pytest.raises(HubUnavailableError, match=needle):
        next(lister.children("org/base", FT))
