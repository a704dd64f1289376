"""Suggested labels in the index: each model's tags and "behaves like" line from its documented neighbours,
computed by :mod:`hubdelta.report.labels` and read by ``show``, ``similar``, the report and the web API.

Two tables (migration m007):

- ``labels``: one row a (space, model): the suggested tags with their support, the one-line "behaves like",
  a confidence, and the neighbours they came from with their cosines (``kth``: the lowest of those cosines, so
  a refresh can tell which models a new documented vector would enter the neighbourhood of), and ``evidence``:
  a digest of the model's own documentation then (its tags, card and name's evidence; "" when undocumented),
  so a refresh can tell whose documentation changed when no vector moved;
- ``labels_meta``: one row a space: what its labels were computed from (``source``: the vectors' fingerprint,
  ``through``: the latest ``embedded_at`` covered, ``vectors``: the vector table's rows) and how (``rule``:
  the scoring's parameters). A reader compares ``source`` (or, cheaply, ``vectors``) with the space's current
  state to say whether the labels are stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from hubdelta.index.schema import TIMESTAMP, datetimes, utc

LABELS = "labels"
LABELS_META = "labels_meta"

LABELS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # label_key(space_id, repo_id): one upsert key
        pa.field("space_id", pa.string(), nullable=False),
        pa.field("repo_id", pa.string(), nullable=False),
        pa.field("tags", pa.list_(pa.string()), nullable=False),
        pa.field("scores", pa.list_(pa.float32()), nullable=False),  # each tag's support, in [0, 1]
        pa.field("behaves_like", pa.string(), nullable=False),
        pa.field("confidence", pa.float32(), nullable=False),
        pa.field("neighbours", pa.list_(pa.string()), nullable=False),  # documented neighbours used, best first
        pa.field("sims", pa.list_(pa.float32()), nullable=False),  # their cosines
        pa.field("kth", pa.float32(), nullable=False),  # lowest cosine used; -1 when fewer than k were found
        pa.field("computed_at", TIMESTAMP, nullable=False),
        pa.field("evidence", pa.string(), nullable=False),  # digest of the model's own evidence; "": undocumented
    ]
)

LABELS_META_SCHEMA = pa.schema(
    [
        pa.field("space_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # VectorsStore.fingerprint at computation
        pa.field("through", TIMESTAMP),  # the latest embedded_at covered (None: an empty space)
        pa.field("rule", pa.string(), nullable=False),  # the scoring's parameters: a change recomputes all
        pa.field("common", pa.string(), nullable=False),  # the space's too-common tokens, space-separated
        pa.field("n", pa.int64(), nullable=False),
        pa.field("computed_at", TIMESTAMP, nullable=False),
        pa.field("vectors", pa.int64(), nullable=False),  # rows of the space's vector table then (a cheap check)
    ]
)

LABEL_SCHEMAS = {LABELS: LABELS_SCHEMA, LABELS_META: LABELS_META_SCHEMA}


@dataclass(frozen=True)
class SuggestedTag:
    """One suggested tag and its support: the similarity-weighted share of neighbour evidence carrying it."""

    tag: str
    score: float


@dataclass(frozen=True)
class ModelLabels:
    """A model's suggested labels in one space.

    ``confidence`` in [0, 1]: the top tag's support times the neighbours' weighted mean cosine (0 when no
    documented neighbour was found). ``stale``: the space's vectors changed since they were computed (set by
    the reader; a refresh recomputes them).
    """

    space_id: str
    repo_id: str
    tags: tuple[SuggestedTag, ...]
    behaves_like: str
    confidence: float
    neighbours: tuple[str, ...]
    sims: tuple[float, ...]
    kth: float
    computed_at: datetime | None = None
    stale: bool = False

    @property
    def top(self) -> str | None:
        return self.tags[0].tag if self.tags else None


@dataclass(frozen=True)
class LabelsHead:
    """A space's ``labels_meta`` row."""

    space_id: str
    source: str
    through: datetime | None
    rule: str
    common: frozenset[str]
    n: int
    computed_at: datetime
    vectors: int = 0  # rows of the space's vector table at computation, hidden ones too


def label_key(space_id: str, repo_id: str) -> str:
    return f"{space_id}\t{repo_id}"


def label_rows(labels: list[ModelLabels], computed_at: datetime, evidence: Mapping[str, str]) -> pa.Table:
    """``labels`` rows (one per model); ``evidence``: each model's evidence digest by repo id ("" when absent)."""
    when = utc(computed_at, "computed_at")
    return pa.table(
        {
            "key": [label_key(x.space_id, x.repo_id) for x in labels],
            "space_id": [x.space_id for x in labels],
            "repo_id": [x.repo_id for x in labels],
            "tags": [[t.tag for t in x.tags] for x in labels],
            "scores": [[t.score for t in x.tags] for x in labels],
            "behaves_like": [x.behaves_like for x in labels],
            "confidence": [x.confidence for x in labels],
            "neighbours": [list(x.neighbours) for x in labels],
            "sims": [list(x.sims) for x in labels],
            "kth": [x.kth for x in labels],
            "computed_at": [when] * len(labels),
            "evidence": [evidence.get(x.repo_id, "") for x in labels],
        },
        schema=LABELS_SCHEMA,
    )


def labels_from_rows(rows: pa.Table) -> list[ModelLabels]:
    """Records from ``labels`` rows (floats rounded to 4 places: they were float32)."""
    times = datetimes(rows["computed_at"])
    out = []
    for r, t in zip(rows.to_pylist(), times, strict=True):
        tags = tuple(SuggestedTag(tag, round(s, 4)) for tag, s in zip(r["tags"], r["scores"], strict=True))
        out.append(ModelLabels(r["space_id"], r["repo_id"], tags, r["behaves_like"], round(r["confidence"], 4),
                               tuple(r["neighbours"]), tuple(round(s, 4) for s in r["sims"]), round(r["kth"], 4),
                               t))  # fmt: skip
    return out


def meta_row(head: LabelsHead) -> pa.Table:
    return pa.table(
        {
            "space_id": [head.space_id],
            "source": [head.source],
            "through": [utc(head.through, "through")],
            "rule": [head.rule],
            "common": [" ".join(sorted(head.common))],
            "n": [head.n],
            "computed_at": [utc(head.computed_at, "computed_at")],
            "vectors": [head.vectors],
        },
        schema=LABELS_META_SCHEMA,
    )


def heads_from_rows(rows: pa.Table) -> dict[str, LabelsHead]:
    through, computed = datetimes(rows["through"]), datetimes(rows["computed_at"])
    out = {}
    for r, t, c in zip(rows.to_pylist(), through, computed, strict=True):
        out[r["space_id"]] = _head(r, t, c)
    return out


def _head(r: dict[str, Any], through: datetime | None, computed: datetime | None) -> LabelsHead:
    assert computed is not None  # a non-null column
    return LabelsHead(r["space_id"], r["source"], through, r["rule"], frozenset(r["common"].split()), r["n"],
                      computed, r["vectors"])  # fmt: skip
