"""A devhub root of hostile and broken model repos, each with the verdict the embedder's safety checks must reach.

``write_bad_repos(root)`` writes a tiny llama-shaped base (hidden size 16, two layers: KBs of weights), good
controls (a LoRA adapter and a full finetune of it), and one repo per attack or breakage: pickle-only weights,
custom code, oversized ranks and parameter counts, adapters for other bases, corrupt safetensors, a missing
shard, a gated repo. Tests, the bench and demos serve it with ``DevhubServer(root)`` and call the real client.
Safetensors files are written by hand (numpy only), so broken ones can be written too.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ORG = "hostile"
BASE_ID = f"{ORG}/tiny-base"
HIDDEN, INTER, LAYERS, VOCAB, HEADS, KV_HEADS = 16, 32, 2, 64, 2, 1
HEAD_DIM = HIDDEN // HEADS
LLAMA_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": HIDDEN,
    "intermediate_size": INTER,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
    "head_dim": HEAD_DIM,
    "vocab_size": VOCAB,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "dtype": "float32",
}
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
Shapes = Mapping[str, tuple[int, ...]]
Files = dict[str, str | bytes]  # a repo: path -> content


@dataclass(frozen=True)
class BadRepo:
    """One repo of the corpus and what fetching it must end in.

    ``outcome``: ``plan`` (downloads and passes), ``refused`` (ModelRefused with ``rule``) or ``unavailable``
    (ModelUnavailable with ``code`` in ``rule``). ``reason``: a substring of the one-line reason.
    """

    repo_id: str
    outcome: str
    rule: str
    reason: str
    kind: str | None = None  # adapter | full, for a plan
    files: tuple[str, ...] = ()  # for a plan: exactly the files downloaded


def base_shapes(hidden: int = HIDDEN, inter: int = INTER, layers: int = LAYERS, vocab: int = VOCAB) -> Shapes:
    """Weight name -> shape of a llama model with these sizes (tied head, as LlamaForCausalLM names them)."""
    kv = KV_HEADS * (hidden // HEADS)
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    for i in range(layers):
        p = f"model.layers.{i}"
        dims = {"q_proj": (hidden, hidden), "k_proj": (kv, hidden), "v_proj": (kv, hidden), "o_proj": (hidden, hidden)}
        out.update({f"{p}.self_attn.{m}.weight": s for m, s in dims.items()})
        out.update({f"{p}.mlp.gate_proj.weight": (inter, hidden), f"{p}.mlp.up_proj.weight": (inter, hidden)})
        out[f"{p}.mlp.down_proj.weight"] = (hidden, inter)
        out.update({f"{p}.input_layernorm.weight": (hidden,), f"{p}.post_attention_layernorm.weight": (hidden,)})
    return out


def lora_shapes(r: int, targets: tuple[str, ...] = ("q_proj", "v_proj"), hidden: int = HIDDEN) -> Shapes:
    """peft's tensor names and shapes for a LoRA of rank ``r`` on ``targets`` of a llama with this hidden size."""
    base = base_shapes(hidden=hidden)
    out: dict[str, tuple[int, ...]] = {}
    for name, (dim_out, dim_in) in ((k, v) for k, v in base.items() if len(v) == 2 and "embed" not in k):
        module = name[: -len(".weight")]
        if module.rsplit(".", 1)[-1] in targets:
            out[f"base_model.model.{module}.lora_A.weight"] = (r, dim_in)
            out[f"base_model.model.{module}.lora_B.weight"] = (dim_out, r)
    return out


def safetensors_bytes(shapes: Shapes, *, seed: int = 0, header: dict[str, Any] | None = None) -> bytes:
    """A valid F32 safetensors file of small random values, or ``header`` verbatim over that data."""
    rng = np.random.default_rng(seed)
    meta: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    chunks, pos = [], 0
    for name, shape in shapes.items():
        data = (rng.standard_normal(math.prod(shape)) * 0.02).astype("<f4").tobytes()
        meta[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [pos, pos + len(data)]}
        chunks.append(data)
        pos += len(data)
    raw = json.dumps(header if header is not None else meta).encode()
    raw += b" " * (-len(raw) % 8)  # padded to 8 bytes, as the safetensors writer does
    return struct.pack("<Q", len(raw)) + raw + b"".join(chunks)


def card(base: str | None = BASE_ID, **meta: Any) -> str:
    lines = [f"base_model: {base}"] if base else []
    lines += [f"{k}: {v}" for k, v in meta.items()]
    return "---\n" + "\n".join(lines) + "\n---\n\n# Test repo\n"


def adapter_config(r: int = 4, targets: Any = ("q_proj", "v_proj"), **extra: Any) -> str:
    cfg: dict[str, Any] = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 8, "bias": "none"}
    cfg.update(
        base_model_name_or_path=BASE_ID, target_modules=list(targets) if not isinstance(targets, str) else targets
    )
    return json.dumps({**cfg, **extra})


def full_config(**changes: Any) -> str:
    return json.dumps({**LLAMA_CONFIG, **changes})


_SPECIAL = ("<unk>", "<s>", "</s>")
# A real (loadable) word-level tokenizer, so the tiny base can be embedded against: the probes' words, then filler.
_WORDS = "Below is an instruction that describes a task Write response appropriately completes the request . : #"
_VOCAB = list(dict.fromkeys([*_SPECIAL, *_WORDS.split(), *(f"w{i}" for i in range(VOCAB))]))[:VOCAB]
TOKENIZER: Files = {
    "tokenizer.json": json.dumps(
        {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {
                    "id": i,
                    "content": t,
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "special": True,
                }
                for i, t in enumerate(_SPECIAL)
            ],
            "normalizer": None,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": None,
            "decoder": None,
            "model": {"type": "WordLevel", "vocab": {t: i for i, t in enumerate(_VOCAB)}, "unk_token": "<unk>"},
        }
    ),
    "tokenizer_config.json": json.dumps(
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "unk_token": "<unk>",
            "bos_token": "<s>",
            "eos_token": "</s>",
            "pad_token": "</s>",
        }
    ),
    "generation_config.json": json.dumps({"bos_token_id": 1, "eos_token_id": 2}),
}
# Files a real training run leaves next to the weights; none may ever be downloaded.
DEBRIS: Files = {
    "training_args.bin": b"PK\x03\x04 pickle of training arguments",
    "optimizer.pt": b"PK\x03\x04 optimizer state",
    "train.py": "import os\nos.system('echo pwned')\n",
    "notes/README.txt": "notes",
}


def _good_adapter(**extra: Any) -> Files:
    lora = safetensors_bytes(lora_shapes(4))
    return {"README.md": card(), "adapter_config.json": adapter_config(**extra), "adapter_model.safetensors": lora}


def _lora_weights(shapes: Shapes) -> Files:
    return {**_good_adapter(), "adapter_model.safetensors": safetensors_bytes(shapes)}


def _good_full(**changes: Any) -> Files:
    weights = safetensors_bytes(base_shapes(), seed=1)
    return {"README.md": card(), "config.json": full_config(**changes), **TOKENIZER, "model.safetensors": weights}


def _full_weights(blob: bytes) -> Files:
    return {**_good_full(), "model.safetensors": blob}


def _forged(header: dict[str, Any] | bytes) -> Files:
    """A full model whose weights hold 64 bytes of data under a forged ``header`` (a dict, or raw bytes)."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return _full_weights(struct.pack("<Q", len(raw)) + raw + bytes(64))


def _truncated() -> Files:
    blob = safetensors_bytes(base_shapes(), seed=1)
    return _full_weights(blob[:-100])


def _sharded(missing: bool = False, bad_name: str | None = None) -> Files:
    shapes = dict(base_shapes())
    names = sorted(shapes)
    half = {n: shapes[n] for n in names[: len(names) // 2]}
    rest = {n: shapes[n] for n in names[len(names) // 2 :]}
    s1, s2 = SHARDS[0], bad_name or SHARDS[1]
    index = {"metadata": {}, "weight_map": {**dict.fromkeys(half, s1), **dict.fromkeys(rest, s2)}}
    files: Files = {"README.md": card(), "config.json": full_config(), s1: safetensors_bytes(half)}
    files["model.safetensors.index.json"] = json.dumps(index)
    if not missing and bad_name is None:
        files[s2] = safetensors_bytes(rest, seed=2)
    return files


def _tensor(dtype: str, shape: list[int], end: int, begin: int = 0) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def _refused(name: str, rule: str, reason: str) -> BadRepo:
    return BadRepo(f"{ORG}/{name}", "refused", rule, reason)


LORA_FILES = ("adapter_config.json", "adapter_model.safetensors")
FULL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
_DUPLICATE = b'{"w":%s,"w":%s}' % ((json.dumps(_tensor("F32", [4, 4], 64)).encode(),) * 2)
_EVIL_TOKENIZER = json.dumps({"auto_map": {"AutoTokenizer": ["tok.Evil", None]}})
_EXTRA_LAYER = {**lora_shapes(4), "base_model.model.model.layers.5.self_attn.q_proj.lora_A.weight": (4, HIDDEN)}

# (expected verdict under default Limits, the repo's files). Folder repos of the corpus.
CASES: tuple[tuple[BadRepo, Callable[[], Files]], ...] = (
    (BadRepo(f"{ORG}/good-lora", "plan", "", "", "adapter", LORA_FILES), lambda: {**_good_adapter(), **DEBRIS}),
    (BadRepo(f"{ORG}/good-full", "plan", "", "", "full", FULL_FILES), lambda: {**_good_full(), **DEBRIS}),
    (
        BadRepo(
            f"{ORG}/good-sharded", "plan", "", "", "full", ("config.json", "model.safetensors.index.json", *SHARDS)
        ),
        _sharded,
    ),
    (
        _refused("pickle-full", "pickle", "pytorch_model.bin: pickle-only weights refused (no .safetensors)"),
        lambda: {"README.md": card(), "config.json": full_config(), "pytorch_model.bin": DEBRIS["optimizer.pt"]},
    ),
    (
        _refused("pickle-adapter", "pickle", "adapter_model.bin: pickle-only weights refused"),
        lambda: {"README.md": card(), "adapter_config.json": adapter_config(), "adapter_model.bin": b"PK\x03\x04"},
    ),
    (
        _refused("auto-map", "custom_code", "config.json: auto_map asks for custom code"),
        lambda: {**_good_full(auto_map={"AutoModelForCausalLM": "modeling_evil.Evil"}), "modeling_evil.py": "1"},
    ),
    (
        _refused("custom-pipeline", "custom_code", "config.json: custom_pipelines asks for custom code"),
        lambda: _good_full(custom_pipelines={"text-generation": {"impl": "pipe.Evil"}}),
    ),
    (
        _refused("custom-tokenizer", "custom_code", "tokenizer_config.json: auto_map asks for custom code"),
        lambda: {**_good_full(), "tokenizer_config.json": _EVIL_TOKENIZER},
    ),
    (
        _refused("peft-import", "custom_code", "adapter_config.json: auto_mapping asks peft to import 'evil_lib'"),
        lambda: _good_adapter(auto_mapping={"base_model_class": "Evil", "parent_library": "evil_lib"}),
    ),
    (
        _refused("rank-huge", "rank", "adapter_config.json: r=4096 exceeds max_adapter_rank 256"),
        lambda: _good_adapter(r=4096),
    ),
    (_refused("rank-hidden", "rank", "r=512 exceeds max_adapter_rank 256"), lambda: _lora_weights(lora_shapes(512))),
    (
        _refused("foo-target", "target", "adapter_config.json: target module 'foo_proj' does not exist in the base"),
        lambda: _good_adapter(targets=("q_proj", "foo_proj")),
    ),
    (
        _refused("extra-layer", "target", "module 'model.layers.5.self_attn.q_proj' does not exist in the base"),
        lambda: _lora_weights(_EXTRA_LAYER),
    ),
    (
        _refused("wrong-base", "base", "is [4, 32] where the base needs [4, 16]"),
        lambda: _lora_weights(lora_shapes(4, hidden=32)),
    ),
    (
        _refused("other-base", "base", "base_model_name_or_path 'someone/other-base' is not the tracked base"),
        lambda: _good_adapter(base_model_name_or_path="someone/other-base"),
    ),
    (
        _refused("prefix-tuning", "unsupported", "peft_type 'PREFIX_TUNING' is not supported"),
        lambda: _good_adapter(peft_type="PREFIX_TUNING"),
    ),
    (_refused("regex-bomb", "config", "nests quantifiers"), lambda: _good_adapter(targets="(a+)+$")),
    (_refused("truncated", "corrupt", "past the end of the data"), _truncated),
    (
        _refused("lying-offsets", "corrupt", "past the end of the data"),
        lambda: _forged({"w": _tensor("F32", [250000, 4], 4_000_000)}),
    ),
    (
        _refused("bad-shape", "corrupt", "is [4, 8] F32 = 128 bytes but its byte range holds 64"),
        lambda: _forged({"w": _tensor("F32", [4, 8], 64)}),
    ),
    (_refused("bad-dtype", "corrupt", "unknown dtype 'F128'"), lambda: _forged({"w": _tensor("F128", [4], 64)})),
    (_refused("not-json-header", "corrupt", "header is not json"), lambda: _forged(b"{not json at all}")),
    (
        _refused("huge-header", "corrupt", "header is too big"),
        lambda: _full_weights(struct.pack("<Q", 200_000_000) + b"{" + b" " * 1000),
    ),
    (_refused("duplicate-keys", "corrupt", "duplicate key 'w'"), lambda: _forged(_DUPLICATE)),
    (
        _refused("gap", "corrupt", "leaving a gap"),
        lambda: _forged({"a": _tensor("F32", [2, 4], 32), "b": _tensor("F32", [1, 4], 64, begin=48)}),
    ),
    (
        _refused("missing-shard", "missing", f"model.safetensors.index.json: names shard '{SHARDS[1]}' that is not"),
        lambda: _sharded(missing=True),
    ),
    (
        _refused("traversal-shard", "path", "not a plain *.safetensors file name"),
        lambda: _sharded(bad_name="../../../../tmp/evil.safetensors"),
    ),
    (
        _refused("big-config", "params", "config.json: declares about"),
        lambda: _good_full(num_hidden_layers=2**24, vocab_size=2**24),
    ),
    (
        _refused("wrong-arch", "base", "config.json: model_type 'gpt2' is not the base's 'llama'"),
        lambda: _good_full(model_type="gpt2"),
    ),
    (
        _refused("quantized", "unsupported", "quantization_config"),
        lambda: _good_full(quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True}),
    ),
    (
        _refused("config-not-object", "config", "config.json: a JSON list, not an object"),
        lambda: {**_good_full(), "config.json": "[1, 2, 3]"},
    ),
    (_refused("gguf-only", "unsupported", "GGUF"), lambda: {"README.md": card(), "model.gguf": b"GGUF" * 8}),
    (
        _refused("not-a-model", "no_weights", "no config.json or adapter_config.json"),
        lambda: {"README.md": card(), "notes.txt": "hello"},
    ),
    (
        _refused("adapter-no-weights", "no_weights", "no adapter_model.safetensors"),
        lambda: {"README.md": card(), "adapter_config.json": adapter_config()},
    ),
    (BadRepo(f"{ORG}/gated", "unavailable", "gated", "gated repo"), _good_adapter),
)

# Catalog-only repos: declared sizes, served as filler with a valid one-tensor header (BF16 when even).
VIRTUAL: tuple[tuple[BadRepo, dict[str, Any]], ...] = (
    (
        _refused("too-many-params", "params", "model.safetensors: 3e+09 parameters exceed max_params 2e+09"),
        {"files": {"model.safetensors": 6_000_000_136}, "config": dict(LLAMA_CONFIG)},
    ),
)


def write_bad_repos(root: Path) -> list[BadRepo]:
    """Write the tiny base, the corpus and its catalog under ``root``; returns the expected verdicts.

    The base is ``BASE_ID`` (config.json, model.safetensors, tokenizer files); every other repo names it as
    ``base_model``. ``hostile/gated`` is gated (``manual``), so an anonymous download is refused.
    """
    base = safetensors_bytes(base_shapes())
    _write(
        root / BASE_ID, {"README.md": card(None), "config.json": full_config(), **TOKENIZER, "model.safetensors": base}
    )
    repos: list[BadRepo] = []
    for expected, files in CASES:
        _write(root / expected.repo_id, files())
        repos.append(expected)
    lines: list[dict[str, Any]] = [{"id": f"{ORG}/gated", "gated": "manual"}]
    for expected, entry in VIRTUAL:
        lines.append({"id": expected.repo_id, "card": {"base_model": BASE_ID}, **entry})
        repos.append(expected)
    (root / "catalog.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return repos


def _write(folder: Path, files: Files) -> None:
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
