"""A Ray worker's side of ``hubdelta embed --ray``: one resident base, batches in, activations out.

A plain class: :mod:`hubdelta.embedder.scaleout` makes it a Ray actor, so this module imports no Ray and runs
in tests as it is. It never opens the index: the driver is the only writer. What it returns is plain data
(arrays, strings), so nothing but numbers crosses the cluster.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from hubdelta.embedder.activations import ResidentBase
from hubdelta.embedder.bases import download_base, space_for
from hubdelta.embedder.delta_path import embed_chunk
from hubdelta.embedder.local import base_info_from_folder
from hubdelta.embedder.options import EmbedOptions, resolve_device
from hubdelta.embedder.run import ChunkOutput
from hubdelta.embedder.safety import Limits
from hubdelta.embedder.safety_records import BaseInfo
from hubdelta.kernel.errors import EmbedError, one_line
from hubdelta.kernel.settings import Settings


@dataclass(frozen=True)
class WorkOrder:
    """One batch: models of one base, and the space the driver puts their vectors in."""

    base: str
    sha: str  # the base's revision, resolved once by the driver so every worker loads the same weights
    space_id: str
    items: tuple[tuple[str, str], ...]  # (repo id, revision)


@dataclass(frozen=True)
class WorkResult:
    """A batch's activations and failures, the base's own activations, and where the time went."""

    output: ChunkOutput
    base_activations: np.ndarray | None  # (P, C): the driver stores them when the space is new
    load_s: float  # loading the base for this batch (0 when it was already resident)
    embed_s: float  # fetching and running the batch's models
    worker: str  # host:pid
    base_error: str = ""  # the base could not be loaded here (then nothing else is set)


class EmbedWorker:
    """Holds one base at a time; switching base frees the previous one first."""

    def __init__(self, settings: Settings, opts: EmbedOptions) -> None:
        from hubdelta.embedder.runtime import keep_freed_memory

        keep_freed_memory()
        self.settings = settings
        self.opts = replace(opts, device=resolve_device(opts.device))  # "auto" means this worker's own GPU
        self.limits = Limits.from_embed_settings(settings.embed)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._key: tuple[str, str] | None = None
        self._rb: ResidentBase | None = None
        self._info: BaseInfo | None = None

    def describe(self) -> dict[str, Any]:
        """Where this worker runs: the driver waits for this before giving it work."""
        import torch

        return {"name": self.name, "pid": os.getpid(), "device": self.opts.device, "threads": torch.get_num_threads()}

    def embed(self, order: WorkOrder) -> WorkResult:
        """Embed one batch, loading its base first when it is not the resident one.

        A base that cannot be loaded is reported in the result, as one line: our exceptions carry keyword
        arguments that Ray cannot rebuild on the driver.
        """
        started = time.perf_counter()
        try:
            rb, info = self._load(order)
        except Exception as e:
            return WorkResult(ChunkOutput(), None, 0.0, 0.0, self.name, base_error=one_line(e))
        loaded = time.perf_counter()
        out = embed_chunk(rb, order.items, settings=self.settings, limits=self.limits, info=info)
        done = time.perf_counter()
        acts = rb.base_activations().numpy()
        return WorkResult(out, acts, round(loaded - started, 3), round(done - loaded, 3), self.name)

    def _load(self, order: WorkOrder) -> tuple[ResidentBase, BaseInfo]:
        if self._key == (order.base, order.sha) and self._rb is not None and self._info is not None:
            return self._rb, self._info
        if self._rb is not None:
            self._rb.close()
            self._rb, self._key = None, None
        folder, sha = download_base(self.settings, order.base, revision=order.sha)
        o = self.opts
        space = space_for(folder, order.base, sha, layer=o.layer, position=o.position, dtype=o.dtype)
        if space.id != order.space_id:
            fix = "run the same hubdelta version and [embed] settings on every node"
            raise EmbedError(f"this worker resolves it to space {space.id}, the driver to {order.space_id}",
                             item=order.base, fix=fix)  # fmt: skip
        self._info = base_info_from_folder(folder, order.base)
        self._rb = ResidentBase(folder, space, device=o.device, prepack=o.prepack)
        self._key = (order.base, order.sha)
        return self._rb, self._info
