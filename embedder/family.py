"""The library functions behind ``hubdelta family ...`` (and the daemon's embed job)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hubdelta.embedder.continuations import Sampling
from hubdelta.embedder.family_run import FamilyProgress, FamilyRun, FamilySummary, pending_members
from hubdelta.embedder.meaning import Recipe
from hubdelta.index.door import open_reader, open_writer
from hubdelta.index.families import Family, MemberStatus
from hubdelta.index.records import ModelStatus, check_repo_id
from hubdelta.index.store import Index
from hubdelta.kernel.errors import UsageError
from hubdelta.kernel.settings import Settings

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageError(name, "not a family name", fix="use 1-40 lower-case letters, digits and dashes, e.g. llama-3")
    return name


def _options(settings: Settings, n: int | None, tokens: int | None, recipe: str | None, n_refs: int) -> dict[str, Any]:
    f = settings.family
    options: dict[str, Any] = {"n": n or f.n, "tokens": tokens or f.tokens, "temperature": f.temperature,
                               "seed": f.seed, "recipe": recipe or f.recipe}  # fmt: skip
    try:
        Sampling(options["n"], options["tokens"], options["temperature"], options["seed"])
        Recipe.parse(options["recipe"])
    except ValueError as e:
        raise UsageError("hubdelta family create", str(e), fix="see hubdelta family create --help") from None
    if options["n"] % n_refs:
        raise UsageError("--n", f"{options['n']} continuations per probe do not split evenly over {n_refs} reference "
                         "models", fix=f"use a multiple of {n_refs}")  # fmt: skip
    return options


def create_family(settings: Settings, name: str, bases: list[str], *, track_base: Callable[[str], object],
                  references: list[str] | None = None, n: int | None = None, tokens: int | None = None,
                  recipe: str | None = None) -> Family:  # fmt: skip
    """Define a family over ``bases``. Its space is made by the first embed.

    ``track_base`` tracks a base not yet tracked (the crawler's ``track``, passed in by the caller: the embedder
    never imports the crawler); it is called with the index closed, as it opens the index itself.

    Raises:
        UsageError: a bad name, base or option, or a family of that name exists.
    """
    check_name(name)
    if not bases:
        raise UsageError("--base", "a family needs at least one base", fix="repeat --base for each of its bases")
    bases = list(dict.fromkeys(check_repo_id(b) for b in bases))
    refs = list(dict.fromkeys(check_repo_id(r) for r in references or []))
    options = _options(settings, n, tokens, recipe, len(refs or bases))
    with open_writer(settings, f"hubdelta family create {name}") as index:
        if name in index.families.all():
            raise UsageError(name, "a family of that name exists", fix=f"hubdelta family remove {name} first")
        tracked = {t.base for t in index.tracked.all()}
    for base in bases:
        if base not in tracked:
            track_base(base)
    family = Family(name, tuple(bases), tuple(refs), options, None, datetime.now(UTC))
    with open_writer(settings, f"hubdelta family create {name}") as index:
        index.families.put(family)
    return family


def family_named(index: Index, name: str) -> Family:
    families = index.families.all()
    if name not in families:
        known = ", ".join(sorted(families)) or "none"
        raise UsageError(name, "no such family", fix=f"use one of: {known} (or hubdelta family create)")
    return families[name]


def remove_family(settings: Settings, name: str) -> Family:
    """Forget a family; its space and vectors stay (``similar --space`` still finds them)."""
    with open_writer(settings, f"hubdelta family remove {name}") as index:
        family = family_named(index, name)
        index.families.delete(name)
    return family


@dataclass(frozen=True)
class BaseCounts:
    base: str
    members: int  # models of this base embedded in its activation space
    embedded: int  # ... and in the family space at their current sha
    failed: int
    pending: int


@dataclass(frozen=True)
class FamilyStatus:
    family: Family
    space_id: str | None
    vectors: int
    per_base: list[BaseCounts] = field(default_factory=list)


def family_status(index: Index, family: Family) -> FamilyStatus:
    """Per base: how many of its embedded models are in the family space, failed there, or still pending."""
    members = index.families.members(family.space_id) if family.space_id else {}
    rows = []
    for base in family.bases:
        records = [r for r in index.models.for_base(base).values() if r.model.base_models[:1] == (base,)]
        todo = pending_members(records, family, members).get(base, [])
        eligible = sum(r.status == ModelStatus.EMBEDDED for r in records)
        at_sha = [members[r.repo_id] for r in records if r.repo_id in members and members[r.repo_id].sha == r.model.sha]
        rows.append(BaseCounts(base, eligible, sum(m.status == MemberStatus.EMBEDDED for m in at_sha),
                               sum(m.status == MemberStatus.FAILED for m in at_sha), len(todo)))  # fmt: skip
    vectors = index.vectors.count(family.space_id) if family.space_id else 0
    return FamilyStatus(family, family.space_id, vectors, rows)


def list_families(settings: Settings) -> list[FamilyStatus]:
    with open_reader(settings) as index:
        return [family_status(index, f) for f in sorted(index.families.all().values(), key=lambda f: f.name)]


def show_family(settings: Settings, name: str) -> FamilyStatus:
    with open_reader(settings) as index:
        return family_status(index, family_named(index, name))


def embed_families(settings: Settings, names: list[str] | None = None, *, limit: int | None = None,
                   device: str | None = None, batch: int | None = None, progress: FamilyProgress | None = None,
                   should_stop: Callable[[], bool] = lambda: False,
                   command: str = "hubdelta family embed") -> list[FamilySummary]:  # fmt: skip
    """Fill the meaning space of each family (all by default): sample its texts on the first run, then score
    every member embedded in its base space and not yet in the family space."""
    from hubdelta.embedder.options import resolve_device

    dev = resolve_device(device or settings.embed.device)
    out = []
    with open_writer(settings, command) as index:
        every = sorted(index.families.all().values(), key=lambda f: f.name)
        families = [family_named(index, n) for n in names] if names else every
        for family in families:
            if should_stop():
                break
            run = FamilyRun(index, settings, family, device=dev, batch=batch or settings.family.batch, limit=limit,
                            should_stop=should_stop, progress=progress)  # fmt: skip
            summary = run.run()
            index.vectors.maintain_ann([summary.space_id])
            out.append(summary)
    return out
