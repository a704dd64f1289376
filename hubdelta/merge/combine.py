"""The merge arithmetic over task vectors (deltas from the base), as pure tensor functions.

A member's task vector is its change to each base weight: ``scaling · B @ A`` for a LoRA adapter (so adapters of
different ranks or targets combine exactly: a module an adapter does not target has a zero delta there), or
``W - W_base`` for a full finetune. The per-tensor rules are peft's own (:mod:`peft.utils.merge_utils`): linear is
``task_arithmetic`` (a weighted sum), TIES is ``ties`` (trim each task vector to its ``density`` largest
magnitudes, elect a sign per entry by total mass, average the entries that agree with it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from hubdelta.kernel.errors import UsageError

if TYPE_CHECKING:
    import torch

METHODS = ("linear", "ties")
DEFAULT_DENSITY = 0.2  # TIES (Yadav et al. 2023) keeps the top 20% of each task vector


def check_method(method: str, density: float) -> None:
    """Refuse an unknown method or a density outside (0, 1].

    Raises:
        UsageError: naming ``--method`` or ``--density``.
    """
    if method not in METHODS:
        raise UsageError("--method", f"unknown merge method {method!r}", fix=f"use one of {', '.join(METHODS)}")
    if not 0 < density <= 1:
        raise UsageError("--density", f"{density} is not in (0, 1]", fix="use e.g. --density 0.2")


def default_weights(method: str, k: int) -> list[float]:
    """Linear averages the task vectors (1/k each); TIES weighs each by 1, its disjoint mean already averages."""
    return [1.0 / k] * k if method == "linear" else [1.0] * k


def full_merge_bytes(params: int, base_bytes: int, k: int) -> int:
    """The memory a full merge of ``k`` members holds at its peak: the base twice (its files' tensors and the
    loaded model the adapters are checked against), ``k`` float32 task vectors, the merged one, and one full
    member's tensors while its task vector is taken (float32 at most)."""
    return 2 * base_bytes + (k + 2) * 4 * params


def adapter_delta(factors: Mapping[str, tuple[torch.Tensor, torch.Tensor, float]]) -> dict[str, torch.Tensor]:
    """A LoRA adapter's task vector: ``module.weight -> scaling · B @ A`` in float32 (out, in)."""
    return {f"{m}.weight": (b.float() @ a.float()) * s for m, (a, b, s) in factors.items()}  # (out, r) @ (r, in)


def combine(
    deltas: Sequence[Mapping[str, torch.Tensor]], method: str, weights: Sequence[float], density: float
) -> dict[str, torch.Tensor]:
    """The merged task vector of several members, weight name by weight name (float32).

    A name some members lack counts as a zero delta for them (an adapter that does not target the module).
    """
    import torch
    from peft.utils.merge_utils import task_arithmetic, ties

    assert len(deltas) == len(weights) and deltas, (len(deltas), len(weights))
    w = torch.tensor(list(weights), dtype=torch.float32)
    out: dict[str, torch.Tensor] = {}
    for name in sorted({n for d in deltas for n in d}):
        shape = next(d[name].shape for d in deltas if name in d)
        tensors = [d[name].float() if name in d else torch.zeros(shape) for d in deltas]
        if method == "linear":
            out[name] = task_arithmetic(tensors, w)
        else:
            out[name] = ties(tensors, w, density)
    return out
