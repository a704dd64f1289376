"""The installed version, from package metadata (pyproject.toml is the one place it is written)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hubdelta")
except PackageNotFoundError:  # a source tree on sys.path without `pip install -e .`
    __version__ = "0.0.0+unknown"
