"""PPR: every method and every dangling rule against its own dense exact solution."""

from __future__ import annotations

import doctest
import re

import numpy as np
import pytest
import shardwalk.walks.ppr as ppr_module
from shardwalk.walks.fingerprints import build_fingerprints
from shardwalk.walks.graph import CSRGraph
from shardwalk.walks.ppr import METHODS, PPRIndex, personalized_pagerank

from shardwalk.errors import InvalidArgumentError, NotFoundError

from .conftest import as_dense, dense_ppr, random_graph

RULES = ["self_loop", "drop", "restart"]


@pytest.fixture(scope="module")
def graphs():
    return {
        False: random_graph(60, 240, seed=1, dangling=6),
        True: random_graph(60, 240, seed=2, dangling=6, weighted=True),
    }


@pytest.fixture(scope="module")
def stores(graphs):
    """R = 2000 fingerprints per (weighted, store rule)."""
    return {
        (w, rule): build_fingerprints(g, walks_per_node=2000, alpha=0.15, seed=7, dangling=rule)
        for w, g in graphs.items()
        for rule in ("self_loop", "drop")
    }


def seeds_of(g):
    ids = g.node_ids
    return [
        int(ids[0]),
        [int(ids[3]), int(ids[10])],
        {int(ids[5]): 2.0, int(ids[20]): 1.0, int(ids[59]): 0.5},
    ]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("rule", RULES)
def test_exact_matches_dense_solve(graphs, weighted, rule):
    g = graphs[weighted]
    idx = PPRIndex(g, alpha=0.15, dangling=rule)
    for seeds in seeds_of(g):
        spec = seeds if isinstance(seeds, dict) else {s: 1.0 for s in np.atleast_1d(seeds)}
        ref = dense_ppr(g, spec, 0.15, rule)
        r = idx.query(seeds, k=g.num_nodes, method="exact")
        assert r.error_is_bound and r.error[0] <= 1e-10
        np.testing.assert_allclose(as_dense(g, r.ids[0], r.scores[0]), ref, atol=1e-6)
        ids, vals, _ = idx.vector(seeds, method="exact")
        dense = np.zeros(g.num_nodes)
        dense[g.to_internal(ids)] = vals
        assert np.abs(dense - ref).sum() <= 1e-9
        assert np.isclose(r.mass[0], ref.sum(), atol=1e-9)
    if rule != "drop":
        assert np.isclose(ref.sum(), 1.0)
    else:
        assert ref.sum() < 1.0


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("rule", RULES)
def test_push_error_is_within_its_bound(graphs, weighted, rule):
    g = graphs[weighted]
    idx = PPRIndex(g, alpha=0.15, dangling=rule)
    for seeds in seeds_of(g):
        spec = seeds if isinstance(seeds, dict) else {s: 1.0 for s in np.atleast_1d(seeds)}
        ref = dense_ppr(g, spec, 0.15, rule)
        for r_max in (1e-3, 1e-7):
            r = idx.query(seeds, k=g.num_nodes, method="push", r_max=r_max)
            l1 = np.abs(as_dense(g, r.ids[0], r.scores[0]) - ref).sum()
            assert r.error_is_bound
            assert l1 <= r.error[0] + 1e-6, (l1, r.error[0])
        assert r.error[0] < 1e-4  # the small r_max drives the residual down


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("rule", RULES)
def test_fingerprint_composition_matches_its_rule(graphs, stores, weighted, rule):
    """With R = 2000 and T = 3 the leftover Monte Carlo noise is ~ (1 - alpha)^3 sqrt(1/R)
    per unit of mass; the l1 error must stay below 0.05 (observed ~0.01) and below the
    reported estimate times 3 (the estimate is an expectation, not a bound)."""
    g = graphs[weighted]
    store = stores[(weighted, "drop" if rule == "restart" else rule)]
    idx = PPRIndex(g, store, dangling=rule)
    for seeds in seeds_of(g):
        spec = seeds if isinstance(seeds, dict) else {s: 1.0 for s in np.atleast_1d(seeds)}
        ref = dense_ppr(g, spec, 0.15, rule)
        r = idx.query(seeds, k=g.num_nodes, method="fingerprint", rounds=3, threshold=0.0)
        l1 = np.abs(as_dense(g, r.ids[0], r.scores[0]) - ref).sum()
        assert not r.error_is_bound
        assert l1 < 0.05, l1
        assert l1 < 3 * r.error[0], (l1, r.error[0])


def test_composition_converges_as_R_and_T_grow(graphs):
    """Mean l1 over 10 sources must shrink with R (noise ~ 1/sqrt(R)) and with T (the Monte Carlo
    part is scaled by (1 - alpha)^T)."""
    g = graphs[False]
    sources = [int(x) for x in g.node_ids[:10]]
    refs = [dense_ppr(g, {s: 1.0}, 0.15, "self_loop") for s in sources]

    def mean_l1(R, T):
        store = build_fingerprints(g, walks_per_node=R, seed=1)
        res = PPRIndex(g, store).query_batch(sources, k=g.num_nodes, rounds=T, threshold=0.0)
        return np.mean(
            [np.abs(as_dense(g, res.ids[i], res.scores[i]) - refs[i]).sum() for i in range(10)]
        )

    e_small = mean_l1(10, 0)
    e_r = mean_l1(1000, 0)
    e_rt = mean_l1(1000, 8)
    assert e_r < e_small / 5, (e_small, e_r)  # sqrt(100) = 10x expected
    assert e_rt < e_r / 2, (e_r, e_rt)  # 0.85^8 = 0.27
    assert e_rt < 0.02


@pytest.mark.parametrize("method", ["exact", "push", "fingerprint"])
def test_multi_seed_linearity(graphs, stores, method):
    """pi_{(2 e_a + e_b)/3} = (2 pi_a + pi_b)/3: exact to 1e-9 for the linear solvers; the
    fingerprint path is linear too up to its pruning, off here (threshold 0)."""
    g = graphs[True]
    idx = PPRIndex(g, stores[(True, "self_loop")])
    a, b = int(g.node_ids[4]), int(g.node_ids[17])
    params = {"fingerprint": {"threshold": 0.0, "rounds": 2}, "push": {"r_max": 1e-9}, "exact": {}}[
        method
    ]
    va, vb, vab = (
        idx.query(s, k=g.num_nodes, method=method, **params) for s in (a, b, {a: 2.0, b: 1.0})
    )
    combo = (2 * as_dense(g, va.ids[0], va.scores[0]) + as_dense(g, vb.ids[0], vb.scores[0])) / 3
    np.testing.assert_allclose(as_dense(g, vab.ids[0], vab.scores[0]), combo, atol=2e-6)


def test_restart_equals_normalised_drop(graphs):
    g = graphs[False]
    s = int(g.node_ids[2])
    drop = dense_ppr(g, {s: 1.0}, 0.15, "drop")
    restart = dense_ppr(g, {s: 1.0}, 0.15, "restart")
    np.testing.assert_allclose(restart, drop / drop.sum(), atol=1e-12)


def test_batch_equals_singles_and_pads(graphs, stores):
    g = graphs[False]
    idx = PPRIndex(g, stores[(False, "self_loop")])
    qs = [int(x) for x in g.node_ids[:7]] + [{int(g.node_ids[1]): 1.0, int(g.node_ids[2]): 3.0}]
    for method in ("fingerprint", "push", "exact"):
        batch = idx.query_batch(qs, k=5, method=method)
        assert batch.ids.shape == (8, 5) and batch.scores.dtype == np.float32
        for i, q in enumerate(qs):
            one = idx.query(q, k=5, method=method)
            np.testing.assert_array_equal(one.ids[0], batch.ids[i])
            np.testing.assert_allclose(one.scores[0], batch.scores[i], rtol=1e-6)
    # k larger than the reachable set: padded with -1 / 0
    tiny = CSRGraph.from_edges([1, 2], [2, 1], node_ids=[1, 2, 3])
    r = personalized_pagerank(tiny, 1, k=4)
    assert r.ids[0].tolist()[2:] == [-1, -1] and r.scores[0].tolist()[2:] == [0.0, 0.0]
    assert set(r.ids[0][:2].tolist()) == {1, 2}


def test_top_ids_are_external_and_sorted(graphs):
    g = graphs[True]
    r = personalized_pagerank(g, int(g.node_ids[0]), k=10)
    assert np.all(np.isin(r.ids[0], g.node_ids))
    assert np.all(np.diff(r.scores[0]) <= 0)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda i, g: i.query(123456789, k=5), NotFoundError, r"unknown seed id\(s\) 123456789"),
        (lambda i, g: i.query([], k=5), InvalidArgumentError, "seeds is empty"),
        (lambda i, g: i.query({}, k=5), InvalidArgumentError, "seeds is empty"),
        (
            lambda i, g: i.query({int(g.node_ids[0]): -1.0}),
            InvalidArgumentError,
            "seed weights must be finite and >= 0",
        ),
        (lambda i, g: i.query({int(g.node_ids[0]): 0.0}), InvalidArgumentError, "all 0"),
        (lambda i, g: i.query("abc"), InvalidArgumentError, "seeds must be a node id"),
        (
            lambda i, g: i.query(int(g.node_ids[0]), k=0),
            InvalidArgumentError,
            "k must be a positive integer; got 0",
        ),
        (
            lambda i, g: i.query(int(g.node_ids[0]), method="pagerank"),
            InvalidArgumentError,
            "method must be one of 'fingerprint', 'hybrid', 'push', 'exact'",
        ),
        (
            lambda i, g: i.query(int(g.node_ids[0]), method="push", rounds=3),
            InvalidArgumentError,
            "unexpected rounds",
        ),
        (
            lambda i, g: i.query(int(g.node_ids[0]), method="push", r_max=-1),
            InvalidArgumentError,
            "r_max must be finite and > 0",
        ),
        (lambda i, g: i.query_batch([], k=3), InvalidArgumentError, "queries is empty"),
        (
            lambda i, g: i.vector(int(g.node_ids[0]), method="push", r_max=0.0),
            InvalidArgumentError,
            "r_max must be finite and > 0",
        ),
        (
            lambda i, g: PPRIndex(g, alpha=1.5),
            InvalidArgumentError,
            r"must be in \(0, 1\); got 1.5",
        ),
        (lambda i, g: PPRIndex(g, alpha=0), InvalidArgumentError, r"must be in \(0, 1\)"),
        (
            lambda i, g: PPRIndex(g, dangling="absorb"),
            InvalidArgumentError,
            "dangling must be one of",
        ),
    ],
)
def test_bad_input_raises_clear_errors(graphs, call, exc, match):
    g = graphs[False]
    with pytest.raises(exc, match=match):
        call(PPRIndex(g), g)


def test_fingerprint_method_needs_a_matching_store(graphs, stores):
    g = graphs[False]
    with pytest.raises(InvalidArgumentError, match="needs fingerprints"):
        PPRIndex(g).query(int(g.node_ids[0]), method="fingerprint")
    with pytest.raises(InvalidArgumentError, match=r"built with alpha=0\.15"):
        PPRIndex(g, stores[(False, "self_loop")], alpha=0.2)
    with pytest.raises(InvalidArgumentError, match="needs fingerprints built with dangling='drop'"):
        PPRIndex(g, stores[(False, "self_loop")], dangling="restart")
    with pytest.raises(InvalidArgumentError, match="built on graph"):
        PPRIndex(graphs[True], stores[(False, "self_loop")])


def test_threshold_pruning_is_counted_in_the_error(graphs, stores):
    g = graphs[False]
    idx = PPRIndex(g, stores[(False, "self_loop")])
    s = int(g.node_ids[0])
    loose = idx.query(s, k=60, rounds=4, threshold=1e-2)
    tight = idx.query(s, k=60, rounds=4, threshold=0.0)
    assert loose.mass[0] < tight.mass[0]
    assert loose.error[0] >= 1.0 - loose.mass[0] - 1e-6  # the pruned mass is in the estimate


def test_docstring_examples():
    res = doctest.testmod(ppr_module, verbose=False)
    assert res.attempted > 0 and res.failed == 0


@pytest.mark.parametrize("rule", ["self_loop", "drop"])
@pytest.mark.parametrize("rounds", [0, 1, 4])
@pytest.mark.parametrize("threshold", [0.0, 0.02])
def test_composition_kernel_matches_numpy_reference(graphs, stores, rule, rounds, threshold):
    """VERD with drop_below = 0 is a linear map; replay it with dense numpy: each round composes
    flow below ``threshold`` at once (F^T f), keeps alpha * f of the rest (all of f at a
    self-loop dangling node, where the walk never leaves) and moves (1 - alpha) f along P;
    after T rounds add F^T f with F the stored fingerprint matrix."""
    from .conftest import dense_transition

    g = graphs[True]
    store = stores[(True, rule)]
    n = g.num_nodes
    F = np.zeros((n, n))
    for u in range(n):
        nodes, vals = store.row(u)
        F[u, nodes] = vals
    P = dense_transition(g, "drop")
    dangling = np.diff(g.indptr) == 0
    a = 0.15
    s = np.zeros(n)
    seeds = {int(g.node_ids[3]): 0.7, int(g.node_ids[58]): 0.3}  # 58 is dangling
    s[g.to_internal(list(seeds))] = list(seeds.values())
    f, x = s.copy(), np.zeros(n)
    for _ in range(rounds):
        small = (f > 0) & (f < threshold)
        x += F.T @ np.where(small, f, 0.0)
        f = np.where(small, 0.0, f)
        x[~dangling] += a * f[~dangling]
        x[dangling] += (1.0 if rule == "self_loop" else a) * f[dangling]
        f = (1 - a) * (P.T @ np.where(dangling, 0.0, f))
    x += F.T @ f
    r = PPRIndex(g, store).query(seeds, k=n, rounds=rounds, threshold=threshold, drop_below=0.0)
    np.testing.assert_allclose(as_dense(g, r.ids[0], r.scores[0]), x, rtol=1e-6, atol=1e-7)
    assert np.isclose(r.mass[0], x.sum())


def test_memory_mapped_graph_and_store_answer_the_same(tmp_path, graphs, stores):
    g = graphs[True]
    store = stores[(True, "self_loop")]
    g.save(tmp_path / "g")
    store.save(tmp_path / "fp")
    from shardwalk.walks.fingerprints import FingerprintStore

    g2 = CSRGraph.load(tmp_path / "g", mmap=True)
    s2 = FingerprintStore.load(tmp_path / "fp", mmap=True)
    qs = [int(x) for x in g.node_ids[:5]]
    for method in ("fingerprint", "push", "exact"):
        a = PPRIndex(g, store).query_batch(qs, k=10, method=method)
        b = PPRIndex(g2, s2).query_batch(qs, k=10, method=method)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)


# -- issue 8: alpha and the dangling rule per query ----------------------------------------------

ALPHA_MESSAGE = (
    "alpha is the stop (teleport) probability and must be in (0, 1); got {!r} (a damping "
    "factor d such as networkx's alpha=0.85 corresponds to alpha = 1 - d = 0.15)"
)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("rule", RULES)
def test_exact_and_push_take_alpha_and_rule_per_query(graphs, weighted, rule):
    """One index (defaults 0.15, self_loop) answers alpha=0.3 under any rule, against the dense
    solve: exact within its 1e-10 bound (float32 scores: atol 1e-6), push within its bound."""
    g = graphs[weighted]
    idx = PPRIndex(g)
    for seeds in seeds_of(g):
        spec = seeds if isinstance(seeds, dict) else {s: 1.0 for s in np.atleast_1d(seeds)}
        ref = dense_ppr(g, spec, 0.3, rule)
        r = idx.query(seeds, k=g.num_nodes, method="exact", alpha=0.3, dangling=rule)
        assert (r.method, r.alpha, r.dangling) == ("exact", 0.3, rule)
        assert r.error[0] <= 1e-10
        np.testing.assert_allclose(as_dense(g, r.ids[0], r.scores[0]), ref, atol=1e-6)
        ids, vals, _ = idx.vector(seeds, method="exact", alpha=0.3, dangling=rule)
        dense = np.zeros(g.num_nodes)
        dense[g.to_internal(ids)] = vals
        assert np.abs(dense - ref).sum() <= 1e-9
        p = idx.query(seeds, k=g.num_nodes, method="push", alpha=0.3, dangling=rule, r_max=1e-8)
        l1 = np.abs(as_dense(g, p.ids[0], p.scores[0]) - ref).sum()
        assert p.error_is_bound and l1 <= p.error[0] + 1e-6, (l1, p.error[0])
        assert p.error[0] < 1e-4
        ids, vals, err = idx.vector(seeds, method="push", alpha=0.3, dangling=rule, r_max=1e-8)
        dense = np.zeros(g.num_nodes)
        dense[g.to_internal(ids)] = vals
        assert np.abs(dense - ref).sum() <= err + 1e-9
    # the index's defaults are untouched by per-query values
    assert (idx.alpha, idx.dangling) == (0.15, "self_loop")
    assert idx.query(int(g.node_ids[0]), k=3, method="exact").alpha == 0.15


def test_fingerprint_takes_only_what_its_store_was_built_for(graphs, stores):
    g = graphs[False]
    idx = PPRIndex(g, stores[(False, "drop")])
    s = int(g.node_ids[0])
    # restart composes from a drop store, per query
    r = idx.query(s, k=g.num_nodes, dangling="restart", rounds=3, threshold=0.0)
    ref = dense_ppr(g, {s: 1.0}, 0.15, "restart")
    assert (r.method, r.alpha, r.dangling) == ("fingerprint", 0.15, "restart")
    assert np.abs(as_dense(g, r.ids[0], r.scores[0]) - ref).sum() < 0.05  # observed 0.0056
    assert idx.fingerprint_mismatch() is None
    assert idx.fingerprint_mismatch(0.15, "restart") is None
    with pytest.raises(
        InvalidArgumentError,
        match=r"^method='fingerprint' cannot answer alpha=0\.3: the fingerprints were built with "
        r"alpha=0\.15, dangling='drop'; use method='exact' or method='push' \(any alpha and "
        r"rule\), or rebuild the fingerprints with alpha=0\.3$",
    ):
        idx.query(s, alpha=0.3)
    with pytest.raises(
        InvalidArgumentError,
        match=r"cannot answer dangling='self_loop': it needs fingerprints built with "
        r"dangling='self_loop', and the fingerprints were built with alpha=0\.15, "
        r"dangling='drop'; .* or rebuild the fingerprints with dangling='self_loop'",
    ):
        idx.query_batch([s], method="fingerprint", dangling="self_loop")
    with pytest.raises(InvalidArgumentError, match=r"cannot answer alpha=0\.3"):
        idx.vector(s, alpha=0.3)
    assert "cannot answer alpha=0.3" in idx.fingerprint_mismatch(alpha=0.3)
    # the same index answers anything with exact and push
    assert idx.query(s, method="exact", alpha=0.3, dangling="self_loop").method == "exact"
    # and so does the one-off function, store or not
    r = personalized_pagerank(g, s, k=g.num_nodes, fingerprints=stores[(False, "drop")], alpha=0.3)
    ref = dense_ppr(g, {s: 1.0}, 0.3, "drop")
    np.testing.assert_allclose(as_dense(g, r.ids[0], r.scores[0]), ref, atol=1e-6)


@pytest.mark.parametrize("bad", [0, 0.0, 1, 1.5, -0.1, float("nan"), float("inf"), "0.3", True, []])
def test_alpha_has_one_message(graphs, bad):
    """Every bad alpha (range, nan, inf, type) gets the same message, at construction and per
    query, before any work."""
    g = graphs[False]
    msg = "^" + re.escape(ALPHA_MESSAGE.format(bad)) + "$"
    with pytest.raises(InvalidArgumentError, match=msg):
        PPRIndex(g, alpha=bad)
    for method in METHODS:
        with pytest.raises(InvalidArgumentError, match=msg):
            PPRIndex(g).query(int(g.node_ids[0]), method=method, alpha=bad)
    with pytest.raises(InvalidArgumentError, match=msg):
        build_fingerprints(g, walks_per_node=1, alpha=bad)


def test_bad_dangling_per_query(graphs):
    g = graphs[False]
    with pytest.raises(
        InvalidArgumentError,
        match="dangling must be one of 'self_loop', 'drop', 'restart'; got 'absorb'",
    ):
        PPRIndex(g).query(int(g.node_ids[0]), method="exact", dangling="absorb")
