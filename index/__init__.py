"""hubdelta.index: the only code that touches LanceDB (see docs/architecture.md).

Open it through :mod:`hubdelta.index.door`; read and write through its per-table stores (``index.models``,
``index.tracked``, ``index.vectors``, ``index.families``, ``index.reports``, ``index.layouts``,
``index.maintenance``), selecting models with :mod:`hubdelta.index.selectors`; pass and receive the typed records
of :mod:`hubdelta.index.records`.
"""

from hubdelta.index.compaction import CompactionPolicy, TableStats
from hubdelta.index.migrations import SCHEMA_VERSION
from hubdelta.index.records import (
    DEFAULT_RELATIONS,
    EMBEDDABLE,
    Cursor,
    HubModel,
    ModelRecord,
    ModelStatus,
    Relation,
    TrackedBase,
)
from hubdelta.index.store import Index, PutResult

__all__ = [
    "DEFAULT_RELATIONS",
    "EMBEDDABLE",
    "SCHEMA_VERSION",
    "CompactionPolicy",
    "Cursor",
    "HubModel",
    "Index",
    "ModelRecord",
    "ModelStatus",
    "PutResult",
    "Relation",
    "TableStats",
    "TrackedBase",
]
