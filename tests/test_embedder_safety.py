"""Untrusted repos: the pure safety rules as tables, then fetch/inspect/load against the bad-repo corpus on devhub."""

from __future__ import annotations

from typing import Any

import pytest

from hubdelta.embedder.safety import (
    BaseInfo,
    Limits,
    Plan,
    Refusal,
    Rule,
    check_disk,
    check_repo,
    parse_json_config,
    path_problem,
)
from hubdelta.embedder.safety_header import check_safetensors_header
from hubdelta.kernel.settings import EmbedSettings
from hubdelta_dev.devhub.badrepos import BASE_ID
from tests.helpers import FULL_CFG, LORA_CFG, SAFETY_BASE, adapter_files, full_files

# --- the pure rules -------------------------------------------------------------------------------------------


def _t(dtype: str, shape: list[Any], begin: Any, end: Any) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


HEADERS = [
    # (header, file_size, header_len, expected reason substring or None)
    ({"a": _t("F32", [2, 2], 0, 16), "b": _t("BF16", [4], 16, 24)}, 8 + 100 + 24, 100, None),
    ({"a": _t("F32", [2, 2], 0, 16)}, 8 + 100 + 24, 100, "fill 16 of the 24 data bytes"),
    ({"a": _t("F32", [2, 2], 0, 16)}, 8 + 100 + 10, 100, "past the end of the data"),
    ({"a": _t("F32", [2, 2], 0, 16)}, 50, 100, "does not fit in a 50 byte file"),
    ({"a": _t("F32", [2, 2], 0, 16)}, 10**9, 200_000_000, "exceeds the 100000000 byte limit"),
    ({"a": _t("F32", [2, 2], 0, 16), "b": _t("F32", [2], 8, 16)}, 8 + 100 + 16, 100, "overlap"),
    ({"a": _t("F32", [2], 0, 8), "b": _t("F32", [2], 16, 24)}, 8 + 100 + 24, 100, "leaving a gap"),
    ({"a": _t("F32", [2, 3], 0, 16)}, 8 + 100 + 16, 100, "[2, 3] F32 = 24 bytes"),
    ({"a": _t("F4", [2], 0, 1)}, 8 + 100 + 1, 100, "unknown dtype 'F4'"),
    ({"a": _t(7, [2], 0, 8)}, 8 + 100 + 8, 100, "unknown dtype 7"),
    ({"a": _t("F32", [-2], 0, 8)}, 8 + 100 + 8, 100, "malformed shape"),
    ({"a": _t("F32", [True, 2], 0, 8)}, 8 + 100 + 8, 100, "malformed shape"),
    ({"a": _t("F32", "ab", 0, 8)}, 8 + 100 + 8, 100, "malformed shape"),
    ({"a": _t("F32", [2], 8, 0)}, 8 + 100 + 8, 100, "end before they begin"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, 8 + 100 + 8, 100, "malformed data_offsets"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "x": 1}}, 116, 100, "is not {dtype, shape"),
    ({"a": [1, 2]}, 116, 100, "is not {dtype, shape"),
    ({"__metadata__": {"k": 1}}, 108, 100, "__metadata__ is not a map of strings"),
    ({"__metadata__": {"format": "pt"}}, 108, 100, None),  # no tensors at all is a valid (empty) file
    ({"a\nb": _t("F32", [2], 0, 8)}, 8 + 100 + 4, 100, r"'a\nb'"),  # hostile names stay on one line
    # Remote (header_len unknown): a lower bound on the header's length still catches data past the end.
    ({"a": _t("F32", [2, 2], 0, 16)}, 8 + 57 + 16, None, None),  # 57: the compact JSON of this header
    ({"a": _t("F32", [2, 2], 0, 16)}, 8 + 57 + 10, None, "past the end of the data"),
    ({"a": _t("F32", [2], 0, 8), "b": _t("F32", [2], 16, 24)}, 8 + 200 + 24, None, None),  # gaps: local only
]


@pytest.mark.parametrize(("header", "size", "header_len", "expected"), HEADERS)
def test_safetensors_header_rules(header: dict[str, Any], size: int, header_len: int | None, expected: str | None):
    error = check_safetensors_header(header, size, header_len)
    if expected is None:
        assert error is None
    else:
        assert error is not None and expected in error and "\n" not in error


def test_header_tensor_count_is_bounded():
    header = {f"t{i}": _t("U8", [1], i, i + 1) for i in range(11)}
    assert "11 tensors, over the limit of 10" in (
        check_safetensors_header(header, 8 + 500 + 11, 500, max_tensors=10) or ""
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("config.json", None),
        ("sub/dir/file with spaces.txt", None),
        ("../../etc/passwd", "path traversal"),
        ("a/../../b", "path traversal"),
        ("a//b", "empty segments"),
        ("./config.json", "path traversal"),
        ("/etc/passwd", "absolute"),
        ("C:/x", "absolute"),
        ("a\\..\\b", "backslashes"),
        ("a\x00b", "control characters"),
        ("line\nbreak", "control characters"),
        ("", "empty"),
    ],
)
def test_path_problems(name: str, expected: str | None):
    problem = path_problem(name)
    assert problem is None if expected is None else expected in (problem or "")


REPOS = [
    # (files, configs, headers) -> Plan files, or a refusal (rule, reason substring)
    (adapter_files(), ("adapter_config.json", "adapter_model.safetensors")),
    (adapter_files({"target_modules": "all-linear"}), ("adapter_config.json", "adapter_model.safetensors")),
    (adapter_files({"target_modules": r"model\.layers\.\d+\.self_attn\.(q|v)_proj"}), ("adapter_config.json",)),
    (adapter_files({"target_modules": "(q|v)_nope"}), (Rule.TARGET, "matches no module of the base")),
    (adapter_files({"target_modules": "(unclosed"}), (Rule.CONFIG, "not a valid regex")),
    (adapter_files({"target_modules": "x" * 400}), (Rule.CONFIG, "too long")),
    (adapter_files({"target_modules": 7}), (Rule.CONFIG, "target_modules is not a list")),
    (adapter_files({"modules_to_save": ["score"]}), (Rule.TARGET, "module to save 'score' does not exist")),
    (adapter_files({"modules_to_save": ["lm_head"]}), ("adapter_config.json",)),  # tied head: BaseInfo knows it
    (adapter_files({"rank_pattern": {"q_proj": 1024}}), (Rule.RANK, "r=1024 exceeds max_adapter_rank 256")),
    (adapter_files({"r": 0}), (Rule.RANK, "r=0 is not a positive integer")),
    (adapter_files({"r": "8"}), (Rule.RANK, "is not a positive integer")),
    (adapter_files({"r": 8}), (Rule.CORRUPT, "has rank 4 but adapter_config.json says r=8")),
    (adapter_files({"layer_replication": [[0, 2], [0, 2]]}), (Rule.UNSUPPORTED, "layer_replication")),
    (adapter_files({"base_model_name_or_path": "/home/me/checkpoints/base"}), ("adapter_config.json",)),  # a local path
    (adapter_files({"base_model_name_or_path": "Hostile/Tiny-Base"}), ("adapter_config.json",)),  # ids are case-blind
    (adapter_files({"base_model_name_or_path": "org/other"}), (Rule.BASE, "'org/other' is not the tracked base")),
    (adapter_files({"fan_in_fan_out": True}), (Rule.BASE, "where the base needs")),
    (adapter_files(shapes={"model.layers.0.self_attn.q_proj.lora_A.weight": (4, 16)}), (Rule.TARGET, "not a peft")),
    (adapter_files(shapes={"base_model.model.lm_head.weight": (64, 16)}), ("adapter_config.json",)),  # modules_to_save
    (adapter_files(shapes={"base_model.model.lm_head.weight": (64, 32)}), (Rule.BASE, "is [64, 32] where the base")),
    (adapter_files(shapes={"base_model.model.model.norm.lora_A.weight": (4, 16)}), (Rule.TARGET, "not a linear")),
    (adapter_files(shapes={}), (Rule.NO_WEIGHTS, "holds no tensors")),
    (full_files(), ("config.json", "model.safetensors", "tokenizer.json")),
    (full_files({"hidden_size": 32}), (Rule.BASE, "hidden_size 32 differs from the base's 16")),
    (full_files({"hidden_size": "16"}), (Rule.CONFIG, "hidden_size = '16' is not a positive 32-bit integer")),
    (full_files({"auto_map": {"AutoConfig": "x.Y"}}), (Rule.CUSTOM_CODE, "config.json: auto_map asks for custom code")),
    (full_files(extra={"../../x.json": 5}), (Rule.PATH, "../../x.json: file name with '..'")),
    (full_files(extra={"big.bin": -1}), (Rule.SIZE, "the listing gives no size")),
]


@pytest.mark.parametrize(("repo", "expected"), REPOS)
def test_check_repo_rules(repo: tuple, expected: tuple):
    files, configs, headers = repo
    verdict = check_repo(files, configs, headers, SAFETY_BASE, Limits())
    if isinstance(expected[0], Rule):
        assert isinstance(verdict, Refusal), verdict
        assert verdict.rule is expected[0] and expected[1] in verdict.reason, verdict.reason
        assert "\n" not in verdict.reason
    else:
        assert isinstance(verdict, Plan), verdict
        assert set(expected) <= set(verdict.files)
        assert not {f for f in verdict.files if f.endswith((".md", ".bin", ".py"))}


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (Limits(), None),
        (Limits(max_params=5000), (Rule.PARAMS, "model.safetensors: 5.7e+03 parameters exceed max_params 5e+03")),
        (Limits(max_params=100), (Rule.PARAMS, "config.json: declares about 7.2e+03 parameters")),
        (Limits(max_file_bytes=10_000), (Rule.SIZE, "model.safetensors: 25.0 kB, over max_file_bytes 10.0 kB")),
        (Limits(max_total_bytes=10_000), (Rule.SIZE, "over max_total_bytes")),
        (Limits(max_config_bytes=100), (Rule.SIZE, "config.json: 500 bytes, over max_config_bytes 100")),
    ],
)
def test_limits_bound_full_models(limits: Limits, expected: tuple | None):
    files, configs, headers = full_files()
    verdict = check_repo(files, configs, headers, SAFETY_BASE, limits)
    if expected is None:
        assert (
            isinstance(verdict, Plan)
            and verdict.params
            == sum(h["data_offsets"][1] - h["data_offsets"][0] for h in headers["model.safetensors"].values()) // 4
        )
    else:
        assert isinstance(verdict, Refusal) and verdict.rule is expected[0] and expected[1] in verdict.reason


@pytest.mark.parametrize(
    ("files", "allow", "expected"),
    [
        ({"config.json": 9, "pytorch_model.bin": 99}, False, "pytorch_model.bin: pickle-only weights refused"),
        ({"config.json": 9, "pytorch_model.bin.index.json": 9}, False, "pytorch_model.bin.index.json: pickle-only"),
        ({"config.json": 9, "model.ckpt": 99}, False, "model.ckpt: pickle-only weights refused"),
        ({"config.json": 9, "model.ckpt": 99}, True, "no model.safetensors"),  # opt-in loads transformers' names only
        ({"config.json": 9, "pytorch_model.bin": 99}, True, None),
        ({"config.json": 9, "model.safetensors": 99, "pytorch_model.bin": 99, "training_args.bin": 9}, False, None),
        ({"adapter_config.json": 9, "adapter_model.bin": 99}, True, None),
    ],
)
def test_pickle_needs_the_opt_in(files: dict[str, int], allow: bool, expected: str | None):
    headers = {"model.safetensors": {}} if "model.safetensors" in files else {}
    configs = {"config.json": dict(FULL_CFG), "adapter_config.json": dict(LORA_CFG)}
    verdict = check_repo(files, configs, headers, BaseInfo(BASE_ID), Limits(allow_pickle=allow))
    if expected is None:
        assert isinstance(verdict, Plan), verdict
        assert not {"pytorch_model.bin", "training_args.bin"} & set(verdict.files) or verdict.pickle
        assert "training_args.bin" not in verdict.files
    else:
        assert isinstance(verdict, Refusal) and expected in verdict.reason, verdict


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"a": 1}', None),
        (b"[1, 2]", "a JSON list, not an object"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{nope", "not valid JSON"),
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        (b'{"a": ' + b"9" * 5000 + b"}", "not valid JSON"),  # past Python's int digit limit
        (b'{"a": "' + b"x" * 2000 + b'"}', "2009 bytes, over max_config_bytes 1000"),
    ],
)
def test_json_configs_are_parsed_defensively(raw: bytes, expected: str | None):
    verdict = parse_json_config("config.json", raw, Limits(max_config_bytes=1000 if b"x" * 2000 in raw else 10**6))
    assert isinstance(verdict, dict) if expected is None else expected in str(verdict)


@pytest.mark.parametrize(
    ("need", "used", "free", "expected"),
    [
        (10, 0, 10**12, None),
        (10**9, 10**10, 10**12, "over the disk budget of 10.0 GB"),
        (10**9, 0, 10**9 + 5, "would leave 5 B free"),
    ],
)
def test_disk_budget(need: int, used: int, free: int, expected: str | None):
    verdict = check_disk(need, used, free, Limits(disk_budget_bytes=10**10, min_free_bytes=10**6))
    assert (
        verdict is None
        if expected is None
        else (verdict is not None and verdict.retryable and expected in verdict.reason)
    )


def test_limits_from_settings():
    limits = Limits.from_embed_settings(EmbedSettings(allow_pickle=True, disk_budget_gb=2.5))
    assert limits.allow_pickle and limits.disk_budget_bytes == limits.max_total_bytes == 2_500_000_000
