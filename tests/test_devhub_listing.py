"""``list_models`` against devhub with the real huggingface_hub client: filters, sorts, fields, pages."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import BadRequestError

from hubdelta_dev.devhub.server import DevhubServer
from tests.helpers import BASE, OTHER_BASE, TOKEN, TinyRoot


def ids(models) -> list[str]:
    return [m.id for m in models]


@pytest.mark.parametrize(
    ("relation", "attr"),
    [("adapter", "adapters"), ("finetune", "finetunes"), ("merge", "merges"), ("quantized", "quantized")],
)
def test_relation_filter_lists_exactly_the_direct_children(
    hub: DevhubServer, tiny: TinyRoot, relation: str, attr: str
) -> None:
    listed = ids(HfApi(endpoint=hub.url).list_models(filter=f"base_model:{relation}:{BASE}"))
    assert len(listed) == len(set(listed))
    assert set(listed) == getattr(tiny, attr)


def test_private_children_are_listed_only_for_an_authorized_token(hub: DevhubServer, tiny: TinyRoot) -> None:
    flt = f"base_model:adapter:{BASE}"
    assert tiny.private not in ids(HfApi(endpoint=hub.url).list_models(filter=flt))
    assert tiny.private not in ids(HfApi(endpoint=hub.url, token="not-a-known-token").list_models(filter=flt))
    authorized = set(ids(HfApi(endpoint=hub.url, token=TOKEN).list_models(filter=flt)))
    assert authorized == tiny.adapters | {tiny.private}


def test_filters_are_and_combined_and_match_library_and_license(hub: DevhubServer) -> None:
    api = HfApi(endpoint=hub.url)
    assert set(ids(api.list_models(filter=[f"base_model:{BASE}", f"base_model:{OTHER_BASE}"]))) == {"carol/merged"}
    assert set(ids(api.list_models(filter=[f"base_model:adapter:{BASE}", "medical"]))) == {
        "alice/base-lora"
    }  # only one adapter's card is tagged medical
    assert set(ids(api.list_models(filter=["peft", "license:mit"]))) == {"virt/meta-only"}
    assert ids(api.list_models(filter=["peft", "no-such-tag"])) == []
    assert set(ids(api.list_models(filter="gguf"))) == {"dave/base-gguf"}
    assert set(ids(api.list_models(pipeline_tag="text-generation"))) == {BASE, OTHER_BASE}


def test_search_and_author(hub: DevhubServer, tiny: TinyRoot) -> None:
    api = HfApi(endpoint=hub.url)
    assert set(ids(api.list_models(search="LORA"))) == {
        "alice/base-lora",
        "alice/base-lora-2",
        "frank/other-lora",
    }
    assert set(ids(api.list_models(author="acme"))) == {BASE, OTHER_BASE, tiny.gated}
    assert set(ids(api.list_models(author="acme", search="gated"))) == {tiny.gated}
    assert set(ids(api.list_models(gated=True))) == {tiny.gated}


@pytest.mark.parametrize(
    ("sort", "field", "attr"),
    [
        ("created_at", "createdAt", "created_at"),
        ("last_modified", "lastModified", "last_modified"),
        ("downloads", "downloads", "downloads"),
        ("likes", "likes", "likes"),
        ("trending_score", "trendingScore", "trending_score"),
    ],
)
def test_every_sort_is_descending(hub: DevhubServer, tiny: TinyRoot, sort: str, field: str, attr: str) -> None:
    expand = [field, "createdAt"] if field != "createdAt" else [field]
    models = list(HfApi(endpoint=hub.url).list_models(sort=sort, expand=expand))  # type: ignore[arg-type]
    assert set(ids(models)) == tiny.public
    values = [getattr(m, attr) for m in models]
    assert values == sorted(values, reverse=True)
    assert len(set(values)) == len(values)  # the tiny catalog makes every value distinct: the order is exact


def test_default_fields_full_carddata_and_expand(hub: DevhubServer, tiny: TinyRoot) -> None:
    api = HfApi(endpoint=hub.url)
    plain = {m.id: m for m in api.list_models()}
    lora = plain["alice/base-lora"]
    assert lora.tags is not None and f"base_model:adapter:{BASE}" in lora.tags and "peft" in lora.tags
    assert lora.library_name == "peft" and lora.created_at is not None and lora.downloads is not None
    assert lora.sha is None and lora.siblings is None and lora.card_data is None
    full = {m.id: m for m in api.list_models(full=True)}["alice/base-lora"]
    assert full.sha is not None and len(full.sha) == 40 and full.author == "alice" and full.gated is False
    assert {s.rfilename for s in full.siblings or []} == {
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "sub/dir/notes.txt",
    }  # hidden files and folders are not repo files
    with_card = {m.id: m for m in api.list_models(cardData=True)}["alice/base-lora"]
    assert with_card.card_data is not None and with_card.card_data.base_model == BASE
    expanded = {m.id: m for m in api.list_models(expand=["sha", "gated"])}
    assert expanded[tiny.gated].gated == "manual" and expanded[tiny.gated].sha is not None
    assert expanded[tiny.gated].downloads is None and expanded[tiny.gated].tags is None  # only what was asked


@pytest.mark.parametrize("prop", ["baseModels", "childrenModelCount", "usedStorage"])
def test_list_rejects_info_only_expand_like_the_hub(hub: DevhubServer, prop: str) -> None:
    with pytest.raises(BadRequestError):
        list(HfApi(endpoint=hub.url).list_models(expand=[prop]))  # type: ignore[list-item]


def test_small_pages_follow_link_headers_and_respect_limit(tiny: TinyRoot, serve: Callable[..., DevhubServer]) -> None:
    server = serve(tiny.path, page_size=3)
    api = HfApi(endpoint=server.url)
    listed = ids(api.list_models(sort="created_at"))
    assert sorted(listed) == sorted(tiny.public) and len(listed) == len(set(listed))
    kinds = server.requests()["by_kind"]
    assert kinds["list"] == -(-len(tiny.public) // 3)  # ceil: one request per page, no extra empty page
    server.reset_requests()
    assert len(ids(api.list_models(limit=2))) == 2
    assert server.requests()["by_kind"]["list"] == 1  # the client islices: no second page fetched
