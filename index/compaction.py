"""When and how index tables are compacted: a pure policy over table statistics, and the one optimize call.

Every commit adds a version, and every ``merge_insert`` adds at least one fragment (updated rows are deleted
from their old fragment and rewritten), so a crawl of 100 batches leaves 100 fragments and 100 versions; reads
slow down with fragments and disk grows with versions. A writer therefore checks after its writes and compacts
a table once it has more than ``max_fragments`` fragments or ``max_versions`` versions since its last
compaction.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import timedelta

from lancedb.table import Table

from hubdelta.index.location import local_path


@dataclass(frozen=True)
class CompactionPolicy:
    """Thresholds for :func:`due`; ``auto`` makes writers check after every write."""

    max_fragments: int = 32  # a 100-batch crawl compacts ~3 times; reads stay ~1 fragment-scan cheap
    max_versions: int = 64  # versions are kept only until the next compaction, so this bounds them
    auto: bool = True


@dataclass(frozen=True)
class TableStats:
    """What ``hubdelta status`` and the tests need to know about one table."""

    name: str
    rows: int
    fragments: int
    small_fragments: int
    versions: int  # versions still on disk: 1 right after a compaction
    version: int  # the current version number


def table_stats(name: str, table: Table) -> TableStats:
    """Rows, fragments and versions of ``table`` (reads manifests only, no data)."""
    # lancedb 0.40 returns a plain dict here although the stub says TableStatistics.
    raw = table.stats()
    stats = raw if isinstance(raw, dict) else vars(raw)
    frag = stats["fragment_stats"]
    frag = frag if isinstance(frag, dict) else vars(frag)
    return TableStats(
        name=name,
        rows=int(stats["num_rows"]),
        fragments=int(frag["num_fragments"]),
        small_fragments=int(frag["num_small_fragments"]),
        versions=len(table.list_versions()),
        version=int(table.version),
    )


def due(stats: TableStats, policy: CompactionPolicy) -> bool:
    """Whether ``stats`` crossed a threshold of ``policy``."""
    return stats.fragments > policy.max_fragments or stats.versions > policy.max_versions


def compact_table(table: Table) -> int:
    """Merge small fragments, then delete every older version and leftover file of the table.

    Keeping no old versions and deleting unverified files (e.g. the data files of a ``merge_insert`` killed
    before its commit) is safe only because the caller holds the single-writer lock: no other transaction can
    be in flight. A reader scanning an old version at that instant may see a file vanish; the store's reads
    retry once on that.

    Returns:
        The number of partial temporary files removed (see :func:`remove_partial_files`).
    """
    with warnings.catch_warnings():
        # lancedb warns that cleanup_older_than=0 breaks concurrent writers; the lock rules those out.
        warnings.filterwarnings("ignore", message=r"optimize\(cleanup_older_than=0\)", category=UserWarning)
        table.optimize(cleanup_older_than=timedelta(0), delete_unverified=True)
    uri = getattr(table, "uri", None)  # a local or object-storage LanceTable has one; a remote table does not
    return remove_partial_files(uri) if isinstance(uri, str) and uri else 0


def remove_partial_files(table_uri: str) -> int:
    """Delete the ``.tmp*`` files a writer killed mid-write left in a local table's folders.

    On a local filesystem Lance writes each data file as ``data/.tmpXXXXXX`` and renames it when complete; a
    ``kill -9`` in between leaves the partial file, which Lance's own cleanup never removes (lancedb 0.40).
    Only safe under the write lock (no write in flight). Object storage has no such files: nothing is done.
    """
    root = local_path(table_uri)
    if root is None:
        return 0
    removed = 0
    for folder in (root, *(p for p in root.glob("*") if p.is_dir())):
        for leftover in folder.glob(".tmp*"):
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
                removed += 1
    return removed
