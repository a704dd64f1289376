"""The JSON form of every query answer: one serializer for the CLI's ``--json`` and the web service's ``/api``.

Field names are the stable ones the README documents: add fields, never rename them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hubdelta.query.api import Shown


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data: dataclasses as dicts, times in ISO 8601, paths and enums as strings."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def shown_doc(shown: Shown) -> dict[str, Any]:
    """``hubdelta show --json`` and ``/api/models/<repo>``: the record, its vectors, its neighbours, its labels."""
    r, m = shown.record, shown.record.model
    return plain(
        {
            **asdict(m),
            "relation": m.relation.value,
            "status": r.status.value,
            "reason": r.reason,
            "attempts": r.attempts,
            "first_seen": r.first_seen,
            "last_seen": r.last_seen,
            "vectors": shown.vectors,
            "neighbors": shown.neighbors,
            "hidden": shown.hidden,
            "labels": shown.labels,
            "copies": shown.copies,
            "copy_of": shown.copy_of,
            "copied_from": shown.copied_from,
            "no_change_from_base": r.status.value == "unchanged",
        }
    )


def dumps(doc: Any, indent: int | None = 1) -> str:
    """The JSON text of ``doc`` (any answer above)."""
    return json.dumps(plain(doc), indent=indent)
