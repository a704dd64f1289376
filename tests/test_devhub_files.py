"""Repo info, trees and downloads against devhub with the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hubdelta_dev.devhub.server import DevhubServer
from tests.helpers import BASE, OTHER_BASE, TOKEN, TinyRoot, write_safetensors


def tree_of(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every visible file under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def test_snapshot_download_of_an_adapter_gives_exactly_its_files(
    hub: DevhubServer, tiny: TinyRoot, tmp_path: Path
) -> None:
    local = Path(snapshot_download("alice/base-lora", endpoint=hub.url, cache_dir=tmp_path / "cache"))
    expected = tree_of(tiny.path / "alice/base-lora")
    assert set(expected) == {
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "sub/dir/notes.txt",
    }
    assert tree_of(local) == expected
    assert local.name == HfApi(endpoint=hub.url).model_info("alice/base-lora").sha  # cached under the commit


def test_snapshot_download_of_a_catalog_only_repo_is_deterministic(
    hub: DevhubServer, tiny: TinyRoot, tmp_path: Path
) -> None:
    first = Path(snapshot_download(tiny.virtual, endpoint=hub.url, cache_dir=tmp_path / "a"))
    again = Path(snapshot_download(tiny.virtual, endpoint=hub.url, cache_dir=tmp_path / "b"))
    assert tree_of(first) == tree_of(again)
    assert (first / "adapter_model.safetensors").stat().st_size == 4096
    assert "Only in the catalog." in (first / "README.md").read_text()
    assert "base_model: acme/base-7m" in (first / "README.md").read_text()


def test_safetensors_metadata_and_expand(hub: DevhubServer, tiny: TinyRoot) -> None:
    meta = HfApi(endpoint=hub.url).get_safetensors_metadata(BASE)
    assert meta.parameter_count == {"F32": tiny.base_params}
    assert set(meta.weight_map) == {"w", "b"}
    info = HfApi(endpoint=hub.url).model_info(BASE, expand=["safetensors", "usedStorage"])
    assert info.safetensors is not None and info.safetensors.total == tiny.base_params
    assert info.used_storage == sum(p.stat().st_size for p in (tiny.path / BASE).iterdir())
    # A catalog-only file gets a synthetic but valid header: (4096 - 8 - header) bytes of BF16.
    virtual = HfApi(endpoint=hub.url).parse_safetensors_file_metadata(tiny.virtual, "adapter_model.safetensors")
    assert 0 < virtual.parameter_count["BF16"] < 2048


def test_model_info_base_models_and_children(hub: DevhubServer, tiny: TinyRoot) -> None:
    api = HfApi(endpoint=hub.url)
    assert api.model_info("carol/merged", expand=["baseModels"]).base_models == {
        "relation": "merge",
        "models": [{"id": BASE}, {"id": OTHER_BASE}],
    }
    assert api.model_info("erin/explicit-ft", expand=["baseModels"]).base_models == {
        "relation": "finetune",  # stated in the card: wins over the adapter_config.json inference
        "models": [{"id": BASE}],
    }
    assert api.model_info("dave/base-gguf", expand=["baseModels"]).base_models["relation"] == "quantized"
    assert api.model_info(BASE, expand=["baseModels"]).base_models is None
    direct = tiny.adapters | tiny.finetunes | tiny.merges | tiny.quantized  # public and private alike
    assert api.model_info(BASE, expand=["childrenModelCount"]).children_model_count == len(direct) + 1


def test_model_info_defaults_revision_and_files_metadata(hub: DevhubServer, tiny: TinyRoot) -> None:
    api = HfApi(endpoint=hub.url)
    info = api.model_info("alice/base-lora", files_metadata=True, securityStatus=False)
    assert info.card_data is not None and info.card_data.base_model == BASE
    assert info.created_at is not None and info.created_at.isoformat().startswith(
        tiny.catalog["alice/base-lora"]["createdAt"][:19]
    )
    by_name = {s.rfilename: s for s in info.siblings or []}
    weights = by_name["adapter_model.safetensors"]
    data = (tiny.path / "alice/base-lora/adapter_model.safetensors").read_bytes()
    assert weights.lfs is not None and weights.lfs.sha256 == hashlib.sha256(data).hexdigest()
    assert weights.size == len(data)
    readme = (tiny.path / "alice/base-lora/README.md").read_bytes()
    git_oid = hashlib.sha1(b"blob %d\0" % len(readme) + readme).hexdigest()
    assert by_name["README.md"].blob_id == git_oid and by_name["README.md"].lfs is None
    assert api.model_info("alice/base-lora", revision=info.sha).sha == info.sha
    with pytest.raises(RevisionNotFoundError):
        api.model_info("alice/base-lora", revision="v9.9")


def test_tree_recursive_nested_and_lfs(hub: DevhubServer) -> None:
    api = HfApi(endpoint=hub.url)
    top = {e.path: e for e in api.list_repo_tree("alice/base-lora")}
    assert set(top) == {"README.md", "adapter_config.json", "adapter_model.safetensors", "sub"}
    assert not hasattr(top["sub"], "size")  # a RepoFolder
    deep = {e.path for e in api.list_repo_tree("alice/base-lora", recursive=True)}
    assert {"sub", "sub/dir", "sub/dir/notes.txt"} <= deep
    nested = list(api.list_repo_tree("alice/base-lora", path_in_repo="sub/dir", expand=True))
    assert [e.path for e in nested] == ["sub/dir/notes.txt"] and nested[0].last_commit is not None
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree("alice/base-lora", path_in_repo="nope"))


def test_hf_hub_download_range_requests(hub: DevhubServer, tiny: TinyRoot, tmp_path: Path) -> None:
    path = hf_hub_download("alice/base-lora", "sub/dir/notes.txt", endpoint=hub.url, cache_dir=tmp_path)
    assert Path(path).read_text() == "n" * 300
    hub.reset_requests()
    meta = HfApi(endpoint=hub.url).parse_safetensors_file_metadata("alice/base-lora", "adapter_model.safetensors")
    assert set(meta.tensors) == {"lora_A", "lora_B"}
    statuses = [r.status for r in hub.request_records() if r.kind == "resolve"]
    assert statuses == [206]  # one ranged GET (bytes=0-100000) covers the small header


def test_sha_changes_when_a_file_changes_without_restart(hub: DevhubServer, tiny: TinyRoot, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.url)
    before = api.model_info("bob/base-ft").sha
    write_safetensors(tiny.path / "bob/base-ft/model.safetensors", {"w": (16, 8), "b": (8,), "extra": (2,)})
    time.sleep(0.3)  # > the fixture's 0.1 s check interval
    after = api.model_info("bob/base-ft").sha
    assert after != before
    local = Path(snapshot_download("bob/base-ft", endpoint=hub.url, cache_dir=tmp_path))
    assert local.name == after
    assert api.get_safetensors_metadata("bob/base-ft").parameter_count == {"F32": 16 * 8 + 8 + 2}
    (tiny.path / "bob/new-repo").mkdir()
    (tiny.path / "bob/new-repo/README.md").write_text("---\nbase_model: acme/base-7m\n---\n")
    (tiny.path / "bob/base-ft/config.json").unlink()
    time.sleep(0.3)
    assert "bob/new-repo" in [m.id for m in api.list_models(filter=f"base_model:finetune:{BASE}")]
    assert "config.json" not in [s.rfilename for s in api.model_info("bob/base-ft").siblings or []]


def test_gated_repo_needs_an_authorized_token_to_download(hub: DevhubServer, tiny: TinyRoot, tmp_path: Path) -> None:
    assert HfApi(endpoint=hub.url).model_info(tiny.gated).gated == "manual"  # metadata stays visible
    with pytest.raises(GatedRepoError):
        hf_hub_download(tiny.gated, "config.json", endpoint=hub.url, cache_dir=tmp_path)
    with pytest.raises(GatedRepoError):
        hf_hub_download(tiny.gated, "config.json", endpoint=hub.url, cache_dir=tmp_path, token="unknown")
    path = hf_hub_download(tiny.gated, "config.json", endpoint=hub.url, cache_dir=tmp_path, token=TOKEN)
    assert Path(path).read_bytes() == (tiny.path / tiny.gated / "config.json").read_bytes()


def test_private_and_unknown_repos_are_not_found(hub: DevhubServer, tiny: TinyRoot, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.url)
    for repo in (tiny.private, "nobody/nothing"):
        with pytest.raises(RepositoryNotFoundError) as err:
            api.model_info(repo)
        assert not isinstance(err.value, GatedRepoError)
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(repo, "README.md", endpoint=hub.url, cache_dir=tmp_path)
        with pytest.raises(RepositoryNotFoundError):
            snapshot_download(repo, endpoint=hub.url, cache_dir=tmp_path)
    assert HfApi(endpoint=hub.url, token=TOKEN).model_info(tiny.private).private is True


def test_unknown_revision_and_file(hub: DevhubServer, tmp_path: Path) -> None:
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("bob/base-ft", "config.json", revision="dev", endpoint=hub.url, cache_dir=tmp_path)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("bob/base-ft", "missing.bin", endpoint=hub.url, cache_dir=tmp_path)
    assert HfApi(endpoint=hub.url).file_exists("bob/base-ft", "config.json")
    assert not HfApi(endpoint=hub.url).file_exists("bob/base-ft", "missing.bin")


def test_card_dates_and_a_broken_rescan_keep_the_server_up(hub: DevhubServer, tiny: TinyRoot) -> None:
    (tiny.path / "bob/dated").mkdir()
    (tiny.path / "bob/dated/README.md").write_text("---\nbase_model: acme/base-7m\ndate: 2024-01-31\n---\n")
    time.sleep(0.3)
    api = HfApi(endpoint=hub.url)
    assert api.model_info("bob/dated").card_data is not None  # a YAML date is served as a string
    with (tiny.path / "catalog.jsonl").open("a") as f:
        f.write("{broken\n")
    time.sleep(0.3)
    assert api.model_info("bob/dated").sha  # the last good snapshot is still served
    assert "catalog.jsonl:" in (hub.catalog.last_error or "")
