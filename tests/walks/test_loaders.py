"""Loaders: SNAP text (plain, gz, comments, weights), CSV with header, Parquet, numpy."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from shardwalk.walks.loaders import (
    from_arrow,
    load_edge_list,
    load_npy_dir,
    load_numpy,
    load_parquet,
)

from shardwalk.errors import InvalidArgumentError, NotFoundError

SNAP = b"""# Directed graph (each unordered pair of nodes is saved once): Example.txt
# Nodes: 4 Edges: 5
# FromNodeId\tToNodeId
0\t1
0\t2
1\t2
  # an indented comment
2\t0

3\t3
"""

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def edges_of(g):
    return sorted(
        (int(g.node_ids[u]), int(g.node_ids[v]))
        for u in range(g.num_nodes)
        for v in g.indices[g.indptr[u] : g.indptr[u + 1]]
    )


def test_snap_plain_and_gz(tmp_path):
    (tmp_path / "a.txt").write_bytes(SNAP)
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(SNAP))
    expected = [(0, 1), (0, 2), (1, 2), (2, 0), (3, 3)]
    assert edges_of(load_edge_list(tmp_path / "a.txt")) == expected
    assert edges_of(load_edge_list(tmp_path / "a.txt.gz")) == expected
    und = load_edge_list(tmp_path / "a.txt", directed=False, self_loops="drop")
    assert (1, 0) in edges_of(und) and (3, 3) not in edges_of(und)


def test_weighted_csv_with_header_and_extra_column(tmp_path):
    text = b"source,target,weight,timestamp\n7,8,2.5,100\n8,9,1,101\n7,9,0.5,102\n"
    (tmp_path / "w.csv").write_bytes(text)
    g = load_edge_list(tmp_path / "w.csv", weighted=True, delimiter=",", skip_rows=1)
    assert g.weighted and g.weights.tolist() == [2.5, 0.5, 1.0]
    assert edges_of(g) == [(7, 8), (7, 9), (8, 9)]


def test_negative_weight_in_file_is_rejected(tmp_path):
    (tmp_path / "s.txt").write_bytes(b"1 2 -3\n2 1 4\n")
    with pytest.raises(InvalidArgumentError, match=r"got -3.0 at edge 0.*signed graphs"):
        load_edge_list(tmp_path / "s.txt", weighted=True)


def test_ragged_line_is_named(tmp_path):
    (tmp_path / "r.txt").write_bytes(b"1 2\n2 3\n3 x\n")
    with pytest.raises(InvalidArgumentError, match=r"data line 3.*'3 x'"):
        load_edge_list(tmp_path / "r.txt")


def test_missing_file():
    with pytest.raises(NotFoundError, match="does not exist"):
        load_edge_list("/nonexistent/edges.txt")


def test_parquet_and_arrow(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    t = pa.table({"src": [1, 2, 3], "dst": [2, 3, 1], "weight": [1.0, 2.0, 3.0]})
    pq.write_table(t, tmp_path / "e.parquet")
    g = load_parquet(tmp_path / "e.parquet", weight="weight")
    assert g.weighted and edges_of(g) == [(1, 2), (2, 3), (3, 1)]
    assert edges_of(from_arrow(t)) == [(1, 2), (2, 3), (3, 1)]
    with pytest.raises(
        InvalidArgumentError,
        match=r"column 'from' not found; the table has \['src', 'dst', 'weight'\]",
    ):
        from_arrow(t, src="from")


def test_numpy_array_and_npy_dir(tmp_path):
    e = np.array([[0, 1], [1, 2]])
    assert edges_of(load_numpy(e)) == [(0, 1), (1, 2)]
    with pytest.raises(InvalidArgumentError, match=r"shape \(E, 2\)"):
        load_numpy(np.zeros((3, 3), np.int64))
    np.save(tmp_path / "edges.npy", e)
    np.save(tmp_path / "ids.npy", np.array([40, 50, 60, 70]))
    g = load_npy_dir(tmp_path)
    assert g.num_nodes == 4 and edges_of(g) == [(40, 50), (50, 60)]


@pytest.mark.data
@pytest.mark.skipif(not (DATA / "email-Eu-core").exists(), reason="needs ../shared/data")
def test_real_graph_loads_and_validates():
    g = load_npy_dir(DATA / "email-Eu-core")
    g.validate()
    assert g.num_nodes == 1005 and g.num_edges == 25571
