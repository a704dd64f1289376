"""Rules for a full finetune or merge against its base's weights (pure): every tensor there, shapes that fit,
and a size bound relative to the base.

transformers fills a tensor a checkpoint lacks with random values (two runs of the same model then differ) and,
for a config declaring a huge vocabulary, allocates it before reading a byte of weights. So a full model is held
to its base: it must hold every decoder tensor of the base with the base's shape (the vocabulary's rows may
differ, as its config says), and declare at most :data:`MAX_REL_PARAMS` times the base's parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from hubdelta.embedder.safety_header import header_shapes, quote
from hubdelta.embedder.safety_records import BaseInfo, Refusal, Rule, refuse

CONFIG = "config.json"
MAX_REL_PARAMS = 4  # a finetune may add tokens or a head; four times its base's size is not a finetune of it
# Read by nothing that makes an activation: the LM head (activations come from the decoder alone).
UNUSED = ("lm_head.weight",)
VOCAB_ROWS = ("embed_tokens.weight", "lm_head.weight")  # (vocab, hidden): rows follow the config's vocab_size


def base_params(base: BaseInfo) -> int:
    return sum(math.prod(s) for s in base.weight_shapes.values())


def check_declared_size(declared: int, base: BaseInfo) -> Refusal | None:
    """Refuse a config declaring far more parameters than the base has (allocated before any weight is read)."""
    have = base_params(base)
    if have and declared > MAX_REL_PARAMS * have:
        msg = f"declares about {declared:.1e} parameters, over {MAX_REL_PARAMS} times the base's {have:.1e}"
        return refuse(Rule.PARAMS, msg, CONFIG)
    return None


def check_full_tensors(
    weights: tuple[str, ...], headers: Mapping[str, Mapping[str, Any]], cfg: Mapping[str, Any], base: BaseInfo
) -> Refusal | None:
    """Every base tensor present, with the base's shape: a missing one would be randomly initialised."""
    if not base.weight_shapes:
        return None  # nothing known of the base (a test, or an adapter's path): the load-time checks remain
    shapes: dict[str, tuple[int, ...]] = {}
    where: dict[str, str] = {}
    for name in weights:
        for tensor, shape in header_shapes(headers[name]).items():
            shapes[tensor], where[tensor] = shape, name
    missing = [t for t in base.weight_shapes if t not in shapes and t not in UNUSED]
    if missing:
        msg = (f"lacks {len(missing)} of the base's {len(base.weight_shapes)} tensors, e.g. {quote(missing[0])} "
               "(it would be randomly initialised)")  # fmt: skip
        return refuse(Rule.MISSING, msg, weights[0])
    vocab = cfg.get("vocab_size")
    for tensor, shape in shapes.items():
        want = base.weight_shapes.get(tensor)
        if want is None:
            continue
        rows = tensor.endswith(VOCAB_ROWS) and type(vocab) is int
        need = (vocab, *want[1:]) if rows else want  # a resized vocabulary has the rows its config declares
        if shape != need:
            whose = "config.json's vocab_size and the base's width" if rows else "the base's shape"
            msg = f"tensor {quote(tensor)} is {list(shape)} where {whose} need {list(need)}"
            return refuse(Rule.BASE, msg, where[tensor])
    return None
