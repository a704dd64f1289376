"""Bounded, retried downloads (issue 16): a base is checked like any model before a byte moves, and a flaky Hub
(5xx) is retried inside a run instead of failing models and bases. devhub over real HTTP, the real client."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx2
import pytest
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from hubdelta.crawler.api import fetch_model, run_crawl, track
from hubdelta.embedder import hub_retry
from hubdelta.embedder.api import embed_hub_model, retry_models, run_embed
from hubdelta.embedder.bases import base_download_problem, download_base, text_dims
from hubdelta.embedder.fetch import fetch, mark_base, release
from hubdelta.embedder.hub_retry import Backoff, retried, worth_retrying
from hubdelta.embedder.local import base_info_from_folder
from hubdelta.embedder.plan import base_failure
from hubdelta.embedder.safety import Limits, RepoKind, Rule
from hubdelta.index.door import open_reader, open_writer
from hubdelta.index.records import ModelStatus
from hubdelta.kernel.errors import HubdeltaError, ModelRefused
from hubdelta_dev.devhub import badrepos
from hubdelta_dev.devhub.badrepos import BASE_ID, write_bad_repos
from hubdelta_dev.devhub.faults import FaultConfig
from hubdelta_dev.devhub.server import DevhubServer
from tests.helpers import settings_for

HUGE_BASE = f"{badrepos.ORG}/huge-base"
HUGE_CHILD = f"{badrepos.ORG}/lora-of-huge-base"
GOOD_LORA = f"{badrepos.ORG}/good-lora"
GOOD_FULL = f"{badrepos.ORG}/good-full"
NO_SUCH_BASE = f"{badrepos.ORG}/no-such-base"
ORPHAN = f"{badrepos.ORG}/lora-of-no-such-base"


@dataclass(frozen=True)
class Hub:
    root: Path
    server: DevhubServer


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    """The bad-repo corpus, plus a base declaring a 25 GB model.safetensors and an adapter whose card names it."""
    root = tmp_path / "hub"
    write_bad_repos(root)
    huge = {"id": HUGE_BASE, "files": {"model.safetensors": 25_000_000_000}, "config": dict(badrepos.LLAMA_CONFIG)}
    with (root / "catalog.jsonl").open("a") as f:
        f.write(json.dumps(huge) + "\n")
    child = root / HUGE_CHILD
    child.mkdir(parents=True)
    (child / "README.md").write_text(badrepos.card(HUGE_BASE))
    (child / "adapter_config.json").write_text(badrepos.adapter_config(base_model_name_or_path=HUGE_BASE))
    (child / "adapter_model.safetensors").write_bytes(badrepos.safetensors_bytes(badrepos.lora_shapes(4)))
    orphan = root / ORPHAN  # an adapter whose card names a base the Hub does not have
    orphan.mkdir(parents=True)
    (orphan / "README.md").write_text(badrepos.card(NO_SUCH_BASE))
    (orphan / "adapter_config.json").write_text(badrepos.adapter_config(base_model_name_or_path=NO_SUCH_BASE))
    (orphan / "adapter_model.safetensors").write_bytes(badrepos.safetensors_bytes(badrepos.lora_shapes(4)))
    with DevhubServer(root) as server:
        yield Hub(root, server)


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_retry, "DEFAULT_BACKOFF", Backoff(attempts=5, first_s=0.01, max_s=0.05))


def test_a_declared_huge_base_is_refused_before_any_byte_is_downloaded(hub: Hub, tmp_path: Path) -> None:
    """similar --embed: the untrusted card names a base declaring 25 GB; nothing of it (or of the child) is fetched."""
    settings = settings_for(tmp_path / "home", hub.server.url)
    model = fetch_model(settings, HUGE_CHILD)
    hub.server.reset_requests()
    with pytest.raises(HubdeltaError) as info:
        embed_hub_model(settings, model)
    message = info.value.one_line()
    assert "model.safetensors: 25.0 GB, over max_file_bytes" in message and HUGE_BASE in message, message
    seen = hub.server.request_records()
    assert [r.kind for r in seen if HUGE_BASE in r.path] == ["model_info"]  # the listing with sizes, nothing else
    assert not [r for r in seen if r.kind == "resolve"]  # not one file of the base or of the child
    assert not (settings.cache_dir / "hub" / "models--hostile--huge-base" / "blobs").exists()
    with open_reader(settings) as index:
        child = index.models.get([HUGE_CHILD])[HUGE_CHILD]  # final: no later run would download it either
    assert child.status == ModelStatus.FAILED and child.reason.startswith(f"base {HUGE_BASE}: "), child


def test_a_base_over_the_disk_budget_is_refused_retryably(hub: Hub, tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", hub.server.url, "[embed]\ndisk_budget_gb = 0.00001\n")
    with pytest.raises(ModelRefused) as info:
        download_base(settings, BASE_ID)
    assert info.value.rule == Rule.SIZE and "over max_total_bytes 10.0 kB" in info.value.reason
    assert not [r for r in hub.server.request_records() if r.kind == "resolve"]


@pytest.mark.parametrize(
    ("files", "limits", "rule", "reason"),
    [
        ({"model.safetensors": 100, "config.json": 10}, Limits(), None, ""),
        ({"model.safetensors": -1}, Limits(), Rule.SIZE, "model.safetensors: the Hub gives no size for it"),
        ({"model.safetensors": 11 * 1024**3}, Limits(), Rule.SIZE, "11.8 GB, over max_file_bytes 10.7 GB"),
        ({"a.safetensors": 600, "b.safetensors": 600}, Limits(max_total_bytes=1000), Rule.SIZE, "1.2 kB, over"),
        ({"../x.json": 10}, Limits(), Rule.PATH, "path traversal"),
    ],
)
def test_base_download_problem(files: dict[str, int], limits: Limits, rule: Rule | None, reason: str) -> None:
    refusal = base_download_problem(files, sorted(files), limits)
    assert (refusal.rule if refusal else None) == rule
    assert refusal is None or reason in refusal.reason


def test_a_base_download_is_retried_under_5xx(hub: Hub, tmp_path: Path, fast_backoff: None) -> None:
    settings = settings_for(tmp_path / "home", hub.server.url)
    hub.server.set_faults(FaultConfig(error_rate=1.0, path_regex="tiny-base", max_faults=4))
    folder, sha = download_base(settings, BASE_ID)
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file() and len(sha) == 40
    seen = [r for r in hub.server.request_records() if "tiny-base" in r.path]
    assert [r.status >= 500 for r in seen if r.kind == "model_info"][:4] == [True] * 4  # the listing, 4 times
    assert [r.status for r in seen if r.kind == "model_info"][4] == 200


def test_a_model_fetch_is_retried_under_5xx_and_ends_embedded_in_one_attempt(
    hub: Hub, tmp_path: Path, fast_backoff: None
) -> None:
    settings = settings_for(tmp_path / "home", hub.server.url)
    model = fetch_model(settings, GOOD_LORA)
    hub.server.set_faults(FaultConfig(error_rate=0.5, path_regex="good-lora", seed=11, max_faults=4))
    record = embed_hub_model(settings, model)
    assert record.status == ModelStatus.EMBEDDED and record.attempts == 1  # not left for a later run
    errors = [r for r in hub.server.request_records() if r.fault == "error"]
    assert len(errors) == 4 and {r.kind for r in errors} >= {"model_info", "resolve"}, errors


def test_release_never_deletes_a_base(hub: Hub, tmp_path: Path) -> None:
    """A tracked base that is also a full finetune of another tracked base: its weights stay in the shared cache."""
    cache = tmp_path / "cache"
    base = base_info_from_folder(hub.root / BASE_ID, BASE_ID)
    url = hub.server.url
    full = fetch(GOOD_FULL, "main", endpoint=url, token=None, cache_dir=cache, limits=Limits(), base=base)
    mark_base(cache, GOOD_FULL)  # what download_base does for every base it downloads
    assert full.kind is RepoKind.FULL and release(full) == 0 and (full.path / "model.safetensors").is_file()
    itself = fetch(BASE_ID, "main", endpoint=url, token=None, cache_dir=cache, limits=Limits(), base=base)
    assert itself.base and release(itself) == 0 and (itself.path / "model.safetensors").is_file()


def test_download_base_marks_the_base(hub: Hub, tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", hub.server.url)
    folder, _ = download_base(settings, BASE_ID)
    assert (folder.parent.parent / ".hubdelta-base").is_file()


def test_a_cached_base_costs_one_listing_and_no_file_request(hub: Hub, tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", hub.server.url)
    folder, sha = download_base(settings, BASE_ID)
    before = len(hub.server.request_records())
    again, sha_again = download_base(settings, BASE_ID)
    seen = hub.server.request_records()[before:]
    assert (again, sha_again) == (folder, sha) and [r.kind for r in seen] == ["model_info"]
    (folder / "config.json").unlink()  # a file missing from the snapshot: downloaded again
    download_base(settings, BASE_ID)
    assert (folder / "config.json").is_file()


@pytest.mark.parametrize(
    ("config", "dims"),
    [
        ({"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30}, (576, 30)),
        ({"model_type": "gemma3", "text_config": {"hidden_size": 640, "num_hidden_layers": 18}}, (640, 18)),
        ({"model_type": "gemma3", "text_config": {"hidden_size": 640}}, None),  # the class default: transformers'
        ({"model_type": "llama", "hidden_size": 576}, None),
        ({"model_type": "llava", "hidden_size": 1234, "num_hidden_layers": 7, "vision_config": {}}, None),
        ({"model_type": "t5", "hidden_size": 512, "num_hidden_layers": 6, "decoder": {}}, None),
        ({"hidden_size": 576.0, "num_hidden_layers": 30}, None),
        ({"hidden_size": True, "num_hidden_layers": 30}, None),
    ],
)
def test_a_space_takes_its_dimensions_from_config_json_only_where_it_states_them(
    config: dict[str, object], dims: tuple[int, int] | None
) -> None:
    assert text_dims(config) == dims


def _http_error(status: int) -> HfHubHTTPError:
    response = httpx2.Response(status, request=httpx2.Request("GET", "http://hub/api/models/a/b"))
    return HfHubHTTPError(f"{status} error", response=response)


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (_http_error(503), True),
        (_http_error(429), True),
        (_http_error(501), False),
        (_http_error(403), False),
        (httpx2.ConnectError("refused"), True),
        (OSError(28, "No space left on device"), False),  # retryable later, not a second from now
        (ValueError("a bug"), False),
    ],
)
def test_worth_retrying_follows_the_one_rule(error: BaseException, retry: bool) -> None:
    assert worth_retrying(error) is retry


def test_retried_waits_doubling_and_gives_up_after_the_attempts() -> None:
    waits: list[float] = []
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _http_error(502)
        return "ok"

    assert retried(flaky, what="x", backoff=Backoff(4, 0.5, 8), sleep=waits.append) == "ok" and waits == [0.5, 1.0]
    waits.clear()
    with pytest.raises(HfHubHTTPError):
        retried(
            lambda: (_ for _ in ()).throw(_http_error(500)), what="x", backoff=Backoff(3, 1, 1.5), sleep=waits.append
        )
    assert waits == [1, 1.5]

    def missing() -> None:
        calls.append(1)
        raise RepositoryNotFoundError("no", response=httpx2.Response(404, request=httpx2.Request("GET", "http://h")))

    calls.clear()
    with pytest.raises(RepositoryNotFoundError):
        retried(missing, what="x", sleep=waits.append)
    assert len(calls) == 1  # a final answer is not asked again


def test_after_a_429_every_thread_waits_for_the_window_to_reset(hub: Hub) -> None:
    """devhub's API quota of 3 a 2-second window, 4 threads asking 3 times each: a thread that meets the spent
    window closes the gate for the reset the RateLimit header names, and no thread asks again before it."""
    from huggingface_hub import HfApi

    from hubdelta.kernel.hub_info import model_info

    hub.server.set_faults(rate_limit=3, rate_window_s=2)
    api = HfApi(endpoint=hub.server.url)
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            for _ in range(3):
                retried(lambda: model_info(api, GOOD_LORA), what="x", backoff=Backoff(6, 0.05, 0.05))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    records = [r for r in hub.server.request_records() if r.kind == "model_info"]
    limited = [r for r in records if r.status == 429]
    # 6 tries 0.05 s apart cannot outlast a 2 s window: without the gate's wait, threads would give up
    assert not errors and sum(r.status == 200 for r in records) == 12
    assert 1 <= len(limited) <= 4 * 5  # at most one a thread for each of the ~4 windows spent (not one a retry)
    for r in limited:  # nobody asked during the rest of a spent window
        assert r.retry_after is not None
        early = [x for x in records if r.t < x.t < r.t + r.retry_after and x.status == 429]
        assert len(early) <= 3, early  # only requests already in flight when the gate closed


def test_a_final_answer_about_a_base_fails_its_models_until_retried(
    hub: Hub, tmp_path: Path, fast_backoff: None
) -> None:
    """A tracked base over the bounds, or not on the Hub at all: its children end failed, naming the base and the
    rule, instead of staying queued forever; `retry --reason` brings them back once the base is fixed."""
    settings = settings_for(tmp_path / "home", hub.server.url)
    for base in (HUGE_BASE, NO_SUCH_BASE):
        track(settings, base, check=False)
    run_crawl(settings)
    with open_writer(settings, "test") as index:  # a run killed mid-chunk left it embedding
        row = index.models.get([ORPHAN])[ORPHAN]
        index.models.put([replace(row, status=ModelStatus.EMBEDDING, attempts=1)])
    summary = run_embed(settings)
    assert summary.exit_code == 1 and summary.bases_failed == 2, summary
    with open_reader(settings) as index:
        rows = index.models.get([HUGE_CHILD, ORPHAN])
    huge, lost = rows[HUGE_CHILD], rows[ORPHAN]
    assert huge.status == lost.status == ModelStatus.FAILED
    assert huge.reason.startswith(f"base {HUGE_BASE}: ")
    assert "model.safetensors: 25.0 GB, over max_file_bytes" in huge.reason
    assert lost.reason == f"base {NO_SUCH_BASE}: repo not found (deleted, renamed or private)"
    retry_models(settings, reason=NO_SUCH_BASE)
    with open_reader(settings) as index:
        rows = index.models.get([HUGE_CHILD, ORPHAN])
    assert (rows[ORPHAN].status, rows[HUGE_CHILD].status) == (ModelStatus.QUEUED, ModelStatus.FAILED)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ModelRefused("b/x", "too big", rule=Rule.SIZE, file="model.safetensors", retryable=False), "base b/x: "),
        (ModelRefused("b/x", "disk full soon", rule=Rule.DISK, retryable=True), None),
        (ModelRefused("b/x", "config.json: not JSON", rule=Rule.CONFIG, file="config.json"), None),  # may be mended
        (RuntimeError("the weights would not load"), None),
        (httpx2.ConnectError("refused"), None),
    ],
)
def test_which_base_failures_are_final(error: BaseException, expected: str | None) -> None:
    found = base_failure("b/x", error)
    assert (found.reason[: len(expected)] if found else None) == expected
