"""The spann index beyond the common contract: its three build ideas, recall at defaults, under
inserts (lists split in the background) and deletes, reopening, memory, and its edge cases."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from shardwalk.index import SpannIndex, exact_search
from shardwalk.index.spann import assign_lists, cluster_lists

import shardwalk
from shardwalk import CorruptionError, InvalidArgumentError
from shardwalk.datasets import clustered_vectors

from ..conftest import recall_at_k


@pytest.fixture(scope="module")
def world():
    return clustered_vectors(30_000, 16, queries=200, seed=4, metadata=False)


def truth_of(vectors, labels, queries, k=10):
    return labels[exact_search(vectors[labels], queries, k, "l2").ids]


def test_recall_at_defaults_and_what_the_build_reports(world):
    index = SpannIndex(dim=16, metric="l2")
    labels = np.arange(20_000)
    index.add(labels, world.vectors[:20_000])
    index.wait_idle()
    res = index.search(world.queries, 10)
    recall = recall_at_k(res.ids, truth_of(world.vectors, labels, world.queries))
    assert recall >= 0.90, recall  # observed 0.99
    stats = index.stats()
    sizes = stats["list_sizes"]
    assert 1 <= sizes["min"] <= sizes["median"] <= sizes["max"] <= index.max_list_size
    assert stats["lists"] >= 20_000 / index.max_list_size  # many small lists
    assert 1.0 < stats["replication_factor"] <= index.max_replicas
    assert stats["live"] == 20_000 and stats["raw_vector_bytes"] == 20_000 * 16 * 4
    # explain reports what the search read: lists probed, each one read whole
    assert 1 <= res.explain["lists_probed"] <= index.max_probes
    assert res.explain["bytes_read"] >= res.explain["lists_probed"] * sizes["min"] * 72


def test_pruning_probes_fewer_lists_the_smaller_eps_and_never_past_max_probes(world):
    index = SpannIndex(dim=16, metric="l2")
    index.add(np.arange(10_000), world.vectors[:10_000])
    probed = [
        index.search(world.queries, 10, eps_search=eps).explain["lists_probed"]
        for eps in (0.0, 0.2, 0.6, 5.0)
    ]
    assert probed == sorted(probed) and probed[0] < probed[-1]
    assert index.search(world.queries, 10, eps_search=100.0, max_probes=3).explain[
        "lists_probed"
    ] == pytest.approx(3)


def test_clustering_and_replication_follow_their_rules(world):
    vectors = world.vectors[:5000]
    centroids = cluster_lists(vectors, leaf=32)
    nearest = exact_search(centroids, vectors, 1, "l2").ids[:, 0]
    assert np.bincount(nearest).max() <= 32 * 3  # balanced: no list collects a cluster
    from shardwalk.index.hnsw import HNSWGraph

    graph = HNSWGraph(dim=16, metric="l2")
    graph.add(centroids)
    eps = 0.3
    targets = assign_lists(vectors, graph, centroids, eps_build=eps, max_replicas=8)
    assert (targets[:, 0] >= 0).all()
    replicated = 0
    for x, row in zip(vectors, targets):
        chosen = row[row >= 0]
        d = np.sqrt(((centroids[chosen] - x) ** 2).sum(axis=1))
        assert (d[1:] <= (1 + eps) * d[0] + 1e-4).all()  # within (1 + eps) of the nearest
        for j in range(1, chosen.size):  # RNG rule: not closer to a chosen centroid than to x
            between = np.sqrt(((centroids[chosen[:j]] - centroids[chosen[j]]) ** 2).sum(axis=1))
            assert (between >= d[j] - 1e-4).all()
        replicated += chosen.size > 1
    assert replicated > 0


def test_recall_holds_under_inserts_splits_and_deletes(world):
    """+50% rows in 10 batches (lists split in the background while searches run), then 20%
    deleted: recall may not drift down more than 0.02."""
    vectors, queries = world.vectors, world.queries
    index = SpannIndex(dim=16, metric="l2")
    index.add(np.arange(20_000), vectors[:20_000])
    index.wait_idle()
    before = recall_at_k(
        index.search(queries, 10).ids, truth_of(vectors, np.arange(20_000), queries)
    )
    errors: list[BaseException] = []
    stop = threading.Event()

    def search_meanwhile() -> None:
        try:
            while not stop.is_set():
                assert (index.search(queries[:5], 10).ids >= 0).all()
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=search_meanwhile)
    reader.start()
    for a in range(20_000, 30_000, 1000):
        batch = np.arange(a, a + 1000)
        index.add(batch, vectors[batch])
        # searchable as soon as the write returns, splits pending or not
        assert (index.search(vectors[batch[:20]], 1).ids[:, 0] == batch[:20]).mean() >= 0.95
    assert index.wait_idle(timeout=120)
    stop.set()
    reader.join()
    assert not errors, errors
    stats = index.stats()
    assert stats["splits"] > 0 and stats["reassigned"] > 0
    assert stats["list_sizes"]["max"] <= index.max_list_size
    live = np.arange(30_000)
    after = recall_at_k(index.search(queries, 10).ids, truth_of(vectors, live, queries))
    assert after >= before - 0.02, (before, after)  # observed 0.99 -> 0.99
    gone = np.random.default_rng(0).choice(30_000, 6000, replace=False)
    index.delete(gone)
    live = np.setdiff1d(live, gone)
    res = index.search(queries, 10)
    assert not np.isin(res.ids, gone).any() and (res.ids >= 0).all()
    deleted = recall_at_k(res.ids, truth_of(vectors, live, queries))
    assert deleted >= before - 0.02, (before, deleted)
    files = stats["posting_file_bytes"]
    index.compact()
    assert index.stats()["posting_file_bytes"] < files
    assert recall_at_k(index.search(queries, 10).ids, truth_of(vectors, live, queries)) == deleted
    np.testing.assert_array_equal(index.get(live[:50]), vectors[live[:50]])


def test_long_insert_runs_compact_the_files_in_the_background(world):
    """Relocated and split lists leave dead runs in the posting files; once they outgrow twice
    the live records a split run compacts, so the files stay within ~3x their live size."""
    index = SpannIndex(dim=16, metric="l2", max_list_size=16)
    index.garbage_min = 2000
    index.add(np.arange(2000), world.vectors[:2000])
    for a in range(2000, 8000, 500):
        index.add(np.arange(a, a + 500), world.vectors[a : a + 500])
    assert index.wait_idle(timeout=120)
    stats = index.stats()
    records = stats["replication_factor"] * stats["live"]
    assert stats["splits"] > 0 and stats["garbage_records"] <= 2 * records + 2000, stats
    assert stats["posting_file_bytes"] <= 4 * records * 18 * 4
    live = np.arange(8000)
    res = index.search(world.queries, 10)
    assert recall_at_k(res.ids, truth_of(world.vectors, live, world.queries)) >= 0.9
    np.testing.assert_array_equal(index.get(live[::97]), world.vectors[live[::97]])


def test_reopen_round_trip_through_the_engine(tmp_path, world):
    path = tmp_path / "db"
    with shardwalk.Engine.open(path) as engine:
        col = engine.create_collection("s", dim=16, index="spann", maintenance="inline")
        col.upsert(np.arange(8000), world.vectors[:8000])
        col.flush()
        col.upsert(np.arange(8000, 9000), world.vectors[8000:9000])  # after the snapshot
        col.delete(np.arange(100))
        before_drain = col.search(world.queries, k=10)  # the new rows scored exactly
        assert (
            recall_at_k(
                before_drain.ids, truth_of(world.vectors, np.arange(100, 9000), world.queries)
            )
            >= 0.9
        )
        col.flush()  # the rows written last go into the index, as at the close
        before = col.search(world.queries, k=10)
    with shardwalk.Engine.open(path) as engine:
        col = engine.collection("s")
        after = col.search(world.queries, k=10)
        np.testing.assert_array_equal(before.ids, after.ids)
        np.testing.assert_array_equal(before.distances, after.distances)
        col.flush()  # a second checkpoint links the sealed generations again
    with shardwalk.Engine.open(path) as engine:
        col = engine.collection("s")
        np.testing.assert_array_equal(col.search(world.queries, k=10).ids, before.ids)
        np.testing.assert_array_equal(col.get([5000]).vectors[0], world.vectors[5000])
        explain = col.explain(world.queries[:3], k=10)
        assert explain.details["lists_probed"] >= 1 and explain.details["bytes_read"] > 0
        stats = col.stats()["index_stats"]
        assert stats["resident_bytes"] < stats["raw_vector_bytes"]


def test_resident_memory_below_15_percent_of_raw_at_200k():
    data = clustered_vectors(200_000, 32, queries=50, seed=2, metadata=False)
    index = SpannIndex(dim=32, metric="l2")
    index.add(np.arange(200_000), data.vectors)
    index.wait_idle()
    stats = index.stats()
    assert stats["raw_vector_bytes"] == 200_000 * 32 * 4
    # observed 0.095: centroids with their HNSW links (~210 bytes a list), the list table,
    # two bytes a row (at dimension 16 the same lists cost 0.16 of the raw bytes)
    assert stats["resident_ratio"] < 0.15, stats
    res = index.search(data.queries, 10)
    truth = exact_search(data.vectors, data.queries, 10, "l2").ids
    assert recall_at_k(res.ids, truth) >= 0.90


def test_a_truncated_posting_file_is_a_clear_error_on_open(tmp_path, world):
    index = SpannIndex(dim=16, metric="l2")
    index.add(np.arange(3000), world.vectors[:3000])
    index.save(str(tmp_path))
    (posting,) = [p for p in os.listdir(tmp_path) if p.startswith("postings-")]
    SpannIndex.load(str(tmp_path))  # intact: opens
    size = os.path.getsize(tmp_path / posting)
    os.truncate(tmp_path / posting, size - 100)
    with pytest.raises(CorruptionError, match=r"posting file .* truncated; restore"):
        SpannIndex.load(str(tmp_path))
    os.remove(tmp_path / posting)
    with pytest.raises(CorruptionError, match="missing"):
        SpannIndex.load(str(tmp_path))


def test_edge_cases(world):
    # smaller than one list
    index = SpannIndex(dim=16, metric="l2")
    index.add(np.array([4, 9]), world.vectors[:2])
    res = index.search(world.queries[:3], 5)
    assert (np.sort(res.ids[:, :2], axis=1) == [4, 9]).all() and (res.ids[:, 2:] == -1).all()
    # all identical vectors: every list holds copies; exact answers still come back
    same = np.repeat(world.vectors[:1], 2000, axis=0)
    index = SpannIndex(dim=16, metric="l2")
    index.add(np.arange(2000), same)
    res = index.search(same[:2], 30)
    assert (res.ids >= 0).all() and np.allclose(res.distances, 0, atol=1e-4)
    assert len(set(res.ids[0].tolist())) == 30  # replicas merged
    # a query far from every centroid, and k above the collection's size
    index = SpannIndex(dim=16, metric="l2")
    index.add(np.arange(5000), world.vectors[:5000])
    far = world.vectors[:1] + 1e4
    res = index.search(far, 10)
    truth = exact_search(world.vectors[:5000], far, 10, "l2").ids
    assert recall_at_k(res.ids, truth) >= 0.9
    res = index.search(world.queries[:2], 6000)
    assert (res.ids[:, :5000] >= 0).all() and (res.ids[:, 5000:] == -1).all()
    assert len(set(res.ids[0, :5000].tolist())) == 5000


def test_parameters_are_validated():
    engine = shardwalk.Engine.memory()
    with pytest.raises(InvalidArgumentError, match=r"eps_search must be in \[0.0, 1000.0\]"):
        engine.create_collection("a", dim=4, index="spann", eps_search=-1)
    with pytest.raises(InvalidArgumentError, match="maintenance must be one of"):
        engine.create_collection("b", dim=4, index="spann", maintenance="later")
    col = engine.create_collection("c", dim=4, index="spann")
    col.upsert([1, 2], np.ones((2, 4)))
    with pytest.raises(InvalidArgumentError, match="max_probes must be in"):
        col.search(np.ones(4), k=1, max_probes=0)
