"""Pure decisions of the query side: which space, which filter, how far to look, which ids a typo meant."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from hubdelta.index.records import Relation
from hubdelta.index.selectors import Selector, by_relation, user_filter
from hubdelta.kernel.errors import UsageError

WHERE_FIX = (
    "use SQL over the models' columns (license, downloads, likes, relation, pipeline_tag, library, tags, "
    "created_at), e.g. \"license = 'mit' AND downloads > 10\""
)


def choose_space(
    available: Mapping[str, Mapping[str, Any]],
    requested: str | None,
    preferred: Mapping[str, Any],
    *,
    what: str,
) -> tuple[str, list[str]]:
    """The space to search in, and the other candidates.

    Args:
        available: params by space id, for the spaces the query can be searched in (e.g. where a repo has a
            vector), newest first.
        requested: ``--space``, if given.
        preferred: the current ``[embed]`` settings as space params (position, dtype, a resolved layer): a space
            matching all of them wins over a newer one.
        what: the query, for errors.

    Raises:
        UsageError: ``requested`` is not one of ``available``, or nothing is available.
    """
    ids = list(available)
    if requested is not None:
        if requested not in available:
            listed = ", ".join(ids) if ids else "none"
            raise UsageError("--space", f"{what} has no vector in space {requested!r}", fix=f"use one of: {listed}")
        return requested, [i for i in ids if i != requested]
    if not ids:
        raise UsageError(what, "no vector to search with", fix="embed it first (hubdelta embed)")
    matching = [i for i in ids if all(available[i].get(p) == preferred.get(p) for p in preferred)]
    chosen = (matching or ids)[0]
    return chosen, [i for i in ids if i != chosen]


def model_filter(where: str | None, relation: str | None) -> Selector | None:
    """Which models a query may answer with, from ``--where`` and ``--relation`` (None: no filter).

    ``where`` is the user's own SQL over the models' columns (a documented feature): it is passed to the index
    as given, which combines it with everything else (ids, statuses) itself.
    """
    try:
        parts = [user_filter(where)] if where and where.strip() else []
    except ValueError as e:
        raise UsageError("--where", f"not a valid filter over the models table: {e}", fix=WHERE_FIX) from None
    if relation is not None:
        parts.append(by_relation(Relation(relation)))  # checked against Relation by the caller
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else parts[0] & parts[1]


def next_fetch(k: int, fetched: int, found: int, total: int) -> int | None:
    """How many nearest rows to ask for next, when ``found`` of the last ``fetched`` passed the filter.

    None: stop (enough found, or every row has been looked at). Grows 8x a round, so a filter that passes
    one row in a thousand takes ~4 rounds over a million rows.
    """
    if found >= k or fetched >= total:
        return None
    return min(total, max(fetched * 8, k))


def first_fetch(k: int, excluded: int, total: int, filtered: bool) -> int:
    """The first round's size: ``k`` plus the excluded query itself, with a margin when a filter may drop rows
    (an ANN probe returns 20k rows for about the cost of k, and each further round costs two queries)."""
    return min(total, (k * 20 if filtered else k) + excluded)


_SEPARATORS = str.maketrans("/_.-", "    ")


def _tokens(repo_id: str) -> set[str]:
    return set(repo_id.lower().translate(_SEPARATORS).split())


def close_ids(query: str, ids: Sequence[str], n: int = 5) -> list[str]:
    """Stored repo ids close to ``query``: same name under another owner first, then by spelling.

    Spelling is compared (difflib) only among ids sharing a word with the query (owner, or a part of the name),
    then among ids of about its length: over 100k ids, difflib on all of them took 4 s here.
    """
    q = query.lower()
    name = q.rsplit("/", 1)[-1]
    words = _tokens(q)
    lowered = {i.lower(): i for i in ids if not words.isdisjoint(i.lower().translate(_SEPARATORS).split())}
    if not lowered:  # no shared word: fall back to ids of about the same length
        lowered = {i.lower(): i for i in ids if abs(len(i) - len(q)) <= 1}
    lowered.pop(q, None)
    same_name = [i for low, i in lowered.items() if low.rsplit("/", 1)[-1] == name]
    spelled = [lowered[m] for m in difflib.get_close_matches(q, list(lowered), n=n, cutoff=0.6)]
    return list(dict.fromkeys([*same_name, *spelled]))[:n]
