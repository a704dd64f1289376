"""Reading the stored suggested labels (computed by :mod:`hubdelta.report.labels`): never computed here.

Labels are marked ``stale`` when the space's vectors changed since they were computed: shown anyway, since most
of a large space's labels do not change with one new model, and the next refresh (after any embed, or ``hubdelta
labels``) recomputes the ones that do. A model embedded after the last refresh has none yet. They are stale too
when computed by another scoring rule (``suggest.RULE``) than this version's: a report leaves a large space's
relabelling after a rule change to ``hubdelta labels`` (``report.labels.REPORT_WHOLE_MAX``).

Two checks: ``show``, ``hubdelta.labels`` and the web API's model answer compare the space's vector
fingerprint (``index.vectors.fingerprint``: new, re-embedded and removed models; it reads the space's
``embedded_at`` column, ~15 ms at 100k vectors); ``similar``, which answers in milliseconds, compares only the
vector table's row count (a metadata read), which catches the common change, models embedded since.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from hubdelta.index.door import SharedReader, reading
from hubdelta.index.labels import ModelLabels
from hubdelta.index.records import check_repo_id
from hubdelta.index.store import Index
from hubdelta.kernel.errors import NotFoundError
from hubdelta.kernel.settings import Settings
from hubdelta.report import suggest


def read_labels(
    index: Index, space_id: str, repo_ids: Iterable[str], *, thorough: bool = True
) -> dict[str, ModelLabels]:
    """The stored labels of ``repo_ids`` in ``space_id`` by repo id (those labelled), marked stale if they are
    (``thorough``: by the fingerprint, else by the row count; see the module docstring)."""
    head = index.labels.heads().get(space_id)
    if head is None:
        return {}
    found = index.labels.get(space_id, repo_ids)
    if not found:
        return found
    moved = head.rule != suggest.RULE or (
        head.source != index.vectors.fingerprint(space_id)
        if thorough
        else head.vectors != index.vectors.count(space_id)
    )
    if moved:
        return {r: replace(x, stale=True) for r, x in found.items()}
    return found


def labels_of_repo(index: Index, repo_id: str) -> list[ModelLabels]:
    """``repo_id``'s labels in every space that has them, by space id order, stale ones marked."""
    out: list[ModelLabels] = []
    for space_id in sorted(index.labels.of_repo(repo_id)):
        out.extend(read_labels(index, space_id, [repo_id]).values())
    return out


def suggested_labels(settings: Settings, repo: str, *, reader: SharedReader | None = None) -> list[ModelLabels]:
    """``repo``'s stored labels, a space each (what ``hubdelta.labels`` returns; ``show`` carries the same).

    Raises:
        UsageError: not a repo id.
        NotFoundError: the repo is not in the index.
    """
    check_repo_id(repo)
    with reading(settings, reader) as index:
        if not index.models.get([repo]) and not index.vectors.of_repo(repo):
            raise NotFoundError(repo, "not in the index", fix="check the spelling, or hubdelta crawl")
        return labels_of_repo(index, repo)
