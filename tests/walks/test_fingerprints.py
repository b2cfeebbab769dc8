"""Fingerprints: unbiasedness against the exact PPR row, truncation, storage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shardwalk.walks.fingerprints import FingerprintStore, build_fingerprints

from shardwalk.errors import CorruptionError, InvalidArgumentError, NotFoundError

from .conftest import dense_ppr, dense_transition, random_graph


@pytest.mark.parametrize("rule", ["self_loop", "drop"])
@pytest.mark.parametrize("weighted", [False, True])
def test_fingerprint_row_is_unbiased(rule, weighted):
    """p_hat_u(v) = alpha * X(v) / R with X(v) the visits of v in one walk. With
    G = (I - (1 - alpha) P)^-1: E X = G[u, v], E X(X - 1) = 2 G[u, v] (G[v, v] - 1), so the
    standard deviation of p_hat is alpha sqrt(Var X / R), exactly. Every entry must be within
    4.5 sd (30 entries: family-wise false alarm ~2e-4; the seed is fixed)."""
    g = random_graph(30, 110, seed=21, dangling=3, weighted=weighted)
    alpha, R = 0.2, 20_000
    store = build_fingerprints(g, walks_per_node=R, alpha=alpha, seed=5, dangling=rule)
    P = dense_transition(g, rule)
    G = np.linalg.inv(np.eye(30) - (1 - alpha) * P)
    for u in (0, 7, 20, 29):  # 29 is dangling: its row is exact (sd = 0)
        nodes, est = store.row(u)
        p_hat = np.zeros(30)
        p_hat[nodes] = est
        ev = G[u]
        var_x = ev + 2 * ev * (np.diag(G) - 1) - ev**2
        sd = alpha * np.sqrt(np.maximum(var_x, 0) / R)
        exact = dense_ppr(g, {int(g.node_ids[u]): 1.0}, alpha, rule)
        np.testing.assert_allclose(alpha * ev, exact, atol=1e-12)
        z = np.abs(p_hat - exact)[sd > 0] / sd[sd > 0]
        assert z.size == 0 or z.max() < 4.5, (u, z.max())
        assert np.all(p_hat[sd == 0] == exact[sd == 0])


def test_stats_and_dtypes(small_graph):
    s = build_fingerprints(small_graph, walks_per_node=10, seed=1)
    assert s.counts.dtype == np.uint16 and s.nodes.dtype == np.int32
    assert s.stats["walks"] == 600 and s.stats["steps"] == s.stats["visits"] - 600
    assert s.stats["nbytes"] == s.nbytes == s.indptr.nbytes + s.nodes.nbytes + s.counts.nbytes
    # each row sums to alpha * visits / R; over all rows the visits total the stats
    assert int(s.counts.sum(dtype=np.int64)) == s.stats["visits"]


def test_top_k_keeps_largest_and_reports_cut_mass(small_graph):
    full = build_fingerprints(small_graph, walks_per_node=50, seed=3)
    cut = build_fingerprints(small_graph, walks_per_node=50, seed=3, top_k=4)
    assert np.all(np.diff(cut.indptr) <= 4)
    for u in range(small_graph.num_nodes):
        _, fv = full.row(u)
        _, cv = cut.row(u)
        assert np.isclose(fv.sum(), cv.sum() + cut.truncated[u], rtol=1e-6)
        assert np.allclose(np.sort(cv)[::-1], np.sort(fv)[::-1][: cv.size])


def test_restart_store_is_refused_with_a_hint(small_graph):
    """Issue 8: dangling="restart" used to be accepted and stored as "drop", so the store's
    metadata disagreed with what was asked. A store names the rule its walks followed; restart
    queries compose from a "drop" store."""
    with pytest.raises(
        InvalidArgumentError,
        match=r"fingerprints for restart are built with dangling='drop'; queries with "
        r"dangling='restart' compose from them",
    ):
        build_fingerprints(small_graph, walks_per_node=2, dangling="restart")
    assert build_fingerprints(small_graph, walks_per_node=2, dangling="drop").dangling == "drop"


def test_load_rejects_a_store_rule_that_no_build_writes(tmp_path, small_graph):
    build_fingerprints(small_graph, walks_per_node=2, dangling="drop").save(tmp_path / "fp")
    meta = json.loads((tmp_path / "fp" / "meta.json").read_text())
    assert meta["dangling"] == "drop"
    meta["dangling"] = "restart"
    (tmp_path / "fp" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptionError, match=r"meta\.json names dangling='restart'"):
        FingerprintStore.load(tmp_path / "fp")


def test_save_load_roundtrip(tmp_path, small_graph):
    s = build_fingerprints(small_graph, walks_per_node=5, seed=9, top_k=6)
    s.save(tmp_path / "fp")
    t = FingerprintStore.load(tmp_path / "fp")
    for name in ("indptr", "nodes", "counts", "truncated"):
        np.testing.assert_array_equal(getattr(s, name), getattr(t, name))
    assert (t.alpha, t.walks_per_node, t.dangling, t.seed, t.top_k, t.graph_digest) == (
        s.alpha, s.walks_per_node, s.dangling, s.seed, s.top_k, s.graph_digest,
    )  # fmt: skip
    meta = json.loads((tmp_path / "fp" / "meta.json").read_text())
    assert meta["schema"] == "shardwalk.fingerprints" and meta["version"] == 1
    meta["version"] = 2
    (tmp_path / "fp" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptionError, match="version 2"):
        FingerprintStore.load(tmp_path / "fp")
    with pytest.raises(NotFoundError):
        FingerprintStore.load(tmp_path / "none")


def test_store_rejects_another_graph(small_graph):
    s = build_fingerprints(small_graph, walks_per_node=2)
    other = random_graph(60, 241, seed=1, dangling=6)
    with pytest.raises(InvalidArgumentError, match=r"built on graph .* rebuild them"):
        s.check_graph(other)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"alpha": 0.0},
            r"alpha is the stop \(teleport\) probability and must be in \(0, 1\); got 0.0",
        ),
        ({"alpha": 1.0}, r"must be in \(0, 1\)"),
        ({"alpha": 0.85 + 0.2}, "damping factor"),
        ({"walks_per_node": 0}, "walks_per_node must be an integer"),
        ({"dangling": "ignore"}, r"dangling must be one of 'self_loop', 'drop'; got 'ignore'"),
        ({"alpha": float("nan")}, r"must be in \(0, 1\); got nan"),
        ({"alpha": "0.15"}, r"alpha is the stop \(teleport\) probability and must be in \(0, 1\)"),
        ({"top_k": 0}, "top_k must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer"),
    ],
)
def test_bad_parameters(small_graph, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        build_fingerprints(small_graph, **kwargs)
