"""What a report needs to know about every model, without a :class:`ModelRecord` per model.

A report over a space of 1M models reads every model's first-seen time, relation, creation time, first base and
naming tokens, and counts failures; full records are read only for the few thousand models it lists as
neighbours. 1M ``ModelRecord`` objects (tags, card, every Hub field) would cost about as much memory as the
space's vectors and a minute to build; the models table is instead read a batch of columns at a time
(``index.models.column_batches``) and each model kept as one small tuple.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import NamedTuple

from hubdelta.index.records import ModelRecord, ModelStatus
from hubdelta.index.store import Index
from hubdelta.report import naming
from hubdelta.report.records import FailureCount

COLUMNS = ("repo_id", "first_seen", "created_at", "relation", "base_models", "tags", "card_summary", "status",
           "reason")  # fmt: skip
FAILING = (ModelStatus.FAILED, ModelStatus.SKIPPED)


class ModelFact(NamedTuple):
    """One model as a report sees it."""

    first_seen: datetime | None
    created_at: datetime | None
    relation: str
    first_base: str | None  # base_models[0]: the base it is embedded against (a merge lists more)
    tokens: frozenset[str]  # naming.model_tokens with no word ignored (each space drops its base's words)


class ModelFacts(NamedTuple):
    """Every model's facts by repo id, and the failed and skipped models counted by (status, reason)."""

    models: Mapping[str, ModelFact]
    failures: list[FailureCount]


def read_facts(index: Index) -> ModelFacts:
    """Every model's facts, read from the models table a batch of columns at a time."""
    models: dict[str, ModelFact] = {}
    counts: Counter[tuple[ModelStatus, str]] = Counter()
    for batch in index.models.column_batches(COLUMNS):
        for repo_id, seen, created, relation, bases, tags, card, status, reason in zip(
            *(batch[c] for c in COLUMNS), strict=True
        ):
            models[repo_id] = fact(repo_id, seen, created, relation, bases, tags, card)
            if status in FAILING:
                counts[(ModelStatus(status), reason or "(no reason)")] += 1
    return ModelFacts(models, ranked(counts))


def facts_of(records: Mapping[str, ModelRecord]) -> ModelFacts:
    """The same facts from records already read (a caller that holds them, e.g. ``hubdelta task``)."""
    models = {}
    for r in records.values():
        m = r.model
        models[r.repo_id] = fact(r.repo_id, r.first_seen, m.created_at, m.relation.value, m.base_models, m.tags,
                                 m.card_summary)  # fmt: skip
    counts = Counter((r.status, r.reason or "(no reason)") for r in records.values() if r.status in FAILING)
    return ModelFacts(models, ranked(counts))


def fact(
    repo_id: str,
    first_seen: datetime | None,
    created_at: datetime | None,
    relation: str,
    bases: Iterable[str],
    tags: Iterable[str],
    card: str,
) -> ModelFact:
    """One model's facts; strings that repeat across models (bases, relations, tokens) are shared, not copied."""
    first = next(iter(bases), None)
    tokens = frozenset(sys.intern(t) for t in naming.model_tokens(repo_id, tags, card))
    return ModelFact(first_seen, created_at, sys.intern(relation), sys.intern(first) if first else None, tokens)


def ranked(counts: Counter[tuple[ModelStatus, str]]) -> list[FailureCount]:
    """Failure counts, most frequent first (then by status and reason)."""
    order = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [FailureCount(status, reason, n) for (status, reason), n in order]
