"""A generated devhub root of hostile repos for the end-to-end containment test (tests/test_hostile.py).

Unlike ``badrepos`` (which checks the embedder's fetch verdicts one repo at a time), this corpus is crawled and
embedded through the whole pipeline: every entry declares the status it must end in (``embedded``,
``unchanged``, ``failed``, ``skipped``, ``discovered`` or ``absent`` = never recorded) and the words its one-line
reason must contain (the file and the rule). Nothing is committed: ``write_hostile_root(root)`` writes every
repo (KBs), the catalog and the outside-the-root target of a symlink, and returns the entries. The cases live
in ``hostile_cases.py``.

Bases: ``TINY`` (a loadable tiny llama; named like the Hub's SmolLM2 so an adapter can name its mirror), a
catalog-only base declaring a 25 GB ``model.safetensors``, a repo whose card names itself, one end of a circular
base chain, and an id that does not exist (tracked with ``--no-check``). ``TRACKED`` lists them.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hubdelta_dev.devhub.badrepos import LLAMA_CONFIG, TOKENIZER, base_shapes

ORG = "evil"
TINY = "HuggingFaceTB/SmolLM2-135M-Instruct"  # tiny weights under the real name, so a mirror can be named
MIRROR = "unsloth/SmolLM2-135M-Instruct"
HUGE = f"{ORG}/huge-base"
SELF = f"{ORG}/self-base"
LOOP_A, LOOP_B = f"{ORG}/loop-a", f"{ORG}/loop-b"
NO_SUCH = f"{ORG}/no-such-base"
TRACKED: tuple[tuple[str, bool], ...] = ((TINY, True), (HUGE, True), (SELF, True), (LOOP_A, True), (NO_SUCH, False))
HUGE_BYTES = 25_000_000_000
OUTSIDE = "outside-the-root"  # sibling folder of the root: a symlink in the corpus points into it
STATUSES = ("embedded", "unchanged", "failed", "skipped", "discovered", "absent")  # unchanged: a delta of ~0
Files = dict[str, str | bytes]


@dataclass(frozen=True)
class Hostile:
    """One repo of the corpus, what it must end as after two crawls and embeds, and why."""

    name: str  # repo id without the org (or a full id with "/")
    expect: str  # one of STATUSES
    words: tuple[str, ...] = ()  # case-insensitive substrings of the reason: the file and the rule
    files: Files = field(default_factory=dict, repr=False)  # a folder repo; empty for catalog-only
    catalog: Mapping[str, Any] | None = None  # a catalog.jsonl line (without id): overrides or a virtual repo
    links: Mapping[str, str] = field(default_factory=dict)  # path in the repo -> symlink target
    why: str = ""  # the attack or carelessness it stands for

    @property
    def repo_id(self) -> str:
        return self.name if "/" in self.name else f"{ORG}/{self.name}"

    def __post_init__(self) -> None:
        assert self.expect in STATUSES, self.expect


# ---- weights ----------------------------------------------------------------------------------------------------


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def st_bytes(tensors: Mapping[str, np.ndarray], header: Mapping[str, Any] | None = None) -> bytes:
    """A safetensors file of these arrays (F32 unless the array says F16/BF16-free dtypes), or ``header`` over them."""
    names = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<i8"): "I64"}
    meta: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    chunks, pos = [], 0
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr).tobytes()
        meta[name] = {"dtype": names[arr.dtype], "shape": list(arr.shape), "data_offsets": [pos, pos + len(data)]}
        chunks.append(data)
        pos += len(data)
    raw = (json.dumps(header if header is not None else meta)).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(chunks)


def raw_st(header: bytes | Mapping[str, Any], data: bytes = bytes(64), length: int | None = None) -> bytes:
    """A safetensors file with this header (raw or as JSON, NaN allowed) and declared length ``length``."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def base_tensors(seed: int = 0, **sizes: int) -> dict[str, np.ndarray]:
    """The tiny llama's weights (small random values; norms at one)."""
    g = rng(seed)
    out = {}
    for name, shape in base_shapes(**sizes).items():
        out[name] = np.ones(shape, "<f4") if len(shape) == 1 else (g.standard_normal(shape) * 0.02).astype("<f4")
    return out


def finetune_tensors(seed: int = 1, scale: float = 0.01) -> dict[str, np.ndarray]:
    g = rng(seed)
    return {k: (v + g.standard_normal(v.shape) * scale).astype("<f4") for k, v in base_tensors().items()}


def lora_tensors(r: int = 4, targets: tuple[str, ...] = ("q_proj", "v_proj"), seed: int = 2,
                 b_scale: float = 0.05) -> dict[str, np.ndarray]:  # fmt: skip
    """peft-named LoRA weights of rank ``r`` on ``targets`` (attention and MLP projections) of the tiny base."""
    g = rng(seed)
    out = {}
    for name, shape in base_shapes().items():
        module = name.removesuffix(".weight")
        if len(shape) != 2 or "embed" in name or module.rsplit(".", 1)[-1] not in targets:
            continue
        dim_out, dim_in = shape
        out[f"base_model.model.{module}.lora_A.weight"] = (g.standard_normal((r, dim_in)) * 0.3).astype("<f4")
        out[f"base_model.model.{module}.lora_B.weight"] = (g.standard_normal((dim_out, r)) * b_scale).astype("<f4")
    return out


# ---- configs and cards ------------------------------------------------------------------------------------------


def card(base: str | list[str] | None = TINY, **meta: Any) -> str:
    """A README whose front matter is ``base_model`` and ``meta`` (values written as JSON, which YAML reads)."""
    lines = [f"base_model: {json.dumps(base)}"] if base else []
    lines += [f"{k}: {json.dumps(v)}" for k, v in meta.items()]
    return "---\n" + "\n".join(lines) + "\n---\n\n# A hostile test repo\n"


def lora_config(r: Any = 4, targets: Any = ("q_proj", "v_proj"), **extra: Any) -> str:
    cfg: dict[str, Any] = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 8, "bias": "none",
                           "base_model_name_or_path": TINY,
                           "target_modules": list(targets) if isinstance(targets, tuple) else targets}  # fmt: skip
    return json.dumps({**cfg, **extra})  # NaN and Infinity are written as the bare literals Python's json allows


def llama_config(**changes: Any) -> str:
    return json.dumps({**LLAMA_CONFIG, **changes})


def adapter(weights: bytes | None = None, config: str | None = None, readme: str | None = None) -> Files:
    """An adapter repo: the good one unless a file is given."""
    return {"README.md": readme if readme is not None else card(),
            "adapter_config.json": config if config is not None else lora_config(),
            "adapter_model.safetensors": weights if weights is not None else st_bytes(lora_tensors())}  # fmt: skip


def full(weights: bytes | None = None, config: str | None = None, readme: str | None = None) -> Files:
    """A full finetune repo of the tiny base: the good one unless a file is given."""
    return {"README.md": readme if readme is not None else card(), **TOKENIZER,
            "config.json": config if config is not None else llama_config(),
            "model.safetensors": weights if weights is not None else st_bytes(finetune_tensors())}  # fmt: skip


def base_repo(readme: str, seed: int = 0) -> Files:
    return full(st_bytes(base_tensors(seed)), readme=readme)


def pickle_bytes() -> bytes:
    """A pickle whose unpickling would call ``os.system`` (``dumps`` only records the call; nothing runs)."""
    import os
    import pickle

    class Evil:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return os.system, ("echo pwned",)

    return pickle.dumps(Evil(), protocol=4)


def deep_json(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def nan_in(tensors: dict[str, np.ndarray], value: float, *, index: int = 0, every: bool = False) -> bytes:
    """The first tensor of ``tensors`` with ``value`` at ``index`` (or everywhere), as safetensors."""
    first = next(iter(tensors))
    arr = tensors[first].copy()
    if every:
        arr[...] = value
    else:
        arr.flat[index] = value
    return st_bytes({**tensors, first: arr})


def total(tensors: Mapping[str, np.ndarray]) -> int:
    return sum(math.prod(a.shape) for a in tensors.values())


# ---- writing the root -------------------------------------------------------------------------------------------


def write_hostile_root(root: Path) -> list[Hostile]:
    """Write the corpus under ``root`` (and its symlink target under ``root.parent / OUTSIDE``); the entries."""
    from hubdelta_dev.devhub.hostile_cases import CASES, outside_files

    root.mkdir(parents=True, exist_ok=True)
    _write(root.parent / OUTSIDE, outside_files())
    lines: list[dict[str, Any]] = []
    for case in CASES:
        _write(root / case.repo_id, case.files)
        for rel, target in case.links.items():
            link = root / case.repo_id / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
        if case.catalog is not None:
            lines.append({"id": case.repo_id, **case.catalog})
    (root / "catalog.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return list(CASES)


def _write(folder: Path, files: Files) -> None:
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
