"""Issue 16 for devhub (item 17): links out of a repo, invalid card YAML, NaN safetensors shapes, year-1 dates."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import RemoteEntryNotFoundError

from hubdelta_dev.devhub.entries import format_time_ms, parse_time_ms
from hubdelta_dev.devhub.server import DevhubServer

SECRET = "top secret, outside the root"


def _header_file(path: Path, header: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)


def hostile_root(tmp_path: Path) -> Path:
    root = tmp_path / "hub"
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir(parents=True)
    secret.write_text(SECRET)
    # A repo published as a link to a folder elsewhere, as the pool and test_daemon_pool publish theirs.
    elsewhere = tmp_path / "pool" / "org" / "linked"
    elsewhere.mkdir(parents=True)
    (elsewhere / "README.md").write_text("---\nlicense: mit\n---\n# linked\n")
    (elsewhere / "notes.txt").write_text("inside")
    (elsewhere / "alias.txt").symlink_to(elsewhere / "notes.txt")  # a link inside its own repo: fine
    (elsewhere / "leak.txt").symlink_to(secret)  # a link out of its repo: never served
    (root / "org").mkdir(parents=True)
    (root / "org" / "linked").symlink_to(elsewhere, target_is_directory=True)
    (root / "org" / "plain").mkdir()
    (root / "org" / "plain" / "config.json").write_text("{}")
    (root / "org" / "plain" / "escape.json").symlink_to(secret)
    (root / "org" / "bad-yaml").mkdir()
    (root / "org" / "bad-yaml" / "README.md").write_text("---\nbase_model: [org/plain\nlicense: {{\n---\n# b\n")
    nan = b'{"w":{"dtype":"F32","shape":[NaN],"data_offsets":[0,16]}}'
    _header_file(root / "org" / "nan-shape" / "model.safetensors", nan)
    _header_file(root / "org" / "list-header" / "model.safetensors", b"[1, 2]")
    lines = [{"id": "org/ancient", "createdAt": "0001-01-01T00:00:00.000Z", "card": {"license": "mit"}}]
    (root / "catalog.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    return root


@pytest.fixture
def hostile_hub(tmp_path: Path, serve: Callable[..., DevhubServer]) -> DevhubServer:
    return serve(hostile_root(tmp_path), check_interval_s=3600)  # no rescan: the request-time check is tested


def test_links_out_of_a_repo_are_neither_listed_nor_served(hostile_hub: DevhubServer, tmp_path: Path) -> None:
    api = HfApi(endpoint=hostile_hub.url)
    linked = {s.rfilename for s in api.model_info("org/linked").siblings or []}
    assert linked == {"README.md", "notes.txt", "alias.txt"}  # the linked repo folder and the inner link work
    path = hf_hub_download("org/linked", "alias.txt", endpoint=hostile_hub.url, cache_dir=tmp_path / "c")
    assert Path(path).read_text() == "inside"
    assert {s.rfilename for s in api.model_info("org/plain").siblings or []} == {"config.json"}
    for repo, name in (("org/linked", "leak.txt"), ("org/plain", "escape.json")):
        with pytest.raises(RemoteEntryNotFoundError):
            hf_hub_download(repo, name, endpoint=hostile_hub.url, cache_dir=tmp_path / "c")
        answer = httpx2.get(f"{hostile_hub.url}/{repo}/resolve/main/{name}")
        assert answer.status_code == 404 and SECRET not in answer.text


def test_a_file_that_becomes_a_link_out_after_the_scan_is_not_served(hostile_hub: DevhubServer, tmp_path: Path):
    config = tmp_path / "hub" / "org" / "plain" / "config.json"
    assert httpx2.get(f"{hostile_hub.url}/org/plain/resolve/main/config.json").status_code == 200
    config.unlink()
    config.symlink_to(tmp_path / "outside" / "secret.txt")  # the snapshot still lists config.json
    answer = httpx2.get(f"{hostile_hub.url}/org/plain/resolve/main/config.json")
    assert answer.status_code == 404 and SECRET not in answer.text


def test_invalid_card_yaml_is_served_and_listed_without_card_data(hostile_hub: DevhubServer) -> None:
    api = HfApi(endpoint=hostile_hub.url)
    info = api.model_info("org/bad-yaml")
    assert info.card_data is None and not any(t.startswith("base_model:") for t in info.tags or [])
    assert "org/bad-yaml" in {m.id for m in api.list_models(author="org")}


def test_an_unreadable_safetensors_header_gives_no_info_not_a_500(hostile_hub: DevhubServer) -> None:
    api = HfApi(endpoint=hostile_hub.url)
    for repo in ("org/nan-shape", "org/list-header"):
        answer = httpx2.get(f"{hostile_hub.url}/api/models/{repo}", params={"expand": "safetensors"})
        assert answer.status_code == 200 and "safetensors" not in answer.json()
        assert api.model_info(repo).safetensors is None
    listed = httpx2.get(f"{hostile_hub.url}/api/models", params={"author": "org", "expand": "safetensors"})
    assert listed.status_code == 200 and len(listed.json()) == 6


@pytest.mark.parametrize(
    "text",
    ["0001-01-01T00:00:00.000Z", "0999-12-31T23:59:59.999Z", "2024-05-01T12:00:00.123Z", "9999-12-31T23:59:59.999Z"],
)
def test_dates_render_as_the_hub_writes_them(text: str) -> None:
    assert format_time_ms(parse_time_ms(text)) == text


def test_a_year_one_date_reaches_the_client(hostile_hub: DevhubServer) -> None:
    answer = httpx2.get(f"{hostile_hub.url}/api/models/org/ancient", params={"expand": "createdAt"})
    assert answer.json()["createdAt"] == "0001-01-01T00:00:00.000Z"
    assert HfApi(endpoint=hostile_hub.url).model_info("org/ancient").created_at.year == 1  # type: ignore[union-attr]
