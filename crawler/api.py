"""The crawler's library functions: what ``hubdelta track/untrack/tracked/crawl`` (and the daemon) call."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from hubdelta.crawler.crawl import CrawlProgress, CrawlSummary, crawl
from hubdelta.crawler.hub import HubLister, to_hub_model
from hubdelta.crawler.politeness import Politeness
from hubdelta.index.door import open_reader, open_writer
from hubdelta.index.models_store import NO_TRACKED_BASE
from hubdelta.index.records import DEFAULT_RELATIONS, HubModel, ModelStatus, Relation, TrackedBase, check_repo_id
from hubdelta.index.selectors import by_base, by_status
from hubdelta.kernel.errors import UsageError
from hubdelta.kernel.hub_errors import hub_errors
from hubdelta.kernel.hub_info import model_info
from hubdelta.kernel.settings import Settings


def politeness(settings: Settings) -> Politeness:
    c = settings.crawl
    return Politeness(requests=c.requests, window_s=c.window_s, max_attempts=c.max_attempts, timeout_s=c.timeout_s)


def parse_relations(text: str | Iterable[str]) -> tuple[Relation, ...]:
    """``"adapter,merge"`` → relations, in a fixed order; a one-line error names an unknown one."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    valid = {r.value: r for r in Relation}
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise UsageError("--relations", f"unknown relation {', '.join(unknown) or '(none)'}",
                         fix=f"use a comma-separated subset of {','.join(valid)}")  # fmt: skip
    return tuple(r for r in Relation if r.value in names)


def verify_on_hub(settings: Settings, repo_id: str) -> None:
    """One request: the base exists (a typo would otherwise track nothing, silently)."""
    from huggingface_hub import HfApi

    endpoint = settings.hf_endpoint
    with hub_errors(repo_id, endpoint=endpoint, action=f"reach {endpoint} to check {repo_id}",
                    fix="check HF_ENDPOINT, or pass --no-check to track it anyway"):  # fmt: skip
        model_info(HfApi(endpoint=endpoint, token=settings.hf_token or False), repo_id, timeout=30)


def fetch_model(settings: Settings, repo_id: str) -> HubModel:
    """One repo's metadata from the Hub (``/api/models/<id>``), as the crawler records it.

    Its relation is that of its first ``base_model:<relation>:<base>`` tag (finetune when it has none).

    Raises:
        UsageError: a malformed id, or no such repo.
        HubdeltaError: the Hub or the network failed the request.
    """
    from huggingface_hub.utils import get_session, hf_raise_for_status

    check_repo_id(repo_id)
    endpoint = settings.hf_endpoint
    headers = {"authorization": f"Bearer {settings.hf_token}"} if settings.hf_token else {}
    with hub_errors(repo_id, endpoint=endpoint, action=f"read {repo_id} from {endpoint}",
                    fix="check HF_ENDPOINT and the network"):  # fmt: skip
        response = get_session().get(f"{endpoint}/api/models/{repo_id}", headers=headers, timeout=30)
        hf_raise_for_status(response)
    item = response.json()
    raw_tags = item.get("tags") if isinstance(item, dict) else None
    tags = [t.split(":", 2) for t in raw_tags if isinstance(t, str)] if isinstance(raw_tags, list) else []
    relations = {r.value: r for r in Relation}
    relation = next((relations[t[1]] for t in tags if len(t) == 3 and t[0] == "base_model" and t[1] in relations),
                    Relation.FINETUNE)  # fmt: skip
    return to_hub_model(item, relation)


def track(
    settings: Settings,
    base: str,
    relations: tuple[Relation, ...] = DEFAULT_RELATIONS,
    *,
    check: bool = True,
    command: str = "hubdelta track",
) -> TrackedBase:
    """Follow ``base``'s children of ``relations``; re-tracking changes the relations and keeps cursors."""
    check_repo_id(base)
    if check:
        verify_on_hub(settings, base)
    with open_writer(settings, command) as index:
        existing = {t.base: t for t in index.tracked.all()}.get(base)
        now = datetime.now(UTC)
        if existing is None:
            tracked = TrackedBase(base, relations, added_at=now)
        else:
            # A newly followed relation has never been listed: drop the full-sync mark so it gets a full pass.
            last_full = existing.last_full_sync if set(relations) <= set(existing.relations) else None
            cursors = {r: c for r, c in existing.cursors.items() if r in relations}
            tracked = TrackedBase(base, relations, cursors, existing.added_at, existing.last_crawl, last_full)
        index.tracked.put([tracked])
        # Models that failed because this base was untracked get their chance again.
        index.models.requeue(by_base(base) & by_status(ModelStatus.FAILED), reason=NO_TRACKED_BASE)
    return tracked


def untrack(settings: Settings, base: str, *, command: str = "hubdelta untrack") -> None:
    """Stop following ``base`` (its models stay in the index)."""
    with open_writer(settings, command) as index:
        if not index.tracked.delete(base):
            tracked = ", ".join(t.base for t in index.tracked.all()) or "none"
            raise UsageError(base, "is not tracked", fix=f"tracked bases: {tracked}")


def list_tracked(settings: Settings) -> list[TrackedBase]:
    with open_reader(settings) as index:
        return index.tracked.all()


def run_crawl(
    settings: Settings, *, full: bool = False, command: str = "hubdelta crawl", progress: CrawlProgress | None = None
) -> CrawlSummary:
    """Crawl every tracked base once (see :func:`hubdelta.crawler.crawl.crawl`; ``progress`` as there)."""
    lister = HubLister(settings.hf_endpoint, settings.hf_token, politeness(settings))
    with open_writer(settings, command) as index:
        if not index.tracked.all():
            raise UsageError("crawl", "no base model is tracked", fix="hubdelta track <base> first")
        every = timedelta(days=settings.crawl.full_every_days)
        return crawl(index, lister, full=full, full_every=every, progress=progress)
