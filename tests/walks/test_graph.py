"""CSRGraph: construction rules, invariants, ids, shards, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shardwalk.walks.graph import CSRGraph, GraphShard

from shardwalk.errors import CorruptionError, InvalidArgumentError, NotFoundError


def edge_set(g: CSRGraph) -> dict[tuple[int, int], float]:
    out = {}
    for u in range(g.num_nodes):
        for e in range(g.indptr[u], g.indptr[u + 1]):
            w = 1.0 if g.weights is None else float(g.weights[e])
            out[(int(g.node_ids[u]), int(g.node_ids[g.indices[e]]))] = w
    return out


def test_external_ids_map_both_ways():
    g = CSRGraph.from_edges([100, 5, 7], [5, 7, 100])
    assert g.node_ids.tolist() == [5, 7, 100]
    assert g.to_internal([100, 5]).tolist() == [2, 0]
    assert g.to_external(np.array([2, -1, 0])).tolist() == [100, -1, 5]
    assert g.indices.dtype == np.int32 and g.indptr.dtype == np.int64
    assert edge_set(g) == {(100, 5): 1, (5, 7): 1, (7, 100): 1}


def test_node_ids_follow_the_collection_id_rule():
    """Regression: node ids could be negative (-1 is padding in every result); float ids are
    refused with the collections' message (tests/test_errors.py checks their side)."""
    with pytest.raises(InvalidArgumentError, match=r"src must be non-negative int64 \(-1 marks"):
        CSRGraph.from_edges([100, 5, -7], [5, -7, 100])
    for ids in (np.array([1.0, 2.0]), [1.5, 2.0]):
        with pytest.raises(
            InvalidArgumentError, match=r"must be integers \(int64\); got dtype float64"
        ):
            CSRGraph.from_edges(ids, [2, 3])


def test_unknown_id_names_the_missing_ones():
    g = CSRGraph.from_edges([1, 2], [2, 3])
    with pytest.raises(NotFoundError, match=r"unknown node id\(s\) 4, 99"):
        g.to_internal([1, 99, 4])


def test_self_loops_keep_and_drop():
    g = CSRGraph.from_edges([1, 1, 2], [1, 2, 1])
    assert (1, 1) in edge_set(g)
    g2 = CSRGraph.from_edges([1, 1, 2], [1, 2, 1], self_loops="drop")
    assert edge_set(g2) == {(1, 2): 1, (2, 1): 1}


def test_duplicates_collapse_count_error():
    src, dst = [1, 1, 1, 2], [2, 2, 3, 3]
    assert edge_set(CSRGraph.from_edges(src, dst)) == {(1, 2): 1, (1, 3): 1, (2, 3): 1}
    counted = CSRGraph.from_edges(src, dst, duplicates="count")
    assert edge_set(counted) == {(1, 2): 2.0, (1, 3): 1.0, (2, 3): 1.0}
    summed = CSRGraph.from_edges(src, dst, [0.5, 1.5, 2.0, 1.0])
    assert edge_set(summed) == {(1, 2): 2.0, (1, 3): 2.0, (2, 3): 1.0}
    with pytest.raises(InvalidArgumentError, match=r"duplicate edges.*first 1 -> 2"):
        CSRGraph.from_edges(src, dst, duplicates="error")


def test_undirected_mirrors_and_stores_self_loop_once():
    g = CSRGraph.from_edges([1, 2, 3], [2, 1, 3], directed=False)
    assert edge_set(g) == {(1, 2): 1, (2, 1): 1, (3, 3): 1}
    g.validate()


@pytest.mark.parametrize("bad", [-3.0, 0.0, np.nan, np.inf])
def test_bad_weights_raise_with_position_and_hint(bad):
    with pytest.raises(InvalidArgumentError, match=r"finite and > 0.*at edge 1.*signed graphs"):
        CSRGraph.from_edges([1, 2, 3], [2, 3, 1], [1.0, bad, 2.0])


def test_isolated_nodes_and_unknown_endpoint():
    g = CSRGraph.from_edges([1], [2], node_ids=[1, 2, 50])
    assert g.num_nodes == 3 and g.out_degrees().tolist() == [1, 0, 0]
    with pytest.raises(NotFoundError, match="unknown edge endpoint id"):
        CSRGraph.from_edges([1], [3], node_ids=[1, 2])


def test_mismatched_and_float_ids_raise():
    with pytest.raises(InvalidArgumentError, match="same length"):
        CSRGraph.from_edges([1, 2], [1])
    with pytest.raises(InvalidArgumentError, match=r"src must be integers \(int64\)"):
        CSRGraph.from_edges([1.5], [2.0])


def test_validate_catches_broken_invariants():
    g = CSRGraph.from_edges([0, 1, 2], [1, 2, 0])
    broken = CSRGraph(
        indptr=g.indptr, indices=np.array([1, 5, 0], np.int32), weights=None, node_ids=g.node_ids
    )
    with pytest.raises(InvalidArgumentError, match=r"indices must be in \[0, 3\)"):
        broken.validate()
    unsorted = CSRGraph(
        indptr=np.array([0, 2, 2, 2], np.int64),
        indices=np.array([2, 1], np.int32),
        weights=None,
        node_ids=g.node_ids,
    )
    with pytest.raises(InvalidArgumentError, match="strictly increasing"):
        unsorted.validate()
    asym = CSRGraph(
        indptr=g.indptr, indices=g.indices, weights=None, node_ids=g.node_ids, directed=False
    )
    with pytest.raises(InvalidArgumentError, match="not symmetric"):
        asym.validate()


@settings(max_examples=60, deadline=None)
@given(
    edges=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), max_size=60),
    directed=st.booleans(),
)
def test_csr_matches_a_set_model(edges, directed):
    src = [a for a, _ in edges]
    dst = [b for _, b in edges]
    g = CSRGraph.from_edges(src, dst, directed=directed).validate()
    model = set(edges) | (set() if directed else {(b, a) for a, b in edges})
    assert set(edge_set(g)) == model
    assert g.num_nodes == len({x for e in edges for x in e})


@pytest.mark.parametrize("by", ["range", "hash"])
def test_shards_partition_nodes_and_edges(small_weighted, by):
    g = small_weighted
    shards = g.shards(4, by=by)
    nodes = np.concatenate([s.nodes for s in shards])
    assert np.array_equal(np.sort(nodes), np.arange(g.num_nodes))
    all_edges = sorted(e for s in shards for e in s.edges())
    ref = sorted(
        (u, int(v)) for u in range(g.num_nodes) for v in g.indices[g.indptr[u] : g.indptr[u + 1]]
    )
    assert all_edges == ref
    assert sum(s.num_edges for s in shards) == g.num_edges
    # weights travel with their edges
    s0 = shards[0]
    for i, u in enumerate(s0.nodes[:5]):
        np.testing.assert_array_equal(
            s0.weights[s0.indptr[i] : s0.indptr[i + 1]], g.weights[g.indptr[u] : g.indptr[u + 1]]
        )


def test_range_shards_are_contiguous_and_balanced(small_graph):
    owner = small_graph.shard_assignment(3, by="range")
    assert np.all(np.diff(owner) >= 0)
    cost = 1 + small_graph.out_degrees()
    per = np.bincount(owner, weights=cost, minlength=3)
    assert per.max() <= cost.sum() / 3 + cost.max()


def test_hash_shards_depend_on_external_ids_only():
    a = CSRGraph.from_edges([10, 20, 30], [20, 30, 10])
    b = CSRGraph.from_edges([10, 20, 30, 40], [20, 30, 10, 10])
    ha = dict(zip(a.node_ids.tolist(), a.shard_assignment(5, by="hash").tolist(), strict=True))
    hb = dict(zip(b.node_ids.tolist(), b.shard_assignment(5, by="hash").tolist(), strict=True))
    assert all(ha[k] == hb[k] for k in ha)


def test_shard_errors():
    g = CSRGraph.from_edges([1], [2])
    with pytest.raises(InvalidArgumentError, match="'range', 'hash'"):
        g.shards(2, by="random")
    with pytest.raises(InvalidArgumentError, match="num_shards must be an integer >= 1"):
        g.shards(0)


def test_save_load_roundtrip_mmap(tmp_path, small_weighted):
    g = small_weighted
    g.save(tmp_path / "g")
    h = CSRGraph.load(tmp_path / "g", verify=True)
    assert isinstance(h.indptr, np.memmap)
    for name in ("indptr", "indices", "weights", "node_ids"):
        np.testing.assert_array_equal(getattr(g, name), getattr(h, name))
    assert h.directed == g.directed and h.digest() == g.digest()
    meta = json.loads((tmp_path / "g" / "meta.json").read_text())
    assert meta["schema"] == "shardwalk.csr_graph" and meta["version"] == 1
    s = g.shards(2)[1]
    s.save(tmp_path / "s")
    s2 = GraphShard.load(tmp_path / "s")
    np.testing.assert_array_equal(s.indices, s2.indices)


def test_load_errors(tmp_path, small_graph):
    with pytest.raises(NotFoundError, match=r"meta\.json is missing"):
        CSRGraph.load(tmp_path / "nothing")
    small_graph.save(tmp_path / "g")
    meta_path = tmp_path / "g" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(
        CorruptionError, match=r"version 99; expected 1 \(this build reads that version"
    ):
        CSRGraph.load(tmp_path / "g")
    small_graph.save(tmp_path / "g")
    np.save(tmp_path / "g" / "indices.npy", small_graph.indices[:-3])
    with pytest.raises(CorruptionError, match="shapes do not match"):
        CSRGraph.load(tmp_path / "g")
    (tmp_path / "g" / "indices.npy").unlink()
    with pytest.raises(CorruptionError, match=r"indices\.npy"):
        CSRGraph.load(tmp_path / "g")
