"""The index on object storage: real LanceDB over real HTTP against a local S3 server (moto's ``moto_server``).

One ``moto_server`` is started for the module on a free port and one bucket created with boto3; every test
writes under its own prefix. What this does and does not cover is listed in docs/architecture.md ("Object
storage").
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hubdelta.cli import app
from hubdelta.index.ann import AnnSettings
from hubdelta.index.compaction import CompactionPolicy
from hubdelta.index.door import open_writer
from hubdelta.index.embeddings import Embedding, SpaceRow
from hubdelta.index.location import storage_cause
from hubdelta.index.records import Cursor, ModelStatus, Relation, TrackedBase
from hubdelta.index.store import Index, PutResult
from hubdelta.kernel.errors import ConfigError, IndexLockedError, IndexNotFoundError, StoreError
from hubdelta.kernel.settings import load_settings
from hubdelta_dev.devhub.server import DevhubServer
from tests.helpers import BASE as TINY_BASE
from tests.helpers import T0, TinyRoot, free_port, one_line_error, records

BUCKET = "hubdelta-test"  # S3 bucket names need 3-63 characters
T = datetime(2026, 3, 1, tzinfo=UTC)
runner = CliRunner()


@dataclass(frozen=True)
class S3:
    """The running server: its endpoint, the options LanceDB needs, and a boto3 client."""

    endpoint: str
    client: object

    @property
    def options(self) -> dict[str, str]:
        return {"aws_endpoint": self.endpoint, "aws_region": "us-east-1", "allow_http": "true",
                "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # fmt: skip

    def uri(self, name: str) -> str:
        """A fresh prefix in the bucket."""
        return f"s3://{BUCKET}/{name}-{uuid.uuid4().hex[:8]}"

    def keys(self, uri: str) -> list[str]:
        prefix = uri.removeprefix(f"s3://{BUCKET}/") + "/"
        page = self.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)  # type: ignore[attr-defined]
        return [o["Key"] for o in page.get("Contents", [])]


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    import boto3

    server = Path(sys.executable).with_name("moto_server")
    command = str(server) if server.exists() else shutil.which("moto_server")
    assert command, "moto_server not found: pip install -e '.[dev]'"
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([command, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, f"moto_server exited with {proc.returncode}"
                assert time.monotonic() < deadline, "moto_server did not listen within 30 s"
                time.sleep(0.1)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
        client.create_bucket(Bucket=BUCKET)
        yield S3(endpoint, client)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, dim))
    return (centers[np.arange(n) % 4] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)


def brute_force(matrix: np.ndarray, ids: list[str], query: np.ndarray, k: int) -> list[str]:
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    order = np.argsort(-(unit @ (query / np.linalg.norm(query))), kind="stable")
    return [ids[i] for i in order[:k]]


# ---- the Index API ------------------------------------------------------------------------------------------------


def test_the_index_round_trips_on_s3(s3: S3, tmp_path: Path) -> None:
    uri, dim, n = s3.uri("api"), 16, 300
    ann = AnnSettings(threshold=200, nprobes=1, optimize_rows=10)
    policy = CompactionPolicy(max_fragments=1, max_versions=2, auto=False)
    with Index.open(uri, lock_dir=tmp_path, writer="pytest", compaction=policy, ann_settings=ann,
                    storage_options=s3.options) as index:  # fmt: skip
        base = TrackedBase("acme/base", (Relation.ADAPTER,), {Relation.ADAPTER: Cursor(T0, "user0/model-0")})
        assert index.tracked.put([base]) == PutResult(1, 0)
        assert index.models.put(records(0, 20)) == PutResult(20, 0)
        updated = [r.with_status(ModelStatus.EMBEDDED) for r in records(10, 20)]  # 10 stored, 10 new
        assert index.models.put(updated) == PutResult(10, 10)
        space = SpaceRow("base-s3", {"base_repo": "acme/base", "layer": None}, np.ones((5, dim), np.float32), T)
        index.vectors.put_space(space)
        matrix = vectors(n, dim)
        ids = [f"org/m-{i:03d}" for i in range(n)]
        index.vectors.put("base-s3", [Embedding(r, "a" * 40, v, T) for r, v in zip(ids, matrix, strict=True)])
        query = matrix[7]
        assert [r for r, _ in index.vectors.nearest("base-s3", query, 5)] == brute_force(matrix, ids, query, 5)  # exact

        assert index.vectors.maintain_ann() == {"base-s3": "build"}  # 300 rows >= 200: an IVF_SQ index on S3
        status = index.vectors.ann_status("base-s3")
        assert status is not None and status.index_type == "IVF_SQ" and status.unindexed_rows == 0
        assert index.vectors.nearest("base-s3", query, 5)[0][0] == ids[7]
        extra = vectors(20, dim, seed=1)
        index.vectors.put("base-s3", [Embedding(f"org/new-{i}", None, v, T) for i, v in enumerate(extra)])
        assert index.vectors.nearest("base-s3", extra[3], 1)[0][0] == "org/new-3"  # unindexed rows are searched too
        assert index.vectors.maintain_ann() == {"base-s3": "optimize"}  # 20 unindexed > 10: folded in, versions dropped
        status = index.vectors.ann_status("base-s3")
        assert status is not None and status.unindexed_rows == 0
        # Old versions are deleted from the bucket.
        assert index.maintenance.compact(["emb_base-s3"])["emb_base-s3"].versions == 1

        assert "models" in index.maintenance.maybe_compact()  # 3 versions > 2
        stats = index.maintenance.stats()
        assert stats["models"].versions == 1 and stats["models"].rows == 30
    assert any(key.endswith(".manifest") for key in s3.keys(uri))  # it really is in the bucket

    reader = Index.open(uri, ann_settings=ann, storage_options=s3.options)
    assert reader.read_only and [t.base for t in reader.tracked.all()] == ["acme/base"]
    assert reader.tracked.all()[0].cursors[Relation.ADAPTER].repo_id == "user0/model-0"
    got = reader.models.get()
    assert len(got) == 30 and got["user3/model-10"].status == ModelStatus.EMBEDDED
    assert reader.vectors.count("base-s3") == n + 20
    assert np.array_equal(reader.vectors.get("base-s3", [ids[9]])[ids[9]].vector, matrix[9])
    assert reader.vectors.nearest("base-s3", query, 1)[0][0] == ids[7]
    with pytest.raises(StoreError, match="read-only"):
        reader.models.put(records(0, 1))


def test_one_writer_at_a_time_readers_never_wait(s3: S3, tmp_path: Path) -> None:
    uri = s3.uri("lock")
    with Index.open(uri, lock_dir=tmp_path, writer="first", storage_options=s3.options) as first:
        first.models.put(records(0, 3))
        with pytest.raises(IndexLockedError, match="first"):
            Index.open(uri, lock_dir=tmp_path, writer="second", storage_options=s3.options)
        assert Index.open(uri, storage_options=s3.options).models.count() == 3
    with Index.open(uri, lock_dir=tmp_path, writer="second", storage_options=s3.options) as second:
        assert second.models.count() == 3


def test_a_reader_of_an_empty_prefix_gets_index_not_found_and_writes_nothing(s3: S3) -> None:
    uri = s3.uri("missing")
    with pytest.raises(IndexNotFoundError, match="does not exist yet"):
        Index.open(uri, storage_options=s3.options)
    assert s3.keys(uri) == []


@pytest.mark.parametrize(
    ("where", "writer", "cause"),
    [("bucket", None, "NoSuchBucket (HTTP 404)"), ("endpoint", "pytest", "tcp connect error to 127.0.0.1:")],
)
def test_unreachable_storage_is_a_one_line_store_error(
    s3: S3, tmp_path: Path, where: str, writer: str | None, cause: str
) -> None:
    """LanceDB retries the first listing for ~2 s (the endpoint: ~4 s) before it gives up."""
    uri, options = s3.uri("x"), s3.options
    if where == "bucket":
        uri = "s3://no-such-bucket/index"
    else:
        options = {**options, "aws_endpoint": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    with pytest.raises(StoreError) as info:
        Index.open(uri, lock_dir=tmp_path, writer=writer, storage_options=options)
    line = info.value.one_line()
    assert type(info.value) is StoreError and f"index at {uri}" in line and cause in line
    assert "\n" not in str(info.value) and "aws_endpoint" in line and len(line) < 400
    if writer is not None:  # the failed writer gave the lock back
        Index.open(s3.uri("x"), lock_dir=tmp_path, writer="next", storage_options=s3.options).close()


def test_storage_cause_of_a_foreign_error_is_its_first_line() -> None:
    assert storage_cause(ValueError("something else\nmore")) == "ValueError: something else"
    assert storage_cause(ValueError("Failed to get AWS credentials: ProviderError")) == "no AWS credentials found"


def test_credentials_and_endpoint_may_come_from_the_aws_environment(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lance reads AWS_ENDPOINT, AWS_REGION, AWS_ALLOW_HTTP and the AWS_* credentials itself."""
    env = {"AWS_ENDPOINT": s3.endpoint, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    uri = s3.uri("env")
    with Index.open(uri, lock_dir=tmp_path, writer="env") as index:
        index.models.put(records(0, 2))
    assert Index.open(uri).models.count() == 2
    assert s3.keys(uri)


# ---- settings ---------------------------------------------------------------------------------------------------


def toml_for(uri: str, options: dict[str, str], extra: str = "") -> str:
    storage = "".join(f'{k} = "{v}"\n' for k, v in options.items())
    return f'[index]\nuri = "{uri}"\n{extra}\n[index.storage]\n{storage}'


def test_index_settings_are_typed(tmp_path: Path) -> None:
    (tmp_path / "hubdelta.toml").write_text(toml_for("s3://b/p", {"aws_region": "eu-west-1"}))
    settings = load_settings({}, home=tmp_path)
    assert settings.index_uri == "s3://b/p" and settings.index_storage == {"aws_region": "eu-west-1"}
    assert load_settings({}, home=tmp_path / "none").index_storage == {}
    (tmp_path / "hubdelta.toml").write_text("[index.storage]\nallow_http = true\n")
    with pytest.raises(ConfigError, match=r"index\.storage\.allow_http") as info:
        _ = load_settings({}, home=tmp_path).index_storage
    assert 'allow_http = "true"' in info.value.one_line()
    (tmp_path / "hubdelta.toml").write_text("[index]\nuri = 3\n")
    with pytest.raises(ConfigError, match=r"index\.uri"):
        _ = load_settings({}, home=tmp_path).index_uri


# ---- the CLI on an s3 index -----------------------------------------------------------------------------------


def cli(home: Path, url: str, *args: str):
    return runner.invoke(app, ["--home", str(home), *args], env={"HF_ENDPOINT": url})


def ok_json(home: Path, url: str, *args: str) -> dict:
    result = cli(home, url, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_crawl_status_and_similar_on_s3(s3: S3, hub: DevhubServer, tiny: TinyRoot, tmp_path: Path) -> None:
    home, uri = tmp_path / "home", s3.uri("cli")
    home.mkdir()
    (home / "hubdelta.toml").write_text(toml_for(uri, s3.options))
    assert "does not exist yet" in one_line_error(cli(home, hub.url, "status"))
    assert cli(home, hub.url, "track", TINY_BASE, "--relations", "adapter,merge").exit_code == 0
    doc = ok_json(home, hub.url, "crawl")
    assert doc["new"] == len(tiny.adapters | tiny.merges) and doc["errors"] == []
    assert not (home / "index").exists() and s3.keys(uri)  # nothing local but the lock
    status = ok_json(home, hub.url, "status")
    assert status["index"] == uri and status["index_bytes"] is None and status["tracked"] == 1
    assert status["models"] == len(tiny.adapters | tiny.merges)
    text = cli(home, hub.url, "status")
    assert text.exit_code == 0 and "not measured on object storage" in text.output

    settings = load_settings({"HF_ENDPOINT": hub.url}, home=home)
    dim, space = 8, "base-s3cli000"
    params = {"base_repo": TINY_BASE, "base_sha": "0" * 40, "probes": "paper-v1", "probes_hash": "x", "dim": dim,
              "layer": None, "position": "last", "dtype": "float32", "method": "activations"}  # fmt: skip
    with open_writer(settings, "pytest embed") as index:
        ids = sorted(index.models.get())
        matrix = vectors(len(ids), dim)
        index.vectors.put_space(SpaceRow(space, params, np.zeros((5, dim), np.float32), T))
        index.vectors.put(space, [Embedding(r, "s", v, T) for r, v in zip(ids, matrix, strict=True)])
    similar = ok_json(home, hub.url, "similar", ids[0], "-k", "2")
    assert similar["space_id"] == space
    assert [n["repo_id"] for n in similar["neighbors"]] == brute_force(matrix, ids, matrix[0], 3)[1:]


def test_cli_errors_on_s3_are_one_line(s3: S3, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    dead = {**s3.options, "aws_endpoint": f"http://127.0.0.1:{free_port()}"}
    (home / "hubdelta.toml").write_text(toml_for(s3.uri("dead"), dead))
    line = one_line_error(cli(home, "http://127.0.0.1:9", "status"))  # a reader
    assert "object storage cannot be reached: tcp connect error" in line and "[index.storage]" in line
    (home / "hubdelta.toml").write_text(toml_for("s3://no-such-bucket/index", s3.options))
    line = one_line_error(cli(home, "http://127.0.0.1:9", "track", TINY_BASE, "--no-check"))  # a writer
    assert "s3://no-such-bucket/index: object storage cannot be reached: NoSuchBucket (HTTP 404)" in line
    (home / "hubdelta.toml").write_text(toml_for(s3.uri("bad"), {"allow_http": "true"}).replace('"true"', "true"))
    assert 'quote it: allow_http = "true"' in one_line_error(cli(home, "http://127.0.0.1:9", "status"))
