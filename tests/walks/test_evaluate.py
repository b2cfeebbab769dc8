"""Accuracy harness: metric definitions on hand-made vectors, and a run on a small graph."""

from __future__ import annotations

import numpy as np
import pytest
from shardwalk.walks.evaluate import evaluate, query_metrics, sample_sources
from shardwalk.walks.fingerprints import build_fingerprints
from shardwalk.walks.ppr import PPRIndex

from shardwalk.errors import InvalidArgumentError

from .conftest import random_graph


def test_metrics_on_a_hand_made_case():
    exact_ids = np.array([10, 11, 12, 13])
    exact = np.array([0.4, 0.3, 0.2, 0.1])
    approx_ids = np.array([10, 12, 13, 99])  # misses 11, ranks 12 second
    approx = np.array([0.4, 0.25, 0.2, 0.15])
    m = query_metrics(exact_ids, exact, approx_ids, approx, k=2, n=4)
    assert m["precision"] == 0.5  # top-2 {10, 12} vs {10, 11}
    ideal = 0.4 + 0.3 / np.log2(3)
    assert np.isclose(m["ndcg"], (0.4 + 0.2 / np.log2(3)) / ideal)
    assert np.isclose(m["rag"], 0.6 / 0.7)
    assert np.isclose(m["l1"], 0 + 0.3 + 0.05 + 0.1 + 0.15)
    # pi > 1/n = 0.25 : nodes 10 (err 0) and 11 (err 1.0)
    assert np.isclose(m["max_rel_error"], 1.0)
    perfect = query_metrics(exact_ids, exact, exact_ids, exact, k=3, n=4)
    assert perfect["precision"] == 1 and np.isclose(perfect["ndcg"], 1) and perfect["l1"] == 0


def test_sample_sources_by_degree_bucket():
    g = random_graph(300, 1500, seed=4, dangling=20)
    groups = sample_sources(g, uniform=7, per_bucket=3, seed=1)
    assert groups["uniform"].size == 7
    deg = dict(zip(g.node_ids.tolist(), g.out_degrees().tolist(), strict=True))
    for name, ids in groups.items():
        if name.startswith("deg["):
            lo, hi = (int(x) for x in name[4:-1].split(","))
            assert all(lo <= deg[i] < hi for i in ids.tolist())
    assert all(deg[i] > 0 for i in groups["uniform"].tolist())


def test_evaluate_ranks_methods_sensibly():
    g = random_graph(300, 1500, seed=4, dangling=20)
    idx = PPRIndex(g, build_fingerprints(g, walks_per_node=200, seed=2))
    src = sample_sources(g, uniform=5, per_bucket=2, seed=3)
    exact = evaluate(idx, src, method="exact", k=20)
    assert exact.summary["all"]["precision"] == 1.0 and exact.summary["all"]["l1"] < 1e-9
    push = evaluate(idx, src, method="push", k=20, r_max=1e-6)
    fp = evaluate(idx, src, method="fingerprint", k=20, rounds=4, threshold=0.0)
    for rep in (push, fp):
        s = rep.summary["all"]
        assert s["queries"] == sum(v.size for v in src.values())
        assert s["precision"] > 0.8 and s["ndcg"] > 0.95, s
    assert push.summary["all"]["l1"] <= push.summary["all"]["reported_error"] + 1e-9  # a bound
    assert set(fp.summary) >= {"uniform", "all"}
    with pytest.raises(InvalidArgumentError, match="index must be a PPRIndex"):
        evaluate(g, src, method="exact")
