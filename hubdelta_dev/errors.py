"""Errors of the dev tools (devhub, the pool): HubdeltaErrors, so the CLI prints them as one line like any other."""

from __future__ import annotations

from hubdelta.kernel.errors import HubdeltaError


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
