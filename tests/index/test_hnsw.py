"""HNSWIndex on faiss: labels that are not positions, the zero-copy store, per-call ef."""

from __future__ import annotations

import numpy as np
import pytest
from shardwalk.index import HNSWIndex, exact_search
from shardwalk.index.store import IndexStore


@pytest.fixture()
def vectors():
    return np.random.default_rng(5).standard_normal((600, 16)).astype(np.float32)


def test_labels_in_order_are_positions_and_the_store_views_faiss(vectors):
    index = HNSWIndex(dim=16, metric="l2", m=8, ef_construction=64, threads=1)
    index.add(np.arange(300), vectors[:300])
    assert isinstance(index.store, IndexStore) and index._position is None
    view = index.store.segments(np.arange(300))[0][0]
    assert not view.flags.owndata  # faiss's storage, not a copy
    index.add(np.arange(300, 600), vectors[300:])  # faiss grows (reallocates) its storage
    np.testing.assert_array_equal(index.store.take(np.arange(600)), vectors)
    np.testing.assert_array_equal(index.get(np.array([599, 0])), vectors[[599, 0]])


def test_other_labels_are_mapped_and_survive_save_and_load(tmp_path, vectors):
    index = HNSWIndex(dim=16, metric="l2", m=8, ef_construction=64, threads=1)
    labels = np.arange(600) * 7 + 3
    index.add(labels[:200], vectors[:200])
    index.add(labels[200:], vectors[200:])
    found = index.search(vectors[:50], 1).ids[:, 0]
    assert (found == labels[:50]).mean() >= 0.98
    np.testing.assert_array_equal(index.get(labels[[5, 400]]), vectors[[5, 400]])
    # a label added again: the old vector is never returned, the new one is
    index.add(labels[:1], vectors[599:600] + 10)
    index.delete(labels[1:2])
    assert len(index) == 599
    res = index.search(vectors[:2], 5)
    assert labels[1] not in res.ids and res.ids[0, 0] != labels[0]
    np.testing.assert_array_equal(index.get(labels[:1]), vectors[599:600] + 10)
    index.save(str(tmp_path))
    back = HNSWIndex.load(str(tmp_path))
    np.testing.assert_array_equal(
        back.search(vectors[:20], 5).ids, index.search(vectors[:20], 5).ids
    )
    np.testing.assert_array_equal(back.get(labels[[0, 300]]), index.get(labels[[0, 300]]))


def test_tombstones_never_come_back_and_never_leave_a_shortfall(vectors):
    index = HNSWIndex(dim=16, metric="ip", m=8, ef_construction=64, threads=1)
    index.add(np.arange(600), vectors)
    index.delete(np.arange(0, 590))  # the graph is nearly all tombstones
    res = index.search(vectors[:5], 10, ef=10)
    assert (res.ids >= 590).all()  # the 10 live ones, found exactly when the graph cannot
    truth = exact_search(vectors[590:], vectors[:5], 10, "ip")
    np.testing.assert_allclose(res.distances, truth.distances, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_a_search_cut_short_by_tombstones_goes_deeper_and_never_copies_the_vectors(
    monkeypatch, vectors, metric
):
    """Most rows deleted: a search at a small ef comes back short; it is searched again with a
    larger ef (the graph keeps deleted nodes as waypoints), and still returns the exact top-k
    of the live rows, without scoring a copy of every live vector (issue 26.2)."""
    import shardwalk.index.hnsw_graph as hnsw

    def no_copy(*args, **kwargs):
        raise AssertionError("the tombstone fallback copied the live vectors into exact_search")

    monkeypatch.setattr(hnsw, "exact_search", no_copy, raising=False)
    base = vectors / np.linalg.norm(vectors, axis=1, keepdims=True) if metric == "ip" else vectors
    index = HNSWIndex(dim=16, metric=metric, m=8, ef_construction=64, ef=10, threads=1)
    index.add(np.arange(600), base)
    dead = np.random.default_rng(6).permutation(600)[:590]
    index.delete(dead)
    live = np.setdiff1d(np.arange(600), dead)  # 10 left: every one of them is the answer
    queries = np.random.default_rng(7).standard_normal((20, 16)).astype(np.float32)
    for batch in (queries, queries[:1]):
        found = index.search(batch, 10, ef=10)
        truth = exact_search(base[live], batch, 10, metric)
        for row in found.ids:
            assert sorted(row.tolist()) == live.tolist()
        np.testing.assert_allclose(found.distances, truth.distances, rtol=1e-4, atol=1e-4)


def test_tombstones_set_in_place_track_every_add_and_delete(vectors):
    """Once some position is a tombstone, adds and deletes change the live bitmap in place
    (the selector and its cached search parameters stay); interleaved, every search returns
    live labels only, each live vector its own nearest, and the bitmap matches liveness
    after it outgrows its room."""
    rng = np.random.default_rng(8)
    index = HNSWIndex(dim=16, metric="l2", m=8, ef_construction=64, threads=1)
    index.add(np.arange(100), vectors[:100])
    live = set(range(100))
    next_label = 100
    for step in range(40):
        doomed = rng.choice(sorted(live), size=3, replace=False)
        index.delete(doomed)
        live -= set(doomed.tolist())
        new = np.arange(next_label, next_label + 10)
        index.add(new, vectors[new % 600] + step)  # apart from the earlier copies
        live |= set(new.tolist())
        next_label += 10
        probe = np.array(sorted(live))[:: max(1, len(live) // 20)]
        found = index.search(index.get(probe), 1, ef=64).ids[:, 0]
        assert (found == probe).mean() >= 0.95
        res = index.search(vectors[:5], 10)
        assert set(res.ids.ravel().tolist()) <= live
    graph = index._graph
    bits = np.unpackbits(graph.marks().bits, bitorder="little")[: graph.slots].astype(bool)
    np.testing.assert_array_equal(bits, graph.alive())
    assert len(index) == len(live)


def test_a_delete_leaves_the_tombstones_a_search_started_with():
    """Deletes copy the tombstones (a search beside one reads one consistent set): a search
    given the marks from before a delete still returns its rows, one with the current marks
    never does; an insert, which excludes searches, sets its rows live in the current marks."""
    rng = np.random.default_rng(4)
    vectors = rng.random((300, 16), dtype=np.float32)
    index = HNSWIndex(dim=16, metric="l2", m=8, ef_construction=40)
    index.add(np.arange(200), vectors[:200])
    untouched = index.marks()
    index.delete(np.arange(0, 200, 2))
    first = index.marks()
    index.delete(np.arange(1, 100, 2))
    assert untouched.bits is None and untouched.live == 200
    assert first.live == 100 and index.marks().live == 50
    probe = vectors[:100]
    np.testing.assert_array_equal(
        index.search(probe, 1, ef=200, marks=untouched).ids[:, 0], np.arange(100)
    )
    found = index.search(probe, 1, ef=200, marks=first).ids[:, 0]
    np.testing.assert_array_equal(found[1::2], np.arange(1, 100, 2))
    assert (found[::2] % 2 == 1).all()
    assert (index.search(probe, 1, ef=200).ids[:, 0] >= 100).all()
    index.add(np.arange(200, 300), vectors[200:])
    assert index.marks().live == 150
    np.testing.assert_array_equal(
        index.search(vectors[200:], 1, ef=200).ids[:, 0], np.arange(200, 300)
    )
