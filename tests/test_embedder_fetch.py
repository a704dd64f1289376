"""Fetching untrusted repos with the real huggingface_hub client from devhub serving the bad-repo corpus."""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RemoteEntryNotFoundError

from hubdelta.embedder import fetch as fetch_mod
from hubdelta.embedder.fetch import FetchedModel, classify_hub_error, fetch, release
from hubdelta.embedder.hub_retry import Backoff
from hubdelta.embedder.local import base_info_from_folder, inspect_local
from hubdelta.embedder.safeload import load_state_dict_safely, safe_adapter_config
from hubdelta.embedder.safety import BaseInfo, Limits, Plan, Refusal, RepoKind, Rule
from hubdelta.kernel.errors import ModelRefused, ModelUnavailable
from hubdelta_dev.devhub import badrepos
from hubdelta_dev.devhub.badrepos import BASE_ID, BadRepo, write_bad_repos
from hubdelta_dev.devhub.faults import FaultConfig
from hubdelta_dev.devhub.server import DevhubServer
from tests.helpers import TOKEN

CORPUS = [r for r, _ in badrepos.CASES] + [r for r, _ in badrepos.VIRTUAL]


@dataclass(frozen=True)
class Corpus:
    root: Path
    hub: DevhubServer
    base: BaseInfo
    shas: dict[str, str]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    root = tmp_path_factory.mktemp("badhub") / "hub"
    repos = write_bad_repos(root)
    with DevhubServer(root, tokens=[TOKEN]) as hub:
        api = HfApi(endpoint=hub.url, token=False)
        shas = {r.repo_id: str(api.model_info(r.repo_id).sha) for r in repos}
        yield Corpus(root, hub, base_info_from_folder(root / BASE_ID, BASE_ID), shas)


def _fetch(corpus: Corpus, repo_id: str, cache: Path, limits: Limits | None = None) -> FetchedModel:
    sha = corpus.shas[repo_id]
    return fetch(
        repo_id, sha, endpoint=corpus.hub.url, token=None, cache_dir=cache, limits=limits or Limits(), base=corpus.base
    )


def _snapshot_files(cache: Path, repo_id: str) -> set[str]:
    """Every file under the repo's snapshot folders (what actually reached the disk)."""
    snaps = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return {p.relative_to(s).as_posix() for s in snaps.glob("*") for p in s.rglob("*") if p.is_file()}


@pytest.mark.parametrize("expected", CORPUS, ids=lambda r: r.repo_id.split("/")[1])
def test_fetch_reaches_the_expected_verdict(corpus: Corpus, expected: BadRepo, tmp_path: Path):
    cache = tmp_path / "cache"
    if expected.outcome == "plan":
        fetched = _fetch(corpus, expected.repo_id, cache)
        assert fetched.kind == expected.kind and fetched.files == tuple(sorted(expected.files))
        # Nothing outside the allow-list reached the disk: no *.bin, *.pt, *.py, README or nested files.
        assert _snapshot_files(cache, expected.repo_id) == set(expected.files)
        return
    error_type = ModelRefused if expected.outcome == "refused" else ModelUnavailable
    with pytest.raises(error_type) as info:
        _fetch(corpus, expected.repo_id, cache)
    err = info.value
    assert (err.rule if isinstance(err, ModelRefused) else err.code) == expected.rule
    assert expected.reason in err.reason and "\n" not in err.reason and err.one_line() == err.reason
    assert not err.retryable
    # No weight file is left on disk, whatever the refusal (some were fetched and failed verification).
    weights = {f for f in _snapshot_files(cache, expected.repo_id) if f.endswith((".safetensors", ".bin"))}
    assert not weights


def test_release_deletes_full_weights_only(corpus: Corpus, tmp_path: Path):
    cache = tmp_path / "cache"
    full = _fetch(corpus, f"{badrepos.ORG}/good-full", cache)
    blob = (full.path / "model.safetensors").resolve()
    size = blob.stat().st_size
    assert release(full) == size and full.params is not None
    assert not blob.exists() and not (full.path / "model.safetensors").exists()
    assert _snapshot_files(cache, full.repo_id) == {n for n in full.files if n.endswith(".json")}
    adapter = _fetch(corpus, f"{badrepos.ORG}/good-lora", cache)
    assert release(adapter) == 0 and (adapter.path / "adapter_model.safetensors").is_file()
    again = _fetch(corpus, full.repo_id, cache)  # a released repo downloads again when needed
    assert (again.path / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("limits", "rule", "reason", "retryable"),
    [
        (Limits(max_total_bytes=20_000), Rule.SIZE, "over max_total_bytes 20.0 kB", False),
        (Limits(disk_budget_bytes=20_000), Rule.DISK, "over the disk budget of 20.0 kB", True),
        (Limits(min_free_bytes=2**62), Rule.DISK, "free on the cache's disk", True),
    ],
)
def test_disk_budget_refuses_before_download(
    corpus: Corpus, tmp_path: Path, limits: Limits, rule: Rule, reason: str, retryable: bool
):
    cache = tmp_path / "cache"
    corpus.hub.reset_requests()
    with pytest.raises(ModelRefused) as info:
        _fetch(corpus, f"{badrepos.ORG}/good-full", cache, limits)
    assert info.value.rule == rule and reason in info.value.reason and info.value.retryable is retryable
    assert "model.safetensors" not in _snapshot_files(cache, f"{badrepos.ORG}/good-full")
    gets = [r for r in corpus.hub.request_records() if r.method == "GET" and r.path.endswith("/model.safetensors")]
    assert gets and {r.status for r in gets} == {206}  # only the header's ranged GET touched the weights


def test_a_file_gone_mid_fetch_is_unavailable(corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Between the decision and the download the repo changes (a file deleted): the pinned sha is gone."""
    repo = f"{badrepos.ORG}/good-sharded"
    shard = corpus.root / repo / badrepos.SHARDS[1]
    saved = shard.read_bytes()

    download = fetch_mod._download

    def vanish(*args: Any) -> Path:
        shard.unlink()
        corpus.hub.reload()
        return download(*args)

    monkeypatch.setattr(fetch_mod, "_download", vanish)
    try:
        with pytest.raises(ModelUnavailable) as info:
            _fetch(corpus, repo, tmp_path / "cache")
    finally:
        shard.write_bytes(saved)
        corpus.hub.reload()
    assert info.value.code == "revision_gone" and not info.value.retryable


def test_server_errors_are_retryable(tmp_path: Path):
    root = tmp_path / "hub"
    write_bad_repos(root)
    faults = FaultConfig(error_rate=1.0)
    with DevhubServer(root, faults=faults) as hub:
        base = BaseInfo(BASE_ID)
        with pytest.raises(ModelUnavailable) as info:
            fetch(
                f"{badrepos.ORG}/good-lora",
                "main",
                endpoint=hub.url,
                token=None,
                cache_dir=tmp_path / "c",
                limits=Limits(),
                base=base,
                timeout_s=5,
                backoff=Backoff(attempts=3, first_s=0.01),
            )
        listings = [r for r in hub.request_records() if r.kind == "model_info"]
    assert info.value.code == "http" and info.value.retryable and "HTTP 5" in info.value.reason
    assert len(listings) == 3  # sent again within the fetch, then left retryable for a later run


def test_unknown_repo_is_unavailable(corpus: Corpus, tmp_path: Path):
    with pytest.raises(ModelUnavailable) as info:
        fetch(
            "nobody/nothing",
            "main",
            endpoint=corpus.hub.url,
            token=None,
            cache_dir=tmp_path,
            limits=Limits(),
            base=corpus.base,
        )
    assert info.value.code == "not_found" and not info.value.retryable


def test_gated_repo_downloads_with_an_authorized_token(corpus: Corpus, tmp_path: Path):
    repo = f"{badrepos.ORG}/gated"
    fetched = fetch(
        repo,
        corpus.shas[repo],
        endpoint=corpus.hub.url,
        token=TOKEN,
        cache_dir=tmp_path,
        limits=Limits(),
        base=corpus.base,
    )
    assert fetched.kind is RepoKind.ADAPTER


# --- local folders -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("expected", [r for r, _ in badrepos.CASES], ids=lambda r: r.repo_id.split("/")[1])
def test_inspect_local_applies_the_same_rules(corpus: Corpus, expected: BadRepo):
    verdict = inspect_local(corpus.root / expected.repo_id, Limits(), corpus.base)
    if expected.outcome != "refused":  # gating is a Hub matter: the local copy of the gated repo is a good adapter
        assert isinstance(verdict, Plan), verdict
        return
    assert isinstance(verdict, Refusal) and verdict.rule == expected.rule, verdict
    # Remote checks quote the Hub client's parser for headers it cannot read; local ones give their own reason.
    if expected.repo_id.split("/")[1] not in ("not-json-header", "huge-header"):
        assert expected.reason in verdict.reason


def test_inspect_local_refuses_links_out_and_special_files(corpus: Corpus, tmp_path: Path):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (folder / name).write_bytes((corpus.root / badrepos.ORG / "good-lora" / name).read_bytes())
    assert isinstance(inspect_local(folder, Limits(), corpus.base), Plan)
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    (folder / "adapter_config.json").unlink()
    (folder / "adapter_config.json").symlink_to(secret)
    verdict = inspect_local(folder, Limits(), corpus.base)
    assert isinstance(verdict, Refusal) and "symlink to a file outside the model folder" in verdict.reason
    (folder / "adapter_config.json").unlink()
    os.mkfifo(folder / "adapter_config.json")  # reading a FIFO would block the worker forever
    verdict = inspect_local(folder, Limits(), corpus.base)
    assert isinstance(verdict, Refusal) and "not a regular file" in verdict.reason


def test_a_fetched_snapshot_passes_inspect_local(corpus: Corpus, tmp_path: Path):
    """Cache snapshots are links into ../../blobs: allowed, since that is the client's own layout."""
    fetched = _fetch(corpus, f"{badrepos.ORG}/good-full", tmp_path)
    assert (fetched.path / "config.json").is_symlink()
    verdict = inspect_local(fetched.path, Limits(), corpus.base)
    assert isinstance(verdict, Plan) and set(verdict.files) == set(fetched.files)
    assert "model.norm.weight" in load_state_dict_safely(fetched.path / "model.safetensors", Limits())


# --- loaders ------------------------------------------------------------------------------------------------


def test_load_state_dict_safely(corpus: Corpus, tmp_path: Path):
    tensors = load_state_dict_safely(corpus.root / badrepos.ORG / "good-full" / "model.safetensors", Limits())
    assert tensors["model.embed_tokens.weight"].shape == (badrepos.VOCAB, badrepos.HIDDEN)
    for name, reason in (("truncated", "past the end"), ("gap", "leaving a gap"), ("duplicate-keys", "duplicate")):
        with pytest.raises(ModelRefused, match=reason):
            load_state_dict_safely(corpus.root / badrepos.ORG / name / "model.safetensors", Limits())
    with pytest.raises(ModelRefused, match="exceed max_params"):
        load_state_dict_safely(corpus.root / badrepos.ORG / "good-full" / "model.safetensors", Limits(max_params=10))


def test_pickle_loads_only_with_the_opt_in_and_weights_only(tmp_path: Path):
    import torch

    good = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(2, 2)}, good)
    with pytest.raises(ModelRefused, match="allow_pickle = true"):
        load_state_dict_safely(good, Limits())
    assert load_state_dict_safely(good, Limits(allow_pickle=True))["w"].sum() == 4

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil" / "pytorch_model.bin"
    evil.parent.mkdir()
    torch.save({"w": Evil()}, evil, pickle_module=pickle)  # what a hostile repo would ship
    with pytest.raises(ModelRefused, match="weights_only"):
        load_state_dict_safely(evil, Limits(allow_pickle=True))
    assert not marker.exists()


def test_safe_adapter_config(corpus: Corpus):
    cfg = safe_adapter_config(corpus.root / badrepos.ORG / "good-lora", base=corpus.base)
    assert cfg["r"] == 4 and cfg["peft_type"] == "LORA"
    with pytest.raises(ModelRefused, match="r=4096 exceeds max_adapter_rank"):
        safe_adapter_config(corpus.root / badrepos.ORG / "rank-huge")
    with pytest.raises(ModelRefused, match="auto_mapping"):
        safe_adapter_config(corpus.root / badrepos.ORG / "peft-import" / "adapter_config.json")


def test_the_shape_check_matches_what_peft_would_do(corpus: Corpus):
    """The control adapter really loads on the tiny base; the wrong-base one really crashes peft (hence the check)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    def base_model() -> torch.nn.Module:
        return AutoModelForCausalLM.from_pretrained(
            corpus.root / BASE_ID, trust_remote_code=False, use_safetensors=True, local_files_only=True
        )

    org = corpus.root / badrepos.ORG
    model = PeftModel.from_pretrained(base_model(), org / "good-lora")
    stored = load_state_dict_safely(org / "good-lora" / "adapter_model.safetensors", Limits())
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    loaded = dict(model.named_parameters())[key.replace("lora_A.weight", "lora_A.default.weight")]
    assert torch.equal(loaded.detach(), stored[key])
    with pytest.raises(RuntimeError, match="size mismatch"):
        PeftModel.from_pretrained(base_model(), org / "wrong-base")


@pytest.mark.pool
def test_every_pool_repo_passes(pool: Path):
    """The real adapters, finetunes and merges of the pool (peft/transformers output) pass every rule."""
    from hubdelta_dev.pool.base import BASE_REPO_ID

    hub = pool / "hub"
    base = base_info_from_folder(hub / BASE_REPO_ID, BASE_REPO_ID)
    repos = sorted(p.parent for p in hub.glob("*/*/config.json")) + sorted(
        p.parent for p in hub.glob("*/*/adapter_config.json")
    )
    assert len(repos) > 20
    for folder in repos:
        verdict = inspect_local(folder, Limits(), base)
        assert isinstance(verdict, Plan), (folder.name, verdict)


def _http(cls: type, status: int) -> Exception:
    response = httpx2.Response(status, request=httpx2.Request("GET", "http://hub/x"))
    return cls(f"{status} Client Error\nmore lines", response=response)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_http(RemoteEntryNotFoundError, 404), ("missing_file", False)),
        (_http(HfHubHTTPError, 429), ("http", True)),
        (_http(HfHubHTTPError, 503), ("http", True)),
        (_http(HfHubHTTPError, 403), ("http", False)),
        (LocalEntryNotFoundError("no connection and nothing cached"), ("transport", True)),
        (httpx2.ConnectTimeout("timed out"), ("transport", True)),
        (OSError(28, "No space left on device"), ("disk", True)),
        (ValueError("a bug, not the Hub"), None),
    ],
)
def test_hub_errors_are_classified(error: Exception, expected: tuple[str, bool] | None):
    found = classify_hub_error(error)
    assert (found[:2] if found else None) == expected
    assert found is None or "\n" not in found[2]


def test_downloads_in_flight_count_against_the_disk_budget(corpus: Corpus, tmp_path: Path) -> None:
    """Two downloads that fit the budget alone but not together, at the same time (the pipelined run's threads):
    the one checked second is refused, although the first one's bytes are not in the cache yet."""
    full, sharded = f"{badrepos.ORG}/good-full", f"{badrepos.ORG}/good-sharded"
    sizes = {r: _fetch(corpus, r, tmp_path / "sizes").bytes for r in (full, sharded)}
    limits = Limits(disk_budget_bytes=sum(sizes.values()) - 1)
    cache, results = tmp_path / "cache", {}

    def one(repo_id: str) -> None:
        try:
            results[repo_id] = _fetch(corpus, repo_id, cache, limits)
        except ModelRefused as e:
            results[repo_id] = e

    corpus.hub.set_faults(FaultConfig(shape_bandwidth=10_000))  # ~2.7 s a download: the two overlap
    try:
        threads = [threading.Thread(target=one, args=(r,)) for r in (full, sharded)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        corpus.hub.set_faults(FaultConfig())
    refused = [e for e in results.values() if isinstance(e, ModelRefused)]
    assert len(results) == 2 and len(refused) == 1, results
    assert refused[0].rule == Rule.DISK and refused[0].retryable and "disk budget" in refused[0].reason
