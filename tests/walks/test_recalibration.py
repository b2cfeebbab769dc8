"""After graph updates, hubs are selected again and accuracy= calibrated again once the
changed edges pass ``Graph.recalibrate_ratio`` of those the calibration saw (issue 22 item 3);
the new hubs and calibration are saved with the graph."""

from __future__ import annotations

import numpy as np
from shardwalk.walks.evaluate import query_metrics
from shardwalk.walks.generators import social_graph

import shardwalk


def _edges(graph) -> np.ndarray:
    src = np.repeat(np.arange(graph.num_nodes), np.diff(graph.indptr))
    pairs = np.column_stack([src, np.asarray(graph.indices)])
    return graph.to_external(pairs[pairs[:, 0] < pairs[:, 1]])  # each undirected edge once


def _hub_ids(g) -> set[int]:
    fp = g._fingerprints  # the store's hub rows (internal ids)
    return set(g.csr.to_external(np.asarray(fp.hubs)).tolist())


def test_hubs_and_calibration_follow_updates(tmp_path):
    base = social_graph(1500, 5, seed=4)
    rng = np.random.default_rng(0)
    with shardwalk.Engine.open(tmp_path / "db") as engine:
        g = engine.create_graph("g", _edges(base), directed=False)
        g.build_fingerprints(walks_per_node=10, seed=1)
        state = g.stats()["fingerprints"]["calibration"]
        assert state["recalibrations"] == 0 and state["edges_changed"] == 0
        hubs_before = _hub_ids(g)
        edges = state["edges"]
        # below the threshold: counted, nothing selected or calibrated again
        small = np.column_stack([np.arange(5000, 5020), rng.integers(0, 1500, 20)])
        report = g.upsert_edges(small)
        assert "recalibrated" not in report
        state = g.stats()["fingerprints"]["calibration"]
        assert state["edges_changed"] == 40 and state["recalibrations"] == 0
        # past it: 12 new nodes, each linked from 150 nodes, take most of the in-links
        new = np.arange(9000, 9012)
        big = np.column_stack([
            np.repeat(new, 150), rng.choice(1500, size=(12, 150), replace=True).ravel()
        ])  # fmt: skip
        big = np.unique(big, axis=0)
        assert 2 * big.shape[0] + 40 >= g.recalibrate_ratio * edges
        report = g.upsert_edges(big)
        assert report["recalibrated"]["hubs_moved"] > 0
        hubs_after = _hub_ids(g)
        assert set(new.tolist()) <= hubs_after and hubs_after != hubs_before
        state = g.stats()["fingerprints"]["calibration"]
        assert state["recalibrations"] == 1 and state["edges_changed"] == 0
        assert state["update"] == 2 and state["edges"] == g.num_edges
        calibrated = g.stats()["fingerprints"]["accuracy"]
        # the new hub rows answer: the calibrated fast method against the exact solver
        for seed in (9000, 9005, int(big[0, 1])):
            fast = g.ppr(seed, 100, accuracy="fast")
            assert (fast.method, fast.params) == (calibrated["fast"]["method"],
                                                  calibrated["fast"]["params"])  # fmt: skip
            e_ids, e_vals, _ = g._current().vector(seed, method="exact")
            ok = fast.scores[0] > 0
            got = query_metrics(e_ids, e_vals, fast.ids[0][ok], fast.scores[0][ok], k=100,
                                n=g.num_nodes)  # fmt: skip
            assert got["precision"] >= 0.7, (seed, got)
    with shardwalk.Engine.open(tmp_path / "db") as engine:  # saved: hubs and calibration
        g = engine.graph("g")
        assert _hub_ids(g) == hubs_after
        assert g.stats()["fingerprints"]["calibration"]["recalibrations"] == 1
        assert g.stats()["fingerprints"]["accuracy"] == calibrated
