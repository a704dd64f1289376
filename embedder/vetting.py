"""Is a model's result fit to store? Rules on its activations and its delta vector, checked before any write.

A NaN or Inf in one vector makes LanceDB refuse a whole chunk's write, and a zero vector has no direction to
compare by, so every vector is checked here first; a bad one ends that model alone, with a one-line reason naming
the file and the rule (docs/untrusted.md, "Vectors"):

- the activations are finite: else ``delta is not finite (<file> has NaN/Inf)``, naming the weight file that holds
  them (or saying that finite weights overflowed float32 in the forward);
- the delta's norm is at most :data:`MAX_REL_NORM` times the base activations' scale (a sane norm);
- a delta whose norm is 0, or under :data:`UNCHANGED_REL_NORM` times that scale, is **no change from base**
  (status ``unchanged``): an untrained LoRA (B = 0), ``lora_alpha: 0``, a LoRA on ``lm_head`` only (the decoder's
  output never sees it). Such a model has no vector; it is hidden from queries like a removed one.

The scale is the base activations' mean row norm (``(P, C)`` → one number), known in every space from its first
model on, unlike the median of the space's vectors (which a new space does not have yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Evidence (tests/test_embedder_contain.py's tiny llama, fp32): random LoRAs give 0.03-0.05 of the base activations'
# scale, a full finetune 2.0; an exact copy of the base and a B = 0 LoRA give exactly 0; a LoRA with B scaled to
# 1e-7 gives 1e-8 and one scaled 3000x down (B ~ 1e-4) 1e-5. So 1e-5 flags numerical no-ops and keeps any delta
# that training could leave; a bfloat16 full model on a GPU (cosine ~0.99 to fp32) stays well above it.
UNCHANGED_REL_NORM = 1e-5
# A delta 1000 times the base's own activations is no finetune of it: weights blown up to overflow's edge.
MAX_REL_NORM = 1e3


@dataclass(frozen=True)
class Verdict:
    """What a vector's checks decided: ``ok`` (store it), ``unchanged`` (no vector, hidden) or ``bad`` (failed)."""

    kind: str
    reason: str = ""


def base_scale(base_activations: np.ndarray) -> float:
    """The base activations' mean row norm: ``(P, C)`` → the scale every delta is judged against."""
    return float(np.linalg.norm(base_activations.astype(np.float64), axis=-1).mean())


def check_vector(vector: np.ndarray, scale: float) -> Verdict:
    """The verdict on one delta vector ``(C,)`` of a space whose base activations have :func:`base_scale` ``scale``
    (computed once per space, not once per vector)."""
    if not np.isfinite(vector).all():
        return Verdict("bad", "delta is not finite (its activations overflowed float32)")
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if norm == 0.0:
        return Verdict("unchanged", "no change from base: the delta's norm is 0")
    if scale > 0 and norm < UNCHANGED_REL_NORM * scale:
        return Verdict("unchanged", f"no change from base: the delta's norm {norm:.2g} is below "
                                    f"{UNCHANGED_REL_NORM:g} of the base activations' {scale:.3g}")  # fmt: skip
    if scale > 0 and norm > MAX_REL_NORM * scale:
        return Verdict("bad", f"delta norm {norm:.3g} is over {MAX_REL_NORM:g} times the base activations' "
                              f"{scale:.3g} (weights blown up)")  # fmt: skip
    return Verdict("ok")


def activations_problem(activations: np.ndarray, folder: Path) -> str | None:
    """Why ``activations`` of the model in ``folder`` cannot make a vector (not finite), naming the file at fault."""
    if np.isfinite(activations).all():
        return None
    files = nonfinite_weight_files(folder)
    if files:
        return f"delta is not finite ({', '.join(files)} has NaN/Inf)"
    return "delta is not finite (its weights are finite but overflow float32 in the forward: values too large)"


def nonfinite_weight_files(folder: Path) -> list[str]:
    """The safetensors files in ``folder`` holding a NaN or Inf (read tensor by tensor, already verified)."""
    from safetensors import safe_open

    bad = []
    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                if any(_nonfinite(f.get_tensor(k)) for k in f.keys()):  # noqa: SIM118 -- safe_open is no dict
                    bad.append(path.name)
        except (OSError, RuntimeError, ValueError):
            continue  # a file that cannot be read was refused before; nothing to name here
    return bad


def _nonfinite(tensor: object) -> bool:
    import torch

    assert isinstance(tensor, torch.Tensor)
    return bool(tensor.is_floating_point() and not torch.isfinite(tensor).all())


def refusal_of(activations: np.ndarray, base_activations: np.ndarray, folder: Path) -> str | None:
    """Why one model's activations give no vector to store (not finite, blown up, or no change), or None."""
    from hubdelta.embedder.delta_path import vector

    problem = activations_problem(activations, folder)
    if problem is None:
        verdict = check_vector(vector(activations, base_activations), base_scale(base_activations))
        problem = verdict.reason if verdict.kind != "ok" else None
    return problem
