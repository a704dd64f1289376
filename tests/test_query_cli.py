"""``hubdelta similar / show / status / export`` and ``hubdelta.similar`` over a real LanceDB index.

The index is written through the real :class:`Index` with seeded vectors whose nearest neighbours numpy computes
independently, so every answer is checked against a brute-force cosine ranking. One test embeds a model from
devhub on the spot (``--embed``).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import hubdelta
from hubdelta.cli import app
from hubdelta.index.door import open_writer
from hubdelta.index.embeddings import Embedding, SpaceRow
from hubdelta.index.records import HubModel, ModelRecord, ModelStatus, Relation
from tests.helpers import Processes, one_line_error, settings_for

runner = CliRunner()
BASE = "org/base"
NOW = datetime(2026, 11, 1, tzinfo=UTC)
DIM = 16
SPACE = "base-aaaaaaaa"  # final layer, last token, float32: what the default settings prefer
SPACE_MEAN = "base-bbbbbbbb"  # position mean: another space of the same base
LICENSES = ("mit", "apache-2.0", "other")
RELATIONS = (Relation.ADAPTER, Relation.FINETUNE, Relation.MERGE)


def params(position: str) -> dict[str, object]:
    return {"base_repo": BASE, "base_sha": "0" * 40, "probes": "paper-v1", "probes_hash": "x", "dim": DIM,
            "layer": None, "position": position, "dtype": "float32", "method": "activations"}  # fmt: skip


def model(i: int) -> HubModel:
    return HubModel(
        repo_id=f"org/model-{i:03d}",
        sha=f"{i:040x}",
        relation=RELATIONS[i % 3],
        base_models=(BASE,),
        created_at=NOW,
        license=LICENSES[i % 3],
        downloads=i * 10,
        likes=i % 7,
        card_summary=f"card of model {i}",
    )


class Zoo:
    """The index's content, for brute-force answers."""

    def __init__(self, n: int = 60, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        centers = rng.normal(size=(4, DIM))
        self.vectors = {model(i).repo_id: (centers[i % 4] + 0.5 * rng.normal(size=DIM)).astype(np.float32)
                        for i in range(n)}  # fmt: skip
        self.models = {model(i).repo_id: model(i) for i in range(n)}

    def ranking(self, query: np.ndarray, exclude: str = "", keep=lambda m: True) -> list[str]:
        q = query / np.linalg.norm(query)
        sims = {r: float(v @ q / np.linalg.norm(v)) for r, v in self.vectors.items()
                if r != exclude and keep(self.models[r])}  # fmt: skip
        return sorted(sims, key=sims.__getitem__, reverse=True)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Zoo]:
    home = tmp_path_factory.mktemp("home")
    data = Zoo()
    settings = settings_for(home, "http://127.0.0.1:9")
    with open_writer(settings, "test") as index:
        records = [ModelRecord(m, ModelStatus.EMBEDDED, first_seen=NOW, last_seen=NOW) for m in data.models.values()]
        queued = HubModel("org/waiting", "f" * 40, Relation.ADAPTER, (BASE,), created_at=NOW)
        failed = HubModel("org/broken", "e" * 40, Relation.ADAPTER, (BASE,), created_at=NOW)
        records += [ModelRecord(queued, ModelStatus.QUEUED),
                    ModelRecord(failed, ModelStatus.FAILED, reason="corrupt safetensors header")]  # fmt: skip
        index.models.put(records)
        for space, position in ((SPACE, "last"), (SPACE_MEAN, "mean")):
            index.vectors.put_space(SpaceRow(space, params(position), np.zeros((5, DIM), np.float32), NOW))
        index.vectors.put(SPACE, [Embedding(r, data.models[r].sha, v, NOW) for r, v in data.vectors.items()])
        # Two models in the second space (model-000 is in both), and a zero vector.
        index.vectors.put(SPACE_MEAN, [Embedding(r, "s", -data.vectors[r], NOW) for r in list(data.vectors)[:2]])
        # An adapter that changed nothing: a zero delta, which no search returns and which cannot be a query.
        zero = HubModel("org/untrained", "d" * 40, Relation.ADAPTER, (BASE,), created_at=NOW)
        index.models.put([ModelRecord(zero, ModelStatus.EMBEDDED)])
        index.vectors.put(SPACE_MEAN, [Embedding(zero.repo_id, zero.sha, np.zeros(DIM, np.float32), NOW)])
    return home, data


def cli(home: Path, *args: str):
    return runner.invoke(app, ["--home", str(home), *args])


def ok_json(home: Path, *args: str) -> dict:
    result = cli(home, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ---- similar ----------------------------------------------------------------------------------------------------


def test_similar_is_the_brute_force_cosine_ranking(zoo: tuple[Path, Zoo]) -> None:
    home, data = zoo
    doc = ok_json(home, "similar", "org/model-005", "-k", "7")
    assert doc["query"] == "org/model-005" and doc["space_id"] == SPACE and doc["other_spaces"] == []
    got = [n["repo_id"] for n in doc["neighbors"]]
    assert got == data.ranking(data.vectors["org/model-005"], exclude="org/model-005")[:7]
    first = doc["neighbors"][0]
    assert set(first) == {"rank", "repo_id", "score", "relation", "base", "downloads", "likes", "license",
                          "cluster", "card", "labels", "copies"}  # fmt: skip
    m = data.models[first["repo_id"]]
    assert (first["rank"], first["base"], first["downloads"], first["license"]) == (1, BASE, m.downloads, m.license)
    assert first["card"] == m.card_summary and first["cluster"] is None and first["labels"] is None  # none computed
    scores = [n["score"] for n in doc["neighbors"]]
    assert scores == sorted(scores, reverse=True) and -1 <= scores[-1] <= scores[0] <= 1


@pytest.mark.parametrize(
    ("flags", "keep"),
    [
        (["--where", "license = 'mit' AND downloads > 100"], lambda m: m.license == "mit" and m.downloads > 100),
        (["--relation", "merge"], lambda m: m.relation == Relation.MERGE),
        (
            ["--where", "downloads >= 550", "--relation", "adapter"],  # 2 of 60 pass: several rounds, still exact
            lambda m: m.downloads >= 550 and m.relation == Relation.ADAPTER,
        ),
        (["--where", "likes > 100"], lambda m: False),
        (["--where", "downloads >= 590", "-k", "1"], lambda m: m.downloads >= 590),  # 1 of 60: a second round
    ],
)
def test_filters_give_the_exact_filtered_ranking(zoo: tuple[Path, Zoo], flags: list[str], keep) -> None:
    home, data = zoo
    doc = ok_json(home, "similar", "org/model-010", "-k", "5", *flags)
    k = doc["k"]
    want = data.ranking(data.vectors["org/model-010"], exclude="org/model-010", keep=keep)[:k]
    assert [n["repo_id"] for n in doc["neighbors"]] == want


def test_a_repo_in_two_spaces_uses_the_one_matching_the_settings_and_names_the_other(zoo: tuple[Path, Zoo]) -> None:
    home, _ = zoo
    doc = ok_json(home, "similar", "org/model-000", "-k", "3")
    assert doc["space_id"] == SPACE and doc["other_spaces"] == [SPACE_MEAN]
    other = ok_json(home, "similar", "org/model-000", "--space", SPACE_MEAN)
    assert [n["repo_id"] for n in other["neighbors"]] == ["org/model-001"]  # the only other non-zero vector there
    table = cli(home, "similar", "org/model-000", "-k", "3")
    assert table.exit_code == 0 and "org/model-" in table.output and f"also embedded in: {SPACE_MEAN}" in table.output


def test_similar_to_a_saved_vector(zoo: tuple[Path, Zoo], tmp_path: Path) -> None:
    home, data = zoo
    query = data.vectors["org/model-020"] + 0.1
    np.save(tmp_path / "q.npy", query)
    doc = ok_json(home, "similar", "--vector", str(tmp_path / "q.npy"), "--space", SPACE, "-k", "4")
    assert doc["query"].startswith("vector:") and [n["repo_id"] for n in doc["neighbors"]] == data.ranking(query)[:4]
    np.save(tmp_path / "row.npy", query[None, :])  # a (1, C) row is accepted too
    assert ok_json(home, "similar", "--vector", str(tmp_path / "row.npy"), "--space", SPACE)["neighbors"]


def test_the_python_api_gives_what_the_cli_gives(zoo: tuple[Path, Zoo]) -> None:
    home, _ = zoo
    result = hubdelta.similar("org/model-007", k=4, where="downloads > 50", home=home)
    doc = ok_json(home, "similar", "org/model-007", "-k", "4", "--where", "downloads > 50")
    assert [n.repo_id for n in result] == [n["repo_id"] for n in doc["neighbors"]] and len(result) == 4
    assert result.space_id == SPACE and all(n.downloads > 50 for n in result)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["similar", "org/modl-007"], "close: org/model-007"),  # a typo: the close ids
        (["similar", "org/waiting"], "status queued"),
        (["similar", "org/broken"], "corrupt safetensors header"),
        (["similar", "org/untrained"], "all zeros"),
        (["similar", "org/model-001", "--where", "no_such_column > 1"], "--where"),
        (["similar", "org/model-001", "--where", "downloads >"], "--where"),
        (["similar", "org/model-001", "--relation", "lora"], "unknown relation"),
        (["similar", "org/model-001", "--space", "nope-12345678"], "no vector in space"),
        (["similar"], "give a repo id or --vector"),
        (["similar", "org/model-001", "--vector", "x.npy"], "not both"),
        (["similar", "--vector", "/nonexistent/v.npy"], "no such file"),
        (["show", "org/nope"], "not in the index"),
        (["export", "--format", "xlsx", "--out", "x.xlsx"], "unknown format"),
        (["export", "--format", "npz", "--out", "v.npz"], "2 spaces"),
        (["export", "--format", "npz", "--out", "/nonexistent/dir/v.npz", "--space", SPACE], "does not exist"),
        (["export", "--out", "v.parquet", "--space", "nope-12345678"], "no space"),
        (["export", "--out", "/proc/v.npz", "--space", SPACE], "cannot write there"),
        (["export", "--out", "v.npz", "--format", "parquet", "--space", SPACE], "names npz, but --format is parquet"),
        (["export", "--out", "v.dat", "--space", SPACE], "names no format"),
        (["export", "--out", "v.dat", "--format", "csv", "--space", SPACE], "names no format"),
    ],
)
def test_errors_are_one_line(zoo: tuple[Path, Zoo], args: list[str], needle: str) -> None:
    home, _ = zoo
    assert needle in one_line_error(cli(home, *args))


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), "not a .npy"),  # never unpickled
        (lambda p: p.write_bytes(b"not numpy"), "not a .npy"),
        (lambda p: np.save(p, np.zeros((3, DIM), np.float32)), "not one vector"),
        (lambda p: np.save(p, np.zeros(DIM, np.float32)), "all zeros"),
        (lambda p: np.save(p, np.ones(DIM + 1, np.float32)), "no space has dimension 17"),
        (lambda p: np.save(p, np.ones(DIM, np.float32)), "2 spaces have dimension 16"),
    ],
)
def test_bad_vector_files_are_one_line_errors(zoo: tuple[Path, Zoo], tmp_path: Path, content, needle: str) -> None:
    home, _ = zoo
    path = tmp_path / "v.npy"
    content(path)
    assert needle in one_line_error(cli(home, "similar", "--vector", str(path)))


def test_no_index_yet_says_how_to_make_one(tmp_path: Path) -> None:
    assert "does not exist yet" in one_line_error(cli(tmp_path / "empty", "similar", "org/x"))


def test_the_query_path_never_imports_torch(zoo: tuple[Path, Zoo], processes: Processes) -> None:
    home, _ = zoo
    code = (
        "import sys; from hubdelta.cli import app\n"
        f"try: app(['--home', {str(home)!r}, 'similar', 'org/model-003', '--json'])\n"
        "except SystemExit as e: assert not e.code, e.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'huggingface_hub') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    done = processes.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr


# ---- show, status, export ---------------------------------------------------------------------------------------


def test_show_gives_record_vectors_and_neighbours(zoo: tuple[Path, Zoo]) -> None:
    home, data = zoo
    doc = ok_json(home, "show", "org/model-000", "-k", "2")
    assert doc["repo_id"] == "org/model-000" and doc["status"] == "embedded" and doc["license"] == "mit"
    assert sorted(v["space_id"] for v in doc["vectors"]) == [SPACE, SPACE_MEAN]
    norm = float(np.linalg.norm(data.vectors["org/model-000"]))
    assert all(abs(v["norm"] - norm) < 1e-4 for v in doc["vectors"])
    assert [n["repo_id"] for n in doc["neighbors"]] == data.ranking(data.vectors["org/model-000"], "org/model-000")[:2]
    failed = ok_json(home, "show", "org/broken")
    assert failed["status"] == "failed" and failed["reason"] == "corrupt safetensors header" and failed["vectors"] == []
    text = cli(home, "show", "org/broken")
    assert text.exit_code == 0 and "failed: corrupt safetensors header" in text.output


def test_status_counts_by_status_and_space(zoo: tuple[Path, Zoo]) -> None:
    home, data = zoo
    doc = ok_json(home, "status")
    assert doc["models"] == len(data.models) + 3 and doc["queue"] == 1
    assert doc["by_status"]["embedded"] == len(data.models) + 1 and doc["by_status"]["failed"] == 1
    spaces = {s["space_id"]: s for s in doc["spaces"]}
    assert spaces[SPACE]["vectors"] == len(data.models) and spaces[SPACE_MEAN]["vectors"] == 3
    assert spaces[SPACE]["ann_index"] is None and spaces[SPACE]["layer"] == "final"  # 60 rows: exact search
    assert doc["index_bytes"] > 0 and doc["last_report"] is None and doc["tracked"] == 0
    text = cli(home, "status")
    assert text.exit_code == 0 and "1 to embed" in text.output and SPACE in text.output


@pytest.mark.parametrize("fmt", ["parquet", "npz", "csv"])
def test_export_writes_vectors_and_metadata(zoo: tuple[Path, Zoo], tmp_path: Path, fmt: str) -> None:
    home, data = zoo
    out = tmp_path / f"vectors.{fmt}"
    doc = ok_json(home, "export", "--format", fmt, "--out", str(out), "--space", SPACE)
    assert doc["rows"] == len(data.models) and doc["dim"] == DIM and out.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left behind
    ids = sorted(data.vectors)
    if fmt == "npz":
        with np.load(out, allow_pickle=False) as npz:  # the seed repository's layout
            assert sorted(npz.files) == ["base_model", "embeddings", "model_names"]
            assert list(npz["model_names"]) == ids and set(npz["base_model"]) == {BASE}
            np.testing.assert_array_equal(npz["embeddings"], np.stack([data.vectors[i] for i in ids]))
        return
    if fmt == "parquet":
        table = pq.read_table(out)
        vectors = np.stack(table["vector"].to_pylist())
    else:
        import pyarrow.csv as pcsv

        table = pcsv.read_csv(out)
        vectors = np.stack([table[f"v{i}"].to_numpy() for i in range(DIM)], axis=1)
    assert table["repo_id"].to_pylist() == ids
    np.testing.assert_allclose(vectors, np.stack([data.vectors[i] for i in ids]), rtol=1e-6)
    assert table["license"].to_pylist() == [data.models[i].license for i in ids]


@pytest.mark.parametrize(("name", "fmt"), [("v.npz", "npz"), ("v.CSV", "csv"), ("v.parquet", "parquet")])
def test_export_takes_the_format_from_the_suffix(zoo: tuple[Path, Zoo], tmp_path: Path, name: str, fmt: str) -> None:
    home, _ = zoo
    out = tmp_path / name
    assert ok_json(home, "export", "--out", str(out), "--space", SPACE)["format"] == fmt
    if fmt == "npz":
        with np.load(out, allow_pickle=False) as npz:
            assert "embeddings" in npz.files
    elif fmt == "parquet":
        assert pq.read_table(out).num_rows == 60
    else:
        assert out.read_text().startswith('"repo_id"')
    plain = tmp_path / "vectors"  # no suffix: --format says it
    assert ok_json(home, "export", "--out", str(plain), "--format", fmt, "--space", SPACE)["format"] == fmt
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "vectors"])  # nothing half-written left


# ---- --embed: a model from the Hub, embedded on the spot ----------------------------------------------------------


def test_similar_embed_embeds_a_hub_model_on_the_spot(tmp_path: Path) -> None:
    from hubdelta_dev.devhub.badrepos import write_bad_repos
    from hubdelta_dev.devhub.server import DevhubServer

    write_bad_repos(tmp_path / "hub")
    with DevhubServer(tmp_path / "hub") as hub:
        home = tmp_path / "home"
        args = ["--home", str(home), "similar", "hostile/good-lora", "--json"]
        missing = runner.invoke(app, args, env={"HF_ENDPOINT": hub.url})
        assert "does not exist yet" in one_line_error(missing)
        result = runner.invoke(app, [*args, "--embed"], env={"HF_ENDPOINT": hub.url})
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["query"] == "hostile/good-lora" and doc["neighbors"] == []  # alone in its space so far
        full = runner.invoke(app, ["--home", str(home), "similar", "hostile/good-full", "--embed", "--json"],
                             env={"HF_ENDPOINT": hub.url})  # fmt: skip
        assert full.exit_code == 0, full.output
        assert [n["repo_id"] for n in json.loads(full.stdout)["neighbors"]] == ["hostile/good-lora"]
        bad = runner.invoke(app, ["--home", str(home), "similar", "hostile/pickle-full", "--embed"],
                            env={"HF_ENDPOINT": hub.url})  # fmt: skip
        lines = bad.output.strip().splitlines()  # the progress line, the worker's log event, the error
        assert bad.exit_code == 1 and lines[0] == "embedding hostile/pickle-full ...", bad.output
        assert (
            lines[-1].startswith("error: hostile/pickle-full could not be embedded: failed (") and "pickle" in lines[-1]
        )
    # A local folder (no Hub): embedded with `add`'s rules against a local base, then searched.
    folder, base = tmp_path / "hub" / "hostile" / "good-lora", tmp_path / "hub" / "hostile" / "tiny-base"
    home2 = ["--home", str(tmp_path / "home2")]
    local = runner.invoke(app, [*home2, "similar", str(folder), "--embed", "--base", str(base), "--json"])
    assert local.exit_code == 0, local.output
    assert json.loads(local.stdout)["query"] == "local/good-lora"
    assert "--base" in one_line_error(runner.invoke(app, [*home2, "similar", str(folder), "--embed"]))


def test_neighbours_carry_their_cluster_of_the_latest_report(tmp_path: Path) -> None:
    from hubdelta.index.reports import StoredCluster, StoredReport

    data = Zoo(n=6, seed=1)
    settings = settings_for(tmp_path, "http://127.0.0.1:9")
    with open_writer(settings, "test") as index:
        index.models.put([ModelRecord(m, ModelStatus.EMBEDDED) for m in data.models.values()])
        index.vectors.put_space(SpaceRow(SPACE, params("last"), np.zeros((5, DIM), np.float32), NOW))
        index.vectors.put(SPACE, [Embedding(r, "s", v, NOW) for r, v in data.vectors.items()])
        ids = sorted(data.vectors)
        clusters = {SPACE: (StoredCluster("c1", "math / algebra", tuple(ids[:3])),)}
        index.reports.put(StoredReport("r1", NOW, NOW - timedelta(days=1), str(tmp_path), clusters))
    doc = ok_json(tmp_path, "similar", ids[0], "-k", "5")
    got = {n["repo_id"]: n["cluster"] for n in doc["neighbors"]}
    assert got == {i: ("math / algebra" if i in ids[:3] else None) for i in ids[1:]}
    assert ok_json(tmp_path, "status")["last_report"] == NOW.isoformat()


def test_as_a_process_the_whole_answer_arrives_before_the_fast_exit(
    zoo: tuple[Path, Zoo], processes: Processes
) -> None:
    home, _ = zoo
    command = [sys.executable, "-m", "hubdelta", "--home", str(home), "similar", "org/model-005", "-k", "50", "--json"]
    done = processes.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["neighbors"]) == 50  # a piped stdout was flushed before os._exit
    table = processes.run([*command[:-1], "-k", "3"], capture_output=True, text=True, timeout=120)
    assert table.returncode == 0 and table.stdout.count("org/model-") >= 3
    failed = processes.run([*command[:5], "similar", "org/nope"], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and failed.stderr.startswith("error: org/nope: not in the index")


def test_show_without_neighbours_searches_nothing(zoo: tuple[Path, Zoo]) -> None:
    from hubdelta.query.api import show

    home, _ = zoo
    settings = settings_for(home, "http://127.0.0.1:9")
    full, bare = show(settings, "org/model-005", k=3), show(settings, "org/model-005", neighbors=False)
    assert len(full.neighbors) == 3 and bare.neighbors == []
    assert (bare.record, bare.vectors, bare.hidden) == (full.record, full.vectors, full.hidden)
