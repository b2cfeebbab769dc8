"""UpsertEdges / DeleteEdges on a real server: admin only, the embedded graph's results and
errors, durable, fingerprints repaired."""

from __future__ import annotations

import numpy as np
import pytest

import shardwalk

from .conftest import Running, key_of


def test_graph_updates_over_grpc(running: Running) -> None:
    admin = running.client(timeout=600)  # the first calls may compile the walk kernels
    rng = np.random.default_rng(3)
    edges = rng.integers(0, 200, size=(800, 2))
    admin.create_graph("live", edges, fingerprints=True, walks_per_node=6, hubs=2, hub_walks=40)
    remote = admin.graph("live")
    out = remote.upsert_edges([[500, 1], [1, 500], [2, 3]])
    assert out["edges"] == 3 and out["nodes_added"] == 1 and out["walks"] >= 0
    assert remote.delete_edges(([500], [1]))["edges"] == 1
    assert remote.delete_nodes([7])["nodes"] == 1
    embedded = running.engine.graph("live")
    assert 500 in embedded.node_ids and 7 not in embedded.node_ids
    assert remote.stats()["updates"] == 3
    here = embedded.ppr(500, k=10, method="exact")
    there = remote.ppr(500, 10, method="exact")
    np.testing.assert_array_equal(here.ids, there.ids)
    fp_method = remote.ppr(500, 10, method="fingerprint")  # the repaired fingerprints serve
    assert fp_method.method == "fingerprint" and 500 in fp_method.ids
    # errors are the library's classes, and change nothing
    with pytest.raises(shardwalk.NotFoundError, match="no edge"):
        remote.delete_edges([[500, 1]])
    with pytest.raises(shardwalk.NotFoundError):
        remote.delete_nodes([7])
    with pytest.raises(shardwalk.InvalidArgumentError, match="unweighted"):
        remote.upsert_edges([[1, 2]], [2.0])
    with pytest.raises(shardwalk.InvalidArgumentError):
        remote.upsert_edges([[1, 2, 3]])
    assert remote.stats()["updates"] == 3
    # admin only
    tenant = running.client(key_of("t0")).graph("live")
    for call in (
        lambda: tenant.upsert_edges([[1, 2]]),
        lambda: tenant.delete_edges([[2, 3]]),
        lambda: tenant.delete_nodes([1]),
    ):
        with pytest.raises(shardwalk.PermissionDeniedError, match="admin"):
            call()
    admin.drop_graph("live")
