"""Numbered schema migrations (as in simonw/llm's ``embeddings_migrations.py``) and the version check.

``meta.schema_version`` is the number of migrations applied. A writer applies the missing ones in order,
stamping the version after each, so a writer killed mid-migration resumes where it stopped; each migration
must therefore be safe to run again over its own partial result (``exist_ok``, upserts). A reader never
migrates: it refuses an older store with a fix that names a write command, and any store newer than this
code.

To change a schema: append ``mNNN_...`` to ``MIGRATIONS``; never edit or reorder a released one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pyarrow as pa
from lancedb import DBConnection

from hubdelta.index.copies import COPIES, COPIES_SCHEMA
from hubdelta.index.embeddings import SPACES, SPACES_SCHEMA
from hubdelta.index.families import FAMILY_SCHEMAS
from hubdelta.index.labels import LABEL_SCHEMAS
from hubdelta.index.layouts import LAYOUT_SCHEMAS
from hubdelta.index.reports import REPORTS, REPORTS_SCHEMA
from hubdelta.index.schema import META, META_SCHEMA, MODELS, SCHEMAS, TRACKED
from hubdelta.kernel.errors import IndexSchemaError
from hubdelta.kernel.version import hubdelta_version

Migration = Callable[[DBConnection], None]


def table_names(db: DBConnection) -> list[str]:
    """Every table in ``db`` (all pages)."""
    names: list[str] = []
    token: str | None = None
    while True:
        page = db.list_tables(page_token=token)
        names.extend(page.tables)
        token = page.page_token
        if not token:
            return names


def read_meta(db: DBConnection) -> dict[str, str]:
    """The ``meta`` table as a dict (empty when the table does not exist)."""
    if META not in table_names(db):
        return {}
    rows = db.open_table(META).to_arrow().to_pylist()
    return {r["key"]: r["value"] for r in rows}


def write_meta(db: DBConnection, items: dict[str, str]) -> None:
    """Upsert ``items`` into ``meta`` in one commit."""
    data = pa.table({"key": list(items), "value": list(items.values())}, schema=META_SCHEMA)
    db.open_table(META).merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(data)


def m001_create_tables(db: DBConnection) -> None:
    """meta, tracked and models: the crawler's state."""
    # meta first: a store with any table of ours then always has a meta table to carry its version.
    for name in (META, TRACKED, MODELS):
        db.create_table(name, schema=SCHEMAS[name], exist_ok=True)
    if "created_at" not in read_meta(db):
        write_meta(db, {"created_at": datetime.now(UTC).isoformat(timespec="seconds")})


def m002_create_spaces(db: DBConnection) -> None:
    """spaces: what makes vectors comparable, and each space's cached base activations (the embedder)."""
    db.create_table(SPACES, schema=SPACES_SCHEMA, exist_ok=True)


def m003_create_reports(db: DBConnection) -> None:
    """reports: each report's clusters and summary, so the next report can compare against the last one."""
    db.create_table(REPORTS, schema=REPORTS_SCHEMA, exist_ok=True)


def m004_create_families(db: DBConnection) -> None:
    """families, their continuation sets, base profiles and per-space member states (meaning spaces)."""
    for name, schema in FAMILY_SCHEMAS.items():
        db.create_table(name, schema=schema, exist_ok=True)


def m005_create_layouts(db: DBConnection) -> None:
    """layouts and layout_meta: each space's 2-D map, computed when its vectors change (``hubdelta serve``)."""
    for name, schema in LAYOUT_SCHEMAS.items():
        db.create_table(name, schema=schema, exist_ok=True)


def m006_create_copies(db: DBConnection) -> None:
    """copies: embedded models' fingerprints (weight files' sha256) and the vectors reused without download."""
    db.create_table(COPIES, schema=COPIES_SCHEMA, exist_ok=True)


def m007_create_labels(db: DBConnection) -> None:
    """labels and labels_meta: each model's suggested tags from its documented neighbours (``hubdelta labels``).

    Numbered m007 whatever precedes it: it creates its own tables only and reads none, so it runs the same
    after m005 or after m006.
    """
    for name, schema in LABEL_SCHEMAS.items():
        db.create_table(name, schema=schema, exist_ok=True)


MIGRATIONS: tuple[Migration, ...] = (
    m001_create_tables,
    m002_create_spaces,
    m003_create_reports,
    m004_create_families,
    m005_create_layouts,
    m006_create_copies,
    m007_create_labels,
)
SCHEMA_VERSION = len(MIGRATIONS)


def stored_version(db: DBConnection, uri: str) -> int | None:
    """The store's schema version: None for an empty uri, 0 for a store a writer began but did not stamp.

    Raises:
        IndexSchemaError: the uri holds tables but no ``meta`` (not a hubdelta index), or a garbled version.
    """
    names = table_names(db)
    if not names:
        return None
    if META not in names:
        raise IndexSchemaError(
            uri,
            found=None,
            expected=SCHEMA_VERSION,
            message=f"is not a hubdelta index (it holds tables {sorted(names)} but no '{META}' table)",
            fix="point index.uri at an empty or new folder",
        )
    value = read_meta(db).get("schema_version", "0")
    try:
        return int(value)
    except ValueError:
        raise IndexSchemaError(
            uri,
            found=None,
            expected=SCHEMA_VERSION,
            message=f"has a garbled schema_version {value!r} in its '{META}' table",
            fix="restore the index from a backup or point index.uri at a new folder",
        ) from None


def _too_new(uri: str, found: int, expected: int) -> IndexSchemaError:
    return IndexSchemaError(
        uri,
        found=found,
        expected=expected,
        message=f"has schema version {found}; this hubdelta ({hubdelta_version()}) knows versions up to {expected}",
        fix="upgrade hubdelta (pip install -U hubdelta)",
    )


def check(db: DBConnection, uri: str, migrations: Sequence[Migration] | None = None) -> int:
    """What a reader does on open: accept only a store at exactly the code's version.

    Returns:
        The schema version (equal to ``len(migrations)``).

    Raises:
        IndexSchemaError: the store is newer than the code, or older (not yet migrated by a writer).
        LookupError: the uri holds no index yet (the caller turns it into ``IndexNotFoundError``).
    """
    migrations = MIGRATIONS if migrations is None else migrations
    expected = len(migrations)
    found = stored_version(db, uri)
    if found is None:
        raise LookupError(uri)
    if found > expected:
        raise _too_new(uri, found, expected)
    if found < expected:
        raise IndexSchemaError(
            uri,
            found=found,
            expected=expected,
            message=f"has schema version {found}; this hubdelta reads version {expected}",
            fix="run any write command such as `hubdelta crawl` once, which migrates it",
        )
    return found


def migrate(db: DBConnection, uri: str, migrations: Sequence[Migration] | None = None) -> list[str]:
    """What a writer (holding the lock) does on open: create a fresh store or bring an old one up to date.

    Returns:
        The names of the migrations applied now (empty when the store was current).

    Raises:
        IndexSchemaError: the store is newer than the code, or not a hubdelta index.
    """
    migrations = MIGRATIONS if migrations is None else migrations
    found = stored_version(db, uri) or 0
    if found > len(migrations):
        raise _too_new(uri, found, len(migrations))
    applied = []
    for number, migration in enumerate(migrations[found:], start=found + 1):
        migration(db)
        write_meta(db, {"schema_version": str(number), "hubdelta_version": hubdelta_version()})
        applied.append(migration.__name__)
    return applied
