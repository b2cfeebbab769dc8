"""Fingerprints on Ray (replicated): byte-identical to the embedded builder whatever the
workers, a worker killed mid-run, the job committing them to a graph, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from shardwalk.walks import build_fingerprints
from shardwalk.walks.distributed import fingerprints_replicated
from shardwalk.walks.generators import power_law_graph

import shardwalk
from shardwalk import jobs
from shardwalk.cli import main
from tests.ray.conftest import run_and_kill

pytestmark = pytest.mark.usefixtures("local_ray")

ARRAYS = ("indptr", "nodes", "counts", "truncated", "hubs", "hub_indptr", "hub_nodes", "hub_counts")


def assert_same_store(a, b) -> None:
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
            continue
        assert x.dtype == y.dtype and x.tobytes() == np.asarray(y).tobytes(), name


@pytest.fixture(scope="module")
def graph():
    return power_law_graph(3000, 15_000, weighted=True, seed=4)


@pytest.mark.parametrize(
    ("workers", "options"),
    [(1, {}), (2, {"top_k": 8, "dangling": "drop"}), (2, {"hubs": 30, "hub_walks": 200})],
)
def test_replicated_is_byte_identical_to_embedded(graph, workers: int, options: dict) -> None:
    params = dict(walks_per_node=12, alpha=0.2, seed=9, **options)
    expected = build_fingerprints(graph, **params)
    found = fingerprints_replicated(graph, workers=workers, **params)
    assert_same_store(found, expected)
    assert found.stats["workers"] == workers and found.stats["tasks"] >= workers
    assert found.stats["object_store_bytes"] >= graph.indptr.nbytes + graph.indices.nbytes


def test_worker_killed_mid_fingerprints_same_store() -> None:
    big = power_law_graph(100_000, 500_000, seed=6)
    params = dict(walks_per_node=60, seed=2)
    store, _ = run_and_kill(
        lambda: fingerprints_replicated(big, workers=2, tasks_per_worker=1, **params),
        "fingerprint_rows",
    )
    assert_same_store(store, build_fingerprints(big, **params))


def test_job_commits_fingerprints_to_the_graph(graph, tmp_path: Path, capsys) -> None:
    db = tmp_path / "db"
    src = np.repeat(graph.node_ids, np.diff(graph.indptr))
    edges = np.stack([src, graph.node_ids[graph.indices]], axis=1)
    with shardwalk.Engine.open(db) as engine:
        g = engine.create_graph("g", edges, graph.weights)
        g.build_fingerprints(seed=5, walks_per_node=6)
        embedded = engine.graph("g").ppr(int(graph.node_ids[0]), k=10, method="fingerprint")
    stats = jobs.build_fingerprints(db, "g", seed=5, walks_per_node=6, num_workers=2)
    assert stats["mode"] == "replicated" and stats["workers"] == 2 and "accuracy" in stats
    with shardwalk.Engine.open(db) as engine:
        again = engine.graph("g").ppr(int(graph.node_ids[0]), k=10, method="fingerprint")
    np.testing.assert_array_equal(again.ids, embedded.ids)
    np.testing.assert_array_equal(again.scores, embedded.scores)
    args = ["graph", "fingerprints", "--data", str(db), "--name", "g", "--walks-per-node", "4"]
    assert main([*args, "--ray", "--num-workers", "2"]) == 0
    assert "on Ray (replicated, 2 workers)" in capsys.readouterr().out
    # Ray keeps no walks: the next update drops the fingerprints and says so, and how to rebuild
    assert stats["walks_kept"] is False and "next edge update drops them" in stats["note"]
    (tmp_path / "add.txt").write_text(f"{int(graph.node_ids[0])} {int(graph.node_ids[1])}\n")
    assert (
        main(["graph", "add-edges", str(tmp_path / "add.txt"), "--data", str(db), "--name", "g"])
        == 0
    )
    out = capsys.readouterr().out
    assert "fingerprints dropped: they were built on Ray" in out, out
    assert "shardwalk graph fingerprints" in out and "walks re-simulated" not in out
    with shardwalk.Engine.open(db) as engine:
        assert not engine.graph("g").has_fingerprints


@pytest.mark.parametrize("dangling", ["self_loop", "drop"])
def test_sharded_has_the_embedded_distribution(dangling: str) -> None:
    """Sharded walks draw from other random streams: the same distribution, shown on a graph
    small enough for exact PPR. (1) Walk lengths: under self_loop a row's visits total R
    geometric(alpha) lengths, mean R/alpha and variance R(1-alpha)/alpha^2, so the mean row
    total over n rows is within 4 standard errors of R/alpha. (2) Accuracy: the mean l1 error
    of the estimates against exact PPR matches the embedded store's within 10% (both are sums
    over hundreds of rows of the same estimator's error)."""
    from shardwalk.walks.distributed import fingerprints_sharded

    from tests.walks.conftest import dense_transition, random_graph

    graph = random_graph(300, 1500, seed=3, dangling=20, weighted=True)
    r, alpha = 400, 0.2
    params = dict(walks_per_node=r, alpha=alpha, seed=7, dangling=dangling)
    sharded = fingerprints_sharded(graph, workers=2, split_degree=8, **params)
    embedded = build_fingerprints(graph, **params)
    assert sharded.stats["split_nodes"] > 0  # the split path ran too
    n = graph.num_nodes
    totals = np.add.reduceat(sharded.counts.astype(np.float64), sharded.indptr[:-1])
    if dangling == "self_loop":
        stderr = np.sqrt(r * (1 - alpha)) / alpha / np.sqrt(n)
        assert abs(totals.mean() - r / alpha) < 4 * stderr, (totals.mean(), r / alpha, stderr)
    P = dense_transition(graph, dangling)  # every row's exact PPR: alpha (I - (1-alpha) P)^-1
    exact = alpha * np.linalg.inv(np.eye(n) - (1 - alpha) * P)

    def l1(store) -> float:
        errors = []
        for u in range(n):
            nodes, values = store.row(u)
            estimate = np.zeros(n)
            estimate[nodes] = values
            errors.append(np.abs(estimate - exact[u]).sum())
        return float(np.mean(errors))

    ratio = l1(sharded) / l1(embedded)
    assert 0.9 < ratio < 1.1, ratio
    assert all(a["graph_share"] < 0.8 for a in sharded.stats["actors"])


def test_sharded_is_reproducible_with_top_k_and_hub_rows(graph) -> None:
    """The same seed and workers give the same bytes (a random stream per (seed, shard,
    round)); another seed other counts. Truncated rows keep their top_k and report the rest
    (a row's kept plus cut visits total its R walks' lengths: the same law as untruncated);
    hub rows come from hub_walks walks each (under self_loop, hub_walks geometric lengths)."""
    from shardwalk.walks.distributed import fingerprints_sharded

    params = dict(walks_per_node=20, alpha=0.25, top_k=8, hubs=12, hub_walks=300, workers=2)
    a = fingerprints_sharded(graph, seed=3, **params)
    assert_same_store(a, fingerprints_sharded(graph, seed=3, **params))
    b = fingerprints_sharded(graph, seed=4, **params)
    assert a.counts.tobytes() != b.counts.tobytes()
    assert np.diff(a.indptr).max() == 8 and a.truncated is not None
    n, r, alpha = graph.num_nodes, 20, 0.25
    kept = np.add.reduceat(a.counts.astype(np.float64), a.indptr[:-1])
    totals = kept + a.truncated.astype(np.float64) * r / alpha  # truncated = cut * alpha / R
    stderr = np.sqrt(r * (1 - alpha)) / alpha / np.sqrt(n)
    assert abs(totals.mean() - r / alpha) < 4 * stderr, (totals.mean(), r / alpha, stderr)
    assert a.hubs.size == 12 and a.hub_indptr.size == 13
    hub_totals = np.add.reduceat(a.hub_counts.astype(np.float64), a.hub_indptr[:-1])
    stderr = np.sqrt(300 * (1 - alpha)) / alpha / np.sqrt(12)
    assert abs(hub_totals.mean() - 300 / alpha) < 4 * stderr, hub_totals.mean()
    assert a.stats["rounds"] > 1 and a.stats["split_nodes"] > 0
