"""Label files for ``hubdelta eval``: a CSV of repo id and label, parsed with line-numbered errors (pure)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from hubdelta.kernel.errors import UsageError

MAX_BYTES = 50 << 20  # a label file of a million repos is ~40 MiB
REPO_COLUMNS = ("repo_id", "repo", "model", "model_id")
FIX = "write one 'repo_id,label' row per model, e.g. 'acme/llama-math,math' (a header row is optional)"


def parse_labels(text: str, source: str) -> dict[str, str]:
    """``repo id -> label`` from CSV text.

    Blank lines and lines starting with ``#`` are skipped. The first other row is a header when it names a
    ``label`` column and a repo column (``repo_id``, ``repo``, ``model`` or ``model_id``); otherwise every row
    is ``repo_id,label``. A repo listed twice with the same label is kept once.

    Raises:
        UsageError: a malformed row, an empty field, a repo listed with two labels, or no rows at all; the
            message names ``source:line``.
    """
    reader = csv.reader(io.StringIO(text))
    rows = [(reader.line_num, row) for row in reader  # line_num: the line a (possibly multi-line) row ends on
            if row and "".join(row).strip() and not row[0].lstrip().startswith("#")]  # fmt: skip
    repo_col, label_col = 0, 1
    if rows:
        number, first = rows[0]
        header = [c.strip().lower() for c in first]
        if "label" in header:
            repo_col = next((header.index(c) for c in REPO_COLUMNS if c in header), -1)
            if repo_col < 0:
                raise UsageError(f"{source}:{number}", f"the header names no repo column ({', '.join(REPO_COLUMNS)})",
                                 fix=FIX)  # fmt: skip
            label_col = header.index("label")
            rows = rows[1:]
    labels: dict[str, str] = {}
    for number, row in rows:
        where = f"{source}:{number}"
        if len(row) <= max(repo_col, label_col):
            raise UsageError(where, f"expected a repo id and a label, got {len(row)} field(s)", fix=FIX)
        repo, label = row[repo_col].strip(), row[label_col].strip()
        if not repo or not label:
            raise UsageError(where, "the repo id or the label is empty", fix=FIX)
        if labels.get(repo, label) != label:
            raise UsageError(where, f"{repo} is labelled {labels[repo]!r} earlier and {label!r} here",
                             fix="give each repo one label")  # fmt: skip
        labels[repo] = label
    if not labels:
        raise UsageError(source, "holds no labelled repos", fix=FIX)
    return labels


def read_labels(path: Path) -> dict[str, str]:
    """Read and parse a label file, bounded in size.

    Raises:
        UsageError: the file is missing, too large, not UTF-8, or malformed (see :func:`parse_labels`).
    """
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise UsageError(str(path), f"is {size >> 20} MiB, more than {MAX_BYTES >> 20} MiB",
                             fix="split it, or label a sample of the models")  # fmt: skip
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise UsageError(str(path), f"cannot be read ({e.strerror})", fix="give a readable CSV file") from e
    except UnicodeDecodeError as e:
        raise UsageError(str(path), "is not UTF-8 text", fix="save the CSV as UTF-8") from e
    return parse_labels(text, str(path))
