"""How to embed, parsed once from settings and flags: device, batch, and what decides the space."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from hubdelta.kernel.errors import ConfigError, UsageError
from hubdelta.kernel.settings import Settings


@dataclass(frozen=True)
class EmbedOptions:
    """How to embed: parsed once from settings and flags."""

    batch: int = 8
    device: str = "cpu"
    dtype: str = "float32"
    prepack: bool = True  # see hubdelta.embedder.packed
    lanes: int = 0  # see hubdelta.embedder.lanes (0: automatic)
    layer: str | None = None  # None = final layer (after the final norm)
    position: str = "last"
    limit: int | None = None
    max_attempts: int = 3
    download_workers: int = 8  # see [embed] in hubdelta.kernel.settings
    download_process: bool = True
    prefetch: int = 4
    prefetch_gb: float = 1.0
    commit_every: int = 64
    commit_interval_s: float = 30.0


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """``auto`` is CUDA when torch sees a GPU, else the CPU; ``cuda`` without a GPU is an error."""
    if device not in DEVICES:
        raise UsageError("--device", f"unknown device {device!r}", fix="use auto, cpu or cuda")
    if device == "cpu":
        return device
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise UsageError("--device cuda", "no CUDA device is visible to torch", fix="use --device cpu or auto")
    return device


def parse_layer(text: str) -> str | None:
    """``final`` → None; ``20`` or ``2/3`` are kept as text for the space to resolve against the model's depth."""
    if text == "final":
        return None
    try:
        value = Fraction(text)
    except ValueError:
        raise ConfigError("embed.layer", f"{text!r} is not final, a layer index or a fraction",
                          fix="use final, e.g. 20, or e.g. 2/3") from None  # fmt: skip
    if value <= 0:
        raise ConfigError("embed.layer", f"{text!r} must be positive", fix="use final, e.g. 20, or e.g. 2/3")
    return text


def options(settings: Settings, *, limit: int | None, device: str | None, batch: int | None,
            on_ray: bool = False) -> EmbedOptions:  # fmt: skip
    """The embedding options (``device`` may stay ``auto``: see :func:`resolve_device`)."""
    e = settings.embed
    wanted = device or e.device
    if wanted not in DEVICES:
        resolve_device(wanted)  # its one-line error
    # ``auto`` stays unresolved until the base loads (ResidentBase), or on each Ray worker against its own GPU:
    # asking torch now would import it (2-3 s) before the run's downloads start. ``cuda`` is checked now.
    resolved = resolve_device(wanted) if wanted == "cuda" and not on_ray else wanted
    return EmbedOptions(
        batch=batch or e.batch,
        device=resolved,
        dtype=e.dtype,
        prepack=e.prepack,
        lanes=e.lanes,
        layer=parse_layer(e.layer),
        position=e.position,
        limit=limit,
        max_attempts=e.max_attempts,
        download_workers=e.download_workers,
        download_process=e.download_process,
        prefetch=e.prefetch,
        prefetch_gb=e.prefetch_gb,
        commit_every=e.commit_every,
        commit_interval_s=e.commit_interval_s,
    )
