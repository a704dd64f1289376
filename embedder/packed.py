"""A resident base's Linears with their weights prepacked for oneDNN: its CPU matmuls without the per-call relayout.

A resident base runs the same ~200 Linears on every chunk. ``F.linear`` hands an fp32 matmul to MKL and a bf16
one to oneDNN, and both lay the weight out for their kernel again on every call. Laid out once
(``mkldnn._reorder_linear_weight``), oneDNN's kernel ran SmolLM2's shapes at 1,520 rows 10–22% faster than MKL in
fp32 and 3–7% faster than ``F.linear`` in bf16 (2 AMD EPYC cores with AVX-512, 2026-12-06); whole fp32 chunks of 8
adapters went from 0.29–0.31 to 0.26 s an adapter. The results are fp32 (or bf16) results: they differ from MKL's
by summation order, ≤ 3.2e-5 on the pool's fp32 deltas (cosine 0.9999999), and a row's result does not depend on
how many rows share its batch (checked here for 1 to 17 repeats), so a base and its adapters stay comparable.

The change is permanent, like :func:`~hubdelta.embedder.difference.to_difference`: the weight is stored in
oneDNN's blocked layout (``is_mkldnn``; :func:`dense` reads it back) and ``forward`` runs the packed matmul.
Only on a CPU whose torch has oneDNN; bf16 only where oneDNN has bf16 kernels. Elsewhere nothing changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

PACKED_DTYPES = (torch.float32, torch.bfloat16)


def packs(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether Linears of ``dtype`` on ``device`` run faster prepacked (a CPU with oneDNN for that dtype)."""
    if device.type != "cpu" or dtype not in PACKED_DTYPES or not torch.backends.mkldnn.is_available():
        return False
    return dtype == torch.float32 or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def kernel_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype whose matmul kernels should run values rounded to ``dtype`` on ``device``.

    ``dtype`` itself where it has kernels of its own: always on a GPU, and on a CPU whose oneDNN has bf16 kernels
    (AVX-512 or newer). On other CPUs torch's bf16 matmul is a scalar fallback: at a chunk's shapes (1,520 rows ×
    576 × 1,536) it ran 7.7× slower than fp32 on a 2-core AMD EPYC with AVX2 only (Zen 3, 2026-12-07). There fp32
    kernels run the bf16-rounded values instead: a product of two bf16 values is exact in fp32 and both kinds of
    kernel accumulate in fp32, so the results are the same but for summation order.
    """
    return torch.float32 if device.type == "cpu" and dtype == torch.bfloat16 and not packs(device, dtype) else dtype


def dense(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` as a plain strided tensor (a copy when it is packed)."""
    return weight.to_dense() if weight.is_mkldnn else weight


def pack_linears(linears: dict[str, nn.Linear]) -> int:
    """Prepack each Linear's weight for oneDNN, in place; returns how many were packed (a Linear whose weight's
    device and dtype :func:`packs` refuses is left as it is)."""
    changed = 0
    for linear in linears.values():
        if linear.weight.is_mkldnn or not packs(linear.weight.device, linear.weight.dtype):
            continue
        linear.weight = nn.Parameter(packed(linear.weight.detach()), requires_grad=False)
        linear.forward = _packed_forward(linear)  # type: ignore[method-assign]
        changed += 1
    return changed


def own_memory(model: nn.Module) -> None:
    """Copy ``model``'s plain parameters and buffers into memory of their own, in place.

    A checkpoint that transformers loaded zero-copy stays mapped from its safetensors file for as long as one
    tensor views it. Once the Linears are packed (or converted), the embeddings and norms alone would keep the
    whole file mapped and its pages resident: 390 MB more RSS for SmolLM2-135M in fp32, measured.
    """
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if not tensor.is_mkldnn:
                tensor.data = tensor.data.clone()


def packed(weight: torch.Tensor) -> torch.Tensor:
    """An ``(out, in)`` weight in oneDNN's layout for a Linear (no batch-size hint: the chunks' row counts vary)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weightᵀ + bias`` with a packed ``weight``; ``x`` of any leading shape."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [None], "")


def _packed_forward(module: nn.Linear) -> Any:
    def forward(x: torch.Tensor) -> torch.Tensor:
        return linear(x, module.weight, module.bias)

    return forward
