"""A short tour of the pool through the real huggingface_hub client (run by scripts/demo.sh)."""

from __future__ import annotations

import sys
import tempfile
import time

from huggingface_hub import HfApi, snapshot_download

BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"


def main(endpoint: str) -> None:
    api = HfApi(endpoint=endpoint)
    for _ in range(100):  # the server starts in the background
        try:
            api.model_info(BASE)
            break
        except Exception:
            time.sleep(0.2)
    print(f"devhub at {endpoint}: children of {BASE}, newest first")
    for relation in ("adapter", "finetune", "merge"):
        models = list(api.list_models(filter=f"base_model:{relation}:{BASE}", sort="created_at"))
        print(f"  {relation:8s} {len(models):3d}  e.g. {', '.join(m.id.split('/')[1] for m in models[:3])}")
    repo = "hubdelta-pool/smollm2-lora-math-1"
    with tempfile.TemporaryDirectory() as d:
        path = snapshot_download(repo, endpoint=endpoint, cache_dir=d)
        info = api.model_info(repo, expand=["baseModels", "sha"])
        print(f"downloaded {repo}@{info.sha[:8]} ({info.base_models}) to a temporary cache: {path}")


if __name__ == "__main__":
    main(sys.argv[1])
