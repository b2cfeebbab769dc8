"""Engine.calibrate_compose and shardwalk.evaluate on generated graphs (planted partition with
features of the nodes' positions): the held-out task scores what compose does, calibration
beats kNN and the library defaults, is deterministic, durable, used as compose's defaults,
reported in stats, forgotten with its collection, and refuses pairs that share too few ids.

Cora (real data) is measured in bench/compose_quality.py and in the opt-in test at the end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import shardwalk
from shardwalk import FailedPreconditionError, InvalidArgumentError
from shardwalk.datasets import planted_partition
from shardwalk.evaluate import GRID, _Scorer, held_out, heldout_edges, recall

N = 1500
SMALL_GRID = {"knn_k": (5, 10, 20), "alpha": (0.1, 0.3, 0.5), "temperature": (None, 0.35)}


def fill(engine: shardwalk.Engine, n: int = N, seed: int = 3, tenants=None):
    data = planted_partition(n, dim=32, noise=3.0, seed=seed)
    col = engine.create_collection("docs", dim=32, metric="cosine", index="flat")
    col.upsert(data.ids, data.vectors, tenants=tenants)
    graph = engine.create_graph("kg", data.edges, directed=False, node_ids=data.ids)
    return data, col, graph


@pytest.fixture(scope="module")
def world():
    engine = shardwalk.Engine.memory()
    data, col, graph = fill(engine)
    yield engine, data, col, graph
    engine.close()


def test_the_task_holds_out_what_it_says(world):
    _, data, col, graph = world
    task = held_out(col, graph, queries=80, min_degree=3, knn_depth=12, seed=1)
    held = set(task.query_ids.tolist())
    edges = data.edges
    for q, truth in zip(task.query_ids.tolist(), task.truth):
        nbrs = set(edges[edges[:, 0] == q, 1].tolist()) | set(edges[edges[:, 1] == q, 0].tolist())
        assert set(truth.tolist()) == nbrs - held and truth.size > 0
    # no held-out node keeps an edge; every other edge stays
    reduced = task.reduced
    src = np.repeat(reduced.node_ids, np.diff(reduced.indptr))
    dst = reduced.node_ids[reduced.indices]
    assert not (np.isin(src, task.query_ids) | np.isin(dst, task.query_ids)).any()
    assert reduced.num_edges == int((~np.isin(edges, task.query_ids).any(axis=1)).sum()) * 2
    # kNN: exact cosine over the rows that are not held out, nearest first
    x = data.vectors / np.linalg.norm(data.vectors, axis=1, keepdims=True)
    keep = np.flatnonzero(~np.isin(data.ids, task.query_ids))
    for i, q in enumerate(task.query_ids.tolist()):
        want = keep[np.argsort(-(x[keep] @ x[q]), kind="stable")[:12]]
        assert set(task.knn_ids[i].tolist()) == set(want.tolist())
        assert held.isdisjoint(task.knn_ids[i].tolist())


def test_a_setting_scores_what_compose_returns(world, tmp_path):
    """The task's recall of a setting equals compose's own at its default PPR, run on a copy
    of the data with the held-out rows and edges really removed; so does each of many
    fusions and weights that a calibration ranks in one pass."""
    _, data, col, graph = world
    task = held_out(col, graph, queries=60, min_degree=3, knn_depth=40, seed=2)
    setting = {"knn_k": 10, "alpha": 0.3, "fuse": "weighted_rank", "weight": 0.6}
    setting["temperature"] = 0.35
    scored = heldout_edges(col, graph, {"s": setting}, task=task)
    base = {n: setting[n] for n in ("knn_k", "alpha", "temperature")}
    fusions = [{"fuse": "rrf", "weight": None}] + [
        {"fuse": f, "weight": w} for f in ("weighted", "weighted_z") for w in (0.0, 0.35, 1.0)
    ]
    together = _Scorer(task, 10).fusions(base, fusions)
    held = np.isin(data.ids, task.query_ids)
    edges = data.edges[~np.isin(data.edges, task.query_ids).any(axis=1)]
    with shardwalk.Engine.memory() as copy:
        copy.create_collection("docs", dim=32, metric="cosine", index="flat").upsert(
            data.ids[~held], data.vectors[~held]
        )
        copy.create_graph("kg", edges, directed=False, node_ids=data.ids)
        queries = data.vectors[task.query_ids]
        found = copy.compose("docs", "kg", queries, **setting)
        assert found.ppr_method == "push"
        assert scored["s"] == pytest.approx(recall(found.ids, task.truth), abs=1e-12)
        for fusion, value in zip(fusions, together, strict=True):
            found = copy.compose("docs", "kg", queries, **base, **fusion)
            assert value == pytest.approx(recall(found.ids, task.truth), abs=1e-12), fusion
    assert scored["knn"] == recall(task.knn_ids[:, :10], task.truth)
    assert len(set(together)) > 1  # the fusions differ: the comparison can fail


def test_calibration_beats_knn_and_defaults_and_is_used(world):
    engine, _, col, graph = world
    # a part of GRID (all of it: bench/compose_quality.py and the Cora test below)
    grid = {"knn_k": (10, 40), "alpha": (0.05, 0.2, 0.5), "temperature": (None, 0.35)}
    record = engine.calibrate_compose("docs", "kg", queries=200, seed=0, grid=grid)
    # observed on this generated graph: recall 0.187 vs kNN 0.143 (1.30x)
    assert record["recall"] >= 1.15 * record["knn_recall"], record
    assert record["recall"] >= record["default_recall"]
    assert record["knn_k"] in grid["knn_k"] and record["alpha"] in grid["alpha"]
    assert record["fuse"] in GRID["fuse"] and record["rounds"][-1] == record["queries"]
    assert record["queries"] > 100 and record["edges"] == graph.num_edges
    assert graph.stats()["compose"]["docs"] == record
    json.dumps(record)  # stored in the manifest: JSON only

    q = np.random.default_rng(0).standard_normal((3, 32)).astype(np.float32)
    result = engine.compose("docs", "kg", q)
    tuned = ("knn_k", "alpha", "fuse", "temperature")
    assert {n: result.explain[n] for n in tuned} == {
        n: {"value": record[n], "source": "calibrated"} for n in tuned
    }
    same = engine.compose(
        "docs", "kg", q, **{n: record[n] for n in ("knn_k", "alpha", "fuse", "weight")},
        temperature=record["temperature"],
    )  # fmt: skip
    np.testing.assert_array_equal(result.ids, same.ids)
    assert all(v["source"] == "request" for n, v in same.explain.items() if v["value"] is not None)
    # what the caller gives wins; the rest stays calibrated
    mixed = engine.compose("docs", "kg", q, knn_k=3, fuse="rrf")
    assert mixed.explain["knn_k"] == {"value": 3, "source": "request"}
    assert mixed.explain["alpha"]["source"] == "calibrated"
    assert mixed.explain["weight"] == {"value": None, "source": "default"}  # rrf takes none
    # the held-out task on a fresh sample: calibrated settings come along by default
    scored = heldout_edges(col, graph, queries=150, seed=11)
    assert set(scored) >= {"knn", "defaults", "calibrated"}
    assert scored["calibrated"] > scored["knn"], scored


def test_calibration_is_deterministic_per_seed(world):
    _, _, col, graph = world
    from shardwalk.evaluate import calibrate

    a = calibrate(col, graph, queries=120, seed=5, grid=SMALL_GRID)
    b = calibrate(col, graph, queries=120, seed=5, grid=SMALL_GRID)
    timing = ("seconds", "ppr_seconds")
    assert {n: v for n, v in a.items() if n not in timing} == {
        n: v for n, v in b.items() if n not in timing
    }
    with pytest.raises(InvalidArgumentError, match="grid names beta"):
        calibrate(col, graph, grid={"beta": (1,)})


def test_stored_durably_with_the_graph_and_forgotten_with_the_collection(tmp_path: Path):
    with shardwalk.Engine.open(tmp_path) as engine:
        fill(engine, n=600)
        record = engine.calibrate_compose("docs", "kg", queries=100, grid=SMALL_GRID)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["graphs"]["kg"]["compose"]["docs"] == record
    with shardwalk.Engine.open(tmp_path) as engine:
        graph = engine.graph("kg")
        assert graph.stats()["compose"] == {"docs": record}
        graph.upsert_edges([[1, 2]])
        graph.compact()  # a new snapshot keeps the calibration
        q = engine.collection("docs").get([5]).vectors
        assert engine.compose("docs", "kg", q).explain["alpha"] == {
            "value": record["alpha"],
            "source": "calibrated",
        }
    with shardwalk.Engine.open(tmp_path) as engine:
        assert engine.graph("kg").compose_defaults("docs") == record
        engine.drop_collection("docs")
        assert engine.graph("kg").stats()["compose"] == {}
    with shardwalk.Engine.open(tmp_path) as engine:
        assert engine.graph("kg").stats()["compose"] == {}
        engine.create_collection("docs", dim=32, metric="cosine", index="flat")
        result = engine.compose("docs", "kg", np.ones((1, 32), np.float32))
        assert {v["source"] for v in result.explain.values()} == {"default"}


def test_refuses_a_pair_that_shares_too_few_ids():
    with shardwalk.Engine.memory() as engine:
        data = planted_partition(300, dim=8, seed=0)
        engine.create_collection("docs", dim=8, index="flat").upsert(data.ids + 10**6, data.vectors)
        engine.create_graph("kg", data.edges, directed=False)
        with pytest.raises(FailedPreconditionError, match=r"share 0 ids of nodes with >= 2 edges"):
            engine.calibrate_compose("docs", "kg")
        # 20 shared ids: still too few
        engine.collection("docs").upsert(data.ids[:20], data.vectors[:20])
        with pytest.raises(FailedPreconditionError, match=r"share 20 ids .* at least 30"):
            engine.calibrate_compose("docs", "kg")
        assert engine.graph("kg").stats()["compose"] == {}


CORA = Path(os.environ.get("SHARDWALK_DATA", "/work/shared/data")) / "cora-planetoid"


@pytest.mark.skipif(not CORA.is_dir(), reason="needs ../shared/data/cora-planetoid (real data)")
def test_cora_calibration_beats_knn_by_a_third():
    features = np.load(CORA / "features.npy").astype(np.float64)
    edges = np.load(CORA / "edges.npy")
    n = features.shape[0]
    tfidf = features * np.log(n / np.maximum(features.sum(axis=0), 1))
    with shardwalk.Engine.memory() as engine:
        engine.create_collection("cora", dim=tfidf.shape[1], metric="cosine", index="flat").upsert(
            np.arange(n), tfidf.astype(np.float32)
        )
        engine.create_graph("cites", edges, directed=False, node_ids=np.arange(n))
        record = engine.calibrate_compose("cora", "cites", queries=300)
    # observed: 0.35 vs kNN 0.22 (1.6x); the bar is 1.4x
    assert record["recall"] >= 1.4 * record["knn_recall"], record
