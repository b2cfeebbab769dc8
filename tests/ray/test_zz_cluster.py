"""A two-node Ray cluster on 127.0.0.1 (ray.cluster_utils.Cluster, one CPU per node): builds
and fingerprints give the same bytes as on threads and as the embedded builder, and a
collection served from actors on both nodes answers as the in-process engine. Runs last in
this folder: it replaces the session's local Ray."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from shardwalk.index.distributed import connect
from shardwalk.walks import build_fingerprints
from shardwalk.walks.distributed import fingerprints_replicated
from shardwalk.walks.generators import power_law_graph

import shardwalk
from shardwalk import F, jobs
from tests.parquet_data import snapshot_digest, write_dataset
from tests.ray.conftest import ray
from tests.ray.test_fingerprints_ray import assert_same_store


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()  # the session's local Ray: a driver joins one Ray at a time
    local = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
    nodes = Cluster(initialize_head=True, head_node_args={**local, "include_dashboard": False})
    try:
        nodes.add_node(**local)
        nodes.wait_for_nodes()
        connect(nodes.address)
        assert [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]] == ["127.0.0.1"] * 2
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


def test_build_on_two_nodes_same_files(cluster, tmp_path: Path) -> None:
    source = tmp_path / "in"
    write_dataset(source, 3000, 16, files=4, seed=8)
    params = {"partitions": 4, "ef_construction": 64, "tenant_column": "tenant"}
    jobs.build_collection(tmp_path / "threads", "c", source, **params)
    report = jobs.build_collection(tmp_path / "ray", "c", source, ray=True, **params)
    assert report["workers"] == 2  # the cluster's two CPUs, one per node
    assert snapshot_digest(tmp_path / "ray", "c") == snapshot_digest(tmp_path / "threads", "c")


def test_fingerprints_on_two_nodes_same_store(cluster) -> None:
    graph = power_law_graph(5000, 25_000, seed=3)
    params = dict(walks_per_node=10, seed=1, hubs="auto", hub_walks=100)
    found = fingerprints_replicated(graph, workers=2, **params)
    assert_same_store(found, build_fingerprints(graph, **params))


def test_served_from_actors_on_both_nodes(cluster, tmp_path: Path) -> None:
    from tests.ray.test_serving_ray import DIM, write_data
    from tests.server.conftest import seeded_rows

    write_data(tmp_path, seeded_rows(3000, DIM, seed=2))
    queries = np.random.default_rng(1).standard_normal((20, DIM)).astype(np.float32)
    # a filter of about 1,100 matches: exact here and in each actor alike (with more than 2,048
    # matches this process over-fetches from the graph while each actor, holding half the
    # partitions, may scan its matches exactly: approximate against exact, equal most runs)
    scopes = [{}, {"tenant": "t2"}, {"where": F("year") >= 2016}]
    with shardwalk.Engine.open(tmp_path) as engine:
        expected = [engine.collection("docs").search(queries, 10, **s).ids for s in scopes]
    with shardwalk.Engine.open(tmp_path, ray=cluster.address) as engine:
        docs = engine.collection("docs")
        actors = docs.stats()["index_stats"]["ray"]["actors"]
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert {a["node"] for a in actors} == nodes  # one actor on each node
        for scope, ids in zip(scopes, expected):
            assert np.array_equal(docs.search(queries, 10, **scope).ids, ids), scope


def test_serving_survives_losing_a_node(cluster, tmp_path: Path) -> None:
    """Runs last: it takes the second node away. Nothing was written since the checkpoint, so
    the lost node's actor starts again on the head node and the answers do not change."""
    import time

    from tests.ray.test_serving_ray import DIM, write_data
    from tests.server.conftest import seeded_rows

    write_data(tmp_path, seeded_rows(3000, DIM, seed=4))
    queries = np.random.default_rng(2).standard_normal((20, DIM)).astype(np.float32)
    with shardwalk.Engine.open(tmp_path, ray=cluster.address) as engine:
        docs = engine.collection("docs")
        before = docs.search(queries, 10, tenant="t1").ids
        cluster.remove_node(next(iter(cluster.worker_nodes)), allow_graceful=False)
        deadline = time.monotonic() + 120
        while len({n["NodeID"] for n in ray.nodes() if n["Alive"]}) > 1:
            assert time.monotonic() < deadline, "Ray never noticed the lost node"
            time.sleep(0.5)
        assert np.array_equal(docs.search(queries, 10, tenant="t1").ids, before)
        actors = docs.stats()["index_stats"]["ray"]["actors"]
        assert len({a["node"] for a in actors}) == 1  # both on the node that is left
