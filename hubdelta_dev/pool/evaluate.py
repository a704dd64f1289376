"""How much each pool model changed the base: held-out response loss on its domain(s), beside the base's."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubdelta.embedder.training import Example, heldout_loss, load_causal_lm
from hubdelta_dev.pool.build import PoolManifest


@dataclass(frozen=True)
class LossRow:
    """A model's held-out loss on one domain, beside the base's on the same examples."""

    repo_id: str
    domain: str
    base_loss: float
    loss: float


def load_heldout(pool_dir: Path, domain: str) -> list[Example]:
    lines = (pool_dir / "heldout" / f"{domain}.jsonl").read_text().splitlines()
    return [Example(**json.loads(line)) for line in lines]


def evaluate_pool(
    pool_dir: Path, fetch: Callable[[str], Path], repos: set[str] | None = None, domain: str | None = None
) -> list[LossRow]:
    """Held-out loss of every pool model (or of ``repos``) on each domain of its label (or on ``domain`` only).

    Args:
        pool_dir: a built pool (its manifest and held-out files are read).
        fetch: maps a repo id to a local folder with its files (a devhub download, or the pool's own folder).
        repos: restrict to these repo ids.
        domain: restrict to the models labelled with this domain, scored on it alone (a mixed model's other
            domain is not evaluated: each forward pass costs seconds on a CPU).
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    manifest = PoolManifest.load(pool_dir / "manifest.json")
    base_dir = fetch(manifest.base)
    tok = AutoTokenizer.from_pretrained(base_dir)
    base = load_causal_lm(base_dir)
    labels = {r.repo_id: [d for d in r.label.split("+") if domain in (None, d)] for r in manifest.repos}
    wanted = [r for r in manifest.repos if (repos is None or r.repo_id in repos) and labels[r.repo_id]]
    domains = sorted({d for r in wanted for d in labels[r.repo_id]})
    heldout = {d: load_heldout(pool_dir, d) for d in domains}
    base_losses = {d: heldout_loss(base, tok, heldout[d]) for d in domains}
    rows = []
    for repo in wanted:
        folder = fetch(repo.repo_id)
        model: Any
        if (folder / "adapter_config.json").is_file():
            model = PeftModel.from_pretrained(load_causal_lm(base_dir), folder)
        else:
            model = load_causal_lm(folder)
        for d in labels[repo.repo_id]:
            rows.append(LossRow(repo.repo_id, d, base_losses[d], heldout_loss(model, tok, heldout[d])))
        del model
    return rows
