"""The fast LoRA path: adapters read from their files and applied by hooks, against peft's own mixed batch.

A tiny random Llama (no pool needed) with adapters that peft itself trains-free initialises and saves covers the
math (ranks, patterns, rslora, all-linear, adapters targeting different modules in one batch), the refusals and
the hooks' cleanup; the pool's real adapters check the same against peft on the real base.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

from hubdelta.embedder.activations import ProbeBatch, ResidentBase, load_causal_lm, probe_activations
from hubdelta.embedder.bases import space_for
from hubdelta.embedder.difference import decoder_linears, recording, to_difference
from hubdelta.embedder.lora import MAX_FACTOR, _check_values, check_adapter, lora_hooks, read_adapter, stack_factors
from hubdelta.embedder.packed import dense, kernel_dtype
from hubdelta.embedder.probes import PAPER_PROBES
from hubdelta.embedder.space import Space
from hubdelta.kernel.errors import EmbedError
from hubdelta_dev.pool.base import BASE_REPO_ID

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft, transformers 5

HIDDEN = 32
TINY_SPACE = Space("t/tiny", "0" * 40, PAPER_PROBES.version, PAPER_PROBES.hash, dim=HIDDEN)
ATTN = ["q_proj", "k_proj", "v_proj"]


def tiny_llama(intermediate: int = 64, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=intermediate,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=101,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval().requires_grad_(False)


def save_adapter(base: PreTrainedModel, folder: Path, seed: int, **options: Any) -> Path:
    """A LoRA adapter of ``base`` as peft saves it, with random non-zero A and B (init_lora_weights=False)."""
    torch.manual_seed(seed)
    config = LoraConfig(init_lora_weights=False, **{"r": 4, "lora_alpha": 8, "target_modules": ATTN, **options})
    get_peft_model(copy.deepcopy(base), config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny() -> LlamaForCausalLM:
    return tiny_llama()


@pytest.fixture(scope="module")
def probes() -> ProbeBatch:
    gen = torch.Generator().manual_seed(1)
    return ProbeBatch.from_token_ids([torch.randint(1, 101, (n,), generator=gen).tolist() for n in (7, 4, 9)], 0)


@pytest.fixture(scope="module")
def adapters(tiny: LlamaForCausalLM, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Adapters that differ in every way a batch must handle: targets, ranks, patterns, scaling."""
    root = tmp_path_factory.mktemp("adapters")
    return [
        save_adapter(tiny, root / "attn", 1),
        save_adapter(tiny, root / "mlp-r2", 2, r=2, lora_alpha=3, target_modules=["gate_proj", "down_proj"]),
        save_adapter(tiny, root / "all-rslora", 3, target_modules="all-linear", use_rslora=True),
        save_adapter(
            tiny,
            root / "patterns",
            4,
            target_modules=r".*\.(v_proj|up_proj)",
            rank_pattern={"up_proj": 6},
            alpha_pattern={"layers.1.self_attn.v_proj": 5},
        ),
    ]


def ours(model: PreTrainedModel, batch: ProbeBatch, space: Space, dirs: Sequence[Path], dtype: torch.dtype) -> Any:
    """Pooled activations through the fast path: ``(K*P, C)``, row group i through ``dirs[i]``."""
    loaded = [read_adapter(f"x/{d.name}", d, model) for d in dirs]
    with lora_hooks(model, stack_factors(loaded, dtype), len(loaded)):
        return probe_activations(model, batch.repeat(len(dirs)), space)


def peft_mixed(base: PreTrainedModel, batch: ProbeBatch, space: Space, dirs: Sequence[Path]) -> torch.Tensor:
    """The same through peft's mixed batch (per-row ``adapter_names``) on ``base`` (which peft wraps)."""
    model = PeftModel.from_pretrained(base, dirs[0], adapter_name="a0")
    for i, d in enumerate(dirs[1:], 1):
        model.load_adapter(str(d), adapter_name=f"a{i}")
    model = model.to(next(base.parameters()).dtype)  # peft keeps adapter weights fp32 on a float64 base
    rows = [f"a{i}" for i in range(len(dirs)) for _ in range(len(batch))]
    with model.base_model._enable_peft_forward_hooks(adapter_names=rows):
        return probe_activations(model.get_base_model(), batch.repeat(len(dirs)), space)


def fingerprint(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        plain = dense(tensor.detach()).contiguous()  # a prepacked Linear weight read back (embedder.packed)
        digest.update(name.encode() + plain.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# ---- the math, against peft ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_hooks_equal_peft_mixed_batch(
    tiny: LlamaForCausalLM, probes: ProbeBatch, adapters: list[Path], dtype: torch.dtype, atol: float
) -> None:
    model = copy.deepcopy(tiny).to(dtype)
    before = fingerprint(model)
    got = ours(model, probes, TINY_SPACE, adapters, dtype)  # (K*P, C)
    want = peft_mixed(copy.deepcopy(tiny).to(dtype), probes, TINY_SPACE, adapters)
    base = probe_activations(model, probes, TINY_SPACE)  # (P, C)
    diff = (got - want).abs().max().item()
    print(f"\n{dtype}: hooks vs peft mixed batch, max abs diff {diff:.1e}")
    assert diff <= atol
    deltas = (got.view(len(adapters), len(probes), -1) - base).abs().amax(dim=(1, 2))  # (K,)
    assert bool((deltas > 1e-3).all()), deltas  # every adapter really changed its rows
    assert fingerprint(model) == before and hook_count(model) == 0


def test_an_adapter_alone_equals_it_in_a_mixed_batch(
    tiny: LlamaForCausalLM, probes: ProbeBatch, adapters: list
) -> None:
    mixed = ours(tiny, probes, TINY_SPACE, adapters, torch.float32).view(len(adapters), len(probes), -1)
    for i, folder in enumerate(adapters):
        alone = ours(tiny, probes, TINY_SPACE, [folder], torch.float32)
        assert (alone - mixed[i]).abs().max() <= 1e-6


# ---- bf16 on the difference to the base (hubdelta.embedder.difference) ----------------------------------------


def difference_model(tiny: LlamaForCausalLM, probes: ProbeBatch, space: Space, dtype: torch.dtype) -> Any:
    """A copy of ``tiny`` whose decoder Linears run on the difference to its recorded fp32 probe forward."""
    model = copy.deepcopy(tiny)
    linears = decoder_linears(model)
    with recording(linears) as records:
        probe_activations(model, probes, space)
    changed = to_difference(linears, records, dtype)
    return model, changed, len(linears)


def test_the_difference_form_is_the_same_function_in_fp32(
    tiny: LlamaForCausalLM, probes: ProbeBatch, adapters: list[Path]
) -> None:
    """y_b + (x - x_b) Wᵀ == x Wᵀ: with fp32 weights the rewritten model matches the original, hooks included
    (a difference shared by the wrong modules, q/k/v and gate/up, would show here)."""
    model, changed, total = difference_model(tiny, probes, TINY_SPACE, torch.float32)
    assert changed == total == 14  # 2 layers x (q k v o gate up down)
    got = ours(model, probes, TINY_SPACE, adapters, torch.float32)
    want = ours(tiny, probes, TINY_SPACE, adapters, torch.float32)
    assert (got - want).abs().max().item() <= 1e-5


def test_bf16_on_the_difference_is_far_closer_to_fp32_than_native_bf16(
    tiny: LlamaForCausalLM, probes: ProbeBatch, adapters: list[Path]
) -> None:
    k, p = len(adapters), len(probes)
    base = probe_activations(tiny, probes, TINY_SPACE)  # (P, C)
    fp32 = ours(tiny, probes, TINY_SPACE, adapters, torch.float32).view(k, p, -1) - base  # (K, P, C)
    model, _, _ = difference_model(tiny, probes, TINY_SPACE, torch.bfloat16)
    w = dense(model.model.layers[0].mlp.down_proj.weight)  # bf16 values (fp32 kernels on a CPU without bf16)
    assert w.dtype == kernel_dtype(w.device, torch.bfloat16) and torch.equal(w, w.bfloat16().to(w.dtype))
    diff = ours(model, probes, TINY_SPACE, adapters, torch.float32).view(k, p, -1) - base
    native_model = copy.deepcopy(tiny).to(torch.bfloat16)
    native_base = probe_activations(native_model, probes, TINY_SPACE)
    native = ours(native_model, probes, TINY_SPACE, adapters, torch.bfloat16).view(k, p, -1) - native_base
    err_diff, err_native = ((diff - fp32).norm() / fp32.norm()).item(), ((native - fp32).norm() / fp32.norm()).item()
    print(f"\nrelative error of the deltas: bf16 on the difference {err_diff:.1e}, native bf16 {err_native:.1e}")
    assert err_diff <= 0.01 and err_diff * 4 <= err_native
    cos = torch.nn.functional.cosine_similarity(diff.flatten(1), fp32.flatten(1))  # (K,)
    assert bool((cos >= 0.9999).all()), cos


def test_linears_a_truncated_space_never_runs_are_left_alone(tiny: LlamaForCausalLM, probes: ProbeBatch) -> None:
    space = dataclasses.replace(TINY_SPACE, layer=1)
    model, changed, total = difference_model(tiny, probes, space, torch.bfloat16)
    assert (changed, total) == (7, 14)
    untouched = model.model.layers[1].self_attn.q_proj
    assert untouched.weight.dtype == torch.float32 and "forward" not in vars(untouched)


# ---- refusals --------------------------------------------------------------------------------------------------


def test_an_adapter_of_another_base_is_refused_naming_module_and_shapes(
    tiny: LlamaForCausalLM, adapters: list[Path], tmp_path: Path
) -> None:
    other = save_adapter(tiny_llama(intermediate=48), tmp_path / "other", 5, target_modules=["down_proj"])
    with pytest.raises(EmbedError, match=r"^x/other: model\.layers\.\d\.mlp\.down_proj: lora_A \[4, 48\].*\[4, 64\]"):
        read_adapter("x/other", other, tiny)
    model = copy.deepcopy(tiny)
    with pytest.raises(EmbedError, match="x/other"):  # in a batch: refused before any forward
        ours(model, ProbeBatch.from_token_ids([[1, 2]], 0), TINY_SPACE, [adapters[0], other], torch.float32)
    assert hook_count(model) == 0


def write_config(folder: Path, **changes: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ATTN, "use_dora": False, **changes}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes(b"")  # never read: the config is refused first
    return folder


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"use_dora": True}, "'use_dora'=True is not supported"),
        ({"bias": "lora_only"}, "bias='lora_only' trains biases"),
        ({"lora_bias": True}, "'lora_bias'"),
        ({"fan_in_fan_out": True}, "'fan_in_fan_out'"),
        ({"modules_to_save": ["lm_head"]}, "'modules_to_save'"),
        ({"layer_replication": [[0, 1]]}, "'layer_replication'"),
        ({"layers_to_transform": [0]}, "'layers_to_transform'"),
        ({"init_lora_weights": "pissa"}, "init_lora_weights='pissa' rewrites the base weights"),
        ({"init_lora_weights": "olora"}, "init_lora_weights='olora'"),
        ({"a_future_option": {"on": 1}}, "'a_future_option'"),
        ({"peft_type": "IA3"}, "is not LORA"),
        ({"r": 0}, "r=0 is not a positive integer"),
        ({"target_modules": None}, "target_modules=None"),
        ({"target_modules": "(.*_proj)+"}, "too long or nests quantifiers"),
        ({"rank_pattern": {"(a+)+": 4}}, "too long or nests quantifiers"),
        ({"alpha_pattern": {"q_proj": -1}}, "not a positive number"),
    ],
)
def test_unsupported_configs_are_refused_with_a_reason(changes: dict[str, Any], reason: str, tmp_path: Path) -> None:
    with pytest.raises(EmbedError, match=r"^x/a: .*" + re.escape(reason)):
        check_adapter("x/a", write_config(tmp_path / "a", **changes))


def test_a_peft_dora_adapter_is_refused(tiny: LlamaForCausalLM, tmp_path: Path) -> None:
    dora = save_adapter(tiny, tmp_path / "dora", 6, use_dora=True)
    with pytest.raises(EmbedError, match="use_dora"):
        read_adapter("x/dora", dora, tiny)


def rewrite_tensors(source: Path, target: Path, edit: Any) -> Path:
    target.mkdir()
    (target / "adapter_config.json").write_text((source / "adapter_config.json").read_text())
    tensors = load_file(str(source / "adapter_model.safetensors"))
    save_file(edit(dict(tensors)), str(target / "adapter_model.safetensors"))
    return target


def _drop_one_b(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    del tensors[next(k for k in sorted(tensors) if k.endswith("lora_B.weight"))]
    return tensors


def _drop_a_module(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in tensors.items() if "layers.1.self_attn.q_proj" not in k}


def _add_a_module(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefix = "base_model.model.model.layers.0.self_attn.o_proj"
    return {
        **tensors,
        f"{prefix}.lora_A.weight": torch.ones(4, HIDDEN),
        f"{prefix}.lora_B.weight": torch.ones(HIDDEN, 4),
    }


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda t: {**t, "base_model.model.lm_head.weight": torch.ones(101, HIDDEN)}, "is not a LoRA A/B weight"),
        (lambda t: {**t, "x.lora_magnitude_vector": torch.ones(HIDDEN)}, "is not a LoRA A/B weight"),
        (_drop_one_b, "has lora_A or lora_B but not both"),
        (_drop_a_module, "no weights for targeted module 'model.layers.1.self_attn.q_proj'"),
        (_add_a_module, "tensors for 'model.layers.0.self_attn.o_proj', which the config does not target"),
        (lambda t: {k: v.to(torch.int32) for k, v in t.items()}, "not a matrix"),
    ],
)
def test_tensors_that_do_not_fit_the_config_are_refused(
    tiny: LlamaForCausalLM, adapters: list[Path], tmp_path: Path, edit: Any, reason: str
) -> None:
    folder = rewrite_tensors(adapters[0], tmp_path / "edited", edit)
    with pytest.raises(EmbedError, match=re.escape(reason)):
        read_adapter("x/edited", folder, tiny)


@pytest.mark.parametrize(
    ("targets", "reason"),
    [(["embed_tokens"], "'model.embed_tokens' is Embedding: only nn.Linear"), (["no_such"], "match no module")],
)
def test_targets_that_are_not_linear_modules_of_the_base_are_refused(
    tiny: LlamaForCausalLM, adapters: list[Path], tmp_path: Path, targets: list[str], reason: str
) -> None:
    folder = rewrite_tensors(adapters[0], tmp_path / "edited", lambda t: t)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "target_modules": targets}))
    with pytest.raises(EmbedError, match=re.escape(reason)):
        read_adapter("x/edited", folder, tiny)


# ---- cleanup ---------------------------------------------------------------------------------------------------


def test_hooks_are_removed_when_the_forward_fails_half_way(
    tiny: LlamaForCausalLM, probes: ProbeBatch, adapters: list[Path]
) -> None:
    model = copy.deepcopy(tiny)
    base = probe_activations(model, probes, TINY_SPACE)
    stacked = stack_factors([read_adapter("x/a", adapters[0], model)], torch.float32)

    def fail(*_: Any) -> None:
        raise RuntimeError("injected")

    # The second layer fails after the first layer's LoRA hooks have run.
    failing = model.model.layers[1].register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="injected"), lora_hooks(model, stacked, 1):
        assert hook_count(model) == len(stacked) + 1
        probe_activations(model, probes, TINY_SPACE)
    failing.remove()
    assert hook_count(model) == 0
    assert torch.equal(probe_activations(model, probes, TINY_SPACE), base)


# ---- the pool's real adapters ----------------------------------------------------------------------------------

TRIO = ("math-1", "code-1", "legal-1")


@pytest.mark.pool
def test_resident_base_matches_peft_mixed_batch_on_the_pool(pool: Path) -> None:
    hub = pool / "hub"
    base_dir = hub / BASE_REPO_ID
    dirs = [hub / f"hubdelta-pool/smollm2-lora-{name}" for name in TRIO]
    with ResidentBase(base_dir, space_for(base_dir, BASE_REPO_ID, "pool")) as resident:
        got = resident.adapter_activations({d.name: d for d in dirs})
        space, batch, base = resident.space, resident.batch, resident.base_activations()
        # The same sums in float64: a difference in the math would show here far above float32 rounding.
        model64 = load_causal_lm(base_dir, torch.float64, torch.device("cpu"))
        ours64 = ours(model64, batch, space, dirs, torch.float64)
    peft32 = peft_mixed(load_causal_lm(base_dir, torch.float32, torch.device("cpu")), batch, space, dirs)
    peft64 = peft_mixed(model64, batch, space, dirs)
    diff64 = (ours64 - peft64).abs().max().item()
    diff32 = (torch.cat(list(got.values())) - peft32).abs().max().item()
    print(f"\npool: vs peft mixed batch, float64 {diff64:.1e}, float32 {diff32:.1e} (|h| <= {peft64.abs().max():.0f})")
    assert min((a - base).abs().max().item() for a in got.values()) > 0.1  # the adapters do change the states
    assert diff64 <= 1e-5
    # float64 above carries the math. In float32 the two paths were bit-identical on an AMD EPYC while both ran
    # the base's Linears on MKL (A kept (r, in) like peft's lora_A, so MKL ran the same GEMMs), 2.5-4.6e-5 apart on
    # an Intel Xeon whose kernels block the batched GEMMs differently, and 6.1e-5 apart since the resident base's
    # Linears run prepacked on oneDNN (embedder/packed.py): rounding over 30 layers. A wrong adapter or row shows
    # as > 0.1 (asserted above).
    assert diff32 <= 2e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float8_e4m3fn])
def test_adapter_values_are_checked_in_one_pass_whatever_their_dtypes(dtype: torch.dtype) -> None:
    rng = torch.Generator().manual_seed(0)
    good = {f"m{i}": (torch.randn(8, 16, generator=rng) * 1e-2).to(dtype) for i in range(300)}
    good["wide"] = torch.randn(4, 4, generator=rng)  # another dtype beside them (fp32)
    good["empty"] = torch.zeros(0, 4, dtype=dtype)
    _check_values("ok/adapter", good)  # nothing raised
    cases = [(float("nan"), "NaN/Inf"), (float("-inf"), "NaN/Inf"), (MAX_FACTOR * 4, "over")]
    for bad, why in cases[:1] if dtype == torch.float8_e4m3fn else cases:  # float8 saturates infinities to 448
        tensors = dict(good)
        tensors["m123"] = tensors["m123"].clone()
        tensors["m123"][3, 5] = bad
        if bad > torch.finfo(dtype).max:  # float16 holds no 4e6: stored, it is an infinity (float8: a NaN)
            why = "NaN/Inf"
        with pytest.raises(EmbedError, match=f"m123.*{why}"):
            _check_values("bad/adapter", tensors)
