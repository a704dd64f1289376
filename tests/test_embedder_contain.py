"""One bad model never stops an embed run: hostile numbers, missing tensors, no-op deltas, dead workers.

Each test writes a devhub root with the tiny llama base of :mod:`hubdelta_dev.devhub.badrepos`, good controls and
hostile repos in ONE chunk, runs the real ``hubdelta embed`` (devhub over HTTP, the real client, LanceDB on disk)
and checks every model's status and one-line reason, that the good ones are embedded, and the exit code.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from hubdelta.cli import app
from hubdelta.crawler.api import run_crawl, track
from hubdelta.embedder.api import run_embed
from hubdelta.embedder.ledger import EmbedSummary
from hubdelta.index.door import open_reader, open_writer
from hubdelta.index.records import ModelStatus, visible_to_queries
from hubdelta.kernel.settings import Settings
from hubdelta_dev.devhub.badrepos import (
    BASE_ID,
    HIDDEN,
    TOKENIZER,
    VOCAB,
    Files,
    _write,
    adapter_config,
    base_shapes,
    card,
    full_config,
    lora_shapes,
    safetensors_bytes,
)
from hubdelta_dev.devhub.server import DevhubServer
from tests.helpers import settings_for


def tensors_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    """A safetensors file of these F32 arrays (NaN and Inf written as they are)."""
    meta: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    chunks, pos = [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        meta[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [pos, pos + len(data)]}
        chunks.append(data)
        pos += len(data)
    raw = json.dumps(meta).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(chunks)


def lora(seed: int = 0, *, edit: Any = None, targets: tuple[str, ...] = ("q_proj", "v_proj"), **cfg: Any) -> Files:
    """An adapter of the tiny base: random factors (``edit`` may spoil them), config with ``cfg`` changed."""
    rng = np.random.default_rng(seed)
    shapes = lora_shapes(4, targets)
    arrays = {k: (rng.standard_normal(math.prod(s)) * 0.3).astype(np.float32).reshape(s) for k, s in shapes.items()}
    if edit is not None:
        edit(arrays)
    text = adapter_config(targets=targets, **cfg)
    return {"README.md": card(), "adapter_config.json": text, "adapter_model.safetensors": tensors_bytes(arrays)}


def head_lora() -> Files:
    """A trained-looking LoRA on ``lm_head`` only: the decoder's output, where activations are read, never sees it."""
    rng = np.random.default_rng(5)
    arrays = {"base_model.model.lm_head.lora_A.weight": rng.standard_normal((4, HIDDEN)).astype(np.float32),
              "base_model.model.lm_head.lora_B.weight": rng.standard_normal((VOCAB, 4)).astype(np.float32)}  # fmt: skip
    text = adapter_config(targets=("lm_head",))
    return {"README.md": card(), "adapter_config.json": text, "adapter_model.safetensors": tensors_bytes(arrays)}


def full(*, edit: Any = None, drop: tuple[str, ...] = (), **changes: Any) -> Files:
    rng = np.random.default_rng(1)
    arrays = {k: (rng.standard_normal(math.prod(s)) * 0.05).astype(np.float32).reshape(s)
              for k, s in base_shapes().items() if k not in drop}  # fmt: skip
    if edit is not None:
        edit(arrays)
    weights = tensors_bytes(arrays)
    return {"README.md": card(), "config.json": full_config(**changes), **TOKENIZER, "model.safetensors": weights}


def _first(kind: str, value: float) -> Any:
    def edit(arrays: dict[str, np.ndarray]) -> None:
        name = next(k for k in arrays if kind in k)
        arrays[name].flat[0] = value

    return edit


def _all(kind: str, value: float) -> Any:
    def edit(arrays: dict[str, np.ndarray]) -> None:
        for k in arrays:
            if kind in k:
                arrays[k][...] = value

    return edit


def write_root(root: Path, repos: dict[str, Files]) -> None:
    base = safetensors_bytes(base_shapes())
    _write(
        root / BASE_ID, {"README.md": card(None), "config.json": full_config(), **TOKENIZER, "model.safetensors": base}
    )
    for repo_id, files in repos.items():
        _write(root / repo_id, files)
    (root / "catalog.jsonl").write_text("")


def statuses(settings: Settings) -> dict[str, tuple[str, str]]:
    with open_reader(settings) as index:
        return {k: (r.status.value, r.reason) for k, r in index.models.get().items() if k != BASE_ID}


def embed_root(tmp_path: Path, repos: dict[str, Files], toml: str = "") -> tuple[Settings, DevhubServer]:
    write_root(tmp_path / "hub", repos)
    hub = DevhubServer(tmp_path / "hub").__enter__()
    settings = settings_for(tmp_path / "home", hub.url, toml)
    track(settings, BASE_ID)
    run_crawl(settings)
    return settings, hub


@pytest.fixture
def devhub_root(tmp_path: Path):
    servers: list[DevhubServer] = []

    def start(repos: dict[str, Files], toml: str = "") -> Settings:
        settings, hub = embed_root(tmp_path, repos, toml)
        servers.append(hub)
        return settings

    yield start
    for hub in servers:
        hub.__exit__(None, None, None)


GOOD = {"good/lora-a": lora(1), "good/lora-b": lora(2), "good/full": full()}


def test_nan_and_inf_models_fail_alone_and_the_rest_of_the_chunk_commits(devhub_root) -> None:
    bad = {
        "nan/lora-a-value": lora(3, edit=_first("lora_A", float("nan"))),
        "nan/lora-alpha": lora(4, lora_alpha=float("nan")),
        "inf/lora-alpha": lora(5, lora_alpha=float("inf")),
        "huge/lora-alpha": lora(6, lora_alpha=1e300),
        "nan/alpha-pattern": lora(7, alpha_pattern={"q_proj": float("nan")}),
        "inf/lora-b": lora(8, edit=_first("lora_B", float("inf"))),
        "huge/lora-weights": lora(9, edit=_all("lora_", 1e30)),
        "nan/full": full(edit=_first("layers.0.mlp.up_proj", float("nan"))),
    }
    settings = devhub_root({**GOOD, **bad})
    summary = run_embed(settings, batch=16)
    got = statuses(settings)
    for repo_id in GOOD:
        assert got[repo_id] == ("embedded", ""), (repo_id, got[repo_id])
    for repo_id in bad:
        status, reason = got[repo_id]
        assert status == "failed" and reason and "\n" not in reason, (repo_id, got[repo_id])
    assert "adapter_config.json: lora_alpha" in got["nan/lora-alpha"][1] and "finite" in got["nan/lora-alpha"][1]
    assert "adapter_config.json: lora_alpha" in got["huge/lora-alpha"][1]
    assert "alpha_pattern" in got["nan/alpha-pattern"][1]
    assert "adapter_model.safetensors" in got["nan/lora-a-value"][1] and "NaN" in got["nan/lora-a-value"][1]
    assert "model.safetensors" in got["nan/full"][1] and "not finite" in got["nan/full"][1]
    assert (summary.embedded, summary.failed) == (3, len(bad)) and summary.exit_code == 0
    with open_reader(settings) as index:
        vectors = index.vectors.get(summary.spaces[0])
    assert set(vectors) == set(GOOD) and all(np.isfinite(v.vector).all() for v in vectors.values())
    again = run_embed(settings, batch=16)  # nothing is left claimed: a rerun has nothing to do
    assert (again.embedded, again.failed, again.reused) == (0, 0, 0)


def test_no_op_deltas_are_unchanged_hidden_from_queries_and_shown(devhub_root) -> None:
    noop = {
        "zero/lora-b": lora(3, edit=_all("lora_B", 0.0)),
        "zero/lora-alpha": lora(4, lora_alpha=0),
        "head/lora-lm-head": head_lora(),
    }
    settings = devhub_root({**GOOD, **noop})
    summary = run_embed(settings, batch=16)
    got = statuses(settings)
    assert all(got[k] == ("embedded", "") for k in GOOD), got
    for repo_id in noop:
        status, reason = got[repo_id]
        assert status == "unchanged" and reason.startswith("no change from base"), (repo_id, got[repo_id])
    assert not visible_to_queries(ModelStatus.UNCHANGED)
    assert (summary.embedded, summary.unchanged, summary.failed, summary.exit_code) == (3, 3, 0, 0)
    with open_reader(settings) as index:
        assert set(index.vectors.get(summary.spaces[0])) == set(GOOD)  # no vector is stored for them
    runner = CliRunner()
    shown = runner.invoke(app, ["show", "zero/lora-b"], env={"HUBDELTA_HOME": str(settings.home)})
    assert shown.exit_code == 0 and "unchanged" in shown.output and "no change from base" in shown.output
    assert "REMOVED" not in shown.output and "UNCHANGED" in shown.output
    query = runner.invoke(app, ["similar", "zero/lora-b"], env={"HUBDELTA_HOME": str(settings.home)})
    assert query.exit_code != 0 and "no change from its base" in query.output and "removed" not in query.output
    similar = runner.invoke(app, ["similar", "good/lora-a", "--json"], env={"HUBDELTA_HOME": str(settings.home)})
    assert similar.exit_code == 0 and not any(k in similar.output for k in noop), similar.output


def test_a_run_of_errors_exits_non_zero_and_embed_json_still_prints_one_object(devhub_root) -> None:
    settings = devhub_root({"nan/lora-alpha": lora(4, lora_alpha=float("nan"))}, toml='[embed]\nlayer = "99"\n')
    env = {"HUBDELTA_HOME": str(settings.home), "HF_ENDPOINT": settings.hf_endpoint}
    bad_layer = CliRunner().invoke(app, ["embed", "--json"], env=env)
    doc = json.loads(bad_layer.stdout)
    assert bad_layer.exit_code == 1 and doc["bases_failed"] == 1 and doc["exit_code"] == 1, bad_layer.output
    assert "layer 99" in doc["failures"][0]["reason"]
    assert statuses(settings)["nan/lora-alpha"][0] == "queued"  # a bad option blames no model
    (settings.home / "hubdelta.toml").write_text("")
    all_bad = CliRunner().invoke(app, ["embed", "--json"], env=env)
    assert all_bad.exit_code == 1 and json.loads(all_bad.stdout)["failed"] == 1, all_bad.output


@pytest.mark.parametrize(
    ("counts", "code"),
    [
        ({}, 0),
        ({"embedded": 3, "failed": 2}, 0),
        ({"unchanged": 1, "failed": 1}, 0),
        ({"failed": 1}, 1),
        ({"requeued": 2}, 1),
        ({"embedded": 5, "bases_failed": 1}, 1),
        ({"skipped": 1}, 0),
    ],
)
def test_the_exit_code_is_a_function_of_the_counts(counts: dict[str, Any], code: int) -> None:
    from hubdelta.embedder.ledger import run_exit_code
    from hubdelta.embedder.run import RunCounts

    assert run_exit_code(RunCounts(**counts)) == code
    assert EmbedSummary.of(RunCounts(**counts), spaces=[], seconds=0).exit_code == code


def test_rows_left_embedding_by_dead_runs_fail_at_the_attempt_cap(devhub_root) -> None:
    settings = devhub_root(GOOD)
    with open_writer(settings, "test") as index:
        rows = index.models.get()
        dead = {k: r for k, r in rows.items() if k != BASE_ID}
        # good/lora-a: its run died 3 times (max_attempts); good/lora-b: once
        index.models.put([replace_attempts(r, 3 if k == "good/lora-a" else 1) for k, r in dead.items()])
    summary = run_embed(settings, batch=16)
    got = statuses(settings)
    assert got["good/lora-a"][0] == "failed" and "claimed 3 times, and the run that held it" in got["good/lora-a"][1]
    assert got["good/lora-b"] == ("embedded", "") and got["good/full"] == ("embedded", "")
    assert (summary.embedded, summary.failed) == (2, 1)


def test_a_row_at_the_cap_whose_vector_was_stored_before_the_kill_is_reused(devhub_root) -> None:
    settings = devhub_root(GOOD)
    run_embed(settings, batch=16)
    with open_writer(settings, "test") as index:  # the third claim was killed after its vector, before its status
        row = index.models.get(["good/lora-a"])["good/lora-a"]
        index.models.put([replace_attempts(row, 3)])
    summary = run_embed(settings, batch=16)
    assert statuses(settings)["good/lora-a"] == ("embedded", "") and (summary.reused, summary.failed) == (1, 0)


def replace_attempts(record: Any, attempts: int) -> Any:
    from dataclasses import replace

    return replace(record, status=ModelStatus.EMBEDDING, attempts=attempts)


def test_full_models_missing_tensors_or_declaring_a_huge_vocabulary_are_refused(devhub_root) -> None:
    bad = {
        "short/embed-only": full(drop=tuple(k for k in base_shapes() if "embed_tokens" not in k)),
        "short/one-tensor": full(drop=("model.layers.1.mlp.down_proj.weight",)),
        "huge/vocab": full(vocab_size=10_000_000),
        "vocab/rows": full(vocab_size=VOCAB * 2),  # transformers: "You set ignore_mismatched_sizes..."
        "odd/shape": full(edit=lambda a: a.update({"model.norm.weight": np.ones(HIDDEN + 1, np.float32)})),
    }
    settings = devhub_root({**GOOD, **bad})
    summary = run_embed(settings, batch=16)
    got = statuses(settings)
    assert all(got[k] == ("embedded", "") for k in GOOD), got
    assert "model.safetensors: lacks 19 of the base's 21" in got["short/embed-only"][1], got["short/embed-only"]
    assert "'model.layers.1.mlp.down_proj.weight' (it would be randomly initialised)" in got["short/one-tensor"][1]
    assert "config.json: declares about" in got["huge/vocab"][1] and "times the base's" in got["huge/vocab"][1]
    assert "tensor 'model.norm.weight' is [17] where the base's shape need [16]" in got["odd/shape"][1]
    vocab = got["vocab/rows"][1]
    assert "model.safetensors: tensor 'model.embed_tokens.weight' is [64, 16] where config.json's vocab_size" in vocab
    assert all(got[k][0] == "failed" for k in bad) and summary.failed == len(bad)


def test_add_of_a_nan_or_no_op_folder_is_a_one_line_error_and_records_nothing(tmp_path: Path) -> None:
    write_root(tmp_path / "hub", {"nan/full": full(edit=_first("layers.0.mlp.up_proj", float("nan"))),
                                  "zero/lora-b": lora(3, edit=_all("lora_B", 0.0))})  # fmt: skip
    env = {"HUBDELTA_HOME": str(tmp_path / "home")}
    base = str(tmp_path / "hub" / BASE_ID)
    for repo, want in (("nan/full", "delta is not finite (model.safetensors has NaN/Inf)"),
                       ("zero/lora-b", "no change from base")):  # fmt: skip
        result = CliRunner().invoke(app, ["add", str(tmp_path / "hub" / repo), "--base", base], env=env)
        errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
        assert result.exit_code == 1 and len(errors) == 1 and "Traceback" not in result.output, result.output
        assert want in errors[0] and "(fix: " in errors[0], errors
    with open_reader(settings_for(tmp_path / "home", "http://127.0.0.1:9")) as index:
        assert not index.models.get()


def test_an_untrusted_attn_implementation_is_not_honoured(devhub_root) -> None:
    kernel = {"kernel/full": full(attn_implementation="kernels-community/flash-attn"),
              "flash/full": full(attn_implementation="flash_attention_2")}  # fmt: skip
    settings = devhub_root({**GOOD, **kernel})
    run_embed(settings, batch=16)
    got = statuses(settings)
    assert all(status == "embedded" for status, _ in got.values()), got
    with open_reader(settings) as index:
        space = next(iter(index.vectors.spaces()))
        vectors = index.vectors.get(space)
    assert np.allclose(vectors["kernel/full"].vector, vectors["good/full"].vector, atol=1e-5)  # same weights


class StubbornLedger:
    """A ledger whose store refuses any write that holds ``bad`` (as LanceDB refused a NaN), and records the rest."""

    def __init__(self, bad: str) -> None:
        self.bad, self.rows = bad, dict[str, Any]()

    def claim(self, records):
        from hubdelta.embedder import plan

        return plan.claim(records)

    def commit(self, claimed, out):
        from hubdelta.embedder import plan
        from hubdelta.embedder.plan import Failure
        from hubdelta.embedder.run import Outcome

        if self.bad in out.arrays:
            raise RuntimeError("Arrow error: Vector column 'vector' has NaNs\nTraceback ...")
        missing = Failure("no activations", transient=True)
        done = [plan.embedded(r) if r.repo_id in out.arrays
                else plan.settle(r, out.failures.get(r.repo_id, missing), max_attempts=3) for r in claimed]  # fmt: skip
        self.rows.update({r.repo_id: r for r in done})
        return [Outcome.of(r) for r in done]


def _records(*ids: str) -> list[Any]:
    from hubdelta.index.records import HubModel, ModelRecord, Relation

    return [ModelRecord(HubModel(i, "0" * 40, Relation.ADAPTER, (BASE_ID,)), ModelStatus.QUEUED) for i in ids]


def test_a_refused_write_fails_that_model_alone_and_a_failed_compute_settles_every_claimed_row() -> None:
    from hubdelta.embedder.run import ChunkOutput, Run

    ledger, run = StubbornLedger("b/bad"), Run()
    arrays = {k: ("0" * 40, np.ones((2, 4), np.float32)) for k in ("a/good", "b/bad", "c/good")}
    run.step(ledger, _records("a/good", "b/bad", "c/good"), lambda claimed: ChunkOutput(dict(arrays)))
    assert {k: r.status for k, r in ledger.rows.items()} == {"a/good": "embedded", "b/bad": "failed",
                                                             "c/good": "embedded"}  # fmt: skip
    assert ledger.rows["b/bad"].reason.startswith("its result could not be stored: RuntimeError: Arrow error")
    assert (run.counts.embedded, run.counts.failed, run.counts.bases_failed) == (2, 1, 0)

    def broken(claimed: Any) -> ChunkOutput:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    run.step(ledger, _records("d/one", "e/two"), broken)
    assert all(ledger.rows[k].status == "queued" and "could not be computed" in ledger.rows[k].reason
               for k in ("d/one", "e/two"))  # fmt: skip
