"""accuracy= calibration by counted work and the pruned fast path (issue 22 items 1 and 2).

Calibration reads no clock: the same graph, fingerprints and seed give the same choice on an
idle and a loaded machine. Its choice and the precision it reached are in ``Graph.stats()``; a
bar no candidate reaches within the budget is said (stats and a warning) and the most precise
candidate within the budget is taken. (The fast path's precision against exact PPR on
generated Holme-Kim graphs, a property: test_ppr_fast.py.)
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
from shardwalk.walks import PPRIndex, build_fingerprints
from shardwalk.walks import calibration as calibration_module
from shardwalk.walks.calibration import AccuracySetting, calibrate_accuracy
from shardwalk.walks.evaluate import evaluate, ground_truth
from shardwalk.walks.generators import social_graph

import shardwalk


@pytest.fixture(scope="module")
def social():
    graph = social_graph(2000, 6, seed=11)
    return graph, build_fingerprints(graph, walks_per_node=10, seed=2, hubs="auto")


class _Load:
    """Busy threads for the duration of a block: one spinning in Python (holding the GIL
    between bytecodes), one in numpy (releasing it), as other work on the machine would."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=f) for f in (self._python, self._numpy)]

    def _python(self) -> None:
        x = 1
        while not self.stop.is_set():
            x = (x * 1103515245 + 12345) % 2**31

    def _numpy(self) -> None:
        a = np.random.default_rng(0).random((300, 300))
        while not self.stop.is_set():
            a = np.tanh(a @ a)

    def __enter__(self) -> _Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def test_calibration_is_the_same_idle_and_loaded(social):
    graph, store = social
    idle = calibrate_accuracy(graph, store, sources=12, seed=5)
    with _Load():
        loaded = calibrate_accuracy(graph, store, sources=12, seed=5)
    assert loaded == idle  # every candidate's precision and counted work too, not only the pick
    for name in ("fast", "high"):
        assert {"method", "params", "precision", "work_p50", "met"} <= set(idle[name])
        assert all(c["work_p50"] > 0 for c in idle[name]["candidates"])


def test_stats_name_the_calibrated_method_and_its_precision(social):
    graph, _ = social
    with shardwalk.Engine.memory() as engine:
        g = engine.create_graph("g", graph)
        g.build_fingerprints(walks_per_node=10, seed=3)
        calibrated = g.stats()["fingerprints"]["accuracy"]
        for name, bar in (("fast", 0.8), ("high", 0.95)):
            choice = calibrated[name]
            assert choice["precision_bar"] == bar and choice["met"] is True, choice
            assert choice["note"] is None and choice["work_p50"] <= choice["work_budget"]
            assert choice["precision"] >= bar
            result = g.ppr(7, accuracy=name)
            assert (result.method, result.params) == (choice["method"], choice["params"])


def test_unmet_bar_is_said_and_the_most_precise_within_budget_taken(social, monkeypatch, caplog):
    graph, store = social
    cheap = ("fingerprint", {"rounds": 0, "threshold": 1.0})  # composition alone: imprecise
    precise = ("push", {"r_max": 1e-6})
    over_budget = ("push", {"r_max": 1e-9})  # the most precise, but beyond 5 ms of work
    monkeypatch.setattr(
        calibration_module,
        "ACCURACY_CANDIDATES",
        {"fast": AccuracySetting(1.01, 5.0, (cheap, precise, over_budget))},  # unreachable bar
    )
    with caplog.at_level(logging.WARNING, logger="shardwalk.walks.calibration"):
        out = calibrate_accuracy(graph, store, sources=12, seed=1)["fast"]
    by = {(c["method"], c["params"]["r_max"] if "r_max" in c["params"] else None): c
          for c in out["candidates"]}  # fmt: skip
    assert by[("push", 1e-9)]["work_p50"] > out["work_budget"] >= by[("push", 1e-6)]["work_p50"]
    assert by[("fingerprint", None)]["precision"] < by[("push", 1e-6)]["precision"]
    assert (out["method"], out["params"]) == precise  # not the cheapest, not over the budget
    assert out["met"] is False and "most precise within" in out["note"]
    assert any("no candidate reached precision@100 1.01" in r.message for r in caplog.records)

    monkeypatch.setattr(
        calibration_module,
        "ACCURACY_CANDIDATES",
        {"fast": AccuracySetting(0.8, 1e-6, (precise, cheap))},  # a budget nothing fits
    )
    out = calibrate_accuracy(graph, store, sources=12, seed=1)["fast"]
    assert (out["method"], out["params"]) == cheap and "fits the budget" in out["note"]


def test_pruning_cuts_the_work_and_keeps_precision(social):
    graph, store = social
    index = PPRIndex(graph, store)
    sources = np.arange(0, graph.num_nodes, 100)
    truth = ground_truth(index, sources)
    full = dict(r_max=5e-5)  # hubs absorb: composing is most of the work
    pruned = dict(full, prune=0.1)
    work_full = index.query_batch(sources, method="hybrid", **full).work.sum()
    a = index.query_batch(sources, method="hybrid", **pruned)
    b = index.query_batch(sources, method="hybrid", **pruned)
    np.testing.assert_array_equal(a.ids, b.ids)  # sampling keyed on the query: same answer
    np.testing.assert_array_equal(a.scores, b.scores)
    assert work_full >= 2 * a.work.sum()  # counted, so no timing in the assert
    p_full = evaluate(index, sources, method="hybrid", truth=truth, **full).summary["all"]
    p_pruned = evaluate(index, sources, method="hybrid", truth=truth, **pruned).summary["all"]
    assert p_pruned["precision"] >= p_full["precision"] - 0.05, (p_pruned, p_full)
    # unbiased: the pruned vector keeps the mass (sampled tails add it back on average)
    assert abs(p_pruned["l1"] - p_full["l1"]) < 0.1


def test_precision_counts_only_the_nodes_a_source_reaches():
    # a source reaching 3 nodes, k = 100: padding (-1) and zero-score nodes count on neither
    # side, so a complete answer scores 1 and a missing reached node costs a third
    ref = np.array([5, 6, 7, 9, -1, -1])
    ref_scores = np.array([0.5, 0.3, 0.2, 0.0, 0.0, 0.0])
    found = np.array([6, 5, 7, 8, -1, -1])
    found_scores = np.array([0.4, 0.4, 0.2, 0.0, 0.0, 0.0])
    assert calibration_module.precision_at_k(found, found_scores, ref, ref_scores) == 1.0
    found_scores[2] = 0.0  # node 7 not found (a zero score is not an answer)
    assert calibration_module.precision_at_k(found, found_scores, ref, ref_scores) == pytest.approx(
        2 / 3
    )
    small = social_graph(60, 2, seed=1)  # and on a whole query: exact against itself
    index = PPRIndex(small)
    r = index.query(0, k=100, method="exact")
    assert calibration_module.precision_at_k(r.ids[0], r.scores[0], r.ids[0], r.scores[0]) == 1.0
