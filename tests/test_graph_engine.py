"""Graphs owned by the engine: creation, loaders, storage, fingerprints, PPR, FastRP, CLI."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shardwalk
from shardwalk import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from shardwalk.cli import main


def two_cliques(size: int = 8) -> np.ndarray:
    """Two directed cliques (ids 100.. and 200..) joined by one edge each way."""
    a, b = np.arange(100, 100 + size), np.arange(200, 200 + size)
    edges = [(u, v) for group in (a, b) for u in group for v in group if u != v]
    edges += [(a[0], b[0]), (b[0], a[0])]
    return np.array(edges, dtype=np.int64)


def test_create_query_and_reopen(tmp_path):
    path = tmp_path / "db"
    with shardwalk.Engine.open(path) as engine:
        graph = engine.create_graph("g", two_cliques())
        assert (graph.num_nodes, graph.num_edges, graph.directed) == (16, 114, True)
        assert graph.ppr(100, k=3).method == "push"  # no fingerprints yet
        stats = graph.build_fingerprints(walks_per_node=200, seed=1)
        assert stats["nbytes"] > 0 and stats["steps"] > 0
        fast = graph.ppr(100, k=16)
        exact = graph.ppr(100, k=16, method="exact")
        assert fast.method == "fingerprint" and exact.ids[0, 0] == 100
        # the walker stays in its clique: the top 8 are clique A, in both methods
        assert set(exact.ids[0, :8].tolist()) == set(range(100, 108))
        assert set(fast.ids[0, :8].tolist()) == set(range(100, 108))
        batch = graph.ppr_batch([100, [200, 201], {100: 1.0, 200: 3.0}], k=4)
        assert batch.ids.shape == (3, 4)
    with shardwalk.Engine.open(path) as engine:
        graph = engine.graph("g")
        assert graph.has_fingerprints
        again = graph.ppr(100, k=16)
        np.testing.assert_array_equal(again.ids, fast.ids)
        np.testing.assert_allclose(again.scores, fast.scores)
        assert engine.graphs() == ["g"]
        shards = graph.shards(2)
        assert sum(s.num_nodes for s in shards) == 16


def test_graph_errors(engine):
    engine.create_graph("g", two_cliques())
    with pytest.raises(AlreadyExistsError, match="graph 'g' already exists"):
        engine.create_graph("g", two_cliques())
    with pytest.raises(NotFoundError, match=r"no graph 'h'; graphs: 'g'"):
        engine.graph("h")
    with pytest.raises(InvalidArgumentError, match=r"edges must be an \(E, 2\) array"):
        engine.create_graph("x", np.arange(6))
    with pytest.raises(
        InvalidArgumentError,
        match=r"edge weights must be finite and > 0; got -3.0 at edge 1 .*signed graphs need a transform",
    ):
        engine.create_graph("w", [[1, 2], [2, 3]], weights=[1.0, -3.0])
    g = engine.graph("g")
    with pytest.raises(NotFoundError, match=r"unknown seed id\(s\) 999"):
        g.ppr(999, k=3)
    with pytest.raises(InvalidArgumentError):
        g.ppr([], k=3)
    with pytest.raises(InvalidArgumentError, match="alpha"):
        g.build_fingerprints(alpha=1.5)
    engine.drop_graph("g")
    with pytest.raises(FailedPreconditionError, match="graph 'g' was dropped"):
        g.ppr(100)


def test_loaders(tmp_path, engine):
    edges = two_cliques()
    text = "# a SNAP comment\n" + "\n".join(f"{u}\t{v}" for u, v in edges)
    (tmp_path / "g.txt").write_text(text)
    with gzip.open(tmp_path / "g.txt.gz", "wt") as f:
        f.write(text)
    pq.write_table(
        pa.table({"src": edges[:, 0], "dst": edges[:, 1], "weight": np.ones(len(edges))}),
        tmp_path / "g.parquet",
    )
    (tmp_path / "npy").mkdir()
    ids = np.unique(edges)
    np.save(tmp_path / "npy" / "ids.npy", ids)
    np.save(tmp_path / "npy" / "edges.npy", np.searchsorted(ids, edges))
    for name, path, options in [
        ("snap", tmp_path / "g.txt", {}),
        ("gz", tmp_path / "g.txt.gz", {}),
        ("parquet", tmp_path / "g.parquet", {"weight": "weight"}),
        ("npy", tmp_path / "npy", {}),
    ]:
        g = engine.load_graph(name, path, **options)
        assert (g.num_nodes, g.num_edges) == (16, 114), name
    with pytest.raises(NotFoundError, match="no such file"):
        engine.load_graph("nope", tmp_path / "missing.txt")


def test_fastrp_embeddings_feed_node_similarity_search(engine):
    engine.create_graph("g", two_cliques(10), directed=False)
    col = engine.embed_graph("g", "nodes", dim=64, seed=3)
    assert len(col) == 20 and col.metric == "cosine"
    res = col.search(col.get([103]).vectors, k=10).ids[0]
    assert sum(100 <= i < 110 for i in res.tolist()) >= 8  # neighbours come from its clique


def test_knn_hits_seed_ppr(engine):
    """Collections and graphs share the id space: kNN hits become a personalization."""
    graph = engine.create_graph("g", two_cliques())
    col = engine.create_collection("docs", dim=2, index="flat")
    col.upsert(np.arange(200, 208), np.random.default_rng(0).random((8, 2)))
    hits = col.search([0.5, 0.5], k=3)
    seeds = {int(i): float(1 / (1 + d)) for i, d in zip(hits.ids[0], hits.distances[0])}
    result = graph.ppr(seeds, k=8, method="exact")
    assert set(result.ids[0].tolist()) == set(range(200, 208))


def test_interrupted_fingerprint_build_keeps_the_old_state(tmp_path, monkeypatch):
    path = tmp_path / "db"
    with shardwalk.Engine.open(path) as engine:
        graph = engine.create_graph("g", two_cliques())
        graph.build_fingerprints(walks_per_node=5, seed=1)
        before = graph.ppr(100, k=5)

        def die(*args, **kwargs):
            raise RuntimeError("crash")

        monkeypatch.setattr(type(engine._datadir), "commit", die)
        with pytest.raises(RuntimeError):
            graph.build_fingerprints(walks_per_node=50, seed=2)
        monkeypatch.undo()
    with shardwalk.Engine.open(path) as engine:
        np.testing.assert_array_equal(engine.graph("g").ppr(100, k=5).ids, before.ids)
        assert len(list((path / "graphs" / "g").iterdir())) == 2  # csr and one fingerprint set


def test_cli_graph_commands(tmp_path, capsys):
    edges = two_cliques()
    (tmp_path / "g.txt").write_text("\n".join(f"{u} {v}" for u, v in edges))
    data = str(tmp_path / "db")
    assert main(["graph", "ingest", str(tmp_path / "g.txt"), "--data", data, "--name", "g"]) == 0
    assert "16 nodes, 114 edges" in capsys.readouterr().out
    assert (
        main(["graph", "fingerprints", "--data", data, "--name", "g", "--walks-per-node", "50"])
        == 0
    )
    assert "R=50" in capsys.readouterr().out
    assert main(["ppr", "--data", data, "--graph", "g", "--seed", "100", "--k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ids"][0] == 100 and out["method"] == "fingerprint"
    assert main(["ppr", "--data", data, "--graph", "g", "--seed", "999"]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main(["info", "--data", data]) == 0
    assert json.loads(capsys.readouterr().out)["graphs"][0]["fingerprints"]["walks_per_node"] == 50
