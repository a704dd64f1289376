"""hubdelta.index: the only code that touches LanceDB (see docs/architecture.md).

Open it through :mod:`hubdelta.index.door`; read and write through its per-table stores (``index.models``,
``index.tracked``, ``index.vectors``, ``index.families``, ``index.reports``, ``index.layouts``,
``index.maintenance``), selecting models with :mod:`hubdelta.index.selectors`; pass and receive the typed records
of :mod:`hubdelta.index.records`.

The names below are loaded on first use: importing the typed records (``hubdelta.index.records``) must not load
LanceDB (a second of imports, paid by every process that only passes records along, such as the embedder's
download process).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    "CompactionPolicy": "compaction",
    "TableStats": "compaction",
    "SCHEMA_VERSION": "migrations",
    "DEFAULT_RELATIONS": "records",
    "EMBEDDABLE": "records",
    "Cursor": "records",
    "HubModel": "records",
    "ModelRecord": "records",
    "ModelStatus": "records",
    "Relation": "records",
    "TrackedBase": "records",
    "Index": "store",
    "PutResult": "store",
}

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


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"hubdelta.index.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
