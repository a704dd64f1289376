"""The hostile corpus's entries (see ``hostile.py``): repos from issue 16, then invented attacks and carelessness.

Each is built when this module is imported (a few MB, and one 50 MB config string), in well under a second;
``words`` are the file and the rule the one-line reason must name (case-insensitive substrings).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from hubdelta_dev.devhub.badrepos import HIDDEN, LLAMA_CONFIG, VOCAB, base_shapes
from hubdelta_dev.devhub.hostile import (
    HUGE,
    HUGE_BYTES,
    LOOP_A,
    LOOP_B,
    MIRROR,
    NO_SUCH,
    OUTSIDE,
    SELF,
    TINY,
    Files,
    Hostile,
    adapter,
    base_repo,
    base_tensors,
    card,
    deep_json,
    finetune_tensors,
    full,
    llama_config,
    lora_config,
    lora_tensors,
    nan_in,
    pickle_bytes,
    raw_st,
    st_bytes,
)

NAN, INF = float("nan"), float("inf")
A = "adapter_model.safetensors"
AC = "adapter_config.json"
M = "model.safetensors"
C = "config.json"


def outside_files() -> Files:
    """What the escaping symlink points at: a valid adapter that must never be served or embedded."""
    return {"secret/adapter_model.safetensors": st_bytes(lora_tensors(seed=99))}


def _lora(**arrays: Any) -> dict[str, np.ndarray]:
    return {**lora_tensors(), **arrays}


def _one_short() -> bytes:
    t = finetune_tensors()
    del t["model.layers.1.mlp.down_proj.weight"]
    return st_bytes(t)


def _mismatched() -> Files:
    # config says intermediate 32 (the base's); the weights hold 48: from_pretrained would need
    # ignore_mismatched_sizes and re-initialise the MLP silently
    wide = {k: v for k, v in finetune_tensors().items()}
    for name, shape in base_shapes(inter=48).items():
        if "mlp" in name:
            wide[name] = (np.random.default_rng(5).standard_normal(shape) * 0.02).astype("<f4")
    return full(st_bytes(wide))


def _gpt2_lora() -> bytes:
    g = np.random.default_rng(3)
    return st_bytes({f"base_model.model.transformer.h.{i}.attn.c_attn.lora_{x}.weight": (
        g.standard_normal((4, HIDDEN) if x == "A" else (3 * HIDDEN, 4)) * 0.1).astype("<f4")
        for i in range(2) for x in "AB"})  # fmt: skip


def _lm_head_lora() -> bytes:
    g = np.random.default_rng(4)
    return st_bytes(
        {
            "base_model.model.lm_head.lora_A.weight": (g.standard_normal((4, HIDDEN)) * 0.3).astype("<f4"),
            "base_model.model.lm_head.lora_B.weight": (g.standard_normal((VOCAB, 4)) * 0.1).astype("<f4"),
        }
    )


def _transposed() -> bytes:
    return st_bytes({k: np.ascontiguousarray(v.T) if "lora_A" in k else v for k, v in lora_tensors().items()})


def _good(name: str, files: Files, why: str, **kw: Any) -> Hostile:
    return Hostile(name, "embedded", (), files, why=why, **kw)


def _failed(name: str, words: tuple[str, ...], files: Files, why: str, **kw: Any) -> Hostile:
    return Hostile(name, "failed", words, files, why=why, **kw)


_Q = b'"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"'
_DUP = b"{" + _Q + b':{"dtype":"F32","shape":[4,16],"data_offsets":[0,256]},' + _Q + \
       b':{"dtype":"F32","shape":[4,16],"data_offsets":[0,256]}}'  # fmt: skip
_NAN_SHAPE = b'{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":' \
             b'{"dtype":"F32","shape":[NaN,16],"data_offsets":[0,64]}}'  # fmt: skip
_F16_LIE = {name: {"dtype": "F16", "shape": list(a.shape), "data_offsets": [0, a.size * 2]}
            for name, a in list(lora_tensors().items())[:1]}  # fmt: skip
_LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 123456\n"

ISSUE: tuple[Hostile, ...] = (
    Hostile(TINY, "absent", files=base_repo(card(None, license="apache-2.0")), why="the tiny base (tracked)"),
    Hostile(MIRROR, "absent", files=base_repo(card(None)), why="a mirror of the base, naming no base itself"),
    _good("good-lora", adapter(), "a real LoRA of the tiny base"),
    _good(
        "good-lora-mlp",
        adapter(
            st_bytes(lora_tensors(2, ("gate_proj", "up_proj", "down_proj"))),
            lora_config(2, ("gate_proj", "up_proj", "down_proj")),
        ),
        "a rank-2 MLP LoRA",
    ),
    _good("good-full", full(), "a full finetune of the tiny base"),
    _good(
        "mirror-named",
        adapter(config=lora_config(base_model_name_or_path=MIRROR)),
        "adapter_config names a mirror of the base (same shapes): must embed",
    ),
    _failed("nan-lora-a", (A, "nan"), adapter(nan_in(lora_tensors(), NAN, index=3)), "one NaN in a lora_A"),
    _failed("alpha-nan", (AC, "lora_alpha"), adapter(config=lora_config(lora_alpha=NAN)), "lora_alpha NaN"),
    _failed("alpha-inf", (AC, "lora_alpha"), adapter(config=lora_config(lora_alpha=INF)), "lora_alpha Infinity"),
    _failed("alpha-1e300", (AC, "lora_alpha"), adapter(config=lora_config(lora_alpha=1e300)), "lora_alpha 1e300"),
    _failed(
        "alpha-pattern-nan",
        (AC, "alpha_pattern"),
        adapter(config=lora_config(alpha_pattern={"q_proj": NAN})),
        "NaN in alpha_pattern",
    ),
    _failed("inf-weights", (A, "inf"), adapter(nan_in(lora_tensors(), INF, every=True)), "inf in lora_A"),
    _failed("huge-weights", (A,), adapter(nan_in(lora_tensors(), 1e30, every=True)), "1e30 weights"),
    _failed("full-nan", (M, "nan"), full(nan_in(finetune_tensors(), NAN, every=True)), "a full model of NaN"),
    _good("card-tags-int", adapter(readme=card(tags=2024)), "tags: 2024 (a YAML integer)"),
    _good("card-eval-results", adapter(readme=card(eval_results=5)), "eval_results: 5"),
    _good(
        "card-ignore-errors",
        adapter(readme=card(ignore_metadata_errors=False)),
        "ignore_metadata_errors: false in the card (a keyword the client passes itself)",
    ),
    _good("created-0001", adapter(), "createdAt in year 0001", catalog={"createdAt": "0001-01-01T00:00:00.000Z"}),
    _good("created-9999", adapter(), "createdAt in year 9999", catalog={"createdAt": "9999-12-31T23:59:59.000Z"}),
    _good("downloads-2p70", adapter(), "downloads: 2**70", catalog={"downloads": 2**70}),
    Hostile(
        "card-invalid-yaml",
        "absent",
        why="invalid card YAML: the Hub derives no base_model tag from it",
        catalog={
            "card": {},
            "card_text": "---\nbase_model: [" + TINY + "\nlicense: {{\n---\n# broken\n",
            "files": {A: 4096},
        },
    ),
    Hostile(
        HUGE,
        "absent",
        why="a base declaring a 25 GB model.safetensors (tracked)",
        catalog={"card": {}, "config": dict(LLAMA_CONFIG), "files": {M: HUGE_BYTES}},
    ),
    _failed(
        "child-of-huge",
        (M,),
        adapter(readme=card(HUGE), config=lora_config(base_model_name_or_path=HUGE)),
        "names the 25 GB base: the base must be refused before its download",
    ),
    _failed(
        "full-only-embed",
        (M,),
        full(st_bytes({"model.embed_tokens.weight": base_tensors()["model.embed_tokens.weight"]})),
        "a full finetune holding only embed_tokens",
    ),
    _failed("full-one-short", (M, "down_proj"), full(_one_short()), "a full finetune one tensor short"),
    _failed(
        "vocab-10m",
        (C, "parameters"),
        full(st_bytes({"w": np.zeros(5000, "<f4")}), llama_config(vocab_size=10_000_000)),
        "vocab_size 10,000,000 with a 20 KB file",
    ),
    Hostile(
        "lora-b-zero", "unchanged", ("no change",), adapter(st_bytes(lora_tensors(b_scale=0.0))), why="untrained: B = 0"
    ),
    Hostile("alpha-zero", "unchanged", ("no change",), adapter(config=lora_config(lora_alpha=0)), why="lora_alpha: 0"),
    Hostile(
        "lm-head-only",
        "unchanged",
        ("no change",),
        adapter(_lm_head_lora(), lora_config(targets=("lm_head",))),
        why="a LoRA only on lm_head: no change to the hidden activations",
    ),
    Hostile(SELF, "absent", files=full(readme=card(SELF)), why="a card naming itself as base (tracked)"),
    _failed(
        "symlink-escape",
        (A,),
        {k: v for k, v in adapter().items() if k != A},
        "adapter_model.safetensors is a symlink out of the repo",
        links={A: f"../../../{OUTSIDE}/secret/adapter_model.safetensors"},
    ),
    _failed("nan-shape", (A, "shape"), adapter(raw_st(_NAN_SHAPE)), "NaN in a safetensors header's shape"),
    _good(
        "attn-implementation",
        full(config=llama_config(attn_implementation="kernels-community/evil-attention")),
        "a Hub kernel named by an untrusted config: ignored (the attention is ours), the finetune embeds",
    ),
    _failed("ignore-mismatched", (M,), _mismatched(), "weights of another size than the config says"),
    _failed(
        "pickle-full",
        ("pytorch_model.bin", "pickle"),
        {"README.md": card(), C: llama_config(), "pytorch_model.bin": pickle_bytes()},
        "a pickle that calls os.system (KeyError: 'os.system')",
    ),
)

INVENTED: tuple[Hostile, ...] = (
    _failed("truncated", (A,), adapter(st_bytes(lora_tensors())[:-200]), "a safetensors file cut short"),
    _failed("header-length-lie", (A, "header"), adapter(raw_st({}, length=2**63)), "header length 2**63"),
    _failed(
        "header-length-90mb",
        (A,),
        adapter(raw_st({}, length=90_000_000)),
        "a 90 MB header length (under the cap) in a 100-byte file",
    ),
    _failed("duplicate-names", (A, "duplicate"), adapter(raw_st(_DUP, bytes(256))), "a tensor name given twice"),
    _failed("dtype-lie", (A,), adapter(st_bytes(lora_tensors(), header=_F16_LIE)), "F16 declared over F32 bytes"),
    _failed("transposed", (A,), adapter(_transposed()), "lora_A transposed"),
    _failed("rank-zero", (AC,), adapter(st_bytes(lora_tensors(0)), lora_config(0)), "r = 0, empty tensors"),
    _failed("rank-1e6", (AC, "max_adapter_rank"), adapter(config=lora_config(1_000_000)), "r = 10^6 in config"),
    _failed("rank-negative", (AC,), adapter(config=lora_config(-4)), "r = -4"),
    _failed("rank-string", (AC,), adapter(config=lora_config("4")), 'r = "4"'),
    _failed(
        "scalar-lora",
        (A,),
        adapter(
            st_bytes(
                _lora(**{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.float32(1.0).reshape(())})
            )
        ),
        "a rank-0 (scalar) lora_A",
    ),
    _failed("empty-weights", (A,), adapter(b""), "a 0-byte adapter_model.safetensors"),
    _failed("lfs-pointer", (A,), adapter(_LFS_POINTER.encode()), "a git-lfs pointer committed as the weights"),
    _failed("adapter-config-list", (AC, "object"), adapter(config="[1, 2, 3]"), "adapter_config.json is a list"),
    _failed("config-deep", (C,), full(config=deep_json(100_000)), "config.json nested 100,000 deep"),
    _failed(
        "config-50mb", (C,), full(config=json.dumps({**LLAMA_CONFIG, "pad": "x" * 50_000_000})), "a 50 MB config.json"
    ),
    _failed(
        "config-not-utf8",
        (C,),
        full(config="\udcff".encode("utf-8", "surrogateescape") + b"{}"),  # type: ignore[arg-type]
        "config.json that is not UTF-8",
    ),
    _failed(
        "targets-nothing",
        (AC, "target"),
        adapter(config=lora_config(targets=("nonexistent_proj",))),
        "target_modules naming no module of the base",
    ),
    _failed(
        "modules-to-save",
        (AC, "evil_head"),
        adapter(config=lora_config(modules_to_save=["evil_head"])),
        "modules_to_save naming a module the base lacks",
    ),
    _failed(
        "gpt2-adapter",
        ("c_attn",),
        adapter(_gpt2_lora(), lora_config(targets=("c_attn",))),
        "an adapter for another architecture under this base's tag",
    ),
    Hostile("gated-lora", "skipped", ("gated",), adapter(), catalog={"gated": "auto"}, why="a gated adapter"),
    Hostile("private-lora", "absent", files=adapter(), catalog={"private": True}, why="private: never listed"),
    _failed("only-readme", (C,), {"README.md": card()}, "a repo holding only a README"),
    Hostile(
        "no-files-at-all",
        "absent",
        files={".gitattributes": "*.bin filter=lfs\n"},
        why="an empty repo (no card, no tags)",
    ),
    _failed(
        "bin-only-adapter",
        ("adapter_model.bin", "pickle"),
        {"README.md": card(), AC: lora_config(), "adapter_model.bin": pickle_bytes()},
        "pickle-only adapter",
    ),
    # Not led by a dot: devhub, like a checkout, leaves hidden names out of its listing.
    _failed(
        "backslash-name",
        ("evil.txt", "backslashes"),
        {**adapter(), "notes\\..\\..\\evil.txt": "x"},
        "a file name with backslashes",
    ),
    _good(
        "unicode-file-names",
        {**adapter(), "notes/ümlaut ☃ 日本.txt": "fine", "-rf": "fine"},
        "harmless unicode and dash-led file names next to good weights",
    ),
    Hostile("Ünïcode-repo", "absent", files=adapter(), why="a unicode repo name (no valid Hub id)"),
    _failed(
        "child-of-nowhere",
        (NO_SUCH,),
        adapter(readme=card(NO_SUCH), config=lora_config(base_model_name_or_path=NO_SUCH)),
        "its base (tracked unchecked) does not exist",
    ),
    Hostile(LOOP_A, "absent", files=full(readme=card(LOOP_B)), why="circular base chain: a names b (tracked)"),
    _good(
        LOOP_B,
        full(st_bytes(finetune_tensors(seed=7)), readme=card(LOOP_A)),
        "circular base chain: b names a, and a is a loadable model",
    ),
    _failed(
        "virtual-filler",
        (AC,),
        {},
        "catalog-only adapter whose files are filler bytes",
        catalog={"card": {"base_model": TINY}, "files": {AC: 300, A: 4096}},
    ),
    _failed(
        "nested-checkpoint",
        (AC,),
        {"README.md": card(), **{f"checkpoint-500/{k}": v for k, v in adapter().items() if k != "README.md"}},
        "adapter files only in a checkpoint folder",
    ),
    Hostile(
        "quantized-gguf",
        "discovered",
        ("quantized",),
        {"README.md": card(), "model-Q4_K_M.gguf": b"GGUF" * 16},
        why="a GGUF child: recorded, never embedded",
    ),
    _failed("dora", (AC,), adapter(config=lora_config(use_dora=True)), "use_dora: a LoRA variant we do not compute"),
)

CASES: tuple[Hostile, ...] = ISSUE + INVENTED
