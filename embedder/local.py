"""Model folders on disk, read as untrusted: listing, bounded reads of configs and headers, verification.

Used for ``hubdelta add PATH`` (:func:`inspect_local`), to verify a download before anyone loads it
(:func:`verify_folder`), and to learn the tracked base's shapes from its headers (:func:`base_info_from_folder`).
Nothing here loads a tensor.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hubdelta.embedder import safety, safety_full
from hubdelta.embedder.safety import BaseInfo, Limits, Plan, Refusal, Rule, refuse
from hubdelta.embedder.safety_header import check_safetensors_header, header_shapes, parse_header_json
from hubdelta.kernel.errors import ModelRefused

LOCAL_SHA = "local"  # the revision of a local base checkpoint folder (the user vouches for what it is)


def local_base_id(folder: Path) -> str:
    """The id a local base checkpoint folder has in spaces and in the index: ``local/<folder name>``."""
    return f"local/{folder.resolve().name}"


def regular_file_problem(path: Path, roots: Iterable[Path]) -> str | None:
    """Why ``path`` must not be read: a link leading outside ``roots``, or not a regular file (a FIFO would hang)."""
    try:
        target = path.resolve(strict=True)
        mode = target.stat().st_mode
    except (OSError, RuntimeError):  # dangling or looping link
        return "missing, or a broken symlink"
    if path.is_symlink() and not any(target.is_relative_to(r.resolve()) for r in roots):
        return "a symlink to a file outside the model folder"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    return None


def allowed_roots(folder: Path) -> tuple[Path, ...]:
    """Where a folder's symlinks may lead: the folder, and the blob store of a huggingface_hub cache snapshot."""
    folder = folder.resolve()
    if folder.parent.name == "snapshots":
        return folder, folder.parent.parent / "blobs"
    return (folder,)


def list_folder(folder: Path) -> tuple[dict[str, int], dict[str, str]]:
    """Files of a model folder (relative posix path -> size) and problems with some of them (path -> why).

    Hidden names (``.git``, ``.cache``) are skipped like the Hub skips them; links are not followed into folders.
    """
    roots = allowed_roots(folder)
    files: dict[str, int] = {}
    problems: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if fn.startswith("."):
                continue
            path = Path(dirpath) / fn
            rel = path.relative_to(folder).as_posix()
            problem = regular_file_problem(path, roots)
            if problem:
                problems[rel] = problem
                files[rel] = 0
            else:
                files[rel] = path.stat().st_size
    return files, problems


def read_json(path: Path, name: str, limits: Limits) -> dict[str, Any] | Refusal:
    """Read and decode one JSON config, never more than ``max_config_bytes`` (+1 to notice more)."""
    try:
        with path.open("rb") as f:
            raw = f.read(limits.max_config_bytes + 1)
    except OSError as e:
        return refuse(Rule.MISSING, f"cannot be read ({e.strerror})", name)
    return safety.parse_json_config(name, raw, limits)


def read_header(path: Path, name: str, limits: Limits) -> tuple[dict[str, Any], int] | Refusal:
    """A safetensors file's decoded header and its byte length, read with bounds before anything else."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return refuse(Rule.CORRUPT, f"{size} bytes: too short for a safetensors header", name)
            (n,) = struct.unpack("<Q", head)
            if n > limits.max_header_bytes:
                return refuse(Rule.CORRUPT, f"header of {n} bytes exceeds max_header_bytes", name)
            if 8 + n > size:
                return refuse(Rule.CORRUPT, f"header of {n} bytes does not fit in a {size} byte file", name)
            raw = f.read(n)
    except OSError as e:
        return refuse(Rule.MISSING, f"cannot be read ({e.strerror})", name)
    header = parse_header_json(raw)
    if isinstance(header, str):
        return refuse(Rule.CORRUPT, header, name)
    return header, n


def checked_header(path: Path, name: str, size: int, limits: Limits) -> dict[str, Any] | Refusal:
    """A local safetensors file's header, checked exactly (layout against the file's real size)."""
    read = read_header(path, name, limits)
    if isinstance(read, Refusal):
        return read
    header, n = read
    error = check_safetensors_header(header, size, n, max_tensors=limits.max_tensors)
    return refuse(Rule.CORRUPT, error, name) if error else header


def verify_folder(folder: Path, plan: Plan, files: Mapping[str, int], limits: Limits) -> Refusal | None:
    """After a download: every planned file is present, a regular file of the listed size, headers exact."""
    roots = allowed_roots(folder)
    for name in plan.files:
        path = folder / name
        problem = regular_file_problem(path, roots)
        if problem:
            return refuse(Rule.MISSING, f"{problem} after the download", name)
        size = path.stat().st_size
        if size != files[name]:
            return refuse(Rule.CORRUPT, f"is {size} bytes on disk but {files[name]} in the listing", name)
        if name.endswith(".safetensors"):
            header = checked_header(path, name, size, limits)
            if isinstance(header, Refusal):
                return header
    return None


def _read_configs(
    folder: Path, names: Iterable[str], problems: Mapping[str, str], limits: Limits
) -> dict[str, Any] | Refusal:
    configs: dict[str, Any] = {}
    for name in names:
        if name in problems:
            return refuse(Rule.PATH, problems[name], name)
        cfg = read_json(folder / name, name, limits)
        if isinstance(cfg, Refusal):
            return cfg
        configs[name] = cfg
    return configs


def inspect_local(path: Path, limits: Limits, base: BaseInfo) -> Plan | Refusal:
    """Apply every safety rule to a local model folder (``hubdelta add PATH``); nothing is copied or loaded.

    Args:
        path: the model folder (a plain folder or a huggingface_hub cache snapshot).
        limits: the bounds.
        base: the tracked base it is embedded against.

    Returns:
        The :class:`Plan` (which files of the folder to load) or the first :class:`Refusal`.
    """
    if not path.is_dir():
        return refuse(Rule.MISSING, "not a folder", str(path))
    files, problems = list_folder(path)
    t = safety.triage(files, limits)
    if isinstance(t, Refusal):
        return t
    configs = _read_configs(path, t.configs, problems, limits)
    if isinstance(configs, Refusal):
        return configs
    refusal = safety.check_configs(t, configs, base, limits)
    if refusal:
        return refusal
    weights = safety.weight_files(t, configs, files, limits)
    if isinstance(weights, Refusal):
        return weights
    headers: dict[str, Any] = {}
    lens: dict[str, int] = {}
    for name in weights:
        if name in problems:
            return refuse(Rule.PATH, problems[name], name)
        if name.endswith(".safetensors"):
            read = read_header(path / name, name, limits)
            if isinstance(read, Refusal):
                return read
            headers[name], lens[name] = read
    plan = safety.check_weights(t, weights, configs, headers, files, base, limits, header_lens=lens)
    bad = next((n for n in plan.files if n in problems), None) if isinstance(plan, Plan) else None
    return refuse(Rule.PATH, problems[bad], bad) if bad else plan


def base_info_from_folder(folder: Path, repo_id: str, *, aliases: Iterable[str] = ()) -> BaseInfo:
    """What the checks need of the tracked base, from its config and safetensors headers (no tensor is loaded).

    Raises:
        ModelRefused: the base's own config or headers are unreadable or malformed.
    """
    limits = Limits()
    cfg = read_json(folder / "config.json", "config.json", limits)
    if isinstance(cfg, Refusal):
        raise ModelRefused(repo_id, cfg.reason, rule=cfg.rule, file=cfg.file)
    shapes: dict[str, tuple[int, ...]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        read = read_header(path, path.name, limits)
        if isinstance(read, Refusal):
            raise ModelRefused(repo_id, read.reason, rule=read.rule, file=read.file)
        shapes.update(header_shapes(read[0]))
    embed = next((k for k in shapes if k.endswith("embed_tokens.weight")), None)
    if cfg.get("tie_word_embeddings", True) and "lm_head.weight" not in shapes and embed:
        shapes["lm_head.weight"] = shapes[embed]  # tied: the head is the embedding, under the name peft uses
    hidden = cfg.get("hidden_size")
    return BaseInfo(
        repo_id=repo_id,
        model_type=cfg.get("model_type") if isinstance(cfg.get("model_type"), str) else None,
        hidden_size=hidden if type(hidden) is int else None,
        weight_shapes=shapes,
        aliases=frozenset(aliases),
    )


def check_full_folder(folder: Path, base: BaseInfo) -> Refusal | None:
    """A downloaded full model's tensors against its base's (:func:`~hubdelta.embedder.safety_full.check_full_tensors`),
    from the headers alone: checked just before loading, so no tensor is ever randomly initialised."""
    limits = Limits()
    cfg = read_json(folder / "config.json", "config.json", limits)
    if isinstance(cfg, Refusal):
        return cfg
    headers: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        read = read_header(path, path.name, limits)
        if isinstance(read, Refusal):
            return read
        headers[path.name] = read[0]
    if not headers:
        return None  # opted-in pickle weights: transformers' own load-time checks remain
    return safety_full.check_full_tensors(tuple(headers), headers, cfg, base)
