"""Output places checked before any work: a folder a command will write into must exist (or be creatable) and
take a new file, so that a wrong ``--out`` fails in one line at once rather than in a traceback at the end."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from hubdelta.kernel.errors import OutputError, UsageError


def writable_folder(path: Path, option: str = "--out") -> Path:
    """Create ``path`` (and its parents) if missing and check that a file can be created in it.

    Raises:
        UsageError: ``path`` is a file.
        OutputError: it cannot be created or written (a read-only place, ``/proc``, no permission).
    """
    if path.exists() and not path.is_dir():
        raise UsageError(option, f"{path} is a file, not a folder", fix="give a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise OutputError(str(path), e.strerror or type(e).__name__, option=option) from None
    return path


def writable_file(path: Path, option: str) -> Path:
    """Check, before any work, that ``path`` can be written: its folder exists and takes a new file.

    Raises:
        UsageError: the folder does not exist, or ``path`` is a folder.
        OutputError: the folder cannot be written.
    """
    if not path.parent.is_dir():
        raise UsageError(option, f"folder {path.parent} does not exist", fix="create it, or write elsewhere")
    if path.is_dir():
        raise UsageError(option, f"{path} is a folder", fix="give a file name")
    writable_folder(path.parent, option)
    return path


def write_atomically(path: Path, write: Callable[[BinaryIO], object], option: str) -> Path:
    """Write ``path`` through a temporary file beside it, renamed into place: never half a file under its name."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(str(path), e.strerror or type(e).__name__, option=option) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
