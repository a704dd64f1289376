"""Making one pool model into a folder: train a LoRA adapter or a full finetune, or merge finished ones."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from hubdelta.embedder import training
from hubdelta.embedder.training import Example, TrainResult, load_causal_lm, lora_model, train
from hubdelta_dev.errors import PoolError
from hubdelta_dev.pool.base import BASE_REPO_ID
from hubdelta_dev.pool.recipe import ModelSpec

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def make_model(
    spec: ModelSpec,
    out: Path,
    base_dir: Path,
    data: Sequence[Example],
    built: Callable[[str], Path],
) -> TrainResult | None:
    """Write the files of ``spec`` into ``out`` (which must not exist yet).

    Args:
        spec: what to make.
        out: destination folder.
        base_dir: the plain base checkpoint.
        data: training examples (empty for merges).
        built: maps the repo id of an earlier pool model to its finished folder (for merges).

    Returns:
        The training curve, or None for merges.
    """
    from transformers import AutoTokenizer

    if spec.kind == "merge":
        _merge(spec, out, base_dir, built)
        return None
    assert spec.train is not None, spec.repo_id
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = load_causal_lm(base_dir)
    if spec.kind == "lora":
        model = lora_model(model, spec.train)
    result = train(model, tok, data, spec.train)
    if spec.kind == "lora":
        save_adapter(model, out, spec.bases[0])
    else:
        _save_full(model, out, base_dir)
    (out / "training.json").write_text(json.dumps(asdict(result), indent=1))
    return result


def save_adapter(model: object, out: Path, base_id: str = BASE_REPO_ID) -> None:
    """The product's :func:`~hubdelta.embedder.training.save_adapter`, naming the pool's base by default."""
    training.save_adapter(model, out, base_id)


def _save_full(model: object, out: Path, base_dir: Path) -> None:
    import shutil

    model.config.name_or_path = BASE_REPO_ID  # type: ignore[attr-defined]
    model.save_pretrained(out, safe_serialization=True)  # type: ignore[attr-defined]
    for name in TOKENIZER_FILES:
        if (base_dir / name).is_file():
            shutil.copy2(base_dir / name, out / name)


def _merge(spec: ModelSpec, out: Path, base_dir: Path, built: Callable[[str], Path]) -> None:
    """Task arithmetic: base + Σ wᵢ·(modelᵢ − base); an adapter folder counts as its merged model."""
    import torch

    model = load_causal_lm(base_dir)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    merged = {k: v.clone() for k, v in base_state.items()}
    for repo, weight in zip(spec.bases[1:], spec.merge_weights, strict=True):
        other = _merged_state(built(repo), base_dir)
        if other.keys() != base_state.keys():
            raise PoolError("merge inputs have different parameters", item=spec.repo_id)
        for k in merged:
            merged[k] += weight * (other[k] - base_state[k])
    with torch.no_grad():
        model.load_state_dict(merged)
    _save_full(model, out, base_dir)


def _merged_state(folder: Path, base_dir: Path) -> dict[str, object]:
    """State dict of a full model folder, or of the base with the folder's adapter merged in."""
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        merged = PeftModel.from_pretrained(load_causal_lm(base_dir), folder).merge_and_unload()
        return dict(merged.state_dict())
    return dict(load_causal_lm(folder).state_dict())
