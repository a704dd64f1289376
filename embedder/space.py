"""Spaces: everything that makes two delta vectors comparable, and a stable id for it.

Two vectors may be compared only if every choice that shapes them is the same: the base checkpoint (repo and
sha), the method, the probe set (version and hash of its texts), the layer, the token position, the compute
dtype and the dimension. :attr:`Space.id` is a readable slug of the base plus a short hash of all of them, so
vectors of different spaces land in different tables and never mix.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from typing import Any, Literal, cast, get_args

from hubdelta.embedder.probes import ProbeSet

Method = Literal["activations", "meaning"]
Position = Literal["last", "mean", "first"]
DType = Literal["float32", "bfloat16"]
LayerSpec = int | float | Fraction | str | None

METHODS: tuple[str, ...] = get_args(Method)
POSITIONS: tuple[str, ...] = get_args(Position)
DTYPES: tuple[str, ...] = get_args(DType)
ID_HASH_CHARS = 8
SLUG_CHARS = 40


def resolve_layer(layer: LayerSpec, num_layers: int) -> int | None:
    """Turn a layer option into what a space stores: ``None`` (final, post-norm) or a decoder-layer count.

    Args:
        layer: ``None`` or ``"final"`` for the final layer after the final norm (the paper's choice); an int
            ``k`` for the residual stream after ``k`` decoder layers (``1 <= k <= num_layers``; ``k ==
            num_layers`` is the last residual *before* the final norm); a fraction of the depth in (0, 1),
            as a float, :class:`~fractions.Fraction` or string such as ``"2/3"``, rounded to the nearest layer.
        num_layers: the model's number of decoder layers.

    Returns:
        ``None`` or the resolved ``k``.

    Raises:
        ValueError: the option is malformed or out of range.
    """
    if layer is None or layer == "final":
        return None
    if isinstance(layer, str):
        try:
            layer = int(layer) if layer.strip().lstrip("-").isdigit() else Fraction(layer.strip())
        except ValueError as e:
            raise ValueError(f"layer {layer!r} is not 'final', an int or a fraction like '2/3'") from e
    if isinstance(layer, bool):
        raise ValueError("layer must be None, an int or a fraction, not a bool")
    if isinstance(layer, int):
        k = layer
    else:
        frac = Fraction(layer).limit_denominator(1000)  # 2/3 as a float is not exactly 2/3
        if not 0 < frac < 1:
            raise ValueError(f"a fractional layer must lie in (0, 1), got {layer!r}")
        k = max(1, round(frac * num_layers))
    if not 1 <= k <= num_layers:
        raise ValueError(f"layer {k} is outside 1..{num_layers} for a model of {num_layers} decoder layers")
    return k


def slugify(repo_id: str) -> str:
    """The readable part of a space id: the repo's name, lower-cased, runs of other characters made ``-``."""
    name = repo_id.rsplit("/", 1)[-1].lower()
    slug = re.sub(r"[^a-z0-9]+", "-", name).strip("-")[:SLUG_CHARS].strip("-")
    return slug or "model"


@dataclass(frozen=True)
class Space:
    """Everything that makes delta vectors comparable. Build with :meth:`create` to resolve a fractional layer."""

    base_repo: str  # e.g. "HuggingFaceTB/SmolLM2-135M-Instruct"
    base_sha: str  # the exact base revision whose activations are subtracted
    probes: str  # probe-set version, e.g. "paper-v1"
    probes_hash: str  # ProbeSet.hash: what actually decides the probe texts
    dim: int  # hidden size = vector length
    layer: int | None = None  # None: final layer after the final norm (paper); k: residual after k layers
    position: Position = "last"  # "last" token (paper), "mean" over real tokens, or the "first" (an ablation)
    dtype: DType = "float32"  # the Linears' matmuls (bf16: on the difference to the base); vectors are float32
    method: Method = "activations"
    # Meaning spaces only (None otherwise, and then left out of the id so older spaces keep theirs):
    family: str | None = None  # the family's name; base_repo/base_sha are its first base's
    continuations: str | None = None  # ContinuationSet.hash: the frozen texts every model is scored on
    recipe: str | None = None  # hubdelta.embedder.meaning.Recipe name

    def __post_init__(self) -> None:
        if not self.base_repo or not self.base_sha:
            raise ValueError("a space needs a base repo and a base sha")
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} is not one of {METHODS}")
        if self.position not in POSITIONS:
            raise ValueError(f"position {self.position!r} is not one of {POSITIONS}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {DTYPES}")
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim <= 0:
            raise ValueError(f"dim must be a positive int, got {self.dim!r}")
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int)):
            raise ValueError(f"layer must be None or an int (resolve fractions with Space.create), got {self.layer!r}")
        if self.layer is not None and self.layer < 1:
            raise ValueError(f"layer must be >= 1, got {self.layer}")
        meaning = (self.family, self.continuations, self.recipe)
        if (self.method == "meaning") != all(meaning) or (self.method != "meaning" and any(meaning)):
            raise ValueError("a meaning space needs a family, a continuation set and a recipe; others none of them")

    @classmethod
    def create(
        cls,
        base_repo: str,
        base_sha: str,
        *,
        probes: ProbeSet,
        dim: int,
        num_layers: int,
        layer: LayerSpec = None,
        position: str = "last",
        dtype: str = "float32",
    ) -> Space:
        """A space for a base of ``num_layers`` decoder layers, resolving ``layer`` with :func:`resolve_layer`.

        Raises:
            ValueError: an option is malformed or out of range.
        """
        return cls(
            base_repo=base_repo,
            base_sha=base_sha,
            probes=probes.version,
            probes_hash=probes.hash,
            dim=dim,
            layer=resolve_layer(layer, num_layers),
            position=cast(Position, position),
            dtype=cast(DType, dtype),
        )

    @property
    def id(self) -> str:
        """``<slug of the base>-<8 hex of sha256 over every field>``, e.g. ``smollm2-135m-instruct-3f9a1c2b``.

        A meaning space is named after its family: ``family-<name>-<8 hex>``.
        """
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        slug = f"family-{slugify(self.family)}" if self.family else slugify(self.base_repo)
        return f"{slug}-{hashlib.sha256(blob).hexdigest()[:ID_HASH_CHARS]}"

    @property
    def label(self) -> str:
        """What the space is of, for people: the base repo, or ``family <name>``."""
        return f"family {self.family}" if self.family else self.base_repo

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (the meaning-only fields only when set)."""
        d = asdict(self)
        for name in ("family", "continuations", "recipe"):
            if d[name] is None:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Space:
        """The inverse of :meth:`to_dict`.

        Raises:
            ValueError: a field is missing, unknown or invalid.
        """
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown space fields: {sorted(unknown)}")
        try:
            return cls(**data)
        except TypeError as e:  # a required field is missing
            raise ValueError(f"malformed space: {e}") from e

    def matches(self, probes: ProbeSet) -> bool:
        """Whether ``probes`` is the probe set this space was made with."""
        return (probes.version, probes.hash) == (self.probes, self.probes_hash)
