"""Adapters naming a mirror of the tracked base (``unsloth/<base>``, ``<base>-bnb-4bit``): accepted on their shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubdelta.crawler.api import fetch_model
from hubdelta.embedder.api import embed_hub_model
from hubdelta.embedder.fetch import fetch
from hubdelta.embedder.local import base_info_from_folder
from hubdelta.embedder.run import mirror_note
from hubdelta.embedder.safety import BaseInfo, Limits, Plan, Refusal, Rule, check_repo
from hubdelta.embedder.safety_adapter import names_a_mirror
from hubdelta.index.door import open_reader
from hubdelta.index.records import ModelStatus
from hubdelta_dev.devhub import badrepos
from hubdelta_dev.devhub.badrepos import BASE_ID, lora_shapes, write_bad_repos
from hubdelta_dev.devhub.server import DevhubServer
from tests.helpers import SAFETY_BASE, adapter_files, settings_for


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ("unsloth/tiny-base", None),  # another owner's copy of the same weights
        ("unsloth/Tiny-Base-bnb-4bit", None),  # a bitsandbytes 4-bit copy: LoRA shapes are the float base's
        ("someone/tiny-base-unsloth-bnb-4bit", None),
        ("someone/tiny-base-instruct", (Rule.BASE, "'someone/tiny-base-instruct' is not the tracked base")),
        ("org/other", (Rule.BASE, "'org/other' is not the tracked base")),
    ],
)
def test_a_mirror_name_is_accepted_when_the_shapes_fit(declared: str, expected: tuple[Rule, str] | None) -> None:
    files, configs, headers = adapter_files({"base_model_name_or_path": declared})
    verdict = check_repo(files, configs, headers, SAFETY_BASE, Limits())
    if expected is None:
        assert isinstance(verdict, Plan), verdict
    else:
        assert isinstance(verdict, Refusal) and verdict.rule is expected[0] and expected[1] in verdict.reason


def test_a_mirror_name_with_other_shapes_is_still_refused() -> None:
    """The name is only a claim: a "mirror" whose tensors do not fit the tracked base is another base."""
    shapes = lora_shapes(4, hidden=32)
    files, configs, headers = adapter_files({"base_model_name_or_path": "unsloth/tiny-base"}, shapes)
    verdict = check_repo(files, configs, headers, SAFETY_BASE, Limits())
    assert isinstance(verdict, Refusal) and verdict.rule is Rule.BASE and "where the base needs" in verdict.reason


def test_nothing_known_of_the_base_means_no_mirror() -> None:
    assert names_a_mirror("unsloth/tiny-base", SAFETY_BASE)
    assert not names_a_mirror("unsloth/tiny-base", BaseInfo(BASE_ID))


MIRROR_LORA = f"{badrepos.ORG}/mirror-lora"


def _root_with_a_mirror_adapter(tmp_path: Path, declared: str) -> Path:
    """The bad-repo corpus plus a good adapter of its tiny base whose config names ``declared``."""
    root = tmp_path / "hub"
    write_bad_repos(root)
    repo = root / MIRROR_LORA
    repo.mkdir(parents=True)
    (repo / "README.md").write_text(badrepos.card())
    (repo / "adapter_config.json").write_text(badrepos.adapter_config(base_model_name_or_path=declared))
    (repo / "adapter_model.safetensors").write_bytes(badrepos.safetensors_bytes(lora_shapes(4), seed=3))
    return root


def test_fetch_accepts_a_mirror_adapter_and_records_the_declared_name(tmp_path: Path) -> None:
    root = _root_with_a_mirror_adapter(tmp_path, "unsloth/tiny-base-bnb-4bit")
    base = base_info_from_folder(root / BASE_ID, BASE_ID)
    with DevhubServer(root) as hub:
        fetched = fetch(MIRROR_LORA, "main", endpoint=hub.url, token=None, cache_dir=tmp_path / "c", limits=Limits(),
                        base=base)  # fmt: skip
    assert fetched.declared_base == "unsloth/tiny-base-bnb-4bit"
    assert (fetched.path / "adapter_model.safetensors").is_file()


def test_an_embedded_mirror_adapter_keeps_the_declared_name_on_its_record(tmp_path: Path) -> None:
    with DevhubServer(_root_with_a_mirror_adapter(tmp_path, "unsloth/tiny-base")) as hub:
        settings = settings_for(tmp_path / "home", hub.url)
        embed_hub_model(settings, fetch_model(settings, MIRROR_LORA))
    with open_reader(settings) as index:
        record = index.models.get([MIRROR_LORA])[MIRROR_LORA]
    assert record.status == ModelStatus.EMBEDDED
    assert record.reason == mirror_note("unsloth/tiny-base") and "unsloth/tiny-base" in record.reason
