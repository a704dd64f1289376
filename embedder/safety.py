"""What may be downloaded and loaded from an untrusted model repo: pure decisions, no I/O.

Every model on the Hub is third-party code and data. The decisions run in the order a fetch can afford them:

1. :func:`triage` — from the file listing alone: file names, what kind of repo, which files are weights;
2. :func:`check_configs` — from the small JSON configs: custom code, quantization, the base, adapter rules;
3. :func:`weight_files` — the weight files, shards named by an index included;
4. :func:`check_weights` — from the safetensors headers: valid layout, parameter counts, adapter shapes, sizes.

:func:`check_repo` runs all four and returns a :class:`Plan` (what to download) or a :class:`Refusal` whose
``reason`` is the one line a worker stores as the model's status reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from hubdelta.embedder import safety_adapter, safety_full
from hubdelta.embedder.safety_header import check_safetensors_header, header_params, quote
from hubdelta.embedder.safety_records import (
    BaseInfo,
    Limits,
    Plan,
    Refusal,
    RepoKind,
    Rule,
    Triage,
    refuse,
)

__all__ = [
    "BaseInfo",
    "Limits",
    "Plan",
    "Refusal",
    "RepoKind",
    "Rule",
    "Triage",
    "check_configs",
    "check_disk",
    "check_repo",
    "check_seq_len",
    "check_weights",
    "parse_json_config",
    "path_problem",
    "refuse",
    "triage",
    "weight_files",
]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
TOKENIZER_FILES = (
    "tokenizer.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
CODE_KEYS = ("auto_map", "custom_pipelines")  # config keys that make transformers import repo code
# A file we download is named by the plan at the repo root; the name is also used as an fnmatch pattern by
# snapshot_download, so it must hold no glob characters.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")
PICKLE_FIX = "opt in with [embed] allow_pickle = true"


def human_bytes(n: float) -> str:
    """``24.6 kB``, ``3.1 GB``: decimal units, as the Hub shows sizes."""
    for unit in ("B", "kB", "MB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def parse_json_config(name: str, raw: bytes, limits: Limits) -> dict[str, Any] | Refusal:
    """Decode one JSON config of an untrusted repo: bounded size, UTF-8, an object; deep nesting refused."""
    if len(raw) > limits.max_config_bytes:
        return refuse(Rule.SIZE, f"{len(raw)} bytes, over max_config_bytes {limits.max_config_bytes}", name)
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return refuse(Rule.CONFIG, "not UTF-8", name)
    except RecursionError:  # [[[[...]]]] nested past the parser's stack
        return refuse(Rule.CONFIG, "JSON nested too deeply", name)
    except ValueError as e:  # JSONDecodeError, and ints past Python's digit limit
        return refuse(Rule.CONFIG, f"not valid JSON ({str(e)[:80]})", name)
    if not isinstance(value, dict):
        return refuse(Rule.CONFIG, f"a JSON {type(value).__name__}, not an object", name)
    return value


def path_problem(name: str) -> str | None:
    """Why a file name from a listing is unsafe (absolute, traversal, control characters), or None."""
    if not name or len(name) > 1024:
        return "empty or over-long file name"
    if not name.isprintable() or "\\" in name:
        return "file name holds control characters or backslashes"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "absolute file path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "file name with '..', '.' or empty segments (path traversal)"
    return None


def triage(files: Mapping[str, int], limits: Limits) -> Triage | Refusal:
    """Decide from the listing alone (path -> size in bytes): file names, kind, weight files, pickle.

    A single unsafe file name refuses the whole repo: nothing honest needs one.
    """
    for name, size in files.items():
        problem = path_problem(name)
        if problem:
            return refuse(Rule.PATH, f"{problem}; the repo is refused", name)
        if type(size) is not int or size < 0:
            return refuse(Rule.SIZE, f"the listing gives no size ({size!r})", name)
    root = frozenset(n for n in files if "/" not in n)
    if "adapter_config.json" in root:
        found = _adapter_weights(root, limits)
    elif "config.json" in root:
        found = _full_weights(root, limits)
    else:
        gguf = sorted(n for n in root if n.endswith(".gguf"))
        if gguf:
            return refuse(Rule.UNSUPPORTED, "GGUF (quantized) weights are not embedded", gguf[0])
        return refuse(Rule.NO_WEIGHTS, "no config.json or adapter_config.json at the repo root")
    if isinstance(found, Refusal):
        return found
    for name in found.configs:
        if files[name] > limits.max_config_bytes:
            return refuse(Rule.SIZE, f"{files[name]} bytes, over max_config_bytes {limits.max_config_bytes}", name)
    return found


def _pickle_refusal(name: str) -> Refusal:
    return refuse(Rule.PICKLE, f"pickle-only weights refused (no .safetensors); {PICKLE_FIX}", name)


def _adapter_weights(root: frozenset[str], limits: Limits) -> Triage | Refusal:
    if "adapter_model.safetensors" in root:
        weights, pickle = ("adapter_model.safetensors",), False
    elif "adapter_model.bin" in root:
        if not limits.allow_pickle:
            return _pickle_refusal("adapter_model.bin")
        weights, pickle = ("adapter_model.bin",), True
    else:
        return refuse(Rule.NO_WEIGHTS, "no adapter_model.safetensors next to it", "adapter_config.json")
    return Triage(RepoKind.ADAPTER, ("adapter_config.json",), weights, None, (), pickle)


def _full_weights(root: frozenset[str], limits: Limits) -> Triage | Refusal:
    configs = tuple(n for n in ("config.json", "tokenizer_config.json") if n in root)
    extras = tuple(n for n in TOKENIZER_FILES if n in root)
    for single, index, pickle in (
        ("model.safetensors", "model.safetensors.index.json", False),
        ("pytorch_model.bin", "pytorch_model.bin.index.json", True),
    ):
        if pickle and not limits.allow_pickle and (single in root or index in root):
            return _pickle_refusal(single if single in root else index)
        if single in root:
            return Triage(RepoKind.FULL, configs, (single,), None, extras, pickle)
        if index in root:
            return Triage(RepoKind.FULL, (*configs, index), (), index, extras, pickle)
    pickles = sorted(n for n in root if n.endswith(PICKLE_SUFFIXES))
    if pickles and not limits.allow_pickle:
        return _pickle_refusal(pickles[0])
    gguf = sorted(n for n in root if n.endswith(".gguf"))
    if gguf:
        return refuse(Rule.UNSUPPORTED, "GGUF (quantized) weights are not embedded", gguf[0])
    return refuse(Rule.NO_WEIGHTS, "no model.safetensors or model.safetensors.index.json next to it", "config.json")


def check_configs(t: Triage, configs: Mapping[str, Any], base: BaseInfo, limits: Limits) -> Refusal | None:
    """Rules on the decoded JSON configs (every name in ``t.configs`` must be present in ``configs``)."""
    for name in t.configs:
        cfg = configs.get(name)
        if not isinstance(cfg, dict):
            return refuse(Rule.CONFIG, "not a JSON object", name)
        for key in CODE_KEYS:
            if cfg.get(key):
                return refuse(Rule.CUSTOM_CODE, f"{key} asks for custom code (trust_remote_code is never used)", name)
    if t.kind is RepoKind.ADAPTER:
        return safety_adapter.check_adapter_config(configs["adapter_config.json"], base, limits)
    return _check_full_config(configs["config.json"], base, limits)


DIM_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size", "num_attention_heads")


def _check_full_config(cfg: dict[str, Any], base: BaseInfo, limits: Limits) -> Refusal | None:
    if cfg.get("quantization_config"):
        return refuse(Rule.UNSUPPORTED, "quantization_config: quantized weights are not embedded", "config.json")
    model_type = cfg.get("model_type")
    if base.model_type and model_type != base.model_type:
        return refuse(Rule.BASE, f"model_type {quote(model_type)} is not the base's {base.model_type!r}", "config.json")
    dims = {k: cfg[k] for k in DIM_KEYS if k in cfg}
    for key, value in dims.items():
        if type(value) is not int or not 0 < value < 2**31:
            return refuse(Rule.CONFIG, f"{key} = {quote(value)} is not a positive 32-bit integer", "config.json")
    if base.hidden_size and dims.get("hidden_size", base.hidden_size) != base.hidden_size:
        msg = f"hidden_size {dims['hidden_size']} differs from the base's {base.hidden_size}"
        return refuse(Rule.BASE, msg, "config.json")
    # A constructor allocates what the config declares before any weight is read: bound that too.
    h, inter = dims.get("hidden_size", 0), dims.get("intermediate_size", 0)
    declared = dims.get("vocab_size", 0) * h * 2 + dims.get("num_hidden_layers", 0) * (4 * h * h + 3 * h * inter)
    if declared > 2 * limits.max_params:
        msg = f"declares about {declared:.1e} parameters, over twice max_params {limits.max_params:.0e}"
        return refuse(Rule.PARAMS, msg, "config.json")
    return safety_full.check_declared_size(declared, base)  # relative to the base, not only absolute


def weight_files(
    t: Triage, configs: Mapping[str, Any], files: Mapping[str, int], limits: Limits
) -> tuple[str, ...] | Refusal:
    """The weight files to download: ``t.weights``, or the shards the index names (each must be listed)."""
    if t.index is None:
        return t.weights
    weight_map = configs[t.index].get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        return refuse(Rule.CONFIG, "no weight_map of tensor -> shard file", t.index)
    shards = sorted({str(v) for v in weight_map.values()})
    if len(shards) > limits.max_shards:
        return refuse(Rule.SIZE, f"{len(shards)} shards, over max_shards {limits.max_shards}", t.index)
    suffix = ".bin" if t.pickle else ".safetensors"
    for shard in shards:
        if not SAFE_NAME.match(shard) or not shard.endswith(suffix):
            return refuse(Rule.PATH, f"names shard {quote(shard)}, not a plain *{suffix} file name", t.index)
        if shard not in files:
            return refuse(Rule.MISSING, f"names shard {quote(shard)} that is not in the repo", t.index)
    return tuple(shards)


def check_weights(
    t: Triage,
    weights: tuple[str, ...],
    configs: Mapping[str, Any],
    headers: Mapping[str, Mapping[str, Any]],
    files: Mapping[str, int],
    base: BaseInfo,
    limits: Limits,
    *,
    header_lens: Mapping[str, int] | None = None,
) -> Plan | Refusal:
    """Rules on the safetensors headers (one per weight file unless pickle), parameter counts and sizes."""
    params: int | None = None
    if not t.pickle:
        params = 0
        for name in weights:
            header = headers.get(name)
            if header is None:
                return refuse(Rule.CORRUPT, "safetensors header not read", name)
            error = check_safetensors_header(
                header, files[name], (header_lens or {}).get(name), max_tensors=limits.max_tensors
            )
            if error:
                return refuse(Rule.CORRUPT, error, name)
            params += header_params(header)
        refusal = _check_params(t, weights, params, configs, headers, base, limits)
        if refusal:
            return refusal
    return _check_sizes(t, weights, files, params, limits)


def _check_params(
    t: Triage,
    weights: tuple[str, ...],
    params: int,
    configs: Mapping[str, Any],
    headers: Mapping[str, Mapping[str, Any]],
    base: BaseInfo,
    limits: Limits,
) -> Refusal | None:
    cap = limits.max_adapter_params if t.kind is RepoKind.ADAPTER else limits.max_params
    if params > cap:
        what = "max_adapter_params" if t.kind is RepoKind.ADAPTER else "max_params"
        return refuse(Rule.PARAMS, f"{params:.2g} parameters exceed {what} {cap:.0e}", weights[0])
    if t.kind is RepoKind.ADAPTER:
        name = weights[0]
        return safety_adapter.check_adapter_tensors(name, headers[name], configs["adapter_config.json"], base, limits)
    return None


def _check_sizes(
    t: Triage, weights: tuple[str, ...], files: Mapping[str, int], params: int | None, limits: Limits
) -> Plan | Refusal:
    chosen = sorted({*t.configs, *weights, *t.extras})
    for name in chosen:
        size = files[name]
        if size > limits.max_file_bytes:
            msg = f"{human_bytes(size)}, over max_file_bytes {human_bytes(limits.max_file_bytes)}"
            return refuse(Rule.SIZE, msg, name)
    total = sum(files[n] for n in chosen)
    if total > limits.max_total_bytes:
        msg = f"the download is {human_bytes(total)}, over max_total_bytes {human_bytes(limits.max_total_bytes)}"
        return refuse(Rule.SIZE, msg)
    return Plan(t.kind, t.configs, weights, t.extras, total, params, t.pickle)


def check_repo(
    files: Mapping[str, int],
    configs: Mapping[str, Any],
    headers: Mapping[str, Mapping[str, Any]],
    base: BaseInfo,
    limits: Limits,
    *,
    header_lens: Mapping[str, int] | None = None,
) -> Plan | Refusal:
    """Every rule, in order: the plan for this repo or the first refusal.

    Args:
        files: the repo's files, path -> size in bytes.
        configs: decoded JSON of the files :func:`triage` lists as ``configs`` (absent ones are refused).
        headers: decoded safetensors header of every weight file (not needed for pickle weights).
        base: the tracked base the repo is embedded against.
        limits: the bounds.
        header_lens: each header's byte length, when known (local files): enables the exact layout check.

    Returns:
        A :class:`Plan` naming the files to download, or a :class:`Refusal`.
    """
    t = triage(files, limits)
    if isinstance(t, Refusal):
        return t
    refusal = check_configs(t, configs, base, limits)
    if refusal:
        return refusal
    weights = weight_files(t, configs, files, limits)
    if isinstance(weights, Refusal):
        return weights
    return check_weights(t, weights, configs, headers, files, base, limits, header_lens=header_lens)


def check_disk(need: int, cache_used: int, free: int, limits: Limits) -> Refusal | None:
    """Whether a download of ``need`` bytes fits the cache budget and leaves ``min_free_bytes`` free (retryable)."""
    if cache_used + need > limits.disk_budget_bytes:
        msg = (
            f"the download ({human_bytes(need)}) would take the cache to {human_bytes(cache_used + need)}, "
            f"over the disk budget of {human_bytes(limits.disk_budget_bytes)} ([embed] disk_budget_gb)"
        )
        return refuse(Rule.DISK, msg, retryable=True)
    if free - need < limits.min_free_bytes:
        msg = f"the download ({human_bytes(need)}) would leave {human_bytes(free - need)} free on the cache's disk"
        return refuse(Rule.DISK, msg, retryable=True)
    return None


def check_seq_len(n_tokens: int, limits: Limits) -> Refusal | None:
    """Whether a tokenized probe fits ``max_seq_len`` (check before the forward pass: a finetune's own tokenizer or
    chat template can turn a short probe into a long sequence)."""
    if n_tokens > limits.max_seq_len:
        return refuse(Rule.SIZE, f"a probe is {n_tokens} tokens, over max_seq_len {limits.max_seq_len}")
    return None
