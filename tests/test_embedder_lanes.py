"""Lanes (hubdelta.embedder.lanes): threads with their own share of torch's intra-op threads, and a resident base
that several of them run at once with exactly the results one thread gets."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from hubdelta.embedder.activations import ResidentBase
from hubdelta.embedder.bases import space_for
from hubdelta.embedder.lanes import Lanes, auto_lanes, lanes_for
from hubdelta.embedder.options import options
from hubdelta.kernel.errors import ConfigError, EmbedError
from hubdelta_dev.devhub.badrepos import BASE_ID, adapter_config, lora_shapes, safetensors_bytes
from tests.helpers import settings_for
from tests.test_embedder_packed import WIDE, wide_base

TARGETS = {0: ("q_proj", "v_proj"), 1: ("q_proj", "k_proj", "o_proj"), 2: ("k_proj",)}


def adapters(root: Path, n: int) -> dict[str, Path]:
    """``n`` distinct LoRAs of the wide base, on different modules of both its layers."""
    found = {}
    for i in range(n):
        targets = TARGETS[i % len(TARGETS)]
        folder = root / f"lora{i}"
        folder.mkdir()
        (folder / "adapter_config.json").write_text(adapter_config(targets=targets))
        weights = safetensors_bytes(lora_shapes(4, targets, hidden=WIDE), seed=10 + i)
        (folder / "adapter_model.safetensors").write_bytes(weights)
        found[f"a{i}"] = folder
    return found


@pytest.fixture(autouse=True)
def _threads_as_found() -> object:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_each_lane_has_its_own_thread_count_and_the_caller_keeps_its_own() -> None:
    torch.set_num_threads(2)
    with Lanes(2, 1) as lanes:
        seen = [lanes.submit(lambda: (threading.get_ident(), torch.get_num_threads())) for _ in range(6)]
        counts = {count for _, count in (f.result() for f in seen)}
        assert counts == {1} and threading.get_ident() not in {ident for ident, _ in (f.result() for f in seen)}
        assert torch.get_num_threads() == 2
        later: list[int] = []  # a thread started after the lanes gets the process's default, not a lane's
        thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert later == [2]


def test_one_lane_runs_in_the_callers_thread_and_errors_come_back_in_their_future() -> None:
    one = Lanes(1, 1)
    assert one.submit(threading.get_ident).result() == threading.get_ident()
    with Lanes(2, 1) as two:
        for lanes in (one, two):
            failed = lanes.submit(lambda: 1 / 0)
            assert isinstance(failed.exception(), ZeroDivisionError)
    with pytest.raises(ValueError, match="n >= 1"):
        Lanes(0, 1)


def test_lanes_that_cannot_start_say_so_and_leave_no_thread_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.set_num_threads

    def refused(n: int) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("no threads for you")
        real(n)

    monkeypatch.setattr(torch, "set_num_threads", refused)
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="did not start"):
        Lanes(2, 1)
    time.sleep(0.2)
    assert threading.active_count() == before


def test_two_lanes_on_a_cpu_with_cores_to_share_one_elsewhere() -> None:
    cpu = torch.device("cpu")
    assert auto_lanes(cpu, 2) == 2 and auto_lanes(cpu, 16) == 2
    assert auto_lanes(cpu, 1) == 1 and auto_lanes(torch.device("meta"), 8) == 1
    torch.set_num_threads(2)
    with lanes_for(cpu, 0) as auto, lanes_for(cpu, 1) as single, lanes_for(cpu, 3) as three:
        assert (auto.n, auto.threads) == (2, 1) and (single.n, three.n, three.threads) == (1, 3, 1)


@pytest.mark.parametrize(("dtype", "layer"), [("float32", None), ("bfloat16", None), ("float32", "1")])
def test_lanes_running_a_resident_base_at_once_get_exactly_what_one_thread_gets(
    tmp_path: Path, dtype: str, layer: str | None
) -> None:
    base_dir, _ = wide_base(tmp_path)
    found = adapters(tmp_path, 8)
    chunks = [dict(list(found.items())[i : i + 2]) for i in range(0, 8, 2)]
    space = space_for(base_dir, BASE_ID, "0" * 40, dtype=dtype, layer=layer)
    torch.set_num_threads(2)
    with ResidentBase(base_dir, space) as rb:
        alone = {k: v for chunk in chunks for k, v in rb.adapter_activations(chunk).items()}
        with Lanes(2, 1) as lanes:
            futures = [lanes.submit(rb.adapter_activations, chunk) for chunk in chunks * 3]  # many at once
            full = lanes.submit(rb.model_activations, base_dir)  # a full model beside them
            together = [f.result() for f in futures]
        assert torch.equal(full.result(), rb.base_activations())
        assert all(torch.equal(acts, alone[k]) for got in together for k, acts in got.items())
        assert len({k for got in together for k in got}) == 8
        # Every adapter changes something, and no hook is left acting outside a call.
        assert all(not torch.equal(acts, rb.base_activations()) for acts in alone.values())
        assert torch.equal(rb.model_activations(base_dir), rb.base_activations())


def test_a_layer_cut_base_still_checks_adapters_against_all_its_layers(tmp_path: Path) -> None:
    base_dir, _ = wide_base(tmp_path)
    folder = adapters(tmp_path, 1)["a0"]
    first_layer = {k: v for k, v in lora_shapes(4, hidden=WIDE).items() if ".layers.0." in k}
    (folder / "adapter_model.safetensors").write_bytes(safetensors_bytes(first_layer))
    space = space_for(base_dir, BASE_ID, "0" * 40, layer="1")
    with ResidentBase(base_dir, space) as rb, pytest.raises(EmbedError, match=r"targeted module 'model\.layers\.1\."):
        rb.adapter_activations({"a0": folder})


def test_the_lanes_setting_reaches_the_options_and_refuses_a_negative_count(tmp_path: Path) -> None:
    default = settings_for(tmp_path / "a", "http://127.0.0.1:9")
    assert options(default, limit=None, device=None, batch=None).lanes == 0
    one = settings_for(tmp_path / "b", "http://127.0.0.1:9", "[embed]\nlanes = 1\n")
    assert options(one, limit=None, device=None, batch=None).lanes == 1
    with pytest.raises(ConfigError, match=r"embed\.lanes"):
        settings_for(tmp_path / "c", "http://127.0.0.1:9", "[embed]\nlanes = -1\n")
