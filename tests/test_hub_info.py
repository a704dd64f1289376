"""model_info that survives an untrusted card: devhub serves the cards the Hub serves, the real client reads them."""

from __future__ import annotations

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import RepositoryNotFoundError

from hubdelta.kernel.hub_info import model_info
from hubdelta_dev.devhub import badrepos
from hubdelta_dev.devhub.badrepos import write_bad_repos
from hubdelta_dev.devhub.server import DevhubServer

CARDS = {
    "tags-int": "tags: 2024",
    "ignore-errors": "ignore_metadata_errors: false",
    "eval-results-int": "eval_results: 5",
}
GOOD_CARD = "license: mit"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> DevhubServer:
    root = tmp_path_factory.mktemp("hub")
    write_bad_repos(root)
    for name, line in {**CARDS, "good": GOOD_CARD}.items():
        repo = root / badrepos.ORG / f"card-{name}"
        repo.mkdir(parents=True)
        (repo / "README.md").write_text(f"---\nbase_model: {badrepos.BASE_ID}\n{line}\n---\n\n# card\n")
        (repo / "adapter_config.json").write_text(badrepos.adapter_config())
        (repo / "adapter_model.safetensors").write_bytes(badrepos.safetensors_bytes(badrepos.lora_shapes(4)))
    with DevhubServer(root) as s:
        yield s


@pytest.mark.parametrize("name", sorted(CARDS))
def test_a_card_the_client_cannot_read_still_gives_the_files(server: DevhubServer, name: str) -> None:
    api = HfApi(endpoint=server.url, token=False)
    repo = f"{badrepos.ORG}/card-{name}"
    info = model_info(api, repo, files_metadata=True)
    sizes = {s.rfilename: s.size for s in info.siblings or []}
    assert info.id == repo and info.sha and sizes["adapter_model.safetensors"] > 0, sizes


def test_a_readable_card_keeps_its_card_data_and_errors_stay_the_clients(server: DevhubServer) -> None:
    api = HfApi(endpoint=server.url, token=False)
    repo = f"{badrepos.ORG}/card-good"
    info = model_info(api, repo, files_metadata=True)
    assert info == api.model_info(repo, files_metadata=True) and info.card_data is not None
    assert info.card_data.license == "mit"
    with pytest.raises(RepositoryNotFoundError):
        model_info(api, f"{badrepos.ORG}/no-such-repo")
