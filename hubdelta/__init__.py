"""hubdelta: find Hugging Face Hub finetunes that behave alike, by their Delta Activations.

For programs: ``hubdelta.similar("owner/name", k=10)`` returns the nearest models (see :func:`similar`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hubdelta.embedder.api import Retried
    from hubdelta.index.labels import ModelLabels
    from hubdelta.merge.plan import MergePlan
    from hubdelta.query.records import Similar

__all__ = ["__version__", "labels", "merge_plan", "retry", "similar"]


def __getattr__(name: str) -> str:
    if name == "__version__":  # read from package metadata on first use, not at every import
        from hubdelta.kernel.version import hubdelta_version

        return hubdelta_version()
    raise AttributeError(f"module 'hubdelta' has no attribute {name!r}")


def similar(
    repo: str | None = None,
    *,
    vector: str | Path | None = None,
    k: int = 10,
    where: str | None = None,
    relation: str | None = None,
    space: str | None = None,
    home: str | Path | None = None,
    show_all: bool = False,
) -> Similar:
    """The ``k`` models nearest to ``repo`` (or to a ``.npy`` vector) by cosine, best first.

    Copies (re-uploads, near-copies) are one neighbour with ``copies`` naming the rest; ``show_all`` lists each.

    Reads the index of ``home`` (default: ``$HUBDELTA_HOME`` or ``~/.hubdelta``) and its hubdelta.toml, as the
    CLI does. Iterate the result for :class:`~hubdelta.query.records.Neighbor` records; ``result.space_id``
    says which space was searched.

    Raises:
        hubdelta.kernel.errors.HubdeltaError: an unknown or unembedded repo, a bad filter or vector (one-line message).
    """
    from hubdelta.kernel.settings import load_settings
    from hubdelta.query.api import similar as query

    settings = load_settings(home=Path(home) if home is not None else None)
    path = Path(vector) if vector is not None else None
    return query(settings, repo, vector=path, k=k, where=where, relation=relation, space=space, show_all=show_all)


def labels(repo: str, *, home: str | Path | None = None) -> list[ModelLabels]:
    """``repo``'s suggested labels, one per space it is labelled in: tags with their support, a "behaves like"
    line and a confidence, from its nearest documented models (``stale`` when its space changed since).

    Raises:
        hubdelta.kernel.errors.HubdeltaError: a malformed or unknown repo id (one-line message).
    """
    from hubdelta.kernel.settings import load_settings
    from hubdelta.query.labels import suggested_labels

    return suggested_labels(load_settings(home=Path(home) if home is not None else None), repo)


def merge_plan(
    space: str | None = None,
    *,
    anchor: str | None = None,
    k: int = 3,
    where: str | None = None,
    home: str | Path | None = None,
) -> MergePlan:
    """Models of ``space`` to merge: ``anchor`` (default: the medoid) plus the most dispersed ones, as
    ``hubdelta merge-plan`` proposes them (``result.members``, ``result.cosines``, ``result.to_dict()``).

    Raises:
        hubdelta.kernel.errors.HubdeltaError: a bad space, anchor, ``k`` or filter (one-line message).
    """
    from hubdelta.kernel.settings import load_settings
    from hubdelta.merge.api import merge_plan as plan

    settings = load_settings(home=Path(home) if home is not None else None)
    return plan(settings, space=space, anchor=anchor, k=k, where=where)


def retry(
    *repos: str, reason: str | None = None, skipped: bool = False, dry_run: bool = False, home: str | Path | None = None
) -> Retried:
    """Put failed models (``repos``, or all) back in the queue, attempts reset, as ``hubdelta retry`` does.

    ``reason`` keeps those whose reason contains it (any case); ``skipped`` takes skipped models too.

    Raises:
        hubdelta.kernel.errors.HubdeltaError: a malformed repo id, an empty reason, the index locked by a writer.
    """
    from hubdelta.embedder.api import retry_models
    from hubdelta.kernel.settings import load_settings

    settings = load_settings(home=Path(home) if home is not None else None)
    return retry_models(settings, repos, reason=reason, skipped=skipped, dry_run=dry_run, command="hubdelta.retry()")
