"""A devhub tree of the pool's adapters with byte-identical re-uploads: the copies test's and bench's.

The tree: 17 SmolLM2 adapters of the pool, an alpha variant (the same safetensors, ``lora_alpha`` x 4: not a copy),
a near-copy (B x 1.002, saved again: other bytes, the same behaviour), an untrained adapter (B = 0: no change from
base) and byte-identical re-uploads of 5 of them under new names (hard links, new cards, later creation dates):
5 of 25 adapter repos (20%).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubdelta_dev.pool.base import BASE_REPO_ID
from hubdelta_dev.pool.build import PoolManifest
from hubdelta_dev.pool.publish import card_text, link_tree

ALPHA_VARIANT = "other/alpha-variant"
NEAR_COPY = "other/near-copy"  # an original's LoRA B scaled by 1.002 and saved again: other bytes, same behaviour
ZERO_B = "other/untrained"  # a LoRA whose B matrices are zero: no change from base


@dataclass(frozen=True)
class CopyTree:
    root: Path
    originals: list[str]  # every adapter of the pool
    reuploads: dict[str, str]  # re-upload -> its original
    alpha_of: str  # the original whose safetensors the alpha variant shares
    near_of: str  # the original NEAR_COPY behaves like


def _catalog_line(repo_id: str, created: str) -> dict[str, Any]:
    return {"id": repo_id, "createdAt": created, "lastModified": created, "downloads": 3, "likes": 0}


def build_copy_tree(pool: Path, manifest: PoolManifest, out: Path) -> CopyTree:
    """The pool's base and adapters, 20% of the adapter repos being re-uploads, and one alpha variant."""
    hub = pool / "hub"
    # 17 originals, 3 variants and 5 re-uploads: 5 of 25 adapter repos (20%) are byte-identical re-uploads
    adapters = sorted(r.repo_id for r in manifest.repos if r.kind == "lora" and BASE_REPO_ID in r.bases)[:17]
    link_tree(hub / BASE_REPO_ID, out / BASE_REPO_ID)
    for repo in adapters:
        link_tree(hub / repo, out / repo)
    chosen = adapters[::4][:5]
    reuploads = {f"reupload/{repo.split('/')[1]}-mirror": repo for repo in chosen}
    entries = [json.loads(line) for line in (hub / "catalog.jsonl").read_text().splitlines()]
    keep = {BASE_REPO_ID, *adapters}
    entries = [e for e in entries if e["id"] in keep]
    for new, repo in reuploads.items():
        link_tree(hub / repo, out / new)
        (out / new / "README.md").unlink()
        meta = {"base_model": BASE_REPO_ID, "library_name": "peft", "tags": ["mirror"]}
        (out / new / "README.md").write_text(card_text(meta, new, "Uploaded again, as it was."))
        entries.append(_catalog_line(new, "2026-06-01T00:00:00.000Z"))
    alpha_of = adapters[1]
    link_tree(hub / alpha_of, out / ALPHA_VARIANT)
    config_path = out / ALPHA_VARIANT / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config_path.unlink()  # a hard link: write a new file, never through the link into the pool
    config["lora_alpha"] = 4 * config["lora_alpha"]
    config_path.write_text(json.dumps(config))
    entries.append(_catalog_line(ALPHA_VARIANT, "2026-06-02T00:00:00.000Z"))
    _scaled_b(hub / adapters[2], out / NEAR_COPY, 1.002)
    _scaled_b(hub / adapters[3], out / ZERO_B, 0.0)
    entries += [_catalog_line(NEAR_COPY, "2026-06-03T00:00:00.000Z"), _catalog_line(ZERO_B, "2026-06-04T00:00:00.000Z")]
    (out / "catalog.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return CopyTree(out, adapters, reuploads, alpha_of, adapters[2])


def _scaled_b(src: Path, dst: Path, factor: float) -> None:
    """``src`` as a new repo whose LoRA B matrices are multiplied by ``factor`` (saved afresh: other bytes)."""
    from safetensors.torch import load_file, save_file

    link_tree(src, dst)
    weights = dst / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    weights.unlink()  # a hard link into the pool: write a new file
    save_file({k: v * factor if "lora_B" in k else v for k, v in tensors.items()}, str(weights))
    (dst / "README.md").unlink()
    (dst / "README.md").write_text(card_text({"base_model": BASE_REPO_ID, "library_name": "peft"}, dst.name, "."))
