"""The log-structured edge delta (``walks/dynamic.py``) against a plain adjacency rebuilt from
the same edge set after every batch: rows, degrees, merged CSR, and what a batch costs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shardwalk.walks.dynamic import DynamicGraph
from shardwalk.walks.graph import CSRGraph
from shardwalk.walks.kernels.repair import (
    dyn_next,
    tail_key,
    walk_tails,
    walks_bounds,
    walks_build,
)
from shardwalk.walks.kernels.rng import MODE_DROP, draw, geometric_visits


def _reference(edges: dict, ids: list[int], weighted: bool, directed: bool) -> CSRGraph:
    """A CSR built from scratch from the edge dict {(u, v): w} over external ids ``ids``."""
    src = np.array([u for u, _ in edges], np.int64)
    dst = np.array([v for _, v in edges], np.int64)
    w = np.array(list(edges.values()), np.float32) if weighted else None
    return CSRGraph.from_edges(src, dst, w, directed=True, node_ids=np.array(ids, np.int64))


def _check_same(dyn: DynamicGraph, edges: dict, ids: list[int], weighted: bool) -> None:
    csr = dyn.merged()
    live = csr.node_ids >= 0
    ref = _reference(edges, ids, weighted, dyn.directed)
    # same nodes in the same internal order (deleted slots aside), same sorted rows
    assert list(csr.node_ids[live]) == list(ref.node_ids)
    deg = np.diff(csr.indptr)
    assert (deg[~live] == 0).all()
    assert list(deg[live]) == list(np.diff(ref.indptr))
    got = csr.node_ids[csr.indices]
    want = ref.node_ids[ref.indices]
    assert list(got) == list(want)
    if weighted:
        np.testing.assert_array_equal(csr.weights, ref.weights)
    assert dyn.num_edges == len(edges) and (dyn.degrees() == deg).all()
    # the walk kernels' bitmap marks every row that is not its base row alone (the rest take
    # dyn_next's plain CSR step)
    n = np.arange(dyn.num_nodes)
    marked = (dyn.ext_bits[n >> 6] >> (n & 63).astype(np.uint64)) & np.uint64(1)
    assert marked[(dyn.row_len > 0) | ~dyn.base_live].all()
    # ids answer as the reference's (deleted ones not, re-added ones at their new slot)
    probe = np.arange(-1, 20)
    assert list(dyn.contains(probe)) == [int(i) in ids for i in probe]
    known = np.array([i for i in probe if int(i) in ids], np.int64)
    assert list(csr.node_ids[dyn.to_internal(known)]) == list(known)
    # rows() answers as the merged CSR does
    nodes = np.arange(dyn.num_nodes)
    ip, t, w = dyn.rows(nodes)
    np.testing.assert_array_equal(ip, csr.indptr)
    np.testing.assert_array_equal(t, csr.indices)
    if weighted:
        np.testing.assert_array_equal(w, csr.weights)
        np.testing.assert_allclose(
            dyn.totals(nodes), np.add.reduceat(np.append(w, 0), ip[:-1]) * (deg > 0), rtol=1e-6
        )


_op = st.tuples(
    st.sampled_from(["upsert", "upsert", "upsert", "delete", "delete_nodes"]),
    st.lists(st.tuples(st.integers(0, 14), st.integers(0, 14)), min_size=1, max_size=12),
    st.integers(0, 2**31),
)


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(_op, min_size=1, max_size=12),
    weighted=st.booleans(),
    directed=st.booleans(),
)
def test_the_delta_reads_as_a_rebuilt_adjacency(ops, weighted, directed) -> None:
    rng = np.random.default_rng(0)
    pairs0 = {(int(u), int(v)) if directed else (int(min(u, v)), int(max(u, v)))
              for u, v in rng.integers(0, 8, (20, 2))}  # fmt: skip
    base_src = np.array([u for u, _ in sorted(pairs0)], np.int64)
    base_dst = np.array([v for _, v in sorted(pairs0)], np.int64)
    ids = list(range(8))
    edges: dict = {}
    for u, v in sorted(pairs0):
        for a, b in [(u, v)] if directed else {(u, v), (v, u)}:
            edges[(a, b)] = 1.0
    base = CSRGraph.from_edges(
        base_src, base_dst, np.ones(base_src.size) if weighted else None, directed=directed,
        node_ids=np.arange(8),
    )  # fmt: skip
    dyn = DynamicGraph(base)
    _check_same(dyn, edges, ids, weighted)
    for op, pairs, seed in ops:
        pairs = np.array(pairs, np.int64)
        if op == "upsert":
            w = np.random.default_rng(seed).uniform(0.5, 3, len(pairs)).astype(np.float32)
            batch = dyn.prepare("upsert", pairs, w if weighted else None)
            for node in [*pairs[:, 0].tolist(), *pairs[:, 1].tolist()]:  # sources' new ids first
                if node not in ids:
                    ids.append(node)
            for (u, v), x in zip(pairs.tolist(), w.tolist()):
                for a, b in [(u, v)] if directed or u == v else [(u, v), (v, u)]:
                    edges[(a, b)] = x if weighted else 1.0
        elif op == "delete":
            have = [p for p in pairs.tolist() if tuple(p) in edges]
            if not have:
                continue
            batch = dyn.prepare("delete", np.array(have, np.int64))
            for u, v in have:
                edges.pop((u, v), None)
                if not directed:
                    edges.pop((v, u), None)
        else:
            gone = sorted({u for u, _ in pairs.tolist() if u in ids})
            if not gone:
                continue
            batch = dyn.prepare("delete_nodes", np.array(gone, np.int64))
            edges = {(a, b): x for (a, b), x in edges.items() if a not in gone and b not in gone}
            ids = [i for i in ids if i not in gone]
        change = dyn.apply(batch)
        _check_same(dyn, edges, ids, weighted)
        # the Change's totals are the rows' (kind 1: only new edges listed)
        if change.new_total is not None and change.nodes.size:
            np.testing.assert_allclose(change.new_total, dyn.totals(change.nodes), rtol=1e-6)
    _check_same(dyn.compacted(), edges, ids, weighted)


def test_a_batch_of_new_edges_costs_its_own_size() -> None:
    """Appending to a hub's row writes the batch, not the row: the delta grows by the new
    edges (and a segment's room), not by the hub's 5,000 base edges."""
    hub = np.zeros(5000, np.int64)
    base = CSRGraph.from_edges(hub, np.arange(1, 5001), None, directed=True,
                               node_ids=np.arange(5001))  # fmt: skip
    dyn = DynamicGraph(base)
    for i in range(50):
        dyn.apply(dyn.prepare("upsert", np.array([[0, 5001 + i], [1, 2 + i]])))
    assert dyn.delta_edges == 100
    assert dyn.d_used <= 4 * dyn.delta_edges  # segments at most twice what they hold, moved
    assert dyn.num_edges == 5100
    assert dyn.base_live[0]  # the hub's base row is still read in place
    row = dyn.merged().indices[dyn.merged().indptr[0] : dyn.merged().indptr[1]]
    assert row.size == 5050 and (np.diff(row) > 0).all()


def test_walks_on_a_grown_row_pick_every_edge_by_weight() -> None:
    """dyn_next on a row with a base part and appended edges: the moves follow the weights
    (chi-square against the row's distribution)."""
    base = CSRGraph.from_edges(np.zeros(3, np.int64), np.array([1, 2, 3]), np.array([1.0, 2, 3]),
                               directed=True, node_ids=np.arange(6))  # fmt: skip
    dyn = DynamicGraph(base)
    dyn.apply(dyn.prepare("upsert", np.array([[0, 4], [0, 5]]), np.array([4.0, 5.0])))
    arrays = dyn.kernel_arrays()
    n_walks = 20000
    at = np.arange(n_walks, dtype=np.int64) * 64
    steps = np.full(n_walks * 64, -1, np.int32)
    walk_len = np.zeros(n_walks, np.uint16)
    bounds = walks_bounds(np.zeros(n_walks, np.int64), np.arange(n_walks), 1, 0.5, 3)
    assert bounds.max() < 64
    walks_build(np.zeros(n_walks, np.int64), np.arange(n_walks, dtype=np.int64), 1, 0.5,
                         3, 0, *arrays, at, steps, walk_len, np.zeros(0, np.bool_))  # fmt: skip
    first = steps[at[walk_len > 0]]
    counts = np.bincount(first, minlength=6)[1:]
    expected = np.array([1, 2, 3, 4, 5]) / 15 * first.size
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 20.5  # 4 degrees of freedom: p < 0.0004


@pytest.mark.parametrize("weighted", [False, True])
def test_base_find_finds_exactly_the_current_base_edges(weighted: bool) -> None:
    base = CSRGraph.from_edges(np.array([0, 0, 1, 2]), np.array([1, 3, 2, 0]),
                               np.ones(4) if weighted else None, directed=True,
                               node_ids=np.arange(4))  # fmt: skip
    dyn = DynamicGraph(base)
    src, dst = np.array([0, 0, 0, 1, 3]), np.array([1, 2, 3, 2, 0])
    assert list(dyn._find(src, dst)) == [True, False, True, True, False]
    dyn.apply(dyn.prepare("delete", np.array([[0, 1]])))  # row 0 rewritten
    dyn.apply(dyn.prepare("upsert", np.array([[3, 0]])))  # appended
    assert list(dyn._find(src, dst)) == [False, False, True, True, True]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("mode", [0, MODE_DROP])
def test_tails_walked_in_lockstep_are_the_walks_one_at_a_time(weighted: bool, mode: int) -> None:
    """walk_tails advances several walks at a time per thread (lanes refilled as walks end):
    each tail is the walk its key gives alone, step by step through dyn_next, on a graph with
    appended, rewritten, dangling and new rows; on one thread or two."""
    rng = np.random.default_rng(5)
    n = 300
    src, dst = rng.integers(0, n, 1500), rng.integers(0, n, 1500)
    keep = src % 7 != 0  # some dangling nodes
    w = rng.uniform(0.5, 3.0, keep.sum()) if weighted else None
    dyn = DynamicGraph(CSRGraph.from_edges(src[keep], dst[keep], w, directed=True,
                                           node_ids=np.arange(n)))  # fmt: skip
    new = rng.integers(0, n + 30, size=(200, 2))
    dyn.apply(dyn.prepare("upsert", new, rng.uniform(0.5, 3.0, 200) if weighted else None))
    m = dyn.merged()
    s_ = np.repeat(np.arange(m.num_nodes), np.diff(m.indptr))
    pick = rng.choice(m.num_edges, 100, replace=False)
    dyn.apply(dyn.prepare("delete", (m.node_ids[s_[pick]], m.node_ids[m.indices[pick]])))
    arrays = dyn.kernel_arrays()
    count = 500
    # tails as a repair makes them: plan entries (walk) rerouted at pos to target
    r = 4
    rerouted = np.arange(count, dtype=np.int64)
    block_src = np.arange(count // r, dtype=np.int32)
    pos = rng.integers(0, 5, count)
    target = rng.integers(0, dyn.num_nodes, count)
    target[::9] = -1  # the drop rule's "ends here": no tail
    key = np.array(
        [tail_key(block_src, 1, r, 3, 2, q, p) for q, p in zip(rerouted, pos)], np.uint64
    )
    visits = np.array([geometric_visits(k, 0.15) for k in key]) * (target >= 0)
    assert (visits[target >= 0] >= 1).all()
    at = np.cumsum(visits) - visits
    todo = np.flatnonzero(visits)
    want = {}
    for e in todo:
        cur, walk, drop = int(target[e]), [int(target[e])], False
        for step in range(1, int(visits[e])):
            nxt = int(dyn_next(cur, np.uint64(draw(key[e], np.uint64(step))), *arrays))
            if nxt < 0:
                if mode == MODE_DROP:
                    drop = True
                    break
                nxt = cur
            walk.append(nxt)
            cur = nxt
        want[e] = (walk, drop)
    assert any(d for _, d in want.values()) == (mode == MODE_DROP)
    for chunks in (1, 2):
        out = np.full(int(visits.sum()), -1, np.int64)
        lens = np.zeros(count, np.int64)
        drops = np.zeros(count, np.bool_)
        walk_tails(rerouted, pos, target, visits, at, block_src, 1, r, 3, 2, mode, *arrays, out, lens,
                   drops, chunks)  # fmt: skip
        assert (lens[visits == 0] == 0).all()
        for e in todo:
            assert list(out[at[e] : at[e] + lens[e]]) == want[e][0]
            assert bool(drops[e]) == want[e][1]
