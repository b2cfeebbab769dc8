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
        g.rebuild_ratio = 1.0  # the walks repaired, the hubs selected again (not rebuilt)
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
        assert g.wait_calibrated(timeout=600)  # accuracy= is calibrated in the background
        hubs_after = _hub_ids(g)
        assert set(new.tolist()) <= hubs_after and hubs_after != hubs_before
        state = g.stats()["fingerprints"]["calibration"]
        assert state["recalibrations"] == 1 and state["edges_changed"] == 0
        assert state["running"] is False and "failed" not in state
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


def _past_the_threshold(g, rng) -> np.ndarray:
    """Edges that make the next upsert pass recalibrate_ratio (new nodes, many in-links),
    repaired (not past ``g.rebuild_ratio``, raised), so the hubs are selected again."""
    g.rebuild_ratio = 1.0
    new = np.arange(9000, 9012)
    big = np.column_stack([
        np.repeat(new, 150), rng.choice(1500, size=(12, 150), replace=True).ravel()
    ])  # fmt: skip
    return np.unique(big, axis=0)


def _held_calibration(monkeypatch):
    """calibrate_accuracy held until the returned event is set (the real one then runs)."""
    import threading

    import shardwalk.graph_calibration as graph_module

    release, entered = threading.Event(), threading.Event()
    real = graph_module.calibrate_accuracy

    def held(*args, **kwargs):
        entered.set()
        assert release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(graph_module, "calibrate_accuracy", held)
    return release, entered


def test_a_write_past_the_threshold_does_not_wait_for_the_calibration(tmp_path, monkeypatch):
    """The upsert that passes recalibrate_ratio returns (durable, hubs selected again) while
    accuracy= is calibrated in the background; queries meanwhile use the previous choices;
    the new ones are installed and saved when it ends."""
    base = social_graph(1500, 5, seed=4)
    rng = np.random.default_rng(0)
    with shardwalk.Engine.open(tmp_path / "db") as engine:
        g = engine.create_graph("g", _edges(base), directed=False)
        g.build_fingerprints(walks_per_node=10, seed=1)
        before = g.stats()["fingerprints"]["accuracy"]
        release, entered = _held_calibration(monkeypatch)
        report = g.upsert_edges(_past_the_threshold(g, rng))  # returns: nothing waits
        assert report["recalibrated"]["hubs_moved"] > 0 and entered.wait(60)
        state = g.stats()["fingerprints"]["calibration"]
        assert state["running"] is True and state["recalibrations"] == 0
        assert g.stats()["fingerprints"]["accuracy"] == before  # the previous choices answer
        assert not g.wait_calibrated(timeout=0.05)
        g.ppr(9000, 10, accuracy="fast")  # reads and more writes go on meanwhile
        g.upsert_edges(np.array([[9000, 1], [9001, 2]]))
        release.set()
        assert g.wait_calibrated(timeout=600)
        state = g.stats()["fingerprints"]["calibration"]
        assert state["running"] is False and state["recalibrations"] == 1
        assert state["edges_changed"] == 4  # the write after the threshold counts for the next
        calibrated = g.stats()["fingerprints"]["accuracy"]
    with shardwalk.Engine.open(tmp_path / "db") as engine:  # saved by the compaction after it
        g = engine.graph("g")
        assert g.stats()["fingerprints"]["accuracy"] == calibrated
        assert g.stats()["fingerprints"]["calibration"]["recalibrations"] == 1


def test_a_calibration_ending_after_close_installs_and_writes_nothing(tmp_path, monkeypatch):
    """Closing the engine waits for a running calibration, which then finds the graph closed:
    it installs nothing and writes nothing (the data directory is being released); the next
    open replays the log and the count passes the threshold again."""
    import threading

    base = social_graph(1500, 5, seed=4)
    rng = np.random.default_rng(0)
    engine = shardwalk.Engine.open(tmp_path / "db")
    g = engine.create_graph("g", _edges(base), directed=False)
    g.build_fingerprints(walks_per_node=10, seed=1)
    release, entered = _held_calibration(monkeypatch)
    g.upsert_edges(_past_the_threshold(g, rng))
    assert entered.wait(60)
    manifest = (tmp_path / "db" / "manifest.json").read_bytes()
    closing = threading.Thread(target=engine.close)
    closing.start()
    closing.join(0.2)
    assert closing.is_alive()  # close waits for the calibration
    release.set()
    closing.join(120)
    assert not closing.is_alive()
    assert (tmp_path / "db" / "manifest.json").read_bytes() == manifest  # no compaction
    with shardwalk.Engine.open(tmp_path / "db") as engine:
        g = engine.graph("g")
        state = g.stats()["fingerprints"]["calibration"]
        assert state["recalibrations"] == 0  # not installed, not saved
        assert g.stats()["nodes"] == 1512  # the acknowledged update replayed


def test_hubs_selected_again_keep_the_walks_of_the_hubs_that_stay():
    """A new hub set keeps the walks of the hubs that stay and walks only the new ones: on
    an unchanged graph, exactly the walks and rows a build for the new set gives."""
    from shardwalk.walks.dynamic import DynamicGraph
    from shardwalk.walks.generators import power_law_graph
    from shardwalk.walks.kept_fingerprints import build_hub_walks, reselect_hub_walks
    from shardwalk.walks.kernels.rng import MODE_DROP

    graph = DynamicGraph(power_law_graph(600, 3000, seed=7))
    old_ids = np.array([3, 10, 42, 77, 300], np.int64)
    new_ids = np.array([3, 11, 42, 300, 512, 599], np.int64)  # 3 stay, 10 and 77 go, 3 come
    old, _ = build_hub_walks(graph, old_ids, 10, 200, 0.15, 9, MODE_DROP)
    store, rows = reselect_hub_walks(graph, old, old_ids, new_ids, 200)
    fresh, fresh_rows = build_hub_walks(graph, new_ids, 10, 200, 0.15, 9, MODE_DROP)
    for name in ("block_src", "blk_start", "walk_len", "dropped", "steps"):
        np.testing.assert_array_equal(getattr(store, name), getattr(fresh, name), err_msg=name)
    for name, value in fresh_rows.items():
        np.testing.assert_array_equal(rows[name], value, err_msg=name)
    plan = np.array([11, 42], np.int64)  # the index finds the same walks
    slot = np.full(600, -1, np.int64)
    slot[plan] = np.arange(plan.size)
    np.testing.assert_array_equal(
        store.walks_visiting(plan, slot), fresh.walks_visiting(plan, slot)
    )
