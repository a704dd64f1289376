"""Typed selectors over the ``models`` table, and the one place Lance SQL lists are written.

Code outside ``index/`` never writes SQL: it says *which* models it wants with a :class:`Selector` (by status,
by ids, by base, by space, by relation, visible to queries, or the user's own ``--where`` text) and the models
store compiles it here into a Lance filter. Selectors combine with ``&`` (every criterion must hold).

Every ``IN (...)`` list is built by :func:`in_list`, and every id list goes through :func:`id_filter`, which
decides between a Lance ``IN`` filter and a scan filtered in arrow afterwards (long lists are slow in Lance).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hubdelta.index.records import HIDDEN_STATUSES, VISIBLE_STATUSES, ModelStatus, Relation
from hubdelta.index.schema import sql_string

# Up to this many ids a read asks Lance for `repo_id IN (...)`; beyond it a scan filtered in arrow is faster
# (measured on 100k rows: IN over 10k ids 0.6 s, a full scan + is_in ~0.05 s).
IN_LIST_MAX = 500


def in_list(column: str, values: Iterable[str]) -> str:
    """``column IN ('a', 'b')`` with every value quoted for Lance SQL; ``false`` for no values.

    The only function in hubdelta that writes an ``IN`` list.
    """
    quoted = [sql_string(str(v)) for v in dict.fromkeys(values)]
    # Lance refuses `IN ()`; an empty list matches nothing, which `false` says.
    return f"{column} IN ({', '.join(quoted)})" if quoted else "false"


@dataclass(frozen=True)
class Filter:
    """A compiled selector: a Lance SQL filter, then the ids to keep when they were too many for an IN list."""

    where: str | None = None
    keep: frozenset[str] | None = None  # applied to ``column`` after the scan
    column: str = "repo_id"
    empty: bool = False  # matches nothing: no read is needed

    @property
    def post_filtered(self) -> bool:
        return self.keep is not None


def id_filter(ids: Iterable[str], *, column: str = "repo_id", where: str | None = None) -> Filter:
    """Rows whose ``column`` is one of ``ids`` (and that pass ``where``): an IN list, or a scan kept in arrow.

    Args:
        ids: the wanted keys (repeats are fine; an empty list matches nothing).
        column: the key column.
        where: another Lance filter the rows must also pass.
    """
    wanted = frozenset(ids)
    if not wanted:
        return Filter(empty=True)
    if len(wanted) > IN_LIST_MAX:
        return Filter(where=where, keep=wanted, column=column)
    listed = in_list(column, sorted(wanted))
    return Filter(where=listed if where is None else f"({where}) AND {listed}", column=column)


def _meet(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None:
        return b
    return a if b is None else a & b


@dataclass(frozen=True)
class Selector:
    """Which models: every given criterion must hold. An empty ``Selector()`` selects every model.

    Build one with the functions below (``by_status``, ``by_ids``, ...) and combine them with ``&``.
    """

    statuses: frozenset[str] | None = None  # status values; None: any
    ids: frozenset[str] | None = None  # repo ids; None: any
    relations: frozenset[str] | None = None  # relation values; None: any
    bases: frozenset[str] = frozenset()  # each must be among the model's base_models
    spaces: frozenset[str] = frozenset()  # the model has a vector in each
    where: tuple[str, ...] = field(default=())  # the user's own filters (``--where``), each Lance SQL
    # Structured filters (the web service's: no SQL text from a client): compiled here with quoted values.
    licenses: frozenset[str] | None = None  # license values; None: any
    tags: frozenset[str] = frozenset()  # each must be among the model's tags
    min_downloads: int = 0
    min_likes: int = 0
    created_after: datetime | None = None

    def __and__(self, other: Selector) -> Selector:
        after = [t for t in (self.created_after, other.created_after) if t is not None]
        return Selector(
            statuses=_meet(self.statuses, other.statuses),
            ids=_meet(self.ids, other.ids),
            relations=_meet(self.relations, other.relations),
            bases=self.bases | other.bases,
            spaces=self.spaces | other.spaces,
            where=self.where + tuple(w for w in other.where if w not in self.where),
            licenses=_meet(self.licenses, other.licenses),
            tags=self.tags | other.tags,
            min_downloads=max(self.min_downloads, other.min_downloads),
            min_likes=max(self.min_likes, other.min_likes),
            created_after=max(after) if after else None,
        )


def by_status(*statuses: ModelStatus) -> Selector:
    """Models in any of ``statuses``."""
    return Selector(statuses=frozenset(ModelStatus(s).value for s in statuses))


def by_ids(repo_ids: Iterable[str]) -> Selector:
    """Models whose repo id is one of ``repo_ids`` (none for an empty list)."""
    return Selector(ids=frozenset(repo_ids))


def by_base(base: str) -> Selector:
    """Models whose ``base_models`` lists ``base`` (any relation; a merge lists several bases)."""
    return Selector(bases=frozenset([base]))


def by_space(space_id: str) -> Selector:
    """Models with a vector in ``space_id`` (none for an unknown space)."""
    return Selector(spaces=frozenset([space_id]))


def by_relation(*relations: Relation) -> Selector:
    """Models related to their base in any of these ways (adapter, finetune, merge, quantized)."""
    return Selector(relations=frozenset(Relation(r).value for r in relations))


def by_metadata(
    *,
    licenses: Iterable[str] | None = None,
    tags: Iterable[str] = (),
    min_downloads: int = 0,
    min_likes: int = 0,
    created_after: datetime | None = None,
) -> Selector:
    """Models by their Hub metadata: a license among ``licenses``, every one of ``tags``, at least so many
    downloads and likes, created after a time. Values are data, never SQL: the index quotes them."""
    return Selector(
        licenses=None if licenses is None else frozenset(licenses),
        tags=frozenset(tags),
        min_downloads=int(min_downloads),
        min_likes=int(min_likes),
        created_after=created_after,
    )


def _metadata_parts(selector: Selector) -> list[str]:
    parts = []
    if selector.licenses is not None:
        parts.append(in_list("license", sorted(selector.licenses)))
    parts += [f"array_has(tags, {sql_string(t)})" for t in sorted(selector.tags)]
    if selector.min_downloads > 0:
        parts.append(f"downloads >= {int(selector.min_downloads)}")
    if selector.min_likes > 0:
        parts.append(f"likes >= {int(selector.min_likes)}")
    if selector.created_after is not None:
        when = selector.created_after.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        parts.append(f"created_at > arrow_cast({sql_string(when)}, 'Timestamp(Microsecond, Some(\"UTC\"))')")
    return parts


def user_filter(where: str) -> Selector:
    """The user's own ``--where`` text: Lance SQL over the models' columns, applied as given.

    The one way SQL enters from outside ``index/``, as a documented feature (README, ``--where``); a malformed
    filter makes the read raise (``ValueError`` or ``RuntimeError`` from Lance), which the caller reports.

    Raises:
        ValueError: the text closes a parenthesis it did not open (or leaves one open), which would let it
            escape the ``(...)`` it is wrapped in and undo the criteria it is combined with.
    """
    if not balanced(where):
        raise ValueError("unbalanced parentheses")
    return Selector(where=(where,))


def balanced(sql: str) -> bool:
    """Whether the parentheses of ``sql`` outside quoted strings ('...', "...") nest properly."""
    depth, quote = 0, ""
    for ch in sql:
        if quote:
            quote = "" if ch == quote else quote  # a doubled quote ('it''s') closes and reopens: same result
        elif ch in "'\"":
            quote = ch
        elif ch == "(" or ch == ")":
            depth += 1 if ch == "(" else -1
            if depth < 0:
                return False
    return depth == 0 and not quote


def visible() -> Selector:
    """Models the read side may show (:func:`hubdelta.index.records.visible_to_queries`)."""
    return Selector(statuses=frozenset(s.value for s in VISIBLE_STATUSES))


def hidden() -> Selector:
    """Models kept in the index but hidden from queries (removed from the Hub)."""
    return Selector(statuses=frozenset(s.value for s in HIDDEN_STATUSES))


def compile_selector(selector: Selector, ids_in_space: Callable[[str], Iterable[str]]) -> Filter:
    """The Lance filter of ``selector``; ``ids_in_space`` gives the repo ids holding a vector in a space."""
    ids = selector.ids
    for space in sorted(selector.spaces):
        ids = _meet(ids, frozenset(ids_in_space(space)))
    nothing = frozenset[str]()
    if (ids is not None and not ids) or nothing in (selector.statuses, selector.relations, selector.licenses):
        return Filter(empty=True)
    parts = []
    if selector.statuses is not None:
        parts.append(in_list("status", sorted(selector.statuses)))
    if selector.relations is not None:
        parts.append(in_list("relation", sorted(selector.relations)))
    parts += [f"array_has(base_models, {sql_string(b)})" for b in sorted(selector.bases)]
    parts += _metadata_parts(selector)
    parts += [f"({w})" for w in selector.where]
    where = " AND ".join(parts) or None
    return Filter(where=where) if ids is None else id_filter(ids, where=where)
