"""``GET /api/models`` queries over a snapshot: tag/author indexes, pre-sorted orders, keyset cursors."""

from __future__ import annotations

import base64
import bisect
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hubdelta_dev.devhub.catalog import RepoRecord

SORTS = ("trendingScore", "downloads", "likes", "createdAt", "lastModified")
DEFAULT_SORT = "trendingScore"  # the Hub's own default order for /api/models
SORT_ALIASES = {"created_at": "createdAt", "last_modified": "lastModified", "trending_score": "trendingScore"}
QUERY_CACHE = 64

SortKey = tuple[int, str]  # (-sort value, repo id): ascending order = value descending, ties by id


class QueryError(ValueError):
    """A list query the Hub would reject with 400 (bad sort, bad cursor)."""


@dataclass(frozen=True)
class ListQuery:
    """The filtering part of a list request; the cursor and page size are separate."""

    sort: str = DEFAULT_SORT
    search: str | None = None
    author: str | None = None
    filters: tuple[str, ...] = ()  # AND-combined tags (library and pipeline tags are tags too)
    gated: bool | None = None
    include_private: bool = False


def normalize_sort(value: str | None) -> str:
    """Map the sort parameter to a known key (client spellings accepted).

    Raises:
        QueryError: an unknown sort key.
    """
    if not value:
        return DEFAULT_SORT
    sort = SORT_ALIASES.get(value, value)
    if sort not in SORTS:
        raise QueryError(f"Invalid sort '{value}': use one of {', '.join(SORTS)}")
    return sort


def sort_value(repo: RepoRecord, sort: str) -> int:
    """The value a repo is ordered by (larger first)."""
    if sort == "createdAt":
        return repo.created_ms
    if sort == "lastModified":
        return repo.modified_ms
    if sort == "downloads":
        return repo.downloads
    if sort == "likes":
        return repo.likes
    return repo.trending


def encode_cursor(sort: str, key: SortKey) -> str:
    """An opaque cursor: the keyset position after which the next page starts."""
    raw = json.dumps([sort, key[0], key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> SortKey:
    """Inverse of :func:`encode_cursor`.

    Raises:
        QueryError: the cursor is malformed or belongs to another sort order.
    """
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        got_sort, value, repo_id = data
        if not isinstance(value, int) or not isinstance(repo_id, str):
            raise ValueError(data)
    except (ValueError, TypeError) as e:
        raise QueryError(f"Invalid cursor {cursor!r}") from e
    if got_sort != sort:
        raise QueryError(f"Cursor was made for sort '{got_sort}', not '{sort}'")
    return (value, repo_id)


@dataclass(frozen=True)
class _Order:
    keys: list[SortKey]
    ids: list[str]


class ListingIndex:
    """Indexes over one snapshot's repos; orders and query results are built lazily and cached."""

    def __init__(self, repos: Mapping[str, RepoRecord]) -> None:
        self._repos = repos
        self.by_tag: dict[str, set[str]] = {}
        self.by_author: dict[str, set[str]] = {}
        self.private: set[str] = set()
        self.gated: set[str] = set()
        for repo in repos.values():
            for tag in repo.tags:
                self.by_tag.setdefault(tag, set()).add(repo.id)
            self.by_author.setdefault(repo.author, set()).add(repo.id)
            if repo.private:
                self.private.add(repo.id)
            if repo.gated:
                self.gated.add(repo.id)
        self._orders: dict[str, _Order] = {}
        self._queries: OrderedDict[ListQuery, _Order] = OrderedDict()
        self._lock = threading.Lock()

    def _order(self, sort: str) -> _Order:
        order = self._orders.get(sort)
        if order is None:
            keys = sorted((-sort_value(r, sort), r.id) for r in self._repos.values())
            order = self._orders[sort] = _Order(keys, [k[1] for k in keys])
        return order

    def _matching(self, query: ListQuery) -> set[str] | None:
        """Ids passing the filters, or None when every repo passes."""
        sets: list[set[str]] = [self.by_tag.get(f, set()) for f in query.filters]
        if query.author is not None:
            sets.append(self.by_author.get(query.author, set()))
        ids: set[str] | None = set.intersection(*sorted(sets, key=len)) if sets else None
        if query.search:
            needle = query.search.lower()
            pool = ids if ids is not None else self._repos.keys()
            ids = {i for i in pool if needle in i.lower()}
        if query.gated is not None:
            pool = ids if ids is not None else set(self._repos)
            ids = pool & self.gated if query.gated else pool - self.gated
        if not query.include_private and self.private:
            ids = (ids if ids is not None else set(self._repos)) - self.private
        return ids

    def results(self, query: ListQuery) -> _Order:
        """The ordered ids answering ``query`` (cached: a crawl asks for the same query page after page)."""
        with self._lock:
            hit = self._queries.get(query)
            if hit is not None:
                self._queries.move_to_end(query)
                return hit
            full = self._order(query.sort)
            ids = self._matching(query)
            if ids is None:
                result = full
            else:
                pairs = [(k, i) for k, i in zip(full.keys, full.ids, strict=True) if i in ids]
                result = _Order([k for k, _ in pairs], [i for _, i in pairs])
            self._queries[query] = result
            if len(self._queries) > QUERY_CACHE:
                self._queries.popitem(last=False)
            return result

    def page(self, query: ListQuery, after: SortKey | None, size: int) -> tuple[list[str], SortKey | None]:
        """One page of ids strictly after the keyset position ``after``.

        Returns:
            ``(ids, next_after)``; ``next_after`` is None on the last page.
        """
        result = self.results(query)
        start = bisect.bisect_right(result.keys, after) if after is not None else 0
        ids = result.ids[start : start + size]
        more = start + size < len(result.ids)
        return ids, (result.keys[start + size - 1] if more else None)


def parse_list_params(params: Mapping[str, list[str]], authorized: bool) -> tuple[ListQuery, dict[str, Any]]:
    """Split list parameters into the query and the output options (full, cardData, config, expand)."""
    one = {k: v[-1] for k, v in params.items() if v}
    raw_filters = params.get("filter", []) + params.get("filter[]", []) + params.get("pipeline_tag", [])
    filters = tuple(dict.fromkeys(f for f in raw_filters if f))
    query = ListQuery(
        sort=normalize_sort(one.get("sort")),
        search=one.get("search") or None,
        author=one.get("author") or None,
        filters=filters,
        gated=truthy(one["gated"]) if "gated" in one else None,
        include_private=authorized,
    )
    options = {
        "full": truthy(one.get("full")),
        "cardData": truthy(one.get("cardData")),
        "config": truthy(one.get("config")),
        "expand": params.get("expand", []) + params.get("expand[]", []),
        "limit": one.get("limit"),
        "cursor": one.get("cursor"),
    }
    return query, options


def truthy(value: str | None) -> bool:
    """Whether a query-string flag is set (`true`, `1`, `yes` or present without a value)."""
    return value is not None and value.lower() in ("1", "true", "yes", "")
