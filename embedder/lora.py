"""LoRA adapters applied to a resident base by forward hooks: read from their files, batched as dense matmuls.

An adapter's delta on a targeted ``nn.Linear`` is ``scaling · (x @ Aᵀ) @ Bᵀ`` (A: (r, in), B: (out, r)). For K
adapters sharing one forward of K groups of rows, a hook on each targeted module adds the K deltas with two
batched matmuls (``bmm`` + ``baddbmm``) onto its output, instead of peft's mixed-batch routing (row gathers,
``index_put``, many small matmuls: ~0.6 s per SmolLM2 adapter on 2 CPU cores, the hooks ~0.01 s). The base
weights are never touched: hooks only add to fresh outputs, and only within a call (:func:`lora_deltas`).

Only what can be applied exactly is accepted: plain LoRA on ``nn.Linear`` modules (``r``, ``lora_alpha``,
``use_rslora``, ``rank_pattern``, ``alpha_pattern``, ``target_modules`` as peft matches them). Every other option
that changes the math (DoRA, biases, ``fan_in_fan_out``, saved modules, layer replication, inits that rewrite the
base weights, options this module does not know) is refused with an :class:`~hubdelta.kernel.errors.EmbedError`, and so
is any tensor whose name or shape does not fit the base, before any forward runs.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from hubdelta.embedder.safety_adapter import MAX_PATTERN, NESTED_QUANTIFIER, alpha_problem
from hubdelta.embedder.safety_header import quote
from hubdelta.kernel.errors import EmbedError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # never adapter_model.bin: that would be unpickled
PEFT_PREFIX = "base_model.model."  # peft's saved names: this + the module's path in the CausalLM
KINDS = {"lora_A.weight": "A", "lora_B.weight": "B"}
ALL_LINEAR = "all-linear"
FOREACH_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
MAX_FACTOR = 1e6  # trained LoRA factors are ~1e-3..1; beyond this their product overflows float32 activations
# Options read or harmless at inference (dropout is off in eval; the *_config entries only feed their inits,
# which are checked through init_lora_weights).
KNOWN_OPTIONS = (
    "peft_type task_type peft_version auto_mapping base_model_name_or_path revision inference_mode r lora_alpha"
    " use_rslora target_modules rank_pattern alpha_pattern init_lora_weights bias lora_dropout megatron_core"
    " qalora_group_size runtime_config loftq_config eva_config corda_config lora_ga_config ensure_weight_tying"
)
KNOWN = frozenset(KNOWN_OPTIONS.split())
# Inits that only set A and B: the trained adapter is then a plain LoRA on the unchanged base. Others (pissa,
# olora, corda, loftq, lora_ga, mica) rewrite the base weights or add a variant the saved adapter depends on.
PLAIN_INITS = (True, False, "gaussian", "eva", "orthogonal")


@dataclass(frozen=True)
class LoraSpec:
    """The parts of an ``adapter_config.json`` that decide a plain LoRA's math."""

    r: int
    alpha: float
    use_rslora: bool = False
    target_modules: str | tuple[str, ...] = ()  # a regex (fullmatch), "all-linear", or names matched as suffixes
    rank_pattern: dict[str, int] = field(default_factory=dict)  # module regex -> r, as peft's get_pattern_key
    alpha_pattern: dict[str, float] = field(default_factory=dict)

    def rank_alpha(self, module: str) -> tuple[int, float]:
        """The rank and alpha of ``module`` (its path in the CausalLM): the first matching pattern, else r, alpha."""
        return _pattern_value(self.rank_pattern, module, self.r), _pattern_value(self.alpha_pattern, module, self.alpha)

    def scaling(self, module: str) -> float:
        r, alpha = self.rank_alpha(module)
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r

    def targets(self, module: str, suffixes: frozenset[str] = frozenset()) -> bool:
        """Whether peft would wrap ``module``; ``suffixes`` stands in for "all-linear" (peft expands it so)."""
        if self.target_modules == ALL_LINEAR:
            return module.rsplit(".", 1)[-1] in suffixes
        if isinstance(self.target_modules, str):
            return re.fullmatch(self.target_modules, module) is not None
        return any(module == t or module.endswith("." + t) for t in self.target_modules)


def _pattern_value(pattern: Mapping[str, Any], module: str, default: Any) -> Any:
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):  # peft.utils.other.get_pattern_key's rule
            return value
    return default


def check_adapter(item: str, adapter_dir: Path) -> LoraSpec:
    """The adapter's LoRA spec, after checking that this module can apply it exactly on a resident base.

    Raises:
        EmbedError: files are missing, it is not a LoRA adapter, or an option would change the math or the base.
    """
    config_path = adapter_dir / ADAPTER_CONFIG
    if not config_path.is_file() or not (adapter_dir / ADAPTER_WEIGHTS).is_file():
        raise EmbedError(f"{adapter_dir} lacks {ADAPTER_CONFIG} or {ADAPTER_WEIGHTS}", item=item)
    try:
        raw = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise EmbedError(f"unreadable {ADAPTER_CONFIG}: {e}", item=item) from e
    if not isinstance(raw, dict) or raw.get("peft_type") != "LORA":
        peft_type = raw.get("peft_type") if isinstance(raw, dict) else None
        raise EmbedError(f"peft_type {quote(peft_type)} is not LORA (resident-base embedding is LoRA-only)", item=item)
    problem = _option_problem(raw) or alpha_problem(raw)
    if problem:
        raise EmbedError(f"{ADAPTER_CONFIG}: {problem}", item=item)
    try:
        return _spec(raw)
    except (TypeError, ValueError) as e:
        raise EmbedError(f"invalid LoRA config: {e}", item=item) from e


def _option_problem(raw: Mapping[str, Any]) -> str | None:
    """Why an option of the config cannot be applied exactly, or None."""
    for key, value in raw.items():
        if key not in KNOWN and value:  # off (null, false, {}, []) is the plain-LoRA default of every option
            return f"{quote(key)}={quote(value, 40)} is not supported (only plain LoRA is applied exactly)"
    if raw.get("bias", "none") != "none":
        return f"bias={quote(raw.get('bias'))} trains biases, which are not applied"
    init = raw.get("init_lora_weights", True)
    if not any(init is p if isinstance(p, bool) else init == p for p in PLAIN_INITS):
        return f"init_lora_weights={quote(init)} rewrites the base weights or is not a plain LoRA"
    return None


def _spec(raw: Mapping[str, Any]) -> LoraSpec:
    r, alpha = raw.get("r", 8), raw.get("lora_alpha", 8)  # peft's defaults
    if type(r) is not int or r < 1:
        raise ValueError(f"r={quote(r)} is not a positive integer")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        raise ValueError(f"lora_alpha={quote(alpha)} is not a number")
    targets = raw.get("target_modules")
    if isinstance(targets, list) and all(isinstance(t, str) for t in targets):
        targets = tuple(targets)
    elif isinstance(targets, str):
        targets = ALL_LINEAR if targets.lower() == ALL_LINEAR else _checked_regex(targets)
    else:
        raise ValueError(f"target_modules={quote(targets)} is not a list of names or a regex")
    ranks, alphas = raw.get("rank_pattern") or {}, raw.get("alpha_pattern") or {}
    if not isinstance(ranks, dict) or not isinstance(alphas, dict):
        raise ValueError("rank_pattern and alpha_pattern must be maps")
    for key, value in [*ranks.items(), *alphas.items()]:
        _checked_regex(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"pattern {quote(key)} has value {quote(value)}, not a positive number")
    if any(type(v) is not int for v in ranks.values()):
        raise ValueError("rank_pattern values must be integers")
    return LoraSpec(r, float(alpha), bool(raw.get("use_rslora", False)), targets, ranks, alphas)


def _checked_regex(pattern: str) -> str:
    """``pattern``, refused when peft's matching of it over every module name could backtrack for long."""
    if len(pattern) > MAX_PATTERN or NESTED_QUANTIFIER.search(pattern):
        raise ValueError(f"regex {quote(pattern)} is too long or nests quantifiers")
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(f"{quote(pattern)} is not a valid regex ({e})") from e
    return pattern


@dataclass(frozen=True)
class LoraAdapter:
    """One adapter's checked factors per targeted module, as read from its file: A (r, in), B (out, r), scaling."""

    item: str
    factors: dict[str, tuple[torch.Tensor, torch.Tensor, float]]  # module path in the CausalLM -> (A, B, s)


def read_adapter(
    item: str, adapter_dir: Path, model: nn.Module, modules: Mapping[str, nn.Module] | None = None
) -> LoraAdapter:
    """Read an adapter folder and check every tensor against ``model`` (a CausalLM) before anything runs.

    Args:
        item: a name for errors (e.g. the repo id).
        adapter_dir: ``adapter_config.json`` + ``adapter_model.safetensors`` (safetensors only: no pickle).
        model: the base the adapter must fit; read, never modified.
        modules: ``model``'s modules by name, when the caller holds them (a resident base's, listed whole: its
            layer stack may be cut short while a lane reads).

    Raises:
        EmbedError: see :func:`check_adapter`; or a tensor is not a LoRA A/B weight, sits on a module that is not
            a targeted ``nn.Linear`` of the base, is missing, or has a shape that does not fit the module.
    """
    spec = check_adapter(item, adapter_dir)
    pairs = _pairs(item, _load_tensors(item, adapter_dir / ADAPTER_WEIGHTS))
    linears = _targeted_linears(item, spec, model, modules)
    unexpected = sorted(set(pairs) - set(linears))
    missing = sorted(set(linears) - set(pairs))
    if unexpected:
        raise EmbedError(f"tensors for {quote(unexpected[0])}, which the config does not target in the base", item=item)
    if missing:
        raise EmbedError(f"no weights for targeted module {quote(missing[0])} ({len(missing)} missing)", item=item)
    factors = {}
    for module, (a, b) in pairs.items():
        linear = linears[module]
        r = spec.rank_alpha(module)[0]
        want_a, want_b = (r, linear.in_features), (linear.out_features, r)
        if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
            raise EmbedError(
                f"{module}: lora_A {list(a.shape)}, lora_B {list(b.shape)} where the base's "
                f"{linear.out_features}x{linear.in_features} Linear at r={r} needs {list(want_a)}, {list(want_b)}",
                item=item,
            )
        factors[module] = (a, b, spec.scaling(module))  # (r, in), (out, r), float
    return LoraAdapter(item, factors)


def _load_tensors(item: str, path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError) as e:
        raise EmbedError(f"unreadable {ADAPTER_WEIGHTS}: {str(e)[:160]}", item=item) from e


def _pairs(item: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``module -> (A, B)`` from peft's saved names, refusing any tensor that is not a LoRA A or B weight."""
    found: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        kind = next((k for k in KINDS if name.endswith("." + k)), None)
        if not name.startswith(PEFT_PREFIX) or kind is None:
            raise EmbedError(f"tensor {quote(name)} is not a LoRA A/B weight (DoRA, bias or saved module?)", item=item)
        if tensor.ndim != 2 or not tensor.is_floating_point():
            raise EmbedError(f"tensor {quote(name)} is {tensor.dtype} {list(tensor.shape)}, not a matrix", item=item)
        found.setdefault(name[len(PEFT_PREFIX) : -len(kind) - 1], {})[KINDS[kind]] = tensor
    _check_values(item, tensors)
    incomplete = next((m for m, ab in found.items() if len(ab) != 2), None)
    if incomplete is not None:
        raise EmbedError(f"module {quote(incomplete)} has lora_A or lora_B but not both", item=item)
    if not found:
        raise EmbedError(f"{ADAPTER_WEIGHTS} holds no LoRA weights", item=item)
    return {m: (ab["A"], ab["B"]) for m, ab in found.items()}


def _check_values(item: str, tensors: Mapping[str, torch.Tensor]) -> None:
    """Every value finite and within ``MAX_FACTOR``. Checked on all tensors at once: hundreds of small tensors
    checked one by one cost ~10 ms an adapter in dispatch alone; only a failed check looks for the culprit.

    One fused pass (``_foreach`` ops: each tensor's largest magnitude, NaN when it holds one) instead of
    concatenating and testing the copy: 2.2 ms against 7.5 ms a SmolLM2 adapter, a tenth of a bf16 run's
    compute. A NaN or an infinity fails ``<= MAX_FACTOR`` as a value too large does.
    """
    present = [_checkable(t) for t in tensors.values() if t.numel()]
    if not present:
        return
    peaks = torch._foreach_max(torch._foreach_abs(present))
    same = len({p.dtype for p in peaks}) == 1
    if float(torch.stack(peaks if same else [p.float() for p in peaks]).max()) <= MAX_FACTOR:
        return
    for name, stored in tensors.items():
        tensor = _checkable(stored)
        if not bool(torch.isfinite(tensor).all()):
            raise EmbedError(f"{ADAPTER_WEIGHTS}: tensor {quote(name)} has NaN/Inf values (rule: finite)", item=item)
        if tensor.numel() and float(tensor.abs().max()) > MAX_FACTOR:
            raise EmbedError(
                f"{ADAPTER_WEIGHTS}: tensor {quote(name)} has values up to {float(tensor.abs().max()):.2g}"
                f", over {MAX_FACTOR:g} (rule: finite; the delta would overflow float32)",
                item=item,
            )
    raise EmbedError(f"{ADAPTER_WEIGHTS}: values out of bounds (rule: finite)", item=item)  # a rounding edge


def _checkable(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in a dtype the value checks support: ``_foreach`` max and ``isfinite`` have no float8."""
    return tensor if tensor.dtype in FOREACH_DTYPES else tensor.float()


def _targeted_linears(
    item: str, spec: LoraSpec, model: nn.Module, modules: Mapping[str, nn.Module] | None
) -> dict[str, nn.Linear]:
    """The base modules peft would wrap for ``spec``; refused if one is not an ``nn.Linear`` or none match."""
    modules = dict(model.named_modules()) if modules is None else modules
    suffixes: frozenset[str] = frozenset()
    if spec.target_modules == ALL_LINEAR:  # peft: every Linear's last name, minus the output layer's
        get_head = getattr(model, "get_output_embeddings", None)
        head = get_head() if callable(get_head) else None
        linears = [n for n, m in modules.items() if isinstance(m, nn.Linear) and m is not head]
        suffixes = frozenset(n.rsplit(".", 1)[-1] for n in linears)
    targeted = {name: m for name, m in modules.items() if name and spec.targets(name, suffixes)}
    if not targeted:
        raise EmbedError(f"target_modules {quote(str(spec.target_modules))} match no module of the base", item=item)
    other = next((n for n, m in targeted.items() if type(m) is not nn.Linear), None)
    if other is not None:
        kind = type(modules[other]).__name__
        raise EmbedError(f"target {quote(other)} is {kind}: only nn.Linear targets are applied", item=item)
    return {n: m for n, m in targeted.items() if isinstance(m, nn.Linear)}


def stack_factors(
    adapters: Sequence[LoraAdapter], dtype: torch.dtype, device: torch.device | str = "cpu"
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per module targeted by any adapter: A (K, r, in) and (s·B)ᵀ (K, r, out) in the model's ``dtype`` and on its
    ``device``, zero-padded to one rank.

    An adapter without the module, or of smaller rank, gets zero rows: they add exact zeros, so its rows see
    exactly its own LoRA. The scaling is folded into B once, so the hook adds ``(x @ Aᵀ) @ (s·B)ᵀ``. A stays
    (r, in) row-major as peft's ``lora_A`` is: ``bmm`` against its transposed view ran 2.5× faster here than
    against an (in, r) copy, and MKL then runs the same GEMMs as peft (bit-identical results on the pool).
    """
    k = len(adapters)
    wide = torch.promote_types(dtype, torch.float32)  # s·B rounded once to a bfloat16 space's dtype, not twice
    stacked = {}
    for module in sorted({m for a in adapters for m in a.factors}):
        entries = [a.factors.get(module) for a in adapters]
        a0, b0, _ = next(e for e in entries if e is not None)
        rank = max(e[0].shape[0] for e in entries if e is not None)
        padded = [_padded(e, rank, a0.shape[1], b0.shape[0]) for e in entries]
        a_s = _stacked([a for a, _, _ in padded], dtype)  # (K, r, in)
        b_t = _stacked([b.T for _, b, _ in padded], wide)  # (K, r, out)
        b_t.mul_(torch.tensor([s for _, _, s in padded], dtype=wide).view(k, 1, 1))
        stacked[module] = (a_s.to(device), b_t.to(device=device, dtype=dtype))
    return stacked


def _stacked(tensors: Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """``tensors`` stacked, in ``dtype``: converted once after stacking when they share a dtype (one op, not one a
    tensor: a chunk's factors are hundreds of modules × K adapters), each before it otherwise. Same values."""
    if len({t.dtype for t in tensors}) == 1:
        return torch.stack(list(tensors)).to(dtype)
    return torch.stack([t.to(dtype) for t in tensors])


def _padded(
    entry: tuple[torch.Tensor, torch.Tensor, float] | None, rank: int, n_in: int, n_out: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``entry`` with zero rows up to ``rank`` (A) and zero columns (B); all zeros for an absent module."""
    if entry is None:
        return torch.zeros(rank, n_in), torch.zeros(n_out, rank), 0.0
    a, b, s = entry  # (r, in), (out, r)
    if a.shape[0] < rank:
        a, b = nn.functional.pad(a, (0, 0, 0, rank - a.shape[0])), nn.functional.pad(b, (0, rank - b.shape[1]))
    return a, b, s


# This thread's LoRA factors: (``id`` of the model, {module name: (Aᵀ, s·Bᵀ, K)}), set by :func:`lora_deltas`. Per
# thread so that lanes (:mod:`~hubdelta.embedder.lanes`) run different adapters through one base at once.
_ACTIVE = threading.local()


@contextmanager
def lora_hooks(model: nn.Module, stacked: Mapping[str, tuple[torch.Tensor, torch.Tensor]], k: int) -> Iterator[None]:
    """Within the block, row group ``i`` of every batch (rows ``i*B/K .. (i+1)*B/K``) runs through adapter ``i``.

    ``stacked`` is :func:`stack_factors`' output for K adapters. For forwards in this thread (lanes use
    :func:`delta_hooks` once and :func:`lora_deltas` in each lane); the hooks are removed on exit, error or not."""
    with delta_hooks(model, stacked), lora_deltas(model, stacked, k):
        yield


@contextmanager
def delta_hooks(model: nn.Module, modules: Iterable[str]) -> Iterator[None]:
    """Within the block, the named modules of ``model`` add the LoRA deltas that :func:`lora_deltas` set for it in
    the thread running the forward (nothing where none are set). Removed on exit, exception or not."""
    handles = []
    try:
        for module in modules:
            hook = _delta_hook(id(model), module)
            handles.append(model.get_submodule(module).register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def lora_deltas(model: nn.Module, stacked: Mapping[str, tuple[torch.Tensor, torch.Tensor]], k: int) -> Iterator[None]:
    """Within the block, in this thread, the hooked modules of ``model`` add row group ``i``'s delta of adapter
    ``i`` (``stacked``: :func:`stack_factors`' output for K adapters)."""
    previous = getattr(_ACTIVE, "factors", None)
    _ACTIVE.factors = (id(model), {m: (a_s.transpose(1, 2), b_t, k) for m, (a_s, b_t) in stacked.items()})
    try:
        yield
    finally:
        _ACTIVE.factors = previous


def _delta_hook(model: int, name: str) -> Any:
    """A forward hook adding each row group's own ``(x @ Aᵀ) @ (s·B)ᵀ`` to the Linear's output, in place."""

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor | None:
        active = getattr(_ACTIVE, "factors", None)
        entry = active[1].get(name) if active is not None and active[0] == model else None
        if entry is None:  # no adapter of this thread's batch targets the module
            return None
        a_t, b_t, k = entry  # (K, in, r) (a view of A), (K, r, out)
        x = args[0]  # (K*P, T, in)
        assert x.shape[0] % k == 0 and output.shape[:-1] == x.shape[:-1], (x.shape, output.shape, k)
        h = torch.bmm(x.reshape(k, -1, x.shape[-1]), a_t)  # (K, P*T, r)
        # The output is the Linear's fresh result, seen by no one yet: adding in place saves a copy.
        output.view(k, -1, output.shape[-1]).baddbmm_(h, b_t)  # (K, P*T, out)
        return output

    return hook
