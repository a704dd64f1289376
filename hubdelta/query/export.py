"""``hubdelta export``: one space's vectors with their models' metadata, as parquet, npz or csv.

Models removed from the Hub are hidden from queries, and so are left out of an export unless asked for
(``include_removed``; their ``status`` column then says ``removed``).

Files are written next to their destination and renamed into place, so an interrupted export never leaves a
half-written file under the requested name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from hubdelta.index.door import open_reader
from hubdelta.kernel.errors import NotFoundError, OutputError, UsageError
from hubdelta.kernel.settings import Settings

FORMATS = ("parquet", "npz", "csv")
SUFFIXES = {".parquet": "parquet", ".npz": "npz", ".csv": "csv"}
META_COLUMNS = ("relation", "base_model", "status", "license", "downloads", "likes", "pipeline_tag")


@dataclass(frozen=True)
class Exported:
    path: Path
    format: str
    space_id: str
    rows: int
    dim: int


def _table(ids: list[str], shas: list[str | None], vectors: np.ndarray, meta: dict[str, list[object]]) -> pa.Table:
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, np.float32).ravel(), pa.float32())
    columns: dict[str, object] = {"repo_id": ids, "sha": shas, **meta}
    table = pa.table(columns)
    return table.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, dim))


def _write_parquet(path: Path, table: pa.Table, vectors: np.ndarray, ids: list[str], bases: list[str]) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, path)


def _write_npz(path: Path, table: pa.Table, vectors: np.ndarray, ids: list[str], bases: list[str]) -> None:
    # The seed repository's layout: embeddings (N, C), model_names (N,), base_model (N,); unicode arrays, so
    # np.load(..., allow_pickle=False) reads them back.
    with path.open("wb") as f:
        np.savez(f, embeddings=vectors, model_names=np.array(ids, dtype=str), base_model=np.array(bases, dtype=str))


def _write_csv(path: Path, table: pa.Table, vectors: np.ndarray, ids: list[str], bases: list[str]) -> None:
    import pyarrow.csv as pcsv

    flat = table.drop_columns(["vector"])
    for i in range(vectors.shape[1]):  # one column a dimension: what spreadsheets and pandas read without parsing
        flat = flat.append_column(f"v{i}", pa.array(vectors[:, i], pa.float32()))
    pcsv.write_csv(flat, path)


WRITERS: dict[str, Callable[[Path, pa.Table, np.ndarray, list[str], list[str]], None]] = {
    "parquet": _write_parquet,
    "npz": _write_npz,
    "csv": _write_csv,
}


def choose_format(out: Path, fmt: str | None) -> str:
    """The format to write: ``fmt`` (``--format``), else the one ``out``'s suffix names.

    A suffix naming another format, or one naming none (``--out vectors.dat``), is refused: a file whose name
    says npz but which holds parquet misleads whoever opens it. A name without a suffix takes ``fmt`` as given.

    Raises:
        UsageError: an unknown format, a mismatch, or no format to go by.
    """
    if fmt is not None and fmt not in FORMATS:
        raise UsageError("--format", f"unknown format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}")
    implied = SUFFIXES.get(out.suffix.lower())
    if fmt is None and implied is None:
        raise UsageError("--out", f"{out.name!r}: its suffix names no format",
                         fix="end it in .parquet, .npz or .csv")  # fmt: skip
    if fmt is not None and out.suffix and implied != fmt:
        names = f"names {implied}" if implied else "names no format"
        fix = f"name it {out.stem}.{fmt}" + (f", or pass --format {implied}" if implied else "")
        raise UsageError("--out", f"{out.name!r} {names}, but --format is {fmt}", fix=fix)
    return fmt or implied or ""


def _temp_beside(out: Path) -> Path:
    """An empty temporary file in ``out``'s folder (so the rename is atomic); made first, so a place that cannot
    be written fails before the index is read."""
    if not out.parent.is_dir():
        raise UsageError("--out", f"folder {out.parent} does not exist", fix="create it, or write elsewhere")
    if out.is_dir():
        raise UsageError("--out", f"{out} is a folder", fix="give a file name, e.g. vectors.parquet")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as e:
        raise OutputError(str(out), e.strerror or type(e).__name__) from None
    os.close(fd)
    return Path(tmp)


def export(
    settings: Settings, out: Path, *, fmt: str | None = None, space: str | None = None, include_removed: bool = False
) -> Exported:
    """Write ``space``'s vectors and metadata to ``out`` in ``fmt``.

    Args:
        settings: where the index is.
        out: the file to write (replaced atomically: written beside it, then renamed).
        fmt: ``parquet``, ``npz`` or ``csv``; None: the one ``out``'s suffix names.
        space: the space id (default: the only one).
        include_removed: also export models removed from the Hub (hidden from queries, so left out by default).

    Raises:
        UsageError: unknown format or one the name contradicts, no or ambiguous space, no such output folder.
        OutputError: ``out`` cannot be written.
    """
    fmt = choose_format(out, fmt)
    tmp = _temp_beside(out)
    try:
        space, dim, ids, shas, vectors, meta = _rows(settings, space, include_removed)
        table = _table(ids, shas, vectors, meta)
        try:
            WRITERS[fmt](tmp, table, vectors, ids, [str(b) for b in meta["base_model"]])
            os.replace(tmp, out)
        except OSError as e:  # a full disk, a folder gone read-only while we wrote
            raise OutputError(str(out), e.strerror or type(e).__name__) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Exported(out, fmt, space, len(ids), dim)


def _rows(
    settings: Settings, space: str | None, include_removed: bool
) -> tuple[str, int, list[str], list[str | None], np.ndarray, dict[str, list[object]]]:
    """The space chosen, its dimension, and its rows: ids (sorted), shas, vectors and metadata columns."""
    with open_reader(settings) as index:
        spaces = index.vectors.spaces()
        if space is None:
            if len(spaces) != 1:
                listed = ", ".join(spaces) or "none (run hubdelta embed)"
                raise UsageError("--space", f"the index has {len(spaces)} spaces", fix=f"choose one of: {listed}")
            space = next(iter(spaces))
        elif space not in spaces:
            raise NotFoundError("--space", f"no space {space!r}", fix=f"use one of: {', '.join(spaces) or 'none'}")
        embeddings = index.vectors.get(space) if include_removed else index.vectors.visible(space)
        records = index.models.get(list(embeddings))
    ids = sorted(embeddings)
    dim = spaces[space].dim
    vectors = np.stack([embeddings[i].vector for i in ids]).astype(np.float32) if ids else np.zeros((0, dim))
    meta: dict[str, list[object]] = {c: [] for c in META_COLUMNS}
    for repo_id in ids:
        r = records.get(repo_id)
        m = r.model if r is not None else None
        meta["relation"].append(m.relation.value if m else None)
        meta["base_model"].append(m.base_models[0] if m and m.base_models else "")
        meta["status"].append(r.status.value if r else None)
        meta["license"].append(m.license if m else None)
        meta["downloads"].append(m.downloads if m else None)
        meta["likes"].append(m.likes if m else None)
        meta["pipeline_tag"].append(m.pipeline_tag if m else None)
    return space, dim, ids, [embeddings[i].sha for i in ids], vectors, meta
