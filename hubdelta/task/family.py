"""Task search over a family's meaning space: a task trained on one base finds finetunes of every base.

The task's adapter is the one ``hubdelta task`` trains on the base anyway (its length is still measured in the
base's activation space, where ``auto`` stops). It is then scored like a member of the family space
(:mod:`hubdelta.embedder.family_run`): its profile of the space's frozen texts, minus the base's stored profile,
under the space's recipe; with ``per_base``, minus the mean of the base's members in the space, at unit length.
That last step uses the members' stored vectors, so the task is centred as the members are; the task itself is
not part of the mean (it is not a member).

The raw meaning vector is cached beside the adapter (``meaning-<space>.npy``): scoring costs about as much as
training, and the space's texts are frozen, so a rerun only centres it again (the members may have changed).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from hubdelta.embedder.continuations import ContinuationSet
from hubdelta.embedder.family import family_named
from hubdelta.embedder.meaning import CENTRE_MIN, base_centres, centred, meaning_vector
from hubdelta.index.families import BaseProfile, MemberStatus
from hubdelta.index.store import Index
from hubdelta.kernel.errors import EmbedError, UsageError
from hubdelta.kernel.recipe import Recipe

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class FamilyTarget:
    """What a task needs of a family space to be placed in it, read before any training."""

    family: str
    space_id: str
    dim: int  # the space's vector length
    recipe: Recipe
    cset: ContinuationSet
    profile: BaseProfile  # the base's own profile: every member of the base was scored against it
    centre: np.ndarray | None  # the mean of the base's members' own vectors (per_base, enough members), or None
    members: int  # the base's members in the space


def family_target(index: Index, name: str, base_id: str) -> FamilyTarget:
    """The family ``name``'s space as seen from ``base_id``; a one-line refusal for anything missing.

    Raises:
        UsageError: no such family, the base is not one of its bases, or nothing of the base is in its space yet.
    """
    family = family_named(index, name)
    if base_id not in family.bases:
        raise UsageError("--family", f"{name}'s bases are {', '.join(family.bases)}, not {base_id}",
                         fix=f"train the task on one of them: --base {family.bases[0]}")  # fmt: skip
    empty = UsageError("--family", f"family {name} has no vectors of {base_id} yet",
                       fix=f"run hubdelta family embed {name}")  # fmt: skip
    if not family.space_id or not index.vectors.count(family.space_id):
        raise empty
    row = index.vectors.spaces()[family.space_id].params
    cset_doc = index.families.continuation_set(str(row.get("continuations", "")))
    profile = index.families.base_profiles(family.space_id).get(base_id)
    stored = index.families.members(family.space_id)
    raw = {k: m.raw for k, m in stored.items() if m.status == MemberStatus.EMBEDDED and m.raw is not None}
    base_of = {k: stored[k].base for k in raw}
    mine = sum(b == base_id for b in base_of.values())
    if cset_doc is None or profile is None or not mine:
        raise empty
    recipe = Recipe.parse(str(row.get("recipe") or "default"))
    centre = base_centres(raw, base_of, CENTRE_MIN).get(base_id) if recipe.per_base else None
    cset = ContinuationSet.from_dict(cset_doc)
    return FamilyTarget(name, family.space_id, int(row.get("dim") or 0), recipe, cset, profile, centre, mine)


def check_revision(target: FamilyTarget, base_id: str, sha: str) -> None:
    """The task must be trained on the revision the family's members were scored against."""
    if target.profile.sha != sha:
        # family embed scores a base's new revision with its next new finetune: no command brings it sooner.
        raise UsageError("--family", f"{target.family}'s finetunes of {base_id} were scored against its revision "
                         f"{target.profile.sha[:12]}, and it is now at {sha[:12]}",
                         fix=f"search without --family until hubdelta family embed {target.family} has scored a "
                         f"new finetune of {base_id}")  # fmt: skip


def meaning_of(target: FamilyTarget, base_folder: Path, adapter: Path, device: str,
               memory_gb: float) -> tuple[np.ndarray, bool]:  # fmt: skip
    """The task adapter's vector in the family space (centred as its members are), and whether it was cached."""
    cached = adapter / f"meaning-{target.space_id}.npy"
    raw, hit = _read(cached, target.dim), True
    if raw is None:
        raw, hit = _score(target, base_folder, adapter, device, memory_gb), False
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.npy")
        np.save(tmp, raw, allow_pickle=False)
        tmp.replace(cached)
    vector = centred(raw, target.centre)
    if not np.isfinite(vector).all() or not vector.any():
        raise EmbedError("the task's adapter changes nothing measurable on the family's texts",
                         item=str(adapter))  # fmt: skip
    return vector, hit


def _read(path: Path, dim: int) -> np.ndarray | None:
    """A cached raw vector of the space's length; None (scored again, and replaced) when missing or unreadable."""
    try:
        raw = np.load(path, allow_pickle=False) if path.is_file() else None
    except (ValueError, OSError, EOFError):
        return None
    return raw if raw is not None and raw.dtype == np.float32 and raw.shape == (dim,) else None


def _score(target: FamilyTarget, base_folder: Path, adapter: Path, device: str, memory_gb: float) -> np.ndarray:
    """The adapter's own (raw) meaning vector: its profile minus the base's stored profile."""
    from hubdelta.embedder.probes import PAPER_PROBES
    from hubdelta.embedder.scoring import ResidentScorer

    with ResidentScorer(base_folder, PAPER_PROBES, target.cset, device=device, memory_gb=memory_gb) as scorer:
        scores = scorer.adapter_scores({"task": adapter})["task"]
    profile = scores.profile(target.cset.texts, target.recipe).astype(np.float32)
    if profile.size != target.profile.profile.size:
        raise EmbedError(f"the task's profile has {profile.size} values, the base's stored one "
                         f"{target.profile.profile.size}", item=str(adapter))  # fmt: skip
    log.info("task.family_scored", space=target.space_id, values=int(profile.size))
    return meaning_vector(profile, target.profile.profile.reshape(profile.shape), target.recipe)
