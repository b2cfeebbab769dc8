"""Numba kernels against numpy references: generator, alias tables, walks, transitions."""

from __future__ import annotations

import itertools

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shardwalk.walks.fingerprints import build_fingerprints, sample_walks
from shardwalk.walks.graph import CSRGraph
from shardwalk.walks.kernels.alias import alias_tables, row_probabilities
from shardwalk.walks.kernels.fastrp import propagate
from shardwalk.walks.kernels.query import top_k_of
from shardwalk.walks.kernels.rng import uniform_draws

from ..conftest import random_graph


def test_counter_rng_is_uniform_and_reproducible():
    u = uniform_draws(7, 3, 0, 200_000)
    np.testing.assert_array_equal(u, uniform_draws(7, 3, 0, 200_000))
    assert not np.array_equal(u[:100], uniform_draws(7, 3, 1, 100))
    assert not np.array_equal(u[:100], uniform_draws(8, 3, 0, 100))
    # 20 equal bins: each count is Binomial(N, 1/20), sd = sqrt(N * 0.05 * 0.95) ~ 97;
    # 5 sd per bin (two-sided 6e-7 each) with a fixed seed
    counts = np.bincount((u * 20).astype(int), minlength=20)
    sd = np.sqrt(u.size * 0.05 * 0.95)
    assert np.all(np.abs(counts - u.size / 20) < 5 * sd), counts
    # lag-1 correlation of N uniforms has sd 1/sqrt(N) ~ 0.0022
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5 / np.sqrt(u.size)


def test_row_probabilities_match_numpy(small_weighted):
    g = small_weighted
    p = row_probabilities(g.indptr, g.weights)
    for u in range(g.num_nodes):
        a, b = g.indptr[u], g.indptr[u + 1]
        if b > a:
            w = g.weights[a:b].astype(np.float64)
            np.testing.assert_allclose(p[a:b], w / w.sum(), rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.01, 100.0), min_size=1, max_size=40))
def test_alias_tables_encode_the_weights_exactly(ws):
    """The distribution implied by (prob, alias) equals w / sum(w): slot j gives itself
    prob[j] / d and gives alias[j] (1 - prob[j]) / d."""
    w = np.array(ws, np.float32)
    indptr = np.array([0, w.size], np.int64)
    prob, alias = alias_tables(indptr, w, 1)
    d = w.size
    implied = np.zeros(d)
    for j in range(d):
        implied[j] += prob[j] / d
        implied[alias[j]] += (1.0 - prob[j]) / d
    np.testing.assert_allclose(implied, w / w.sum(dtype=np.float64), atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 25),
    m=st.integers(1, 80),
    seed=st.integers(0, 2**32),
    weighted=st.booleans(),
    rule=st.sampled_from(["self_loop", "drop", "restart"]),
)
def test_walks_only_follow_existing_edges(n, m, seed, weighted, rule):
    g = random_graph(n, m, seed=seed % 1000, weighted=weighted, dangling=min(2, n - 1))
    edges = {
        (int(g.node_ids[u]), int(g.node_ids[v]))
        for u in range(g.num_nodes)
        for v in g.indices[g.indptr[u] : g.indptr[u + 1]]
    }
    dangling = {int(g.node_ids[u]) for u in np.flatnonzero(np.diff(g.indptr) == 0)}
    walks = sample_walks(g, g.node_ids, walks_per_node=3, alpha=0.2, seed=seed, dangling=rule)
    for i, path in enumerate(walks):
        src = int(g.node_ids[i // 3])
        assert path[0] == src
        for a, b in itertools.pairwise(path):
            if a in dangling:
                assert rule != "drop"
                assert b == (a if rule == "self_loop" else src)
            else:
                assert (int(a), int(b)) in edges


def test_walk_lengths_are_geometric():
    """Without dangling nodes, a walk has L visits with P(L = l) = (1-a)^(l-1) a: mean 1/a,
    variance (1-a)/a^2. With N walks the sample mean has sd sqrt((1-a)/N)/a; 5 sd allowed."""
    g = CSRGraph.from_edges([0, 1], [1, 0])
    alpha, n_walks = 0.15, 20_000
    lengths = np.array(
        [p.size for p in sample_walks(g, [0], walks_per_node=n_walks, alpha=alpha, seed=3)]
    )
    sd = np.sqrt((1 - alpha) / n_walks) / alpha
    assert abs(lengths.mean() - 1 / alpha) < 5 * sd


def test_weighted_transition_frequencies_match_weights():
    """Transitions out of the hub are i.i.d. categorical(w / sum w) draws, so the count of edge j
    over N transitions is Binomial(N, p_j): we allow 5 sd = 5 sqrt(N p_j (1 - p_j)) per edge."""
    w = np.array([1.0, 2.0, 3.0, 10.0, 0.5])
    src = np.zeros(5, np.int64)
    dst = np.arange(1, 6)
    back = np.arange(1, 6)
    g = CSRGraph.from_edges(
        np.concatenate([src, back]),
        np.concatenate([dst, np.zeros(5, np.int64)]),
        np.concatenate([w, np.ones(5)]),
    )
    walks = sample_walks(g, [0], walks_per_node=20_000, alpha=0.3, seed=11)
    nxt = np.concatenate([p[1:][p[:-1] == 0] for p in walks if p.size > 1])
    counts = np.bincount(nxt, minlength=6)[1:]
    n = counts.sum()
    p = w / w.sum()
    sd = np.sqrt(n * p * (1 - p))
    assert n > 20_000
    assert np.all(np.abs(counts - n * p) < 5 * sd), (counts, n * p)


def test_same_seed_same_fingerprints_on_any_thread_count():
    g = random_graph(200, 900, seed=5, dangling=10, weighted=True)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = build_fingerprints(g, walks_per_node=8, seed=42)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = build_fingerprints(g, walks_per_node=8, seed=42, block_size=37)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one.indptr, two.indptr)
    np.testing.assert_array_equal(one.nodes, two.nodes)
    np.testing.assert_array_equal(one.counts, two.counts)
    other = build_fingerprints(g, walks_per_node=8, seed=43)
    assert (
        not np.array_equal(one.counts, other.counts[: one.counts.size])
        or one.nodes.size != other.nodes.size
    )


def test_top_k_of_sorts_and_pads():
    values = np.array([0.0, 0.5, 0.2, 0.5, 0.1])
    touched = np.array([1, 2, 3, 4], np.int64)
    ids = np.empty(6, np.int64)
    sc = np.empty(6, np.float32)
    top_k_of(touched, 4, values, 6, ids, sc)
    assert ids.tolist() == [1, 3, 2, 4, -1, -1]  # ties by lower node
    assert sc.tolist()[4:] == [0.0, 0.0]
    top_k_of(touched, 4, values, 2, ids[:2], sc[:2])
    assert ids[:2].tolist() == [1, 3]


@pytest.mark.parametrize("weighted", [False, True])
def test_propagate_matches_dense_product(weighted):
    g = random_graph(40, 150, seed=9, dangling=3, weighted=weighted)
    x = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32)
    out = np.empty_like(x)
    propagate(g.indptr, g.indices, g.transition_probs(), g.weighted, x, out)
    from ..conftest import dense_transition

    P = dense_transition(g, "drop")
    np.testing.assert_allclose(out, P @ x, rtol=1e-5, atol=1e-5)
