"""A Delta Meaning recipe's name grammar: settings validate ``[family] recipe`` here without importing the embedder.

The recipe's numeric meaning lives in :mod:`hubdelta.embedder.meaning`; this module only says which names exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

Unit = Literal["text", "word"]
Score = Literal["invppl", "loglik"]
Pool = Literal["mean", "concat"]


@dataclass(frozen=True)
class Recipe:
    """How token log-probabilities become a meaning vector. ``str(recipe)`` is its stable name."""

    unit: Unit = "word"
    score: Score = "invppl"
    pool: Pool = "concat"
    centre: bool = True
    per_base: bool = True

    def __post_init__(self) -> None:
        if self.unit not in ("text", "word") or self.score not in ("invppl", "loglik"):
            raise ValueError(f"bad recipe {self}")
        if self.pool not in ("mean", "concat") or (self.unit == "word" and self.pool == "mean"):
            raise ValueError(f"bad recipe {self}: words differ between probes, so they can only be concatenated")

    def __str__(self) -> str:
        return (
            f"{self.unit}-{self.score}-{self.pool}"
            + ("-centred" if self.centre else "")
            + ("-per-base" if self.per_base else "")
        )

    @classmethod
    def parse(cls, text: str) -> Recipe:
        """The inverse of ``str``; also the names in :data:`NAMED` (``paper``, ``default``).

        Raises:
            ValueError: not a recipe name.
        """
        if text in NAMED:
            return NAMED[text]
        per_base = text.endswith("-per-base")
        parts = text.removesuffix("-per-base").split("-")
        centre = parts[-1] == "centred"
        if centre:
            parts = parts[:-1]
        if len(parts) != 3:
            raise ValueError(f"{text!r} is not a meaning recipe (e.g. paper, default, text-loglik-concat-centred)")
        unit, score, pool = parts
        try:
            return cls(cast(Unit, unit), cast(Score, score), cast(Pool, pool), centre, per_base)
        except ValueError:
            raise ValueError(f"{text!r} is not a meaning recipe") from None


PAPER = Recipe("text", "invppl", "mean", centre=False, per_base=False)
NAMED = {"paper": PAPER, "default": Recipe()}
