"""The installed version, from package metadata (pyproject.toml is the one place it is written)."""

from __future__ import annotations

from functools import cache


@cache
def hubdelta_version() -> str:
    """This hubdelta's version; read on first use (package metadata costs ~40 ms, which a query need not pay)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hubdelta")
    except PackageNotFoundError:  # a source tree on sys.path without `pip install -e .`
        return "0.0.0+unknown"
