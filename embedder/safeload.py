"""Load weights and adapter configs from untrusted files, after the checks (torch is imported only here).

The numeric core loads through these, never through ``torch.load`` or ``json.load`` directly:

- :func:`load_state_dict_safely`: safetensors after a bounded, exact header check; pickle only with the opt-in,
  and then only ``torch.load(weights_only=True)`` (whose unpickler builds tensors and containers, never calls).
- :func:`safe_adapter_config`: ``adapter_config.json`` decoded with bounds and checked by the adapter rules.

Full models go through transformers with ``trust_remote_code=False, use_safetensors=not plan.pickle,
local_files_only=True`` on the verified snapshot folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubdelta.embedder import safety_adapter
from hubdelta.embedder.local import allowed_roots, checked_header, read_json, regular_file_problem
from hubdelta.embedder.safety import PICKLE_FIX, PICKLE_SUFFIXES, BaseInfo, Limits, Refusal, Rule, human_bytes, refuse
from hubdelta.embedder.safety_header import header_params
from hubdelta.kernel.errors import ModelRefused

if TYPE_CHECKING:
    import torch


def _error(refusal: Refusal, path: Path) -> ModelRefused:
    return ModelRefused(str(path), refusal.reason, rule=refusal.rule, file=refusal.file)


def _precheck(path: Path, limits: Limits) -> int:
    """The file's size, after refusing links out of its folder, non-regular files and oversized files."""
    problem = regular_file_problem(path, allowed_roots(path.parent))  # a cache snapshot links into its blobs
    if problem:
        raise _error(refuse(Rule.PATH, problem, path.name), path)
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        reason = f"{human_bytes(size)}, over max_file_bytes {human_bytes(limits.max_file_bytes)}"
        raise _error(refuse(Rule.SIZE, reason, path.name), path)
    return size


def load_state_dict_safely(path: Path, limits: Limits) -> dict[str, torch.Tensor]:
    """Load one weight file on the CPU, refusing anything the checks do not allow.

    Args:
        path: a ``.safetensors`` file, or (with ``limits.allow_pickle``) a pickle weight file such as
            ``pytorch_model.bin``.
        limits: the bounds (file size, parameters, header size, the pickle opt-in).

    Returns:
        Tensor name -> tensor.

    Raises:
        ModelRefused: the file is refused (format, size, corrupt header, parameter count, a pickle without the
            opt-in or one that holds more than tensors) or could not be loaded (out of memory included).
    """
    size = _precheck(path, limits)
    if path.suffix == ".safetensors":
        return _load_safetensors(path, size, limits)
    if path.name.endswith(PICKLE_SUFFIXES):
        if not limits.allow_pickle:
            reason = f"pickle weights are never loaded without the opt-in; {PICKLE_FIX}"
            raise _error(refuse(Rule.PICKLE, reason, path.name), path)
        return _load_pickle(path, limits)
    raise _error(refuse(Rule.UNSUPPORTED, "not a .safetensors or opted-in pickle weight file", path.name), path)


def _load_safetensors(path: Path, size: int, limits: Limits) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    header = checked_header(path, path.name, size, limits)
    if isinstance(header, Refusal):
        raise _error(header, path)
    params = header_params(header)
    if params > limits.max_params:
        reason = f"{params:.2g} parameters exceed max_params {limits.max_params:.0e}"
        raise _error(refuse(Rule.PARAMS, reason, path.name), path)
    try:
        return load_file(str(path), device="cpu")
    except MemoryError:
        raise _error(refuse(Rule.PARAMS, f"out of memory loading {size} bytes", path.name), path) from None
    except (SafetensorError, OSError, RuntimeError) as e:
        raise _error(refuse(Rule.CORRUPT, f"safetensors refused it ({str(e)[:120]})", path.name), path) from e


def _load_pickle(path: Path, limits: Limits) -> dict[str, torch.Tensor]:
    import torch

    try:
        # weights_only=True: a restricted unpickler that only rebuilds tensors and plain containers, so a
        # malicious __reduce__ raises instead of running. mmap avoids a second copy of the bytes.
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except MemoryError:
        raise _error(refuse(Rule.PARAMS, "out of memory loading it", path.name), path) from None
    except Exception as e:  # a hostile pickle raises anything (KeyError: 'os.system' for a forbidden global)
        reason = f"torch.load(weights_only=True) refused it ({type(e).__name__}: {' '.join(str(e).split())[:160]})"
        raise _error(refuse(Rule.CORRUPT, reason, path.name), path) from e
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise _error(refuse(Rule.CORRUPT, "holds something other than a map of name -> tensor", path.name), path)
    params = sum(v.numel() for v in loaded.values())
    if params > limits.max_params:
        raise _error(refuse(Rule.PARAMS, f"{params:.2g} parameters exceed max_params", path.name), path)
    return loaded


def safe_adapter_config(path: Path, limits: Limits | None = None, base: BaseInfo | None = None) -> dict[str, Any]:
    """``adapter_config.json`` of an adapter folder (or the file itself), decoded and checked.

    Args:
        path: the adapter folder or its ``adapter_config.json``.
        limits: the bounds (defaults when None).
        base: the tracked base; when given, its name and module names are checked too.

    Returns:
        The decoded config, safe to hand to peft (``LoraConfig.from_pretrained`` or ``PeftModel``).

    Raises:
        ModelRefused: unreadable, not a JSON object, or refused by the adapter rules.
    """
    limits = limits or Limits()
    file = path / "adapter_config.json" if path.is_dir() else path
    problem = regular_file_problem(file, allowed_roots(file.parent))
    if problem:
        raise _error(refuse(Rule.PATH, problem, file.name), file)
    cfg = read_json(file, file.name, limits)
    if isinstance(cfg, Refusal):
        raise _error(cfg, file)
    refusal = safety_adapter.check_adapter_config(cfg, base, limits)
    if refusal:
        raise _error(refusal, file)
    return cfg
