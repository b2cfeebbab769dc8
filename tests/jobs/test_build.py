"""shardwalk.jobs.build_collection on threads (no Ray): results, determinism, bad rows, the
previous version kept, every index kind, the ``shardwalk build`` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shardwalk
from shardwalk import F, jobs
from shardwalk.cli import main
from shardwalk.errors import InvalidArgumentError, NotFoundError
from tests.parquet_data import exact_neighbours, snapshot_digest, write_dataset

N, DIM = 3000, 16
PARAMS = {"partitions": 4, "ef_construction": 64, "m": 12}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("parquet")
    ids, vectors = write_dataset(root / "in", N, DIM, files=3, seed=3)
    return root / "in", ids, vectors


def test_build_searches_like_exact(dataset, tmp_path: Path) -> None:
    source, ids, vectors = dataset
    report = jobs.build_collection(
        tmp_path / "db", "docs", source, tenant_column="tenant", **PARAMS
    )
    assert report["rows"] == N and report["dim"] == DIM and report["executor"] == "threads"
    assert sum(report["partition_sizes"]) == N and min(report["partition_sizes"]) > 0
    assert set(report["seconds"]) >= {"scan", "train", "assign", "build", "commit", "total"}
    queries = vectors[:50] + 0.01
    truth = exact_neighbours(vectors, ids, queries, 10)
    with shardwalk.Engine.open(tmp_path / "db") as engine:
        docs = engine.collection("docs")
        assert len(docs) == N and docs.index_kind == "partitioned"
        found = docs.search(queries, k=10, ef=64).ids
        recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
        assert recall >= 0.95, recall  # observed 1.0
        # tenants and attributes came along: scoped and filtered searches keep to them
        records = docs.get(ids[:20])
        tenant = records.tenants[0]
        scoped = docs.search(queries[:5], k=10, tenant=tenant, where=F("year") >= 2010).ids
        kept = docs.get(np.unique(scoped[scoped >= 0]))
        assert set(kept.tenants) == {tenant} and min(kept.attributes["year"]) >= 2010
        np.testing.assert_array_equal(docs.get(ids[:20]).vectors, vectors[:20])
        # the built collection takes writes like any other
        docs.upsert([10**9], vectors[:1])
        assert len(docs) == N + 1


def test_same_files_whatever_the_threads(dataset, tmp_path: Path) -> None:
    source, _, _ = dataset
    jobs.build_collection(tmp_path / "a", "c", source, num_workers=1, **PARAMS)
    jobs.build_collection(tmp_path / "b", "c", source, num_workers=2, **PARAMS)
    assert snapshot_digest(tmp_path / "a", "c") == snapshot_digest(tmp_path / "b", "c")


def test_flat_build_equals_embedded_collection(dataset, tmp_path: Path) -> None:
    """The embedded path (create_collection + upsert) and the job give the same answers."""
    source, ids, vectors = dataset
    jobs.build_collection(tmp_path / "db", "flat", source, index="flat", metric="cosine")
    queries = vectors[100:120] + 0.05
    with shardwalk.Engine.open(tmp_path / "db") as engine:
        built = engine.collection("flat").search(queries, k=7)
        embedded = engine.create_collection("emb", DIM, metric="cosine", index="flat")
        embedded.upsert(ids, vectors)
        embedded.wait_indexed()  # scored by the flat index, as the built one, not the delta's scan
        expected = embedded.search(queries, k=7)
    np.testing.assert_array_equal(built.ids, expected.ids)
    np.testing.assert_allclose(built.distances, expected.distances, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["hnsw", "multitenant", "spann"])
def test_other_index_kinds(dataset, tmp_path: Path, kind: str) -> None:
    source, ids, vectors = dataset
    params = {"train_size": 1000} if kind == "multitenant" else {}
    jobs.build_collection(
        tmp_path / "db", "c", source, index=kind, tenant_column="tenant", **params
    )
    with shardwalk.Engine.open(tmp_path / "db") as engine:
        c = engine.collection("c")
        assert c.index_kind == kind and len(c) == N
        assert c.search(vectors[:10], k=1).ids[:, 0].tolist() == ids[:10].tolist()


def test_new_version_replaces_the_old(dataset, tmp_path: Path) -> None:
    source, _, vectors = dataset
    db = tmp_path / "db"
    jobs.build_collection(db, "c", source, **PARAMS)
    with shardwalk.Engine.open(db) as engine:
        engine.collection("c").upsert([10**9], vectors[:1])  # logged, not in the new input
    small = tmp_path / "small"
    write_dataset(small, 500, 8, files=2, seed=9)
    report = jobs.build_collection(db, "c", small, metric="ip", partitions=2)
    assert report["replaced"]
    with shardwalk.Engine.open(db) as engine:
        c = engine.collection("c")
        assert (len(c), c.dim, c.metric) == (500, 8, "ip")
        assert 10**9 not in c
    assert len(list((db / "collections" / "c").glob("snap-*"))) == 1


def _bad_input(directory: Path, problem: str) -> tuple[Path, int]:
    """Two files; the second has one bad row (its row 7); returns (bad file, its row)."""
    rng = np.random.default_rng(1)
    directory.mkdir()
    for f in range(2):
        vectors = [list(map(float, v)) for v in rng.normal(size=(20, 4)).astype(np.float32)]
        ids = list(range(f * 20, f * 20 + 20))
        if f == 1:
            if problem == "dimension":
                vectors[7] = vectors[7][:3]
            elif problem == "nan":
                vectors[7][2] = float("nan")
            elif problem == "null":
                vectors[7] = None
            elif problem == "duplicate":
                ids[7] = 3  # also file 0, row 3
            elif problem == "negative":
                ids[7] = -4
        table = pa.table(
            {"id": pa.array(ids, pa.int64()), "vector": pa.array(vectors, pa.list_(pa.float32()))}
        )
        pq.write_table(table, directory / f"f{f}.parquet")
    return directory / "f1.parquet", 7


@pytest.mark.parametrize("problem", ["dimension", "nan", "null", "duplicate", "negative"])
def test_bad_row_names_file_and_row_and_keeps_the_previous_version(
    dataset, tmp_path: Path, problem: str
) -> None:
    db = tmp_path / "db"
    jobs.build_collection(db, "c", dataset[0], **PARAMS)
    before = snapshot_digest(db, "c")
    bad_file, row = _bad_input(tmp_path / "bad", problem)
    with pytest.raises(InvalidArgumentError) as caught:
        jobs.build_collection(db, "c", tmp_path / "bad", partitions=2)
    message = str(caught.value)
    assert repr(str(bad_file)) in message and f"row {row}" in message, message
    if problem == "duplicate":
        assert "f0.parquet' row 3" in message
    assert "nothing was committed" in message
    assert snapshot_digest(db, "c") == before  # the previous version, untouched
    assert not list((db / "collections" / "c").glob("build-*"))
    with shardwalk.Engine.open(db) as engine:
        assert len(engine.collection("c")) == N
    # a new collection that fails leaves nothing behind
    with pytest.raises(InvalidArgumentError):
        jobs.build_collection(db, "fresh", tmp_path / "bad", partitions=2)
    assert not (db / "collections" / "fresh").exists()
    with shardwalk.Engine.open(db) as engine:
        assert engine.collections() == ["c"]


def test_missing_input_and_column(dataset, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no such file"):
        jobs.build_collection(tmp_path / "db", "c", tmp_path / "nope")
    with pytest.raises(InvalidArgumentError, match="no column 'emb'"):
        jobs.build_collection(tmp_path / "db", "c", dataset[0], vector_column="emb")


def test_cli_build(dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["build", "--data", str(tmp_path / "db"), "--collection", "c", "--input"]
    assert main([*args, str(dataset[0]), "--param", "partitions=3", "--json"]) == 0
    assert '"rows": 3000' in capsys.readouterr().out
    with shardwalk.Engine.open(tmp_path / "db") as engine:
        assert engine.collection("c").stats()["params"]["partitions"] == 3
    with pytest.raises(SystemExit):
        main([*args, str(dataset[0]), "--index", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
