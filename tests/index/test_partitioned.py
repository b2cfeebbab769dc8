"""Balanced k-means and the partitioned index beyond the common contract."""

from __future__ import annotations

import numpy as np
import pytest
from shardwalk.index import PartitionedIndex, exact_search
from shardwalk.index._kernels import capacity_assign
from shardwalk.index.kmeans import balanced_kmeans

from ..conftest import recall_at_k


def capacity_assign_reference(order, nearest, n_parts, capacity):
    assign = np.full(nearest.shape[0], -1)
    sizes = np.zeros(n_parts, dtype=int)
    for flat in order:
        point, rank = divmod(int(flat), n_parts)
        part = nearest[point, rank]
        if assign[point] < 0 and sizes[part] < capacity:
            assign[point] = part
            sizes[part] += 1
    return assign


@pytest.mark.parametrize("seed", range(5))
def test_capacity_assign_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n, parts = 200, 5
    distances = rng.random((n, parts))
    nearest = np.argsort(distances, axis=1).astype(np.int32)
    sorted_d = np.take_along_axis(distances, nearest, axis=1)
    order = np.argsort(sorted_d, axis=None, kind="stable")
    capacity = int(np.ceil(n / parts * 1.05))
    got = capacity_assign(order, nearest, parts, capacity)
    np.testing.assert_array_equal(got, capacity_assign_reference(order, nearest, parts, capacity))
    assert (got >= 0).all() and np.bincount(got).max() <= capacity


def test_balanced_kmeans_sizes_are_near_equal_on_skewed_data(data):
    centroids, assignment = balanced_kmeans(data.vectors, 8, seed=1)
    sizes = np.bincount(assignment, minlength=8)
    assert centroids.shape == (8, 32)
    assert sizes.max() <= np.ceil(data.vectors.shape[0] / 8 * 1.05)
    assert sizes.min() >= 0.5 * data.vectors.shape[0] / 8, sizes


def test_nprobe_trades_recall_for_work(data):
    index = PartitionedIndex(dim=32, metric="l2", partitions=8)
    index.add(np.arange(data.vectors.shape[0]), data.vectors)
    truth = exact_search(data.vectors, data.queries, 10, "l2").ids
    recalls = [
        recall_at_k(index.search(data.queries, 10, nprobe=p).ids, truth) for p in (1, 2, 4, 8)
    ]
    assert recalls == sorted(recalls), recalls  # monotone in nprobe
    assert recalls[-1] >= 0.95 and recalls[0] >= 0.5, recalls  # observed ~[0.8, 0.95, 0.99, 1.0]
    full = index.search(data.queries, 10)
    np.testing.assert_array_equal(index.search(data.queries, 10, nprobe=8).ids, full.ids)


def test_training_from_staged_batches_or_one_batch(data):
    one = PartitionedIndex(dim=32, metric="l2", partitions=4, train_size=1000)
    one.add(np.arange(4000), data.vectors)
    staged = PartitionedIndex(dim=32, metric="l2", partitions=4, train_size=1000)
    for start in range(0, 4000, 300):  # trains when the 4th batch crosses 1000
        staged.add(np.arange(start, min(4000, start + 300)), data.vectors[start : start + 300])
        assert staged.trained == (start + 300 >= 1000)
    assert len(one) == len(staged) == 4000
    truth = exact_search(data.vectors, data.queries, 10, "l2").ids
    for index in (one, staged):
        assert recall_at_k(index.search(data.queries, 10).ids, truth) >= 0.95
        assert sum(index.stats()["partition_sizes"]) == 4000
