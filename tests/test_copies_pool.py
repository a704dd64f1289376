"""Copies found before download, on real SmolLM2 adapters of the pool served by devhub (pool tier).

The tree (:mod:`hubdelta_dev.pool.copies`): the pool's adapters with byte-identical re-uploads of 20% of the adapter
repos, an alpha variant, a near-copy and an untrained adapter. track -> crawl -> embed, then devhub's request log
proves what was fetched.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hubdelta.kernel.settings import Settings, load_settings
from hubdelta_dev.devhub.server import DevhubServer
from hubdelta_dev.pool.base import BASE_REPO_ID
from hubdelta_dev.pool.build import PoolManifest
from hubdelta_dev.pool.copies import ALPHA_VARIANT, NEAR_COPY, ZERO_B, CopyTree, build_copy_tree
from tests.helpers import Processes, kill_after_progress, settings_for

pytestmark = pytest.mark.pool


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
    assert len(tree.reuploads) * 5 == len(tree.originals) + 3 + len(tree.reuploads)  # 20% of the adapter repos
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
    everyone = len(tree.originals) + len(tree.reuploads) + 2  # the alpha variant, the near-copy (ZERO_B is hidden)
    collapsed = similar(embedded.settings, query, k=everyone)
    ids = [n.repo_id for n in collapsed]
    assert len(ids) == everyone - 1 - len(tree.reuploads) - 1  # every model but the query, each group once
    assert NEAR_COPY not in ids and NEAR_COPY in next(n for n in collapsed if n.repo_id == tree.near_of).copies
    for new, original in tree.reuploads.items():
        assert original in ids and new not in ids  # the earliest created stands for its group
        row = next(n for n in collapsed if n.repo_id == original)
        assert row.copies == (new,)
        assert json.loads(dumps(collapsed))["neighbors"][ids.index(original)]["copies"] == [new]  # similar --json
    every = [n.repo_id for n in similar(embedded.settings, query, k=everyone, show_all=True)]
    assert sorted(every) == sorted((set(tree.originals) | set(tree.reuploads) | {ALPHA_VARIANT, NEAR_COPY}) - {query})


def test_show_names_copies_both_ways(embedded: Embedded) -> None:
    from hubdelta.query.api import show
    from hubdelta.query.serialize import shown_doc

    new, original = next(iter(embedded.tree.reuploads.items()))
    copy = show(embedded.settings, new)
    assert (copy.copied_from, copy.copy_of, copy.copies) == (original, original, [original])
    first = show(embedded.settings, original)
    assert (first.copied_from, first.copy_of, first.copies) == (None, None, [new])
    assert shown_doc(copy)["copied_from"] == original and shown_doc(copy)["no_change_from_base"] is False


def test_the_report_lists_copy_groups_and_counts_bytes_not_downloaded(embedded: Embedded, tmp_path: Path) -> None:
    from hubdelta.report.api import run_report

    report = run_report(embedded.settings, out=tmp_path)
    (space,) = report.spaces
    tree = embedded.tree
    weight = sum(os.path.getsize(tree.root / o / "adapter_model.safetensors") for o in tree.reuploads.values())
    assert (space.copies_reused, space.bytes_not_downloaded) == (len(tree.reuploads), weight)
    groups = {g[0]: g[1:] for g in space.copy_groups}
    for new, original in tree.reuploads.items():
        assert groups[original] == (new,)
    text = "\n".join(p.read_text() for p in report.files if p.suffix == ".md")
    assert f"{weight:,} bytes not downloaded" in text
    assert report.to_dict()["spaces"][0]["bytes_not_downloaded"] == weight


def test_a_near_copy_is_grouped_and_an_untrained_adapter_has_no_change_from_base(embedded: Embedded) -> None:
    from hubdelta.index.door import open_reader
    from hubdelta.query.api import show
    from hubdelta.query.serialize import shown_doc

    with open_reader(embedded.settings) as index:
        (space,) = index.vectors.spaces()
        group = index.copies.group_of(space, NEAR_COPY)
        record = index.models.get([ZERO_B])[ZERO_B]
        rows = index.copies.of_space(space)
    assert rows[NEAR_COPY].fingerprint != rows[embedded.tree.near_of].fingerprint  # other bytes: downloaded
    assert group is None  # with no candidates given, only equal fingerprints are looked at
    near = show(embedded.settings, NEAR_COPY)
    assert near.copy_of == embedded.tree.near_of and near.copied_from is None
    assert record.status == "unchanged" and "no change from base" in record.reason
    untrained = show(embedded.settings, ZERO_B)
    assert untrained.hidden and untrained.neighbors == [] and untrained.copies == []
    assert shown_doc(untrained)["no_change_from_base"] is True


def test_kill_9_on_the_copy_path_then_rerun_loses_and_doubles_nothing(
    copy_tree: CopyTree, embedded: Embedded, tmp_path: Path, processes: Processes
) -> None:
    """Killed runs of small commit groups, then one to the end: every model settled once, every re-upload with its
    original's vector (a kill may leave a re-upload claimed before its original: then it is the one downloaded)."""
    from hubdelta.crawler.api import run_crawl, track
    from hubdelta.embedder.api import run_embed
    from hubdelta.index.door import open_reader
    from hubdelta.index.records import ModelStatus

    with DevhubServer(copy_tree.root) as hub:
        settings = settings_for(tmp_path / "home", hub.url, "[embed]\ncommit_every = 4\nprefetch = 1\n")
        track(settings, BASE_REPO_ID)
        run_crawl(settings)
        env = {**os.environ, "HUBDELTA_HOME": str(settings.home), "HF_ENDPOINT": hub.url}
        rng, killed = random.Random(7), 0
        for _ in range(3):
            proc = processes.popen([sys.executable, "-m", "hubdelta", "embed", "--batch", "3"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            killed += kill_after_progress(proc, settings, rng)
        last = run_embed(settings)
    assert killed >= 2 and last.failed == 0
    with open_reader(settings) as index:
        (space,) = index.vectors.spaces()
        vectors = index.vectors.get(space)
        rows = index.maintenance.stats()[f"emb_{space}"].rows
        counts = index.models.count_by_status()
        copies = index.copies.of_space(space)
    everyone = len(copy_tree.originals) + len(copy_tree.reuploads) + 2  # and the alpha variant, the near-copy
    assert counts[ModelStatus.EMBEDDED] == len(vectors) == rows == everyone
    assert counts[ModelStatus.UNCHANGED] == 1
    assert {k for k, n in counts.items() if n} == {ModelStatus.EMBEDDED, ModelStatus.UNCHANGED}
    for new, original in copy_tree.reuploads.items():
        assert np.array_equal(vectors[new].vector, vectors[original].vector)
        assert copies[new].fingerprint == copies[original].fingerprint
        assert {copies[new].copy_of, copies[original].copy_of} in ({None, original}, {None, new})
    with open_reader(embedded.settings) as index:
        reference = index.vectors.get(space)
    assert all(np.allclose(vectors[k].vector, reference[k].vector, atol=1e-5) for k in reference)
