"""Readers of every ingest format, and the command line end to end."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shardwalk
from shardwalk import InvalidArgumentError, NotFoundError
from shardwalk.cli import main
from shardwalk.formats import open_vectors, read_texmex


def write_texmex(path, array: np.ndarray) -> None:
    n, dim = array.shape
    header = np.full((n, 1), dim, dtype=np.int32).view(np.uint8)
    body = np.ascontiguousarray(array).view(np.uint8).reshape(n, -1)
    path.write_bytes(np.hstack([header, body]).tobytes())


@pytest.fixture
def vectors() -> np.ndarray:
    return np.random.default_rng(3).random((25, 6), dtype=np.float32)


def collect(source):
    batches = list(source.batches)
    return (
        np.concatenate([b.ids for b in batches]),
        np.concatenate([b.vectors for b in batches]),
        batches,
    )


def test_npy(tmp_path, vectors):
    np.save(tmp_path / "v.npy", vectors)
    source = open_vectors(str(tmp_path / "v.npy"), batch_size=10)
    ids, got, batches = collect(source)
    assert source.count == 25 and source.dim == 6 and len(batches) == 3
    np.testing.assert_array_equal(got, vectors)
    assert ids.tolist() == list(range(25))


@pytest.mark.parametrize(
    "ext,dtype", [("fvecs", np.float32), ("bvecs", np.uint8), ("ivecs", np.int32)]
)
def test_texmex(tmp_path, vectors, ext, dtype):
    array = (vectors * 200).astype(dtype)
    write_texmex(tmp_path / f"v.{ext}", array)
    np.testing.assert_array_equal(read_texmex(str(tmp_path / f"v.{ext}")), array)
    _, got, _ = collect(open_vectors(str(tmp_path / f"v.{ext}"), limit=7))
    np.testing.assert_array_equal(got, array[:7].astype(np.float32))


def test_truncated_texmex_is_refused(tmp_path, vectors):
    write_texmex(tmp_path / "v.fvecs", vectors)
    data = (tmp_path / "v.fvecs").read_bytes()
    (tmp_path / "v.fvecs").write_bytes(data[:-3])
    with pytest.raises(
        InvalidArgumentError, match=r"do not make whole records of 28 bytes \(truncated\?\)"
    ):
        read_texmex(str(tmp_path / "v.fvecs"))


def test_hdf5_ann_benchmarks_layout(tmp_path, vectors):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "d.hdf5", "w") as f:
        f["train"] = vectors
        f["test"] = vectors[:3]
    _, got, _ = collect(open_vectors(str(tmp_path / "d.hdf5")))
    np.testing.assert_array_equal(got, vectors)
    _, got, _ = collect(open_vectors(str(tmp_path / "d.hdf5"), hdf5_dataset="test"))
    assert got.shape == (3, 6)
    with pytest.raises(NotFoundError, match=r"has no dataset 'base'; it has \['test', 'train'\]"):
        open_vectors(str(tmp_path / "d.hdf5"), hdf5_dataset="base")


def test_parquet_with_ids_tenants_and_attributes(tmp_path, vectors):
    table = pa.table(
        {
            "id": pa.array(np.arange(100, 125), pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 6),
            "owner": ["a", "b"] * 12 + ["a"],
            "year": list(range(2000, 2025)),
        }
    )
    pq.write_table(table, tmp_path / "v.parquet")
    source = open_vectors(str(tmp_path / "v.parquet"), batch_size=10, tenant_column="owner")
    ids, got, batches = collect(source)
    assert source.dim == 6 and ids.tolist() == list(range(100, 125))
    np.testing.assert_allclose(got, vectors)
    assert batches[0].tenants[:2] == ["a", "b"] and batches[0].attributes["year"][0] == 2000
    with pytest.raises(InvalidArgumentError, match="has no column 'emb'"):
        open_vectors(str(tmp_path / "v.parquet"), vector_column="emb")


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "v.csv").write_text("1,2")
    with pytest.raises(InvalidArgumentError, match="cannot tell the format"):
        open_vectors(str(tmp_path / "v.csv"))
    with pytest.raises(NotFoundError, match="no such file"):
        open_vectors(str(tmp_path / "nope.npy"))


def test_cli_quickstart_ingest_search_info(tmp_path, capsys, vectors):
    assert (
        main(
            [
                "quickstart",
                "--data",
                str(tmp_path / "qs"),
                "--n",
                "3000",
                "--dim",
                "16",
                "--queries",
                "50",
                "--json",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["vectors"] == 3000 and summary["recall_at_10"] >= 0.95  # observed 1.0
    assert summary["filtered_recall_at_10"] >= 0.95 and summary["filtered_path"] == "exact"
    assert summary["graph_nodes"] == 3000 and summary["ppr_precision_at_100"] >= 0.5

    write_texmex(tmp_path / "v.fvecs", vectors)
    data = str(tmp_path / "db")
    assert (
        main(
            [
                "ingest",
                str(tmp_path / "v.fvecs"),
                "--data",
                data,
                "--collection",
                "v",
                "--index",
                "hnsw",
                "--param",
                "m=8",
            ]
        )
        == 0
    )
    assert "ingested 25 vectors of dimension 6" in capsys.readouterr().out
    np.save(tmp_path / "q.npy", vectors[:2])
    assert (
        main(
            [
                "search",
                "--data",
                data,
                "--collection",
                "v",
                "--queries",
                str(tmp_path / "q.npy"),
                "--k",
                "3",
                "--json",
            ]
        )
        == 0
    )
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [line["ids"][0] for line in lines] == [0, 1]
    assert main(["search", "--data", data, "--collection", "v", "--id", "5", "--k", "1"]) == 0
    assert capsys.readouterr().out.startswith("query 0: 5:0")
    assert main(["info", "--data", data]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["collections"][0]["count"] == 25 and info["collections"][0]["params"] == {"m": 8}
    # errors are one line with the status code, exit code 2
    assert main(["search", "--data", data, "--collection", "nope", "--id", "1"]) == 2
    assert "no collection 'nope'; collections: 'v' (NOT_FOUND)" in capsys.readouterr().err
    with shardwalk.Engine.open(data) as eng:
        assert len(eng.collection("v")) == 25


def test_batches_read_again_and_ids_say_where_they_come_from(tmp_path, vectors):
    np.save(tmp_path / "v.npy", vectors)
    source = open_vectors(str(tmp_path / "v.npy"), batch_size=10, id_offset=100)
    first, _, _ = collect(source)
    again, _, _ = collect(source)  # a second pass reads the file again (checks, then writes)
    assert first.tolist() == again.tolist() == list(range(100, 125))
    assert source.describe_ids() == "row numbers + id offset 100 (100..124)"
    assert open_vectors(str(tmp_path / "v.npy")).describe_ids() == "row numbers (0..24)"
    with pytest.raises(InvalidArgumentError, match="is a npy file, which holds no ids"):
        open_vectors(str(tmp_path / "v.npy"), id_column="id")
    with pytest.raises(InvalidArgumentError, match="id offset must be a non-negative integer"):
        open_vectors(str(tmp_path / "v.npy"), id_offset=-1)
    with pytest.raises(InvalidArgumentError, match="runs past the largest int64 id"):
        open_vectors(str(tmp_path / "v.npy"), id_offset=2**63 - 10)


def test_parquet_id_column_rules(tmp_path, vectors):
    flat = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 6)
    pq.write_table(pa.table({"id": np.arange(5, 30), "vector": flat}), tmp_path / "ids.parquet")
    pq.write_table(pa.table({"vector": flat}), tmp_path / "plain.parquet")
    source = open_vectors(str(tmp_path / "ids.parquet"))
    assert source.id_column == "id" and source.describe_ids() == "column 'id'"
    with pytest.raises(InvalidArgumentError, match="an id offset does not apply"):
        open_vectors(str(tmp_path / "ids.parquet"), id_offset=0)
    ids, _, _ = collect(open_vectors(str(tmp_path / "plain.parquet"), id_offset=7))
    assert ids.tolist() == list(range(7, 32))
    with pytest.raises(InvalidArgumentError, match=r"has no column 'key'; columns: \['vector'\]"):
        open_vectors(str(tmp_path / "plain.parquet"), id_column="key")


def test_parquet_ragged_vectors_are_named(tmp_path):
    rows = [[1.0, 2.0], [3.0], [4.0, 5.0], None]
    pq.write_table(pa.table({"vector": rows}), tmp_path / "r.parquet")
    with pytest.raises(InvalidArgumentError, match=r"rows 1, 3 of the vector column are null or"):
        collect(open_vectors(str(tmp_path / "r.parquet")))
