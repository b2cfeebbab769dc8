"""What the CSR-by-node objects share (walks/graph.py's CSRRows, OutEdges, _load_saved): their
sizes, and saving and reading back their arrays, with one error for a missing file."""

from __future__ import annotations

import numpy as np
import pytest
from shardwalk.walks.fingerprints import FingerprintStore, build_fingerprints
from shardwalk.walks.graph import CSRGraph, GraphShard

from shardwalk.errors import CorruptionError

from .conftest import random_graph


def _shard(weighted: bool) -> GraphShard:
    g = random_graph(40, 160, seed=3, weighted=weighted)
    return g.shards(2)[1]


@pytest.mark.parametrize("weighted", [False, True])
def test_a_shard_counts_and_round_trips_its_arrays(tmp_path, weighted):
    shard = _shard(weighted)
    assert shard.num_nodes == shard.nodes.shape[0] == shard.indptr.shape[0] - 1
    assert shard.num_edges == shard.indices.shape[0]
    assert shard.weighted is weighted
    shard.save(tmp_path / "s")
    assert (tmp_path / "s" / "weights.npy").exists() is weighted
    back = GraphShard.load(tmp_path / "s")
    for name in ("nodes", "node_ids", "indptr", "indices"):
        np.testing.assert_array_equal(getattr(back, name), getattr(shard, name))
    assert (back.weights is None) is (not weighted)
    assert (back.shard_id, back.num_shards, back.graph_digest) == (
        shard.shard_id,
        shard.num_shards,
        shard.graph_digest,
    )


def test_a_store_with_hubs_and_top_k_round_trips(tmp_path):
    g = random_graph(60, 300, seed=4)
    store = build_fingerprints(g, walks_per_node=20, seed=1, top_k=5, hubs=3, hub_walks=50)
    assert store.num_nodes == g.num_nodes == 60 and store.num_hubs == 3
    store.save(tmp_path / "fp")
    back = FingerprintStore.load(tmp_path / "fp")
    for name in ("indptr", "nodes", "counts", "truncated", "hubs", "hub_indptr", "hub_nodes"):
        np.testing.assert_array_equal(getattr(back, name), getattr(store, name))
    assert back.hub_walks == 50 and back.top_k == 5


@pytest.mark.parametrize(
    ("kind", "missing"),
    [("graph", "node_ids.npy"), ("shard", "indices.npy"), ("fingerprint store", "hubs.npy")],
)
def test_a_missing_array_is_a_corruption_naming_the_object_and_the_file(tmp_path, kind, missing):
    g = random_graph(60, 300, seed=5, weighted=True)
    saved = {
        "graph": (g, CSRGraph.load),
        "shard": (g.shards(2)[0], GraphShard.load),
        "fingerprint store": (
            build_fingerprints(g, walks_per_node=5, hubs=2),
            FingerprintStore.load,
        ),
    }
    obj, load = saved[kind]
    obj.save(tmp_path / "x")
    (tmp_path / "x" / missing).unlink()
    with pytest.raises(
        CorruptionError, match=f"{kind} at .* is incomplete: .*{missing} is missing"
    ):
        load(tmp_path / "x")
