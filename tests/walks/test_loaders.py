"""Loaders: SNAP text (plain, gz, bz2, zstd, comments, weights), CSV with header, Parquet, numpy."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from shardwalk.walks import loaders
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
    with pytest.raises(InvalidArgumentError, match=r"shape \(E, 2\) or \(E, 3\)"):
        load_numpy(np.zeros((3, 4), np.int64))  # (E, 3) is (src, dst, weight) now
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


def test_snap_takes_the_pyarrow_path(tmp_path, monkeypatch):
    """Comment header, an indented comment and a blank line mid-file, tabs: pyarrow.csv parses
    the file as it is (normalising a copy first is for irregular files only)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the careful path ran on a regular SNAP file")

    monkeypatch.setattr(loaders, "_normalised", refuse)
    (tmp_path / "a.txt").write_bytes(SNAP)
    assert edges_of(load_edge_list(tmp_path / "a.txt")) == [(0, 1), (0, 2), (1, 2), (2, 0), (3, 3)]


@pytest.mark.parametrize("codec", ["gzip", "bz2", "zstd"])
def test_compressed_whatever_the_suffix(tmp_path, codec):
    with pa.output_stream(str(tmp_path / "edges.bin"), compression=codec) as out:
        out.write(SNAP)
    g = load_edge_list(tmp_path / "edges.bin")
    assert edges_of(g) == [(0, 1), (0, 2), (1, 2), (2, 0), (3, 3)]


def test_irregular_whitespace_and_comments_that_look_like_data(tmp_path):
    text = b"% KONECT header\n 1  2\n2\t3 \n# 9 9\n\n  \t \n3 \t 1\r\n4" + b" " * 40 + b"1"
    (tmp_path / "i.txt").write_bytes(text)
    assert edges_of(load_edge_list(tmp_path / "i.txt")) == [(1, 2), (2, 3), (3, 1), (4, 1)]
    g = load_edge_list(tmp_path / "i.txt", skip_rows=2)  # data lines, after the comments
    assert edges_of(g) == [(3, 1), (4, 1)]


def test_random_formatting_matches_numpy(tmp_path):
    rng = np.random.default_rng(8)
    src, dst = rng.integers(0, 500, 5000), rng.integers(0, 500, 5000)
    w = rng.random(5000) + 0.1
    lines = [b"# FromNodeId\tToNodeId\tWeight"]
    for i, (s_, d, x) in enumerate(zip(src, dst, w)):
        sep = b"  " if i % 997 == 0 else b"\t"  # a few runs of spaces force the careful path
        lines.append(sep.join([str(s_).encode(), str(d).encode(), repr(float(x)).encode()]))
        if i % 1000 == 0:
            lines.append(b"# checkpoint")
    (tmp_path / "r.txt").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "t.txt").write_bytes(b"\n".join(x.replace(b"  ", b"\t") for x in lines))
    expected = load_numpy(np.column_stack([src, dst]), w, duplicates="count")
    for name in ("r.txt", "t.txt"):
        g = load_edge_list(tmp_path / name, weighted=True, duplicates="count")
        assert edges_of(g) == edges_of(expected)
        np.testing.assert_allclose(np.sort(g.weights), np.sort(expected.weights))


def test_bad_line_is_named_by_its_line_number(tmp_path):
    (tmp_path / "r.txt").write_bytes(b"# header\n1 2\n\n3 x\n")
    with pytest.raises(InvalidArgumentError) as info:
        load_edge_list(tmp_path / "r.txt")
    message = str(info.value)
    assert "line 4 (data line 2 after comments) is not 2 integers: '3 x'" in message
    assert "--skip-rows" in message and "--comment" in message


def test_empty_field_is_an_error_not_a_null(tmp_path):
    (tmp_path / "e.csv").write_bytes(b"1,2\n3,\n")
    with pytest.raises(InvalidArgumentError, match=r"line 2 .*'3,'"):
        load_edge_list(tmp_path / "e.csv", delimiter=",")


def test_header_after_comments_and_extra_columns(tmp_path):
    text = b"# exported\nsrc\tdst\tts\tweight\n1\t2\t100\t0.5\n2\t3\t101\t2\n"
    (tmp_path / "h.tsv").write_bytes(text)
    g = load_edge_list(tmp_path / "h.tsv", weighted=True, skip_rows=1, columns=(0, 1, 3))
    assert edges_of(g) == [(1, 2), (2, 3)] and g.weights.tolist() == [0.5, 2.0]
    with pytest.raises(InvalidArgumentError, match=r"has 4 columns but columns=\(0, 1, 7\)"):
        load_edge_list(tmp_path / "h.tsv", weighted=True, skip_rows=1, columns=(0, 1, 7))


def test_binary_files_are_named_not_printed(tmp_path):
    np.save(tmp_path / "edges.npy", np.array([[0, 1], [1, 2]], np.int64))
    with pytest.raises(InvalidArgumentError) as info:
        load_edge_list(tmp_path / "edges.npy")
    message = str(info.value)
    assert "is a NumPy .npy file (int64 array of shape (2, 2)), not a text edge list" in message
    assert "load_numpy" in message and "NUMPY" not in message and "\\x" not in message
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"src": [1], "dst": [2]}), tmp_path / "e.data")
    with pytest.raises(InvalidArgumentError, match=r"is a Parquet file, not a text edge list"):
        load_edge_list(tmp_path / "e.data")


def test_numpy_edges_with_a_weight_column(tmp_path):
    rows = np.array([[5, 6, 2.5], [6, 7, 1.0]])  # column_stack of ids and weights: float64
    g = load_numpy(rows)
    assert edges_of(g) == [(5, 6), (6, 7)] and g.weights.tolist() == [2.5, 1.0]
    assert load_numpy(rows, use_weights=False).weights is None
    np.save(tmp_path / "e3.npy", rows)
    assert load_numpy(tmp_path / "e3.npy").weighted
    with pytest.raises(InvalidArgumentError, match="whole numbers below 2\\*\\*53"):
        load_numpy(np.array([[0.5, 1.0]]))
    with pytest.raises(InvalidArgumentError, match=re.escape("give one of them")):
        load_numpy(rows, np.ones(2))
    (tmp_path / "t.txt").write_text("1 2\n")
    with pytest.raises(InvalidArgumentError, match=r"is not a \.npy file"):
        load_numpy(tmp_path / "t.txt")
