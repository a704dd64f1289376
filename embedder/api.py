"""The embedder's library functions: what ``hubdelta embed`` and ``hubdelta add`` (and the daemon) call."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from hubdelta.embedder.bases import BaseRef, base_space, resolve_base
from hubdelta.embedder.ledger import EmbedSummary
from hubdelta.embedder.options import options as options  # the daemon sizes its Ray workers with these
from hubdelta.embedder.run import Progress
from hubdelta.embedder.safety_records import Plan
from hubdelta.embedder.worker import embed_queued
from hubdelta.index.door import open_writer
from hubdelta.index.records import EMBEDDABLE, HubModel, ModelRecord, ModelStatus, Relation, check_repo_id
from hubdelta.index.store import Index
from hubdelta.kernel.errors import EmbedError, HubdeltaError, ModelRefused, UsageError
from hubdelta.kernel.settings import Settings

if TYPE_CHECKING:  # the Ray path's modules load torch: imported when a run goes to Ray
    from hubdelta.embedder.scaleout import RayOptions, RayWorkers


def ray_options(settings: Settings, *, address: str | None = None, workers: int | None = None) -> RayOptions:
    """``[ray]`` with the command line's ``--ray ADDRESS`` and ``--workers`` over it."""
    from hubdelta.embedder.scaleout import RayOptions

    r = settings.ray
    return RayOptions(address=address or r.address or None, workers=workers or r.workers or None,
                      cpus_per_worker=r.cpus_per_worker, inflight=r.inflight,
                      start_timeout_s=r.start_timeout_s)  # fmt: skip


def run_embed(
    settings: Settings,
    *,
    limit: int | None = None,
    device: str | None = None,
    batch: int | None = None,
    progress: Progress | None = None,
    command: str = "hubdelta embed",
    should_stop: Callable[[], bool] = lambda: False,
    ray: RayOptions | None = None,
    workers: RayWorkers | None = None,
) -> EmbedSummary:
    """Embed queued models, in this process or on Ray workers.

    Args:
        ray: embed on a Ray cluster with these options (workers started for this run, stopped after it).
        workers: embed on these already running Ray workers (the daemon keeps them between runs); wins over ``ray``.

    See :func:`hubdelta.embedder.worker.embed_queued` and :func:`hubdelta.embedder.scaleout.embed_queued_ray`.
    """
    on_ray = ray is not None or workers is not None
    opts = options(settings, limit=limit, device=device, batch=batch, on_ray=on_ray)
    with open_writer(settings, command) as index:  # the lock first: a second writer fails before Ray starts
        counts = index.models.count_by_status()
        if not on_ray or counts[ModelStatus.QUEUED] + counts[ModelStatus.EMBEDDING] == 0:  # no Ray for nothing
            summary = embed_queued(index, settings, opts, progress, should_stop=should_stop)
        else:
            from hubdelta.embedder.scaleout import RayOptions, RayWorkers, embed_queued_ray

            with contextlib.ExitStack() as stack:
                if workers is None:
                    workers = stack.enter_context(RayWorkers(settings, opts, ray or RayOptions()))
                summary = embed_queued_ray(index, settings, opts, workers, progress, should_stop=should_stop)
        index.vectors.maintain_ann(summary.spaces)  # an ANN index once a space outgrows exact search
        index.maintenance.key_indexes()  # and lookups by repo id that do not scan, once a table is large
        return summary


def embed_hub_model(settings: Settings, model: HubModel, *, command: str = "hubdelta similar --embed") -> ModelRecord:
    """Record one Hub repo (its metadata as the crawler's ``fetch_model`` read it) and embed it now.

    Its base need not be tracked. Returns the model's record after the attempt.

    Raises:
        UsageError: the repo names no base, or is quantized.
        HubdeltaError: the embedding failed (the model's status and reason are recorded in the index).
    """
    repo_id = model.repo_id
    if not model.base_models:
        raise UsageError(repo_id, "its card names no base model (no base_model:<relation>:<base> tag)",
                         fix="download it and use hubdelta add PATH --base BASE")  # fmt: skip
    if model.relation not in EMBEDDABLE:
        raise UsageError(repo_id, f"is a {model.relation.value} model: those are recorded, not embedded")
    now = datetime.now(UTC)
    opts = options(settings, limit=None, device=None, batch=None)
    with open_writer(settings, command) as index:
        index.models.put([ModelRecord(model, ModelStatus.QUEUED, first_seen=now, last_seen=now)])
        summary = embed_queued(index, settings, opts, only=[repo_id], extra_bases=model.base_models[:1])
        index.vectors.maintain_ann(summary.spaces)
        record = index.models.get([repo_id])[repo_id]
    if record.status != ModelStatus.EMBEDDED:
        why = record.reason or "; ".join(f"{r}: {w}" for r, w in summary.failures) or "unknown"
        raise HubdeltaError(f"{repo_id} could not be embedded: {record.status.value} ({why})",
                            fix="see hubdelta show " + repo_id)  # fmt: skip
    return record


@dataclass(frozen=True)
class Retried:
    """What ``hubdelta retry`` put back in the queue (its ``--json`` document)."""

    requeued: list[dict[str, str]]  # {repo_id, status, reason}: each model as it was before
    missed: list[str]  # repos named on the command line left as they were (unknown, or neither failed nor skipped)
    dry_run: bool


def retry_models(settings: Settings, repos: Sequence[str] = (), *, reason: str | None = None, skipped: bool = False,
                 dry_run: bool = False, command: str = "hubdelta retry") -> Retried:  # fmt: skip
    """Put failed models back in the queue, attempts reset, for the next ``hubdelta embed``.

    Args:
        repos: only these repo ids (default: every failed model).
        reason: only models whose reason contains this text, ignoring case (e.g. ``HTTP 5``, ``network``).
        skipped: skipped models too (gated ones, once ``HF_TOKEN`` may download them).
        dry_run: change nothing; say what would be requeued (reads the index without the writer's lock).

    Raises:
        UsageError: a malformed repo id, or an empty ``reason``.
    """
    from hubdelta.index.door import open_reader
    from hubdelta.index.selectors import by_ids, by_status

    for repo in repos:
        check_repo_id(repo)
    if reason is not None and not reason.strip():
        raise UsageError("--reason", "is empty", fix="give text the reasons contain, e.g. --reason 'HTTP 5'")
    where = by_status(ModelStatus.FAILED, *([ModelStatus.SKIPPED] if skipped else []))
    if repos:
        where &= by_ids(repos)
    with open_reader(settings) if dry_run else open_writer(settings, command) as index:
        picked = index.models.requeue(where, reason=reason, dry_run=dry_run)
    done = {r.repo_id for r in picked}
    return Retried([{"repo_id": r.repo_id, "status": r.status.value, "reason": r.reason} for r in picked],
                   [r for r in dict.fromkeys(repos) if r not in done], dry_run)  # fmt: skip


@dataclass(frozen=True)
class Added:
    repo_id: str
    space_id: str
    kind: str
    norm: float


def _named_base(folder: Path) -> tuple[str, ...]:
    """The base an adapter folder names: with a local ``--base`` the user vouches that it is that one."""
    import json

    cfg = folder / "adapter_config.json"
    if not cfg.is_file() or cfg.stat().st_size > 1 << 20:
        return ()
    try:
        name = json.loads(cfg.read_text()).get("base_model_name_or_path")
    except (ValueError, AttributeError):
        return ()  # inspect_local refuses a malformed config with the precise reason
    return (name,) if isinstance(name, str) else ()


def _content_sha(folder: Path, files: tuple[str, ...]) -> str:
    """A stable revision id for a local folder: sha1 over its planned files' names and bytes."""
    h = hashlib.sha1()
    for name in sorted(files):
        h.update(name.encode() + b"\0")
        with (folder / name).open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _checked(settings: Settings, path: Path, ref: BaseRef, repo_id: str) -> Plan:
    """Every safety rule on a local folder, against the base; a refusal is raised (nothing is recorded)."""
    from hubdelta.embedder.local import base_info_from_folder, inspect_local
    from hubdelta.embedder.safety import Limits
    from hubdelta.embedder.safety_records import Refusal

    info = base_info_from_folder(ref.folder, ref.repo_id, aliases=_named_base(path) if ref.local else ())
    verdict = inspect_local(path, Limits.from_embed_settings(settings.embed), info)
    if isinstance(verdict, Refusal):
        fix = "hubdelta loads only models that pass its safety rules (docs/untrusted.md)"
        raise ModelRefused(repo_id, verdict.reason, rule=verdict.rule, file=verdict.file, fix=fix)
    return verdict


def _local_record(path: Path, repo_id: str, base_id: str, plan: Plan) -> ModelRecord:
    """The row of a local folder: its revision is a hash of its files' contents."""
    from hubdelta.embedder.safety_records import RepoKind

    now = datetime.now(UTC)
    relation = Relation.ADAPTER if plan.kind == RepoKind.ADAPTER else Relation.FINETUNE
    model = HubModel(repo_id, _content_sha(path, plan.files), relation, (base_id,), created_at=now,
                     last_modified=now, card_summary=f"local folder {path.resolve()}")  # fmt: skip
    return ModelRecord(model, ModelStatus.EMBEDDING, first_seen=now, last_seen=now)


def _check_free(index: Index, repo_id: str, replace: bool) -> None:
    """Two folders both called ``checkpoint-500`` (or a --name of a Hub model) must not silently overwrite."""
    taken = index.models.get([repo_id]).get(repo_id)
    if taken is None or replace:
        return
    card = taken.model.card_summary or ""
    what = card if card.startswith("local folder") else f"{taken.model.relation.value}, {taken.status.value}"
    raise UsageError("--name", f"{repo_id} is already in the index ({what})",
                     fix="pass --replace to replace its record and vector, or give another id with --name")  # fmt: skip


def add_local(settings: Settings, path: Path, base: str, *, name: str | None = None, replace: bool = False,
              command: str = "hubdelta add") -> Added:  # fmt: skip
    """Embed a local model folder (adapter or full) against ``base`` and record it, with no Hub involved.

    A run of one: computed on the base, then committed and counted as ``hubdelta embed`` commits (its vector,
    then its status). Nothing was queued, so nothing is claimed, and a failure is raised rather than recorded.

    Args:
        settings: the settings (index location; the Hub endpoint only when ``base`` is a repo id).
        path: the model folder.
        base: the base it was trained from: a local checkpoint folder, or a repo id fetched from the Hub.
        name: its id in the index (default ``local/<folder name>``).
        replace: replace the record and vector of a model already in the index under that id.

    Raises:
        UsageError: ``path`` is not a folder, a bad name or base, or the id is taken and ``replace`` is not set.
        ModelRefused: the folder breaks a safety rule.
        EmbedError: the model does not fit the base.
    """
    from hubdelta.embedder.activations import ResidentBase
    from hubdelta.embedder.delta_path import Activations
    from hubdelta.embedder.ledger import SpaceLedger
    from hubdelta.embedder.run import ChunkOutput, Run
    from hubdelta.embedder.vetting import refusal_of

    if not path.is_dir():
        raise UsageError(str(path), "is not a folder", fix="give the folder holding the model's files")
    repo_id = check_repo_id(name or f"local/{path.resolve().name}")
    opts = options(settings, limit=None, device=None, batch=None)
    with open_writer(settings, command) as index:
        _check_free(index, repo_id, replace)
        ref = resolve_base(settings, base)
        verdict = _checked(settings, path, ref, repo_id)
        space = base_space(ref, opts)
        ledger = SpaceLedger(index, space, max_attempts=opts.max_attempts)
        with ResidentBase(ref.folder, space, device=opts.device, prepack=opts.prepack) as rb:
            base_acts = ledger.base(lambda: rb.base_activations().numpy())
            acts = Activations(rb).folder(path, verdict.kind, repo_id)
        problem = refusal_of(acts, base_acts, path)  # nothing is recorded for it, as for a refusal
        if problem is not None:
            raise EmbedError(problem, item=repo_id, fix="nothing to add: hubdelta stores only real deltas "
                             "(docs/untrusted.md, Vectors)")  # fmt: skip
        record = _local_record(path, repo_id, ref.repo_id, verdict)
        Run().commit(ledger, [record], ChunkOutput({repo_id: (record.model.sha or "", acts)}))
        index.vectors.maintain_ann([space.id])
        vector = index.vectors.get(space.id, [repo_id])[repo_id].vector
    return Added(repo_id, space.id, verdict.kind.value, float((vector**2).sum() ** 0.5))
