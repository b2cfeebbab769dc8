"""The hybrid PPR method (push that stops at hubs + fingerprints), hub rows, accuracy= and the
error estimate, on a social-network-like graph (dense, flat neighbourhoods: where Monte Carlo
PPR is hardest) against the exact solver."""

from __future__ import annotations

import numpy as np
import pytest
from shardwalk.walks.fingerprints import FingerprintStore, build_fingerprints, select_hubs
from shardwalk.walks.generators import social_graph
from shardwalk.walks.ppr import PPRIndex

import shardwalk
from shardwalk.errors import InvalidArgumentError


@pytest.fixture(scope="module")
def graph():
    return social_graph(4000, 12, closure=0.6, seed=3)


@pytest.fixture(scope="module")
def store(graph):
    return build_fingerprints(graph, walks_per_node=10, alpha=0.15, seed=1, hubs="auto")


@pytest.fixture(scope="module")
def truth(graph, store):
    """Exact PPR of 30 seeded sources (dense vectors)."""
    index = PPRIndex(graph, store)
    sources = np.random.default_rng(0).choice(graph.num_nodes, 30, replace=False)
    exact = np.zeros((sources.size, graph.num_nodes))
    for i, s in enumerate(sources):
        ids, scores, _ = index.vector(int(s), method="exact", tol=1e-12)
        exact[i, ids] = scores
    return sources, exact


def precision(found: np.ndarray, exact_row: np.ndarray, k: int) -> float:
    top = set(np.argsort(-exact_row, kind="stable")[:k].tolist())
    return len(set(found[found >= 0][:k].tolist()) & top) / k


def test_auto_hubs_hold_a_fifth_of_the_in_links(graph, store):
    hubs = select_hubs(graph, "auto")
    indeg = np.bincount(graph.indices, minlength=graph.num_nodes)
    assert 0 < hubs.size <= graph.num_nodes // 100
    assert indeg[hubs].sum() >= 0.2 * indeg.sum() or hubs.size == graph.num_nodes // 100
    assert indeg[hubs].min() >= np.sort(indeg)[-hubs.size]  # the most linked nodes
    np.testing.assert_array_equal(store.hubs, hubs)
    assert store.hub_walks == 1000 and store.stats["hubs"] == hubs.size
    # a hub row is the hub's own walks: its start node is its most visited entry
    for h in range(hubs.size):
        a, b = store.hub_indptr[h], store.hub_indptr[h + 1]
        assert store.hub_nodes[a:b][np.argmax(store.hub_counts[a:b])] == hubs[h]
    assert select_hubs(graph, 0).size == 0 and select_hubs(graph, 7).size == 7
    with pytest.raises(InvalidArgumentError, match="hubs"):
        select_hubs(graph, -1)


def test_hybrid_is_more_precise_than_the_fingerprint_method(graph, store, truth):
    index = PPRIndex(graph, store)
    sources, exact = truth
    k = 50
    hybrid = index.query_batch(sources.tolist(), k=k, method="hybrid")
    fingerprint = index.query_batch(sources.tolist(), k=k, method="fingerprint")
    p_hybrid = np.mean([precision(hybrid.ids[i], exact[i], k) for i in range(sources.size)])
    p_fp = np.mean([precision(fingerprint.ids[i], exact[i], k) for i in range(sources.size)])
    # observed: hybrid 0.93, fingerprint 0.80 (seed 3, 30 sources)
    assert p_hybrid >= 0.8 and p_hybrid > p_fp + 0.05, (p_hybrid, p_fp)
    # the batch kernel and the single-query kernel agree exactly
    one = index.query(int(sources[4]), k=k, method="hybrid")
    np.testing.assert_array_equal(one.ids[0], hybrid.ids[4])


def test_hybrid_converges_to_exact(graph, truth):
    """Without hubs and with a tiny r_max, push does (almost) everything: the estimate is the
    exact vector. With hubs, the mass gathered at hubs meets their rows: the error falls as
    1 / sqrt(hub_walks)."""
    sources, exact = truth

    def l1(store: FingerprintStore, i: int, r_max: float) -> tuple[float, float]:
        ids, scores, err = PPRIndex(graph, store).vector(
            int(sources[i]), method="hybrid", r_max=r_max
        )
        estimate = np.zeros(graph.num_nodes)
        estimate[ids] = scores
        return float(np.abs(estimate - exact[i]).sum()), err

    plain = build_fingerprints(graph, walks_per_node=10, alpha=0.15, seed=2)
    for i in range(3):
        error, estimated = l1(plain, i, 1e-10)
        assert error < 1e-4 and estimated >= error, (error, estimated)  # observed 6e-7
    few = build_fingerprints(graph, walks_per_node=10, seed=2, hubs=40, hub_walks=500)
    many = build_fingerprints(graph, walks_per_node=10, seed=2, hubs=40, hub_walks=8000)
    errors_few = [l1(few, i, 1e-10)[0] for i in range(3)]
    errors_many = [l1(many, i, 1e-10)[0] for i in range(3)]
    # 16x the walks: sqrt(16) = 4x less error expected; observed 4.0x
    assert np.mean(errors_few) > 2.5 * np.mean(errors_many), (errors_few, errors_many)


def test_error_estimate_covers_the_measured_l1(graph, store, truth):
    """The estimate covers the l1 error in at least 90% of queries (the issue's bar); with
    30 queries we accept 25 (binomial: a true 90% coverage gives >= 25 with p ~ 0.9)."""
    index = PPRIndex(graph, store)
    sources, exact = truth
    for method, params in (("hybrid", {}), ("hybrid", {"r_max": 1e-6}), ("fingerprint", {})):
        covered = 0
        for i, s in enumerate(sources):
            ids, scores, err = index.vector(int(s), method=method, **params)
            estimate = np.zeros(graph.num_nodes)
            estimate[ids] = scores
            covered += err >= np.abs(estimate - exact[i]).sum()
        assert covered >= 25, (method, params, covered)  # observed 30 of 30 for each


def test_a_store_without_hubs_serves_hybrid_and_old_stores_load(graph, tmp_path, truth):
    plain = build_fingerprints(graph, walks_per_node=10, alpha=0.15, seed=1)
    assert plain.num_hubs == 0 and plain.hubs is None
    index = PPRIndex(graph, plain)
    sources, exact = truth
    result = index.query(int(sources[0]), k=20, method="hybrid")
    assert precision(result.ids[0], exact[0], 20) >= 0.5
    plain.save(tmp_path / "plain")
    again = FingerprintStore.load(tmp_path / "plain")
    assert again.num_hubs == 0


def test_hub_rows_persist(graph, store, tmp_path):
    store.save(tmp_path / "fp")
    again = FingerprintStore.load(tmp_path / "fp")
    assert again.hub_walks == store.hub_walks and again.nbytes == store.nbytes
    for name in ("hubs", "hub_indptr", "hub_nodes", "hub_counts"):
        np.testing.assert_array_equal(getattr(again, name), getattr(store, name))
    np.save(tmp_path / "fp" / "hub_nodes.npy", store.hub_nodes[:-1])
    with pytest.raises(shardwalk.CorruptionError):
        FingerprintStore.load(tmp_path / "fp")


def test_accuracy_picks_method_and_parameters(graph, truth):
    with shardwalk.Engine.memory() as engine:
        g = engine.create_graph("g", graph)
        sources, exact = truth
        seed = int(sources[1])
        assert (g.ppr(seed).method, g.ppr(seed).params) == ("push", {"r_max": 1e-6})
        assert g.ppr(seed, accuracy="high").params == {"r_max": 1e-7}
        g.build_fingerprints(walks_per_node=10, seed=1)  # hubs="auto" by default
        fast, high = g.ppr(seed, k=50), g.ppr(seed, k=50, accuracy="high")
        calibrated = g.stats()["fingerprints"]["accuracy"]  # the graph's methods
        for name, result in (("fast", fast), ("high", high)):
            choice = calibrated[name]
            within = [c for c in choice["candidates"] if c["work_p50"] <= choice["work_budget"]]
            good = [c for c in within if c["precision_lcb"] >= choice["precision_bar"]]
            best = (
                min(good, key=lambda c: c["work_p50"])
                if good
                else max(within, key=lambda c: c["precision"])
            )
            assert (choice["method"], choice["params"]) == (best["method"], best["params"])
            assert choice["met"] == bool(good) and choice["precision"] == best["precision"]
            assert (result.method, result.params) == (choice["method"], choice["params"])
        assert precision(high.ids[0], exact[1], 50) >= precision(fast.ids[0], exact[1], 50)
        # method parameters alone keep their method; alpha the fingerprints do not serve: push
        assert g.ppr(seed, rounds=3).method == "fingerprint"
        assert g.ppr(seed, alpha=0.3).method == "push"
        with pytest.raises(InvalidArgumentError, match="not both"):
            g.ppr(seed, method="push", accuracy="high")
        with pytest.raises(InvalidArgumentError, match="picks the parameters"):
            g.ppr(seed, accuracy="high", r_max=1e-3)
        with pytest.raises(InvalidArgumentError, match="accuracy must be one of"):
            g.ppr(seed, accuracy="best")
        with pytest.raises(InvalidArgumentError, match="absorb must be True or False"):
            g.ppr(seed, method="hybrid", absorb="yes")
        batch = g.ppr_batch([seed, [seed, 3]], k=10, accuracy="high")
        # the calibrated choice (by counted work: the same for this graph and seed every time)
        assert batch.method == calibrated["high"]["method"] and batch.ids.shape == (2, 10)
