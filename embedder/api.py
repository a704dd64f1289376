"""The embedder's library functions: what ``hubdelta embed`` and ``hubdelta add`` (and the daemon) call."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

from hubdelta.embedder.local import LOCAL_SHA, local_base_id
from hubdelta.embedder.scaleout import RayOptions, RayWorkers, embed_queued_ray
from hubdelta.embedder.space import Space
from hubdelta.embedder.worker import EmbedOptions, EmbedSummary, Progress, download_base, embed_queued
from hubdelta.index.door import open_writer
from hubdelta.index.records import EMBEDDABLE, HubModel, ModelRecord, ModelStatus, Relation, check_repo_id
from hubdelta.kernel.errors import ConfigError, HubdeltaError, ModelRefused, UsageError, one_line
from hubdelta.kernel.settings import Settings


def resolve_device(device: str) -> str:
    """``auto`` is CUDA when torch sees a GPU, else the CPU; ``cuda`` without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda", "no CUDA device is visible to torch", fix="use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise UsageError("--device", f"unknown device {device!r}", fix="use auto, cpu or cuda")
    return device


def parse_layer(text: str) -> str | None:
    """``final`` → None; ``20`` or ``2/3`` are kept as text for the space to resolve against the model's depth."""
    if text == "final":
        return None
    try:
        value = Fraction(text)
    except ValueError:
        raise ConfigError("embed.layer", f"{text!r} is not final, a layer index or a fraction",
                          fix="use final, e.g. 20, or e.g. 2/3") from None  # fmt: skip
    if value <= 0:
        raise ConfigError("embed.layer", f"{text!r} must be positive", fix="use final, e.g. 20, or e.g. 2/3")
    return text


def options(settings: Settings, *, limit: int | None, device: str | None, batch: int | None,
            on_ray: bool = False) -> EmbedOptions:  # fmt: skip
    """The embedding options; ``on_ray`` leaves ``auto`` for each Ray worker to resolve against its own GPU."""
    e = settings.embed
    wanted = device or e.device
    if on_ray and wanted not in ("auto", "cpu", "cuda"):
        resolve_device(wanted)  # the same one-line error for an unknown device
    return EmbedOptions(
        batch=batch or e.batch,
        device=wanted if on_ray else resolve_device(wanted),
        dtype=e.dtype,
        layer=parse_layer(e.layer),
        position=e.position,
        limit=limit,
        max_attempts=e.max_attempts,
    )


def ray_options(settings: Settings, *, address: str | None = None, workers: int | None = None) -> RayOptions:
    """``[ray]`` with the command line's ``--ray ADDRESS`` and ``--workers`` over it."""
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
        counts = index.count_by_status()
        if not on_ray or counts[ModelStatus.QUEUED] + counts[ModelStatus.EMBEDDING] == 0:  # no Ray for nothing
            summary = embed_queued(index, settings, opts, progress, should_stop=should_stop)
        else:
            with contextlib.ExitStack() as stack:
                if workers is None:
                    workers = stack.enter_context(RayWorkers(settings, opts, ray or RayOptions()))
                summary = embed_queued_ray(index, settings, opts, workers, progress, should_stop=should_stop)
        index.maintain_ann(summary.spaces)  # an ANN index once a space outgrows exact search
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
        index.put_models([ModelRecord(model, ModelStatus.QUEUED, first_seen=now, last_seen=now)])
        summary = embed_queued(index, settings, opts, only=[repo_id], extra_bases=model.base_models[:1])
        index.maintain_ann(summary.spaces)
        record = index.get_models([repo_id])[repo_id]
    if record.status != ModelStatus.EMBEDDED:
        why = record.reason or "; ".join(f"{r}: {w}" for r, w in summary.failures) or "unknown"
        raise HubdeltaError(f"{repo_id} could not be embedded: {record.status.value} ({why})",
                            fix="see hubdelta show " + repo_id)  # fmt: skip
    return record


@dataclass(frozen=True)
class BaseRef:
    """A base checkpoint resolved to a local folder: what every vector of its space is computed against."""

    folder: Path
    repo_id: str  # the Hub repo id, or ``local/<folder name>`` for a local checkpoint folder
    sha: str  # the Hub revision, or ``"local"`` (the user vouches for the folder)

    @property
    def local(self) -> bool:
        return self.sha == LOCAL_SHA


def resolve_base(settings: Settings, base: str) -> BaseRef:
    """``base`` as a local checkpoint: a folder as given, or a repo id downloaded at its current revision.

    This is how ``hubdelta embed``, ``add`` and ``task`` agree on a base, hence on its space.

    Raises:
        UsageError: a malformed repo id, or a repo the Hub does not have.
        HubdeltaError: the Hub cannot be reached, refuses, or the repo is gated.
    """
    import httpx2
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if Path(base).is_dir():
        return BaseRef(Path(base), local_base_id(Path(base)), LOCAL_SHA)
    check_repo_id(base)
    try:
        folder, sha = download_base(settings, base)
    except GatedRepoError as e:
        raise HubdeltaError(f"{base} is gated on {settings.hf_endpoint}",
                            fix="accept its terms on the Hub and set HF_TOKEN") from e  # fmt: skip
    except RepositoryNotFoundError:
        raise UsageError(base, f"not found on {settings.hf_endpoint}",
                         fix="check the spelling, or give a local checkpoint folder") from None  # fmt: skip
    except (HfHubHTTPError, httpx2.TransportError) as e:
        why = f"could not download the base {base} from {settings.hf_endpoint} ({one_line(e)[:120]})"
        raise HubdeltaError(why, fix="check HF_ENDPOINT and the network, or give a local checkpoint folder") from e
    return BaseRef(folder, base, sha)


def base_space(ref: BaseRef, opts: EmbedOptions) -> Space:
    """The space ``hubdelta embed`` puts vectors of ``ref``'s children in, under ``opts``."""
    from hubdelta.embedder.activations import space_for

    return space_for(ref.folder, ref.repo_id, ref.sha, layer=opts.layer, position=opts.position, dtype=opts.dtype)


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


def add_local(settings: Settings, path: Path, base: str, *, name: str | None = None,
              command: str = "hubdelta add") -> Added:  # fmt: skip
    """Embed a local model folder (adapter or full) against ``base`` and record it, with no Hub involved.

    Args:
        settings: the settings (index location; the Hub endpoint only when ``base`` is a repo id).
        path: the model folder.
        base: the base it was trained from: a local checkpoint folder, or a repo id fetched from the Hub.
        name: its id in the index (default ``local/<folder name>``).
    """
    from hubdelta.embedder.activations import ResidentBase
    from hubdelta.embedder.delta import delta_vector
    from hubdelta.embedder.local import base_info_from_folder, inspect_local
    from hubdelta.embedder.safety import Limits
    from hubdelta.embedder.safety_records import Refusal, RepoKind
    from hubdelta.embedder.worker import _Run
    from hubdelta.index.embeddings import Embedding

    if not path.is_dir():
        raise UsageError(str(path), "is not a folder", fix="give the folder holding the model's files")
    repo_id = check_repo_id(name or f"local/{path.resolve().name}")
    opts = options(settings, limit=None, device=None, batch=None)
    with open_writer(settings, command) as index:
        run = _Run(index, settings, opts, EmbedSummary())
        ref = resolve_base(settings, base)
        base_id = ref.repo_id
        info = base_info_from_folder(ref.folder, base_id, aliases=_named_base(path) if ref.local else ())
        verdict = inspect_local(path, Limits.from_embed_settings(settings.embed), info)
        if isinstance(verdict, Refusal):
            fix = "hubdelta loads only models that pass its safety rules (docs/untrusted.md)"
            raise ModelRefused(repo_id, verdict.reason, rule=verdict.rule, file=verdict.file, fix=fix)
        space = base_space(ref, opts)
        with ResidentBase(ref.folder, space, device=opts.device) as rb:
            row = run.space(rb)
            if verdict.kind == RepoKind.ADAPTER:
                acts = rb.adapter_activations({repo_id: path})[repo_id]
            else:
                acts = rb.model_activations(path, item=repo_id)
        import torch

        vector = delta_vector(acts, torch.from_numpy(row.base_activations)).numpy()
        sha = _content_sha(path, verdict.files)
        now = datetime.now(UTC)
        relation = Relation.ADAPTER if verdict.kind == RepoKind.ADAPTER else Relation.FINETUNE
        model = HubModel(repo_id, sha, relation, (base_id,), created_at=now, last_modified=now,
                         card_summary=f"local folder {path.resolve()}")  # fmt: skip
        index.put_embeddings(space.id, [Embedding(repo_id, sha, vector, now)])
        index.put_models([ModelRecord(model, ModelStatus.EMBEDDED, first_seen=now, last_seen=now)])
        index.maintain_ann([space.id])
    return Added(repo_id, space.id, verdict.kind.value, float((vector**2).sum() ** 0.5))
