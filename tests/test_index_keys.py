"""Lookups by repo id through a BTREE index: built once a table is large, right before and after new rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from hubdelta.index.door import open_reader, open_writer
from hubdelta.index.embeddings import Embedding, SpaceRow
from tests.helpers import records, settings_for

SPACE = "acme-base-0123abcd"
DIM = 8


def test_key_indexes_are_built_once_and_lookups_stay_exact(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", "http://127.0.0.1:9")
    now = datetime.now(UTC)
    rng = np.random.default_rng(0)
    with open_writer(settings, "test") as index:
        index.models.put(records(0, 30))
        index.vectors.put_space(SpaceRow(SPACE, {"base_repo": "acme/base", "dim": DIM}, np.zeros((5, DIM)), now))
        index.vectors.put(SPACE, [Embedding(r.model.repo_id, r.model.sha, rng.normal(size=DIM).astype(np.float32), now)
                                  for r in records(0, 20)])  # fmt: skip
        assert index.maintenance.key_indexes(min_rows=25) == ["models"]  # the space's 20 rows: not yet
        assert sorted(index.maintenance.key_indexes(min_rows=10)) == [f"emb_{SPACE}"]
        assert index.maintenance.key_indexes(min_rows=10) == []  # once
        index.models.put(records(30, 5))  # rows the index does not cover yet
    with open_reader(settings) as index:
        got = index.models.get(["user2/model-30", "user0/model-7", "user3/model-31", "nobody/none"])
        assert sorted(got) == ["user0/model-7", "user2/model-30", "user3/model-31"]
        assert index.vectors.of_repo("user0/model-7").keys() == {SPACE}
        assert index.models.count() == 35
