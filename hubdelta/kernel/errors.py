"""Every error hubdelta raises on purpose.

Each carries what it is about as attributes and a ``fix``: the CLI turns any of them into one line
("error: <message> (fix: <fix>)") and a non-zero exit, never a traceback.
"""

from __future__ import annotations


class HubdeltaError(Exception):
    """Base class: a message and, where one exists, the fix a user can apply."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def one_line(self) -> str:
        line = self.message if self.fix is None else f"{self.message} (fix: {self.fix})"
        return " ".join(line.split())


def one_line(e: BaseException) -> str:
    """Any exception as one line: a HubdeltaError's message and fix, else its type and first line (300 chars)."""
    if isinstance(e, HubdeltaError):
        return e.one_line()
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first}"[:300]


class ConfigError(HubdeltaError):
    """A setting is missing or malformed (environment, hubdelta.toml or a flag)."""

    exit_code = 2

    def __init__(self, setting: str, message: str, *, fix: str | None = None) -> None:
        super().__init__(f"{setting}: {message}", fix=fix)
        self.setting = setting


class UsageError(HubdeltaError):
    """A command was given an argument it cannot use (a malformed repo id, an unknown relation, ...)."""

    exit_code = 2

    def __init__(self, argument: str, message: str, *, fix: str | None = None) -> None:
        super().__init__(f"{argument}: {message}", fix=fix)
        self.argument = argument


class NotFoundError(UsageError):
    """The thing asked for (a repo, a space, a report) is not in the index: a usage error that a web client
    sees as 404."""


class ConflictError(HubdeltaError):
    """What was asked for has changed under the asker (a web page's map was recomputed): ask again."""


class BusyError(HubdeltaError):
    """The service is doing this already for someone else (a web export): retry later."""


class EmbedError(HubdeltaError):
    """A model cannot be embedded in a space (wrong architecture or size, unsupported adapter, missing files)."""

    def __init__(self, message: str, *, item: str | None = None, fix: str | None = None) -> None:
        super().__init__(message if item is None else f"{item}: {message}", fix=fix)
        self.item = item


class DownloadsLost(EmbedError):
    """A run's download process ended before the run did (killed, out of memory): the run stops for that base and
    gives its unused claims back; the next run downloads again (half-downloaded files are resumed)."""

    def __init__(self) -> None:
        super().__init__("the download process ended before the run did",
                         fix="run hubdelta embed again; see the log for why it ended")  # fmt: skip


class MissingDependencyError(HubdeltaError):
    """An optional package a command needs is not installed."""

    def __init__(self, package: str, *, extra: str) -> None:
        super().__init__(
            f"the package '{package}' is not installed",
            fix=f"pip install -e '.[{extra}]' (or run scripts/setup.sh)",
        )
        self.package = package
        self.extra = extra


class HubUnavailableError(HubdeltaError):
    """The Hub (or devhub) kept failing a request after every retry the politeness policy allows."""

    def __init__(self, url: str, *, attempts: int, last_error: str) -> None:
        super().__init__(
            f"{url} failed {attempts} times (last: {last_error})",
            fix="check HF_ENDPOINT and the network, or raise [crawl] max_attempts; a rerun resumes where it stopped",
        )
        self.url = url
        self.attempts = attempts
        self.last_error = last_error


class StoreError(HubdeltaError):
    """The index (LanceDB under ``index.uri``) cannot do what was asked.

    Named StoreError, not IndexError, so that it never shadows the builtin.
    """

    def __init__(self, message: str, *, uri: str, fix: str | None = None) -> None:
        super().__init__(f"index at {uri}: {message}", fix=fix)
        self.uri = uri


class IndexNotFoundError(StoreError):
    """A reader asked for an index that no writer has created yet."""

    def __init__(self, uri: str) -> None:
        super().__init__(
            "does not exist yet",
            uri=uri,
            fix="nothing is tracked yet: start with `hubdelta track <base>`, then `hubdelta crawl`; or check index.uri",
        )


class IndexLockedError(StoreError):
    """Another process holds the single-writer lock; carries what it wrote about itself."""

    def __init__(
        self,
        uri: str,
        *,
        lock_path: str,
        pid: int | None,
        command: str | None,
        started_at: str | None,
        host: str | None = None,
    ) -> None:
        who = f"pid {pid}" if pid is not None else "another process"
        what = f" ({command})" if command else ""
        where = f" on {host}" if host else ""
        since = f" since {started_at}" if started_at else ""
        stop = f" (kill {pid})" if pid is not None else f" (lock file {lock_path})"
        super().__init__(
            f"is being written by {who}{what}{where}{since}",
            uri=uri,
            fix=f"wait for it to finish or stop it{stop}",
        )
        self.lock_path = lock_path
        self.pid = pid
        self.command = command
        self.started_at = started_at
        self.host = host


class IndexSchemaError(StoreError):
    """The index's schema version is not the one this hubdelta expects (or it is not a hubdelta index)."""

    def __init__(self, uri: str, *, found: int | None, expected: int, message: str, fix: str) -> None:
        super().__init__(message, uri=uri, fix=fix)
        self.found = found
        self.expected = expected


class HubRequestError(HubdeltaError):
    """The Hub refused a request (a 4xx other than 408/429): retrying will not help."""

    def __init__(self, url: str, status: int, detail: str) -> None:
        fix = "check HF_TOKEN (unset it for anonymous access)" if status in (401, 403) else "check HF_ENDPOINT"
        super().__init__(f"{url} was refused with HTTP {status}: {detail}", fix=fix)
        self.url = url
        self.status = status


class NothingEmbeddedError(HubdeltaError):
    """A search needs vectors of a base's space (``hubdelta task``) and the index holds none yet."""

    def __init__(self, base: str, *, space_id: str | None = None, others: tuple[str, ...] = (),
                 tracked: bool = True) -> None:  # fmt: skip
        where = f" in space {space_id}" if space_id else ""
        also = f" (it has {', '.join(others)}: another revision or other [embed] settings)" if others else ""
        fix = ("embed models of it with hubdelta add PATH --base FOLDER" if base.startswith("local/")
               else f"run hubdelta track {base}, then hubdelta crawl && hubdelta embed")  # fmt: skip
        what = f"nothing embedded for {base}{where} yet{also}"
        if not tracked and not base.startswith("local/"):
            what = f"{base} is not tracked, so nothing of it is embedded"
        super().__init__(what, fix=fix)
        self.base = base
        self.space_id = space_id
        self.others = others


class ModelRefused(EmbedError):
    """A model repo broke a safety rule (hubdelta.embedder.safety): it is not downloaded further, never loaded.

    The message is the refusal's one-line reason, naming the file and the rule, e.g. ``pytorch_model.bin:
    pickle-only weights refused (no .safetensors); opt in with [embed] allow_pickle = true``. ``retryable`` is
    true only for the disk budget (the same repo may fit once space is freed).
    """

    def __init__(
        self,
        repo_id: str,
        reason: str,
        *,
        rule: str,
        file: str | None = None,
        retryable: bool = False,
        fix: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.repo_id = repo_id
        self.reason = self.one_line()  # the status reason: without the fix, which is for a person at a prompt
        self.fix = fix
        self.rule = rule
        self.file = file
        self.retryable = retryable


class ModelUnavailable(HubdeltaError):
    """A model repo could not be fetched: gated, not found, its revision gone, or the transport failed.

    ``code`` is one of gated, not_found, revision_gone, missing_file, http, transport, disk; ``retryable`` says
    whether trying the same (repo, sha) later can succeed (network trouble, rate limits, a full disk).
    """

    def __init__(self, repo_id: str, reason: str, *, code: str, retryable: bool) -> None:
        super().__init__(reason)
        self.repo_id = repo_id
        self.reason = self.one_line()
        self.code = code
        self.retryable = retryable


class OutputError(HubdeltaError):
    """A file or folder a command was asked to write cannot be written there (read-only, missing, not a folder)."""

    def __init__(self, path: str, reason: str, *, option: str = "--out") -> None:
        super().__init__(f"{option} {path}: cannot write there ({reason})",
                         fix=f"give {option} a path in a folder you can write to")  # fmt: skip
        self.path = path
        self.option = option


class DaemonRunningError(HubdeltaError):
    """Another ``hubdelta daemon`` holds this home's daemon lock; carries what it wrote about itself."""

    def __init__(self, home: str, *, lock_path: str, pid: int | None, started_at: str | None,
                 host: str | None = None) -> None:  # fmt: skip
        who = f"pid {pid}" if pid is not None else "another process"
        where = f" on {host}" if host else ""
        since = f" since {started_at}" if started_at else ""
        stop = f"kill {pid}" if pid is not None else f"the holder of {lock_path}"
        fix = f"one daemon a home: keep that one, or stop it first ({stop}); or use another --home"
        super().__init__(f"a daemon already runs on {home}: {who}{where}{since}", fix=fix)
        self.home = home
        self.lock_path = lock_path
        self.pid = pid
        self.started_at = started_at
        self.host = host
