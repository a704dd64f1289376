"""bfloat16 matmuls on the difference to the base: fast like bf16, close to fp32 (the ``bfloat16`` spaces).

A Delta Activations vector is a small difference of two large hidden states. Run natively in bfloat16, every
matmul rounds its inputs and outputs to 8 bits of mantissa *of the hidden state*, and that noise differs between
the base's and the finetune's forward: measured on the pool, the deltas then reach only cosine 0.987–0.9996 to
fp32. Here the base's probe forward runs once in fp32 and every ``nn.Linear`` of its decoder records its input
``x_b`` and output ``y_b``. From then on each Linear computes, for a batch that repeats the probes K times,

    y = y_b + bf16(x − x_b) @ bf16(W)ᵀ

so the bf16 rounding falls on the difference ``x − x_b`` (the size of the delta), not on ``x``; norms, attention,
activations and the residual stream stay fp32. The deltas then agree with fp32 to cosine ≥ 0.99998 on the pool,
while the matmuls (~70% of the time) run at bf16 speed. The fp32 weights of the Linears are dropped after the
recording; the recorded activations cost ``P·T·Σ(in + out)`` floats (~230 MB for SmolLM2-135M, 5 probes).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hubdelta.embedder.packed import dense, kernel_dtype, packed, packs
from hubdelta.embedder.packed import linear as packed_linear


@dataclass
class BaseIO:
    """One Linear's input and output on the base's probe batch, fp32: ``(P, T, in)`` and ``(P, T, out)``."""

    x: torch.Tensor
    y: torch.Tensor


def decoder_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The plain ``nn.Linear`` modules of a CausalLM's decoder (the LM head is not in it), by path in ``model``."""
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else model
    found = {id(m): m for m in decoder.modules() if type(m) is nn.Linear}
    return {name: m for name, m in model.named_modules() if id(m) in found}


@contextmanager
def recording(linears: dict[str, nn.Linear]) -> Iterator[dict[str, BaseIO]]:
    """Within the block, every forward of the given Linears stores its input and output (the last call wins)."""
    records: dict[str, BaseIO] = {}
    last: dict[str, torch.Tensor] = {}  # the last input seen and its copy: q, k, v (gate, up) share one copy

    def recorder(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            x = args[0]
            if last.get("seen") is not x:
                last["seen"], last["copy"] = x, x.detach().clone()
            records[name] = BaseIO(last["copy"], output.detach().clone())

        return hook

    handles = [m.register_forward_hook(recorder(name)) for name, m in linears.items()]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def to_difference(
    linears: dict[str, nn.Linear], records: dict[str, BaseIO], dtype: torch.dtype, *, prepack: bool = True
) -> int:
    """Make each recorded Linear compute ``y_b + (x − x_b) @ Wᵀ`` with ``x − x_b`` and W in ``dtype``.

    Permanent: the module's weight is replaced by its ``dtype`` copy (held in fp32 on a CPU without ``dtype``
    kernels, :func:`~hubdelta.embedder.packed.kernel_dtype`; with ``prepack``, laid out for oneDNN on a CPU that
    has it: :mod:`~hubdelta.embedder.packed`) and its ``forward`` by the difference form;
    it then only accepts inputs that repeat the recorded batch (``(K·P, T, in)``). Linears without a record
    (layers a truncated space never runs) are left alone. Returns how many were changed.
    """
    changed, memo = 0, _Memo()
    for name, linear in linears.items():
        record = records.get(name)
        if record is None:
            continue
        assert linear.bias is None or linear.bias.dtype == record.y.dtype  # the bias is inside y_b already
        kernel = kernel_dtype(linear.weight.device, dtype)
        weight = dense(linear.weight.detach()).to(dtype).to(kernel)
        weight = packed(weight) if prepack and packs(weight.device, kernel) else weight
        linear.weight = nn.Parameter(weight, requires_grad=False)
        linear.register_parameter("bias", None)
        linear.forward = _difference_forward(linear, record, memo, dtype)  # type: ignore[method-assign]
        changed += 1
    return changed


class _Memo(threading.local):
    """The last difference made: q, k and v (gate and up) get the same input tensor and share one recorded base
    input, so their difference is made once. Holding ``x`` keeps its identity unique. (Inference tensors have no
    version counter: this relies on the decoder not changing a Linear's input in place, which none does.) One per
    thread: lanes (:mod:`~hubdelta.embedder.lanes`) run forwards of the same Linears at once."""

    x: torch.Tensor | None = None
    x_b: torch.Tensor | None = None
    d: torch.Tensor | None = None


def _difference_forward(linear: nn.Linear, record: BaseIO, memo: _Memo, dtype: torch.dtype) -> Any:
    """``dtype``: what the difference and the matmul's result are rounded to; the weight's dtype (its kernels')
    is either the same or fp32 (:func:`~hubdelta.embedder.packed.kernel_dtype`), and then the two extra casts
    below round as the ``dtype`` kernels would."""
    x_b, y_b = record.x, record.y  # (P, T, in), (P, T, out)
    matmul = packed_linear if linear.weight.is_mkldnn else F.linear
    kernel = linear.weight.dtype

    def forward(x: torch.Tensor) -> torch.Tensor:
        k = x.shape[0] // x_b.shape[0]
        assert x.shape[0] == k * x_b.shape[0] and x.shape[1:] == x_b.shape[1:], (x.shape, x_b.shape)
        if memo.x is not x or memo.x_b is not x_b or memo.d is None:
            # The fp32 difference, then rounded once. Same values as one sub into a bf16 `out`, which torch's CPU
            # kernels run through a slower casting path (a bf16 forward 5% faster, measured 2026-12-06).
            memo.x, memo.x_b = x, x_b
            memo.d = torch.sub(x.view(k, *x_b.shape), x_b).to(dtype).to(kernel).view(x.shape)
        y = matmul(memo.d, linear.weight).to(dtype)  # (K·P, T, out)
        # Widened, then added in place: bit for bit what a mixed-dtype add gives, without its casting path.
        return y.view(k, *y_b.shape).float().add_(y_b).view(*x.shape[:-1], y_b.shape[-1])  # fp32

    return forward
