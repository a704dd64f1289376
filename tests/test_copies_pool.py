"""Copies found before download, on real SmolLM2 adapters of the pool served by devhub (pool tier).

The tree: the pool's base and adapters, plus byte-identical re-uploads of 20% of the adapter repos under new names
(hard links, new cards, later creation dates) and one repo with an original's exact safetensors under another
``lora_alpha`` (not a copy). track -> crawl -> embed, then devhub's request log proves what was fetched.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hubdelta.kernel.settings import Settings, load_settings
from hubdelta_dev.devhub.server import DevhubServer
from hubdelta_dev.pool.base import BASE_REPO_ID
from hubdelta_dev.pool.build import PoolManifest
from hubdelta_dev.pool.publish import card_text, link_tree

pytestmark = pytest.mark.pool
ALPHA_VARIANT = "other/alpha-variant"


@dataclass(frozen=True)
class CopyTree:
    root: Path
    originals: list[str]  # every adapter of the pool
    reuploads: dict[str, str]  # re-upload -> its original
    alpha_of: str  # the original whose safetensors the alpha variant shares


def _catalog_line(repo_id: str, created: str) -> dict[str, Any]:
    return {"id": repo_id, "createdAt": created, "lastModified": created, "downloads": 3, "likes": 0}


def build_copy_tree(pool: Path, manifest: PoolManifest, out: Path) -> CopyTree:
    """The pool's base and adapters, 20% of the adapter repos being re-uploads, and one alpha variant."""
    hub = pool / "hub"
    # 19 originals, the alpha variant and 5 re-uploads: 5 of 25 adapter repos (20%) are byte-identical re-uploads
    adapters = sorted(r.repo_id for r in manifest.repos if r.kind == "lora" and BASE_REPO_ID in r.bases)[:19]
    link_tree(hub / BASE_REPO_ID, out / BASE_REPO_ID)
    for repo in adapters:
        link_tree(hub / repo, out / repo)
    chosen = adapters[::4][:5]
    reuploads = {f"reupload/{repo.split('/')[1]}-mirror": repo for repo in chosen}
    entries = [json.loads(line) for line in (hub / "catalog.jsonl").read_text().splitlines()]
    keep = {BASE_REPO_ID, *adapters}
    entries = [e for e in entries if e["id"] in keep]
    for new, repo in reuploads.items():
        link_tree(hub / repo, out / new)
        (out / new / "README.md").unlink()
        meta = {"base_model": BASE_REPO_ID, "library_name": "peft", "tags": ["mirror"]}
        (out / new / "README.md").write_text(card_text(meta, new, "Uploaded again, as it was."))
        entries.append(_catalog_line(new, "2026-06-01T00:00:00.000Z"))
    alpha_of = adapters[1]
    link_tree(hub / alpha_of, out / ALPHA_VARIANT)
    config_path = out / ALPHA_VARIANT / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config_path.unlink()  # a hard link: write a new file, never through the link into the pool
    config["lora_alpha"] = 4 * config["lora_alpha"]
    config_path.write_text(json.dumps(config))
    entries.append(_catalog_line(ALPHA_VARIANT, "2026-06-02T00:00:00.000Z"))
    (out / "catalog.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return CopyTree(out, adapters, reuploads, alpha_of)


@pytest.fixture(scope="module")
def copy_tree(pool: Path, manifest: PoolManifest, tmp_path_factory: pytest.TempPathFactory) -> CopyTree:
    return build_copy_tree(pool, manifest, tmp_path_factory.mktemp("copy-hub"))


@dataclass(frozen=True)
class Embedded:
    settings: Settings
    tree: CopyTree
    requests: list[Any]
    summary: Any


@pytest.fixture(scope="module")
def embedded(copy_tree: CopyTree, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from hubdelta.crawler.api import run_crawl, track
    from hubdelta.embedder.api import run_embed

    home = tmp_path_factory.mktemp("copy-home")
    with DevhubServer(copy_tree.root) as hub:
        settings = load_settings({"HF_ENDPOINT": hub.url}, home=home)
        track(settings, BASE_REPO_ID)
        run_crawl(settings)
        summary = run_embed(settings)
        requests = hub.request_records()
    return Embedded(settings, copy_tree, requests, summary)


def _touching(requests: list[Any], repo_id: str) -> list[Any]:
    return [r for r in requests if repo_id in r.path]


def test_no_file_of_a_reupload_is_downloaded(embedded: Embedded) -> None:
    tree, requests = embedded.tree, embedded.requests
    assert len(tree.reuploads) * 5 == len(tree.originals) + 1 + len(tree.reuploads)  # 20% of the adapter repos
    assert embedded.summary.failed == 0 and embedded.summary.copied == len(tree.reuploads), embedded.summary
    for repo in tree.reuploads:
        seen = _touching(requests, repo)
        assert seen, repo
        assert all(r.kind == "model_info" for r in seen), [(r.kind, r.path) for r in seen]
    for repo in tree.originals:  # the originals were downloaded: the log does see their files
        assert any(r.kind == "resolve" and "adapter_model.safetensors" in r.path for r in _touching(requests, repo))
    assert any(r.kind == "resolve" and r.path.endswith("adapter_model.safetensors")
               for r in _touching(requests, ALPHA_VARIANT))  # fmt: skip


def test_each_reupload_has_its_originals_vector_exactly(embedded: Embedded) -> None:
    from hubdelta.index.door import open_reader

    with open_reader(embedded.settings) as index:
        (space,) = index.vectors.spaces()
        vectors = index.vectors.get(space)
        rows = index.copies.of_space(space)
        records = index.models.get(list(embedded.tree.reuploads))
        saved = index.copies.saved_bytes(space)
    for new, original in embedded.tree.reuploads.items():
        assert np.array_equal(vectors[new].vector, vectors[original].vector), new
        assert rows[new].copy_of == original and rows[new].fingerprint == rows[original].fingerprint
        assert rows[original].copy_of is None
        assert records[new].status == "embedded" and f"a copy of {original}" in records[new].reason
    weight = sum(os.path.getsize(embedded.tree.root / o / "adapter_model.safetensors")
                 for o in embedded.tree.reuploads.values())  # fmt: skip
    assert saved == (len(embedded.tree.reuploads), weight)


def test_the_same_weights_under_another_alpha_are_not_a_copy(embedded: Embedded) -> None:
    from hubdelta.index.door import open_reader

    with open_reader(embedded.settings) as index:
        (space,) = index.vectors.spaces()
        vectors = index.vectors.get(space)
        rows = index.copies.of_space(space)
    assert rows[ALPHA_VARIANT].copy_of is None
    assert rows[ALPHA_VARIANT].fingerprint != rows[embedded.tree.alpha_of].fingerprint
    a, b = vectors[ALPHA_VARIANT].vector, vectors[embedded.tree.alpha_of].vector
    assert np.linalg.norm(a) > 1.5 * np.linalg.norm(b)  # 4x alpha: a longer delta, the same file bytes


def test_similar_shows_each_group_once_and_all_shows_every_copy(embedded: Embedded) -> None:
    from hubdelta.query.api import similar
    from hubdelta.query.serialize import dumps

    tree = embedded.tree
    query = next(o for o in tree.originals if o not in tree.reuploads.values())
    everyone = len(tree.originals) + len(tree.reuploads) + 1
    collapsed = similar(embedded.settings, query, k=everyone)
    ids = [n.repo_id for n in collapsed]
    assert len(ids) == everyone - 1 - len(tree.reuploads)  # every model but the query, each group once
    for new, original in tree.reuploads.items():
        assert original in ids and new not in ids  # the earliest created stands for its group
        row = next(n for n in collapsed if n.repo_id == original)
        assert row.copies == (new,)
        assert json.loads(dumps(collapsed))["neighbors"][ids.index(original)]["copies"] == [new]  # similar --json
    every = [n.repo_id for n in similar(embedded.settings, query, k=everyone, show_all=True)]
    assert sorted(every) == sorted((set(tree.originals) | set(tree.reuploads) | {ALPHA_VARIANT}) - {query})


def test_show_names_copies_both_ways(embedded: Embedded) -> None:
    from hubdelta.query.api import show
    from hubdelta.query.serialize import shown_doc

    new, original = next(iter(embedded.tree.reuploads.items()))
    copy = show(embedded.settings, new)
    assert (copy.copied_from, copy.copy_of, copy.copies) == (original, original, [original])
    first = show(embedded.settings, original)
    assert (first.copied_from, first.copy_of, first.copies) == (None, None, [new])
    assert shown_doc(copy)["copied_from"] == original and shown_doc(copy)["no_change_from_base"] is False
