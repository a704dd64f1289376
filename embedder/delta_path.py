"""Resident base → activations → delta: the one path from a model's folder to its Delta Activations vector.

It comes in two halves because Ray splits it across processes:

- **activations**, where the base is resident (this process, or a Ray worker): :class:`Activations` runs model
  folders on a :class:`~hubdelta.embedder.activations.ResidentBase`; :func:`embed_chunk` fetches a chunk and runs
  it through :func:`~hubdelta.embedder.run.compute_chunk`;
- **the vector**, where the space's stored base activations are (the index's writer, or ``task``'s reader):
  :func:`vector` subtracts them (:func:`~hubdelta.embedder.delta.delta_vector`).

Every vector of a space subtracts that space's *stored* base activations, never a base run again elsewhere, so
vectors computed by different processes, runs or machines stay comparable. The users: the activation space's
ledger (``hubdelta embed`` here and on Ray), ``hubdelta add`` and ``hubdelta task``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hubdelta.embedder.activations import ResidentBase
from hubdelta.embedder.delta import delta_vector
from hubdelta.embedder.run import ChunkOutput, compute_chunk, fetcher
from hubdelta.embedder.safety import Limits
from hubdelta.embedder.safety_records import BaseInfo, RepoKind
from hubdelta.kernel.settings import Settings


@dataclass(frozen=True)
class Activations:
    """A resident base as a :class:`~hubdelta.embedder.run.Runner`: pooled probe activations, ``(P, C)`` float32."""

    rb: ResidentBase

    def adapters(self, folders: Mapping[str, Path]) -> dict[str, np.ndarray]:
        """LoRA adapters, all in one forward on the resident base."""
        return {k: a.numpy() for k, a in self.rb.adapter_activations(folders).items()}

    def model(self, folder: Path, item: str) -> np.ndarray:
        """A full finetune or merge of the base, loaded for the call and freed after."""
        return self.rb.model_activations(folder, item=item).numpy()

    def folder(self, folder: Path, kind: RepoKind, item: str) -> np.ndarray:
        """One checked model folder of either kind (``add``, ``task``).

        Raises:
            EmbedError: it does not fit the base.
        """
        return self.adapters({item: folder})[item] if kind == RepoKind.ADAPTER else self.model(folder, item)


def vector(activations: np.ndarray, base_activations: np.ndarray) -> np.ndarray:
    """A model's vector: its activations minus the space's stored base activations, averaged over probes.

    Args:
        activations: ``(P, C)`` the model's pooled activations.
        base_activations: ``(P, C)`` the space's stored ones.

    Returns:
        ``(C,)`` float32.
    """
    # torch.tensor copies: arrays from a Ray worker are read-only views of its object store
    return delta_vector(torch.tensor(activations), torch.tensor(base_activations)).numpy()  # (C,)


def embed_chunk(rb: ResidentBase, items: Sequence[tuple[str, str]], *, settings: Settings, limits: Limits,
                info: BaseInfo) -> ChunkOutput:  # fmt: skip
    """Fetch ``items`` (repo id, revision) and their activations on ``rb``. Touches no index: a Ray worker runs it.

    A bad model never stops the chunk: its exception becomes its :class:`~hubdelta.embedder.plan.Failure`.
    """
    return compute_chunk(Activations(rb), items, fetcher(settings, limits, info))
