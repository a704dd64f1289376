"""Rules for peft adapters: the config (type, rank, base, targets) and the tensors against the base's shapes (pure).

A LoRA adapter file holds, per targeted module ``M`` (peft's names, ``base_model.model.`` + the base's module
path), ``M.lora_A.weight`` of shape (r, in) and ``M.lora_B.weight`` of shape (out, r), where the base's
``M.weight`` is (out, in). An adapter trained on another base fails those shapes; checking them here turns a
load-time size-mismatch crash into a refusal with a reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from hubdelta.embedder.safety_header import quote
from hubdelta.embedder.safety_records import BaseInfo, Limits, Refusal, Rule, refuse

CONFIG = "adapter_config.json"
PREFIX = "base_model.model."
MAX_PATTERN = 300
MAX_LORA_ALPHA = 1e6  # real configs use 1..1024; far beyond that, alpha/r times the factors overflows float32
# A quantifier right after a group, e.g. (a+)+: the shape of catastrophic regex backtracking. peft runs
# re.fullmatch(target_modules, name) over every module name, so a hostile pattern could hang a worker.
NESTED_QUANTIFIER = re.compile(r"\)[*+{]")


def _rank_problem(value: Any, limits: Limits) -> str | None:
    if type(value) is not int or value < 1:
        return f"r={quote(value)} is not a positive integer"
    if value > limits.max_adapter_rank:
        return f"r={value} exceeds max_adapter_rank {limits.max_adapter_rank}"
    return None


# What re-publishers (unsloth, bitsandbytes and AWQ/GPTQ quantizers) append to a base's name for a copy of the
# same weights. LoRA tensors on such a copy have the float base's shapes (peft keeps in/out features).
MIRROR_SUFFIXES = ("-unsloth", "-bnb", "-4bit", "-8bit", "-awq", "-gptq", "-int4", "-int8", "-fp16", "-bf16")


def _model_name(repo_id: str) -> str:
    """The name part of a repo id, lowercased, with mirror suffixes stripped: ``unsloth/X-bnb-4bit`` → ``x``."""
    name = repo_id.rsplit("/", 1)[-1].lower()
    suffix = next((s for s in MIRROR_SUFFIXES if name.endswith(s) and len(name) > len(s)), None)
    while suffix is not None:
        name = name[: -len(suffix)]
        suffix = next((s for s in MIRROR_SUFFIXES if name.endswith(s) and len(name) > len(s)), None)
    return name


def names_a_mirror(name: str, base: BaseInfo) -> bool:
    """Whether ``name`` (another owner's repo id) looks like a re-published copy of the tracked base.

    The name alone is only a claim: such an adapter is accepted when its tensors fit the base's shapes, which
    :func:`check_adapter_tensors` checks (a base of the same name but other dimensions is still refused there).
    """
    return bool(base.weight_shapes) and _model_name(name) in {_model_name(n) for n in base.names()}


def declared_base(cfg: Mapping[str, Any]) -> str | None:
    """The Hub id ``base_model_name_or_path`` names, or None (absent, or a local path)."""
    name = cfg.get("base_model_name_or_path")
    if not isinstance(name, str):
        return None
    name = name.strip().rstrip("/")
    return name if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) else None


def _base_problem(cfg: Mapping[str, Any], base: BaseInfo) -> str | None:
    """The base the adapter names, when it is a Hub id other than the tracked base or a mirror of it."""
    name = declared_base(cfg)
    if name is None or name.lower() in base.names() or names_a_mirror(name, base):
        return None
    return f"base_model_name_or_path {quote(name)} is not the tracked base {base.repo_id!r}"


def _number_problem(key: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{key}={quote(value)} is not a number"
    if not math.isfinite(value):
        return f"{key} is not finite ({value})"
    if abs(value) > MAX_LORA_ALPHA:
        return f"{key}={value:.3g} is out of range (over {MAX_LORA_ALPHA:g}: the delta would overflow float32)"
    return None


def alpha_problem(cfg: Mapping[str, Any]) -> str | None:
    """Why ``lora_alpha`` or an ``alpha_pattern`` value cannot scale a LoRA (NaN, Inf, huge), or None.

    JSON readers accept ``NaN`` and ``Infinity``; one such scale makes the adapter's delta NaN.
    """
    problem = _number_problem("lora_alpha", cfg["lora_alpha"]) if "lora_alpha" in cfg else None
    pattern = cfg.get("alpha_pattern") or {}
    if problem is None and not isinstance(pattern, dict):
        return "alpha_pattern is not a map"
    for key, value in pattern.items() if problem is None else ():
        problem = problem or _number_problem(f"alpha_pattern[{quote(key)}]", value)
    return problem


def check_adapter_config(cfg: Mapping[str, Any], base: BaseInfo | None, limits: Limits) -> Refusal | None:
    """Rules on ``adapter_config.json``: no imports, a supported type, bounded ranks, the right base and targets.

    With ``base`` None (nothing known of it), the base's name and module names are not checked.
    """
    if cfg.get("auto_mapping"):
        mapping = cfg["auto_mapping"]
        lib = mapping.get("parent_library") if isinstance(mapping, dict) else mapping
        return refuse(Rule.CUSTOM_CODE, f"auto_mapping asks peft to import {quote(lib)}", CONFIG)
    peft_type = cfg.get("peft_type")
    if peft_type not in limits.adapter_types:
        supported = ", ".join(sorted(limits.adapter_types))
        return refuse(Rule.UNSUPPORTED, f"peft_type {quote(peft_type)} is not supported ({supported})", CONFIG)
    ranks = [cfg.get("r")]
    pattern = cfg.get("rank_pattern") or {}
    if not isinstance(pattern, dict):
        return refuse(Rule.CONFIG, "rank_pattern is not a map", CONFIG)
    ranks.extend(pattern.values())
    for value in ranks:
        problem = _rank_problem(value, limits)
        if problem:
            return refuse(Rule.RANK, problem, CONFIG)
    if cfg.get("layer_replication"):
        return refuse(Rule.UNSUPPORTED, "layer_replication changes the base's layers", CONFIG)
    problem = alpha_problem(cfg)
    if problem:
        return refuse(Rule.CONFIG, problem, CONFIG)
    if base is None:
        return None
    problem = _base_problem(cfg, base)
    if problem:
        return refuse(Rule.BASE, problem, CONFIG)
    return _check_targets(cfg, base)


def _check_targets(cfg: Mapping[str, Any], base: BaseInfo) -> Refusal | None:
    """``target_modules`` and ``modules_to_save`` must name modules of the base (peft's matching rules)."""
    modules = base.modules()
    if not modules:
        return None  # nothing known of the base: the tensor shapes are the last line of defence
    targets = cfg.get("target_modules")
    if isinstance(targets, str):
        refusal = _check_pattern(targets, modules)
    else:
        refusal = _check_names("target_modules", "target module", targets, modules)
    return refusal or _check_names("modules_to_save", "module to save", cfg.get("modules_to_save"), modules)


def _check_names(key: str, what: str, names: Any, modules: frozenset[str]) -> Refusal | None:
    """Each name must be a module or a module's last dotted parts, as peft matches list entries."""
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return refuse(Rule.CONFIG, f"{key} is not a list of module names", CONFIG)
    for target in names:
        if not any(m == target or m.endswith("." + target) for m in modules):
            return refuse(Rule.TARGET, f"{what} {quote(target)} does not exist in the base", CONFIG)
    return None


def _check_pattern(pattern: str, modules: frozenset[str]) -> Refusal | None:
    if pattern == "all-linear":
        return None
    if len(pattern) > MAX_PATTERN or NESTED_QUANTIFIER.search(pattern):
        return refuse(Rule.CONFIG, "target_modules regex is too long or nests quantifiers (backtracking)", CONFIG)
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        return refuse(Rule.CONFIG, f"target_modules is not a valid regex ({e})", CONFIG)
    if not any(compiled.fullmatch(m) for m in modules):
        return refuse(Rule.TARGET, f"target_modules {quote(pattern)} matches no module of the base", CONFIG)
    return None


def _expected_shape(kind: str, base_shape: tuple[int, ...], rank: int, fan_in_fan_out: bool) -> tuple[int, ...]:
    """The shape peft gives an adapter tensor of ``kind`` for a base weight of ``base_shape`` (2-D prefix)."""
    out_dim, in_dim = (base_shape[1], base_shape[0]) if fan_in_fan_out else (base_shape[0], base_shape[1])
    return {
        "lora_A.weight": (rank, in_dim),
        "lora_B.weight": (out_dim, rank),
        "lora_embedding_A": (rank, base_shape[0]),
        "lora_embedding_B": (base_shape[1], rank),
        "lora_B.bias": (out_dim,),
        "lora_magnitude_vector": (out_dim,),
        "lora_magnitude_vector.weight": (out_dim,),
    }[kind]


LORA_KINDS = (
    "lora_A.weight",
    "lora_B.weight",
    "lora_embedding_A",
    "lora_embedding_B",
    "lora_B.bias",
    "lora_magnitude_vector",
    "lora_magnitude_vector.weight",
)


def _split(key: str) -> tuple[str, str] | None:
    """``(module, kind)`` of a LoRA tensor name without the peft prefix; None for other tensors."""
    for kind in LORA_KINDS:
        if key.endswith("." + kind):
            return key[: -len(kind) - 1], kind
    return None


def _rank_of(kind: str, shape: tuple[int, ...]) -> int | None:
    if kind in ("lora_A.weight", "lora_embedding_A"):
        return shape[0] if shape else None
    if kind in ("lora_B.weight", "lora_embedding_B"):
        return shape[1] if len(shape) > 1 else None
    return None


def check_adapter_tensors(
    name: str, header: Mapping[str, Any], cfg: Mapping[str, Any], base: BaseInfo, limits: Limits
) -> Refusal | None:
    """Every adapter tensor must sit on a module of the base with shapes that fit it (valid header assumed)."""
    shapes = {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    if not shapes:
        return refuse(Rule.NO_WEIGHTS, "holds no tensors", name)
    for key, shape in shapes.items():
        if not key.startswith(PREFIX):
            return refuse(Rule.TARGET, f"tensor {quote(key)} is not a peft adapter tensor", name)
        split = _split(key[len(PREFIX) :])
        rank = _rank_of(split[1], shape) if split else None
        problem = _rank_problem(rank, limits) if rank is not None else None
        if problem:  # the config's r may understate the tensors' rank
            return refuse(Rule.RANK, f"tensor {quote(key)}: {problem}", name)
        if rank is not None and not cfg.get("rank_pattern") and rank != cfg.get("r"):
            msg = f"tensor {quote(key)} has rank {rank} but {CONFIG} says r={quote(cfg.get('r'))}"
            return refuse(Rule.CORRUPT, msg, name)
    if not base.weight_shapes:
        return None
    fan_in_fan_out = bool(cfg.get("fan_in_fan_out"))
    for key, shape in shapes.items():
        mismatch = _shape_problem(key[len(PREFIX) :], shape, fan_in_fan_out, base)
        if mismatch is not None:
            return refuse(mismatch[0], mismatch[1], name)
    return None


def _full_copy_key(rel: str) -> str:
    """The base tensor a ``modules_to_save`` copy stands for (saved files drop the wrapper's names)."""
    return rel.replace(".modules_to_save.default.", ".").replace(".original_module.", ".")


def _shape_problem(rel: str, shape: tuple[int, ...], fan_in_fan_out: bool, base: BaseInfo) -> tuple[Rule, str] | None:
    """Why one adapter tensor (name without the peft prefix) does not fit the base, or None."""
    split = _split(rel)
    if split is None:
        if ".token_adapter." in rel:  # trainable tokens: a delta on rows of an embedding the base must have
            module = rel.split(".token_adapter.")[0]
            ok = module + ".weight" in base.weight_shapes
            return None if ok else (Rule.TARGET, f"module {quote(module)} does not exist in the base")
        expected = base.weight_shapes.get(_full_copy_key(rel))
        if expected is None:
            return Rule.TARGET, f"tensor {quote(rel)} has no counterpart in the base"
    else:
        module, kind = split
        base_shape = base.weight_shapes.get(module + ".weight")
        if base_shape is None:
            return Rule.TARGET, f"module {quote(module)} does not exist in the base"
        if len(base_shape) < 2:
            return Rule.TARGET, f"module {quote(module)} of the base is not a linear or embedding layer"
        expected = _expected_shape(kind, base_shape, _rank_of(kind, shape) or 0, fan_in_fan_out)
        shape = shape[: len(expected)]  # conv weights carry kernel dims after (out, in)
    if shape != expected:
        return Rule.BASE, f"tensor {quote(rel)} is {list(shape)} where the base needs {list(expected)} (another base?)"
    return None
