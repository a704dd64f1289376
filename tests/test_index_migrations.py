"""Schema versions: stored on creation, checked on open, migrated by writers only, each migration once."""

from __future__ import annotations

from pathlib import Path

import lancedb
import pyarrow as pa
import pytest

from hubdelta.index import migrations
from hubdelta.index.migrations import SCHEMA_VERSION, m001_create_tables, write_meta
from hubdelta.index.schema import models_to_table
from hubdelta.index.store import Index
from hubdelta.kernel.errors import IndexSchemaError
from tests.helpers import record


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return str(tmp_path / "index")


def test_first_writer_creates_and_stamps_the_store(uri: str, tmp_path: Path) -> None:
    with Index.open(uri, lock_dir=tmp_path, writer="w") as index:
        assert index.applied_migrations == ["m001_create_tables", "m002_create_spaces", "m003_create_reports",
                                           "m004_create_families", "m005_create_layouts",
                                           "m006_create_copies", "m007_create_labels"]  # fmt: skip
        meta = index.meta()
        assert meta["schema_version"] == str(SCHEMA_VERSION) == "7"
        assert meta["hubdelta_version"] and meta["created_at"].endswith("+00:00")
        index.models.put([record(1)])
    with Index.open(uri, lock_dir=tmp_path, writer="w") as index:
        assert index.applied_migrations == []  # nothing runs twice
        assert index.meta()["created_at"] == meta["created_at"] and index.models.count() == 1


def test_a_store_newer_than_the_code_is_refused(uri: str, tmp_path: Path) -> None:
    Index.open(uri, lock_dir=tmp_path, writer="w").close()
    write_meta(lancedb.connect(uri), {"schema_version": str(SCHEMA_VERSION + 1)})
    for open_it in (lambda: Index.open(uri), lambda: Index.open(uri, lock_dir=tmp_path, writer="w")):
        with pytest.raises(IndexSchemaError) as e:
            open_it()
        assert (e.value.found, e.value.expected) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
        line = e.value.one_line()
        assert "\n" not in line and uri in line and f"schema version {SCHEMA_VERSION + 1}" in line
        assert "fix: upgrade hubdelta" in line
    with pytest.raises(IndexSchemaError):  # not IndexLockedError: the refused writer released its lock
        Index.open(uri, lock_dir=tmp_path, writer="again")


def test_an_older_store_is_migrated_by_a_writer_and_refused_by_a_reader(uri: str, tmp_path: Path) -> None:
    db = lancedb.connect(uri)
    m001_create_tables(db)  # a store as the crawler-only release (schema version 1) left it
    write_meta(db, {"schema_version": "1"})
    db.open_table("models").add(models_to_table([record(1)]))
    with pytest.raises(IndexSchemaError) as e:
        Index.open(uri)
    assert (e.value.found, e.value.expected) == (1, SCHEMA_VERSION)
    assert "fix: run any write command such as `hubdelta crawl`" in e.value.one_line()

    with Index.open(uri, lock_dir=tmp_path, writer="w") as index:
        assert index.applied_migrations == ["m002_create_spaces", "m003_create_reports", "m004_create_families",
                                            "m005_create_layouts", "m006_create_copies",
                                            "m007_create_labels"]  # fmt: skip
        assert index.meta()["schema_version"] == "7" and index.models.count() == 1
        assert index.copies.of_space("any") == {}
        assert index.vectors.spaces() == {} and index.reports.latest() is None and index.families.all() == {}
        assert index.layouts.versions() == {} and index.labels.heads() == {}
    with Index.open(uri, lock_dir=tmp_path, writer="w") as index:
        assert index.applied_migrations == []
    assert Index.open(uri).models.count() == 1  # readers accept it now


def test_a_writer_killed_before_stamping_resumes(uri: str, tmp_path: Path) -> None:
    db = lancedb.connect(uri)
    m001_create_tables(db)  # tables made, version never written
    with pytest.raises(IndexSchemaError, match="schema version 0"):
        Index.open(uri)
    with Index.open(uri, lock_dir=tmp_path, writer="w") as index:
        # m001 re-runs over its own partial result
        assert index.applied_migrations == ["m001_create_tables", "m002_create_spaces", "m003_create_reports",
                                           "m004_create_families", "m005_create_layouts",
                                           "m006_create_copies", "m007_create_labels"]  # fmt: skip
        assert index.meta()["schema_version"] == "7"


def test_a_foreign_lance_database_is_not_touched(uri: str, tmp_path: Path) -> None:
    lancedb.connect(uri).create_table("vectors", schema=pa.schema([("x", pa.int64())]))
    with pytest.raises(IndexSchemaError) as e:
        Index.open(uri, lock_dir=tmp_path, writer="w")
    assert "not a hubdelta index" in e.value.one_line() and e.value.found is None
    assert migrations.table_names(lancedb.connect(uri)) == ["vectors"]
