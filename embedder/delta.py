"""The Delta Activations arithmetic: pure tensor functions, no model, no I/O.

A batch of probes is left-padded (every row's last real token sits in the last column) with an attention mask;
positions are numbered from each row's first real token, so a padded row sees exactly the positions it would
see alone. Pooling reads the hidden states at real tokens only; the delta is the mean over probes of
finetune minus base, in float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hubdelta.embedder.space import POSITIONS


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists into one batch.

    Args:
        sequences: one list of token ids per row, each non-empty.
        pad_id: the id written into padding (masked out, so its value does not matter).

    Returns:
        ``(input_ids, attention_mask)``, both ``(B, T)`` int64, ``T`` the longest row; the mask is 1 on real
        tokens.
    """
    assert sequences and all(len(s) > 0 for s in sequences), "every row needs at least one token"
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)  # (B, T)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids, mask


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token (padding gets 0), as an unpadded run would see.

    Args:
        attention_mask: ``(B, T)``, 1 on real tokens.

    Returns:
        ``(B, T)`` int64.
    """
    assert attention_mask.ndim == 2, attention_mask.shape
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)


def pool_positions(hidden: torch.Tensor, attention_mask: torch.Tensor, position: str) -> torch.Tensor:
    """Pick one vector per row from hidden states, looking at real tokens only.

    Works for left or right padding: "last" takes the last column whose mask is 1, "first" the first one, "mean"
    averages the masked columns.

    Args:
        hidden: ``(B, T, C)`` hidden states, any float dtype.
        attention_mask: ``(B, T)``, 1 on real tokens; every row has at least one.
        position: ``"last"``, ``"first"`` or ``"mean"``.

    Returns:
        ``(B, C)`` float32.
    """
    assert hidden.ndim == 3 and attention_mask.shape == hidden.shape[:2], (hidden.shape, attention_mask.shape)
    assert position in POSITIONS, position
    mask = attention_mask.to(device=hidden.device, dtype=torch.bool)  # (B, T)
    assert bool(mask.any(dim=1).all()), "a row has no real token"
    if position in ("last", "first"):
        cols = torch.arange(mask.shape[1], device=mask.device)  # (T,)
        if position == "last":
            pick = torch.where(mask, cols, -1).amax(dim=1)  # (B,) index of each row's last real token
        else:
            pick = torch.where(mask, cols, mask.shape[1]).amin(dim=1)  # (B,) index of each row's first real token
        rows = torch.arange(hidden.shape[0], device=hidden.device)  # (B,)
        return hidden[rows, pick].float()  # (B, C)
    weights = mask.float().unsqueeze(-1)  # (B, T, 1)
    # Sum in float32: a bfloat16 sum over tens of tokens would lose the low bits the delta lives in.
    return (hidden.float() * weights).sum(dim=1) / weights.sum(dim=1)  # (B, C)


def delta_vector(finetune: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """The Delta Activations vector: mean over probes of (finetune − base), in float32.

    Args:
        finetune: ``(P, C)`` the finetuned model's pooled activations, one row per probe.
        base: ``(P, C)`` the base model's, same probes in the same order.

    Returns:
        ``(C,)`` float32.
    """
    assert finetune.ndim == 2 and finetune.shape == base.shape, (finetune.shape, base.shape)
    return (finetune.float() - base.float()).mean(dim=0)  # (C,)
