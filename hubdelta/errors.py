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


class ConfigError(HubdeltaError):
    """A setting is missing or malformed (environment, hubdelta.toml or a flag)."""

    exit_code = 2

    def __init__(self, setting: str, message: str, *, fix: str | None = None) -> None:
        super().__init__(f"{setting}: {message}", fix=fix)
        self.setting = setting


class DevhubError(HubdeltaError):
    """The local Hub stand-in cannot serve what it was given (bad root, bad catalog entry, bad port)."""

    def __init__(self, message: str, *, path: str | None = None, fix: str | None = None) -> None:
        super().__init__(message if path is None else f"{path}: {message}", fix=fix)
        self.path = path


class CatalogError(DevhubError):
    """A catalog file or model card in a devhub root is malformed."""


class PoolError(HubdeltaError):
    """The finetune pool cannot be built (missing base model, missing data source, bad recipe)."""

    def __init__(self, message: str, *, item: str | None = None, fix: str | None = None) -> None:
        super().__init__(message if item is None else f"{item}: {message}", fix=fix)
        self.item = item


class MissingDependencyError(HubdeltaError):
    """An optional package a command needs is not installed."""

    def __init__(self, package: str, *, extra: str) -> None:
        super().__init__(
            f"the package '{package}' is not installed",
            fix=f"pip install -e '.[{extra}]' (or run scripts/setup.sh)",
        )
        self.package = package
        self.extra = extra
