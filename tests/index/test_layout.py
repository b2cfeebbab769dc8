"""The physical layout of vectors: a store rearranged in place keeps every row's vector, and a
multi-tenant index keeps its rows laid out by leaf and owner through inserts and reloads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shardwalk.index._kernels import scan_rows
from shardwalk.index.store import VectorStore
from shardwalk.index.tenancy import TREE_MIN_LEAVES, MultiTenantIndex

from shardwalk.datasets import clustered_vectors


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.integers(1, 300), min_size=1, max_size=5),
    seed=st.integers(0, 2**16),
)
def test_store_keeps_every_rows_vector_through_rearrangements(batches, seed):
    rng = np.random.default_rng(seed)
    store = VectorStore(3)
    reference = np.zeros((0, 3), dtype=np.float32)
    for size in batches:
        vectors = rng.standard_normal((size, 3)).astype(np.float32)
        rows = store.extend(vectors)
        np.testing.assert_array_equal(rows, np.arange(reference.shape[0], len(store)))
        reference = np.vstack([reference, vectors])
        if rng.random() < 0.7:
            store.arrange(rng.permutation(len(store)))
        everything = np.arange(len(store))
        np.testing.assert_array_equal(store.take(everything), reference)
        np.testing.assert_array_equal(store.physical()[store.positions(everything)], reference)
        assert sorted(store.row_positions().tolist()) == everything.tolist()


def test_arrange_rejects_a_wrong_permutation_size():
    store = VectorStore(2, np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="permutation of all 4 rows"):
        store.arrange(np.arange(3))


def _check_layout(index: MultiTenantIndex, groups: np.ndarray) -> None:
    """Rows arranged so far sit leaf by leaf, then group by group."""
    n = index._arranged_at
    at = np.argsort(index.store.row_positions())[:n]  # row at each position
    key = index._leaf_of[at].astype(np.int64) * (groups.max() + 2) + groups[at]
    assert np.all(np.diff(key) >= 0)


@pytest.mark.parametrize("quantization", ["none", "sq8"])
def test_multitenant_layout_through_inserts_and_reload(tmp_path, quantization):
    data = clustered_vectors(12_000, 16, queries=40, seed=3, metadata=False)
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 30, data.vectors.shape[0]).astype(np.int32)
    index = MultiTenantIndex(dim=16, metric="l2", train_size=3000, quantization=quantization)
    start = 0
    for size in [2000, 2000, 3000, 1000, 4000]:  # clusters at 3000, re-lays out as rows arrive
        end = start + size
        index.add(np.arange(start, end), data.vectors[start:end], groups=groups[start:end])
        start = end
        np.testing.assert_array_equal(index.get(np.arange(end)), data.vectors[:end])
        if index.trained:
            _check_layout(index, groups)
    assert index._arranged_at > 3000  # laid out again after the first clustering
    index.delete(np.arange(0, 12_000, 7))
    alive = np.ones(12_000, bool)
    alive[::7] = False
    for group in [0, 17]:
        mask = alive & (groups == group)
        rows = np.flatnonzero(mask)
        found = index.search(data.queries, 10, rows=np.flatnonzero(groups == group), allowed=mask)
        local, _ = scan_rows(data.queries, data.vectors, rows, 10, False)
        truth = rows[local]
        assert np.all(mask[found.ids])
        recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.ids, truth)])
        assert recall >= 0.95, recall  # observed 1.0
    index.save(str(tmp_path))
    again = MultiTenantIndex.load(str(tmp_path))
    np.testing.assert_array_equal(again.get(np.arange(12_000)), data.vectors)
    np.testing.assert_array_equal(
        again.search(data.queries, 10).ids, index.search(data.queries, 10).ids
    )


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_two_level_tree_finds_the_closest_leaves_and_survives_reload(tmp_path, metric):
    """Above TREE_MIN_LEAVES leaves a search ranks top nodes first; a search that needs every
    leaf still visits each exactly once (exact results, no duplicates)."""
    data = clustered_vectors(30_000, 16, queries=40, seed=4, metadata=False)
    vectors = data.vectors
    if metric == "ip":
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    groups = np.random.default_rng(2).integers(0, 3, vectors.shape[0]).astype(np.int32)
    leaves = TREE_MIN_LEAVES + 144
    index = MultiTenantIndex(dim=16, metric=metric, leaves=leaves, train_size=20_000)
    index.add(np.arange(20_000), vectors[:20_000], groups=groups[:20_000])
    index.add(np.arange(20_000, 30_000), vectors[20_000:], groups=groups[20_000:])
    assert index._top_of is not None and np.all(np.diff(index._top_of) >= 0)
    ip = metric == "ip"
    for group in [None, 1]:
        rows = np.arange(30_000) if group is None else np.flatnonzero(groups == group)
        mask = np.zeros(30_000, bool)
        mask[rows] = True
        local, _ = scan_rows(data.queries, vectors, rows, 10, ip)
        truth = rows[local]
        kw = {} if group is None else {"rows": rows, "rows_key": group, "allowed": mask}
        found = index.search(data.queries, 10, **kw).ids
        recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
        assert recall >= 0.95, recall  # observed 0.99-1.0
        everything = index.search(data.queries, 10, candidates=30_000, **kw).ids
        np.testing.assert_array_equal(np.sort(everything, axis=1), np.sort(truth, axis=1))
    index.save(str(tmp_path))
    again = MultiTenantIndex.load(str(tmp_path))
    np.testing.assert_array_equal(again._top_of, index._top_of)
    np.testing.assert_array_equal(
        again.search(data.queries, 10).ids, index.search(data.queries, 10).ids
    )
