"""Linears prepacked for oneDNN (hubdelta.embedder.packed): the same results as ``F.linear``, the weights kept
readable, and a resident base that runs its base, its adapters and its full models through the same kernels."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from structlog.testing import capture_logs
from torch import nn

from hubdelta.embedder.activations import ResidentBase
from hubdelta.embedder.bases import space_for
from hubdelta.embedder.difference import decoder_linears, recording, to_difference
from hubdelta.embedder.options import options
from hubdelta.embedder.packed import dense, kernel_dtype, own_memory, pack_linears, packs
from hubdelta.embedder.runtime import _glibc, hand_back_freed_memory
from hubdelta_dev.devhub.badrepos import (
    BASE_ID,
    HEADS,
    TOKENIZER,
    adapter_config,
    base_shapes,
    full_config,
    lora_shapes,
    safetensors_bytes,
)
from tests.helpers import settings_for

# Wide enough that MKL's and oneDNN's sums differ in their last bits (the devhub tiny base's 16 do not).
WIDE, INTER = 256, 512


def wide_base(root: Path) -> tuple[Path, dict[str, Path]]:
    """A two-layer llama of hidden size 256 with the tiny base's tokenizer, and a LoRA of it."""
    config = full_config(hidden_size=WIDE, intermediate_size=INTER, head_dim=WIDE // HEADS)
    weights = safetensors_bytes(base_shapes(hidden=WIDE, inter=INTER))
    lora = {"adapter_config.json": adapter_config(), "adapter_model.safetensors": safetensors_bytes(
        lora_shapes(4, hidden=WIDE), seed=1)}  # fmt: skip
    files = {BASE_ID: {"config.json": config, **TOKENIZER, "model.safetensors": weights}, "a/lora": lora}
    for repo, content in files.items():
        for name, data in content.items():
            (root / repo).mkdir(parents=True, exist_ok=True)
            (root / repo / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return root / BASE_ID, {"a": root / "a/lora"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_packed_linear_computes_what_f_linear_does_for_any_number_of_rows(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(64, 96).to(dtype)
    weight, x = layer.weight.detach().clone(), torch.randn(3, 5, 64).to(dtype)
    with torch.inference_mode():
        want = layer(x)
    cpu = torch.device("cpu")
    if not packs(cpu, dtype):  # a CPU whose oneDNN lacks this dtype's kernels: left exactly as it was
        assert pack_linears({"l": layer}) == 0 and not layer.weight.is_mkldnn
        return
    assert pack_linears({"l": layer}) == 1 and layer.weight.is_mkldnn
    assert pack_linears({"l": layer}) == 0  # packed once
    assert torch.equal(dense(layer.weight), weight)  # the layout changes, not one value
    with torch.inference_mode():
        got = layer(x)
        repeated = layer(x.repeat(7, 1, 1)).view(7, *got.shape)  # the same rows in a batch 7 times taller
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got, want, atol=tolerance, rtol=tolerance)
    assert all(torch.equal(r, got) for r in repeated)  # a row's result does not depend on its batch


def test_nothing_is_packed_off_the_cpu_or_in_other_dtypes() -> None:
    assert not packs(torch.device("meta"), torch.float32)
    assert not packs(torch.device("cpu"), torch.float16)
    layer, elsewhere = nn.Linear(8, 8).half(), nn.Linear(8, 8, device="meta")
    assert pack_linears({"l": layer, "m": elsewhere}) == 0
    assert not layer.weight.is_mkldnn and not elsewhere.weight.is_mkldnn


def test_a_resident_base_packs_by_default_and_keeps_f_linear_on_request(tmp_path: Path) -> None:
    base_dir, adapter = wide_base(tmp_path)
    space = space_for(base_dir, BASE_ID, "0" * 40)
    with ResidentBase(base_dir, space) as fast, ResidentBase(base_dir, space, prepack=False) as plain:
        assert all(m.weight.is_mkldnn for m in decoder_linears(fast.model).values())
        assert not any(m.weight.is_mkldnn for m in decoder_linears(plain.model).values())
        torch.testing.assert_close(fast.base_activations(), plain.base_activations(), atol=1e-5, rtol=1e-5)
        got, want = fast.adapter_activations(adapter)["a"], plain.adapter_activations(adapter)["a"]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        # The base's own checkpoint loaded as a full model runs the base's kernels: no change, to the last bit.
        assert torch.equal(fast.model_activations(base_dir), fast.base_activations())
        assert torch.equal(plain.model_activations(base_dir), plain.base_activations())


def test_a_bfloat16_space_runs_its_differences_on_packed_bf16_weights(tmp_path: Path) -> None:
    base_dir, a = wide_base(tmp_path)
    fp32, bf16 = (space_for(base_dir, BASE_ID, "0" * 40, dtype=d) for d in ("float32", "bfloat16"))
    kernel = kernel_dtype(torch.device("cpu"), torch.bfloat16)  # fp32 on a CPU without bf16 kernels
    with ResidentBase(base_dir, fp32) as exact, ResidentBase(base_dir, bf16) as fast:
        weights = [m.weight for m in decoder_linears(fast.model).values()]
        assert all(w.dtype == kernel and torch.equal(dense(w), dense(w).bfloat16().to(kernel)) for w in weights)
        assert all(w.is_mkldnn for w in weights) == packs(torch.device("cpu"), kernel)
        assert torch.equal(fast.base_activations(), exact.base_activations())  # both bases ran packed, in fp32
        delta = fast.adapter_activations(a)["a"] - fast.base_activations()
        want = exact.adapter_activations(a)["a"] - exact.base_activations()
        assert torch.nn.functional.cosine_similarity(delta.flatten(), want.flatten(), dim=0) > 0.999


def test_bf16_differences_on_fp32_kernels_round_as_bf16_kernels_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a CPU has no bf16 kernels, fp32 ones run the bf16-rounded values, rounded again as bf16 kernels round
    their results: the same outputs but where a different summation order tips a rounding (both run on any CPU)."""
    torch.manual_seed(0)
    layer = nn.Linear(256, 512, bias=False)
    x_b = torch.randn(5, 7, 256)
    x = x_b.repeat(2, 1, 1) + 0.01 * torch.randn(10, 7, 256)  # two models' inputs, near the base's
    out = {}
    for kernels in (torch.bfloat16, torch.float32):
        linear = copy.deepcopy(layer)
        with recording({"l": linear}) as records, torch.inference_mode():
            linear(x_b)
        monkeypatch.setattr("hubdelta.embedder.difference.kernel_dtype", lambda device, dtype, k=kernels: k)
        assert to_difference({"l": linear}, records, torch.bfloat16) == 1 and dense(linear.weight).dtype == kernels
        with torch.inference_mode():
            out[kernels] = linear(x)
    with torch.inference_mode():
        exact = layer(x)
    tipped = (out[torch.bfloat16] != out[torch.float32]).float().mean().item()
    rounded = (out[torch.bfloat16] != exact).float().mean().item()
    print(f"\noutputs that differ: between kernels {tipped:.2%}, from fp32 {rounded:.2%}")
    assert tipped <= 0.01 and rounded >= 0.5


@pytest.mark.parametrize("kernels", [torch.bfloat16, torch.float32])
def test_a_bfloat16_space_on_fp32_kernels_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernels: torch.dtype
) -> None:
    base_dir, _ = wide_base(tmp_path)
    monkeypatch.setattr("hubdelta.embedder.activations.kernel_dtype", lambda device, dtype: kernels)
    with capture_logs() as logs, ResidentBase(base_dir, space_for(base_dir, BASE_ID, "0" * 40, dtype="bfloat16")):
        pass
    said = [e for e in logs if e["event"] == "embed.no_bf16_kernels"]
    assert len(said) == (kernels == torch.float32)
    assert all(e["log_level"] == "warning" and "float32" in e["why"] for e in said)


def test_the_embed_setting_reaches_the_options(tmp_path: Path) -> None:
    assert options(settings_for(tmp_path / "a", "http://127.0.0.1:9"), limit=None, device=None, batch=None).prepack
    plain = settings_for(tmp_path / "b", "http://127.0.0.1:9", "[embed]\nprepack = false\n")
    assert not options(plain, limit=None, device=None, batch=None).prepack


def test_own_memory_copies_tensors_out_of_the_buffer_they_view() -> None:
    shared = torch.arange(40.0)  # a checkpoint's memory map, say
    layer, packed_layer = nn.Linear(4, 4), nn.Linear(4, 4)
    with torch.no_grad():
        layer.weight.data, layer.bias.data = shared[:16].view(4, 4), shared[16:20]
    pack_linears({"p": packed_layer})
    model = nn.Sequential(layer, packed_layer)
    own_memory(model)
    assert layer.weight.untyped_storage().nbytes() == 16 * 4 and layer.bias.untyped_storage().nbytes() == 4 * 4
    shared.zero_()  # the buffer can go: the model no longer sees it
    assert torch.equal(layer.weight, torch.arange(16.0).view(4, 4)) and torch.equal(layer.bias, torch.arange(16.0, 20))
    assert packed_layer.weight.is_mkldnn == packs(torch.device("cpu"), torch.float32)  # packed weights left as they are


def test_freed_memory_is_handed_back_where_the_c_library_can() -> None:
    assert _glibc("no_such_function_in_any_libc") is None  # not glibc: each runtime setting is skipped
    assert callable(_glibc("malloc_trim"))  # glibc, as on every machine this runs on
    hand_back_freed_memory()  # callable at any time
