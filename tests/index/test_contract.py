"""One contract, every index kind, in memory and on disk."""

from __future__ import annotations

import numpy as np
import pytest
from shardwalk.index import exact_search

import shardwalk
from shardwalk import InvalidArgumentError, NotFoundError, ResourceExhaustedError

from ..conftest import INDEX_KINDS, INDEX_PARAMS, recall_at_k

pytestmark = pytest.mark.parametrize("kind", INDEX_KINDS)


def make(engine, kind, data, metric="l2", name="docs"):
    col = engine.create_collection(
        name, dim=data.vectors.shape[1], metric=metric, index=kind, **INDEX_PARAMS[kind]
    )
    col.upsert(data.ids, data.vectors, tenants=data.tenants, attributes=data.attributes)
    # recall and rankings are compared below: every row in the index, none left in the write
    # delta (scored exactly, so a search's answer would depend on the indexer's progress)
    col.wait_indexed()
    return col


def test_shapes_dtypes_and_padding(engine, kind, data):
    col = engine.create_collection("small", dim=32, index=kind, **INDEX_PARAMS[kind])
    col.upsert([10, 20, 30], data.vectors[:3])
    res = col.search(data.queries[:4], k=5)
    assert res.ids.shape == (4, 5) and res.ids.dtype == np.int64
    assert res.distances.shape == (4, 5) and res.distances.dtype == np.float32
    assert (res.ids[:, 3:] == -1).all() and np.isinf(res.distances[:, 3:]).all()
    assert set(res.ids[0, :3].tolist()) == {10, 20, 30}
    assert (np.diff(res.distances[:, :3], axis=1) >= 0).all()
    one = col.search(data.queries[0], k=2)  # a 1-D query is one query
    assert one.ids.shape == (1, 2)


def test_empty_collection_pads_everything(engine, kind):
    col = engine.create_collection("empty", dim=4, index=kind)
    res = col.search(np.ones((2, 4)), k=3)
    assert (res.ids == -1).all() and np.isinf(res.distances).all()
    assert len(col) == 0


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_recall_at_10_against_exact(engine, kind, data, metric):
    col = make(engine, kind, data, metric=metric)
    base, queries = data.vectors, data.queries
    index_metric = "l2" if metric == "l2" else "ip"
    if metric == "cosine":
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    truth = exact_search(base, queries, 10, index_metric)
    res = col.search(data.queries, k=10)
    recall = recall_at_k(res.ids, data.ids[truth.ids])
    # observed at defaults on this seeded data (4000 x 32): flat 1.0, hnsw ~0.99-1.0,
    # partitioned ~1.0 (every metric)
    assert recall >= 0.95, f"{kind}/{metric}: recall@10 {recall:.4f}"
    # distances follow the documented convention: each returned id's own exact distance
    # (an approximate index may miss a query's true top-1: faiss HNSW on unnormalised ip
    # data misses 1 of 200 here, as hnswlib did on other seeds)
    position = {int(i): p for p, i in enumerate(data.ids)}
    got = base[[position[int(i)] for i in res.ids[:, 0]]]
    if index_metric == "l2":
        own = ((queries - got) ** 2).sum(axis=1)
    else:
        own = 1.0 - (queries * got).sum(axis=1)
    np.testing.assert_allclose(res.distances[:, 0], own, rtol=1e-3, atol=1e-3)
    top1 = np.isclose(res.distances[:, 0], truth.distances[:, 0], rtol=1e-3, atol=1e-3)
    assert top1.mean() >= 0.99, f"{kind}/{metric}: true top-1 found for {top1.mean():.3f}"


def test_deleted_ids_are_never_returned_and_upsert_replaces(engine, kind, data):
    col = make(engine, kind, data)
    first = col.search(data.queries, k=10).ids
    gone = np.unique(first[:, :3])
    assert col.delete(gone) == gone.size
    after = col.search(data.queries, k=10)
    assert not np.isin(after.ids, gone).any()
    assert len(col) == data.ids.size - gone.size
    # every query still gets k live results (no silent shortfall)
    assert (after.ids >= 0).all()

    # upsert an existing id with a new vector: found at the new place only
    target = int(data.ids[-1])
    new_vec = data.queries[0] + 1e-3
    col.upsert([target], new_vec[None, :], tenants="moved", attributes={"year": [1900]})
    res = col.search(data.queries[:1], k=1)
    assert res.ids[0, 0] == target
    rec = col.get([target])
    np.testing.assert_allclose(rec.vectors[0], new_vec, rtol=1e-6)
    assert rec.tenants == ["moved"] and rec.attributes["year"] == [1900]
    assert len(col) == data.ids.size - gone.size
    # the old vector of target no longer matches it
    res_old = col.search(data.vectors[-1:], k=3).ids[0]
    assert target not in res_old.tolist() or col.get([target]).vectors[0][0] == new_vec[0]


def test_k_larger_than_collection_pads(engine, kind, data):
    col = engine.create_collection("few", dim=32, index=kind, **INDEX_PARAMS[kind])
    col.upsert(np.arange(7), data.vectors[:7])
    col.delete([3])
    res = col.search(data.queries[:2], k=50)
    assert (res.ids[:, :6] >= 0).all() and (res.ids[:, 6:] == -1).all()
    assert sorted(res.ids[0, :6].tolist()) == [0, 1, 2, 4, 5, 6]


def test_reopen_returns_exactly_the_same_results(tmp_path, kind, data):
    path = tmp_path / "db"
    with shardwalk.Engine.open(path) as eng:
        col = make(eng, kind, data)
        col.delete(data.ids[:50])
        col.upsert(data.ids[100:110], data.vectors[:10])
        # the rows written last go into the index (as the close's checkpoint does): until
        # then they wait in the delta, scored exactly, where an approximate index may differ
        col.flush()
        before = col.search(data.queries, k=10)
        stats = col.stats()
    with shardwalk.Engine.open(path) as eng:
        col = eng.collection("docs")
        after = col.search(data.queries, k=10)
        np.testing.assert_array_equal(before.ids, after.ids)
        np.testing.assert_array_equal(before.distances, after.distances)
        assert len(col) == stats["count"]
        assert col.get([105]).attributes["year"] == [None]
        assert col.get([200]).attributes["year"] == [data.attributes["year"][200]]


def test_reopen_replays_the_log_without_a_checkpoint(tmp_path, kind, data):
    """Writes acknowledged but never checkpointed come back from the write-ahead log."""
    path = tmp_path / "db"
    eng = shardwalk.Engine.open(path)
    col = make(eng, kind, data)
    col.delete(data.ids[:5])
    before = col.search(data.queries, k=10)
    # simulate a crash: release the lock without close() (no checkpoint)
    eng._datadir.close()
    with shardwalk.Engine.open(path) as eng2:
        col2 = eng2.collection("docs")
        assert col2.stats()["snapshot"] is None
        after = col2.search(data.queries, k=10)
        assert len(col2) == data.ids.size - 5
        # the replayed index is rebuilt by the same inserts: same neighbours up to HNSW's
        # thread-order nondeterminism
        assert recall_at_k(after.ids, before.ids) >= 0.97


def test_errors_and_messages(engine, kind, data):
    col = engine.create_collection("e", dim=8, index=kind, **INDEX_PARAMS[kind])
    good = np.ones((2, 8), dtype=np.float32)
    col.upsert([1, 2], good)

    def raises(exc, match, fn, *a, **kw):
        with pytest.raises(exc, match=match):
            fn(*a, **kw)

    raises(
        InvalidArgumentError,
        r"queries have dimension 7; collection 'e' expects 8",
        col.search,
        np.ones((1, 7)),
    )
    raises(
        InvalidArgumentError,
        r"vectors have dimension 9; collection 'e' expects 8",
        col.upsert,
        [3],
        np.ones((1, 9)),
    )
    raises(InvalidArgumentError, r"must be numeric", col.upsert, [3], np.array([["a"] * 8]))
    raises(
        InvalidArgumentError,
        r"NaN or infinite values .* rows 1",
        col.upsert,
        [3, 4],
        np.array([[0] * 8, [np.nan] * 8]),
    )
    raises(InvalidArgumentError, r"NaN or infinite", col.search, np.full((1, 8), np.inf))
    raises(InvalidArgumentError, r"ids is empty", col.upsert, [], np.ones((0, 8)))
    raises(
        InvalidArgumentError,
        r"vectors is empty|vectors has 0 rows",
        col.upsert,
        [5],
        np.ones((0, 8)),
    )
    raises(InvalidArgumentError, r"duplicates: 3", col.upsert, [3, 3], np.ones((2, 8)))
    raises(InvalidArgumentError, r"has 1 rows; expected 2", col.upsert, [3, 4], np.ones((1, 8)))
    raises(InvalidArgumentError, r"must be integers", col.upsert, ["a"], np.ones((1, 8)))
    raises(
        InvalidArgumentError,
        r"must be non-negative int64 \(-1 marks padding",
        col.upsert,
        [-1],
        np.ones((1, 8)),
    )
    raises(InvalidArgumentError, r"k must be a positive integer; got 0", col.search, good, k=0)
    raises(InvalidArgumentError, r"k must be a positive integer; got -1", col.search, good, k=-1)
    raises(InvalidArgumentError, r"k must be a positive integer; got 2.5", col.search, good, k=2.5)
    raises(ResourceExhaustedError, r"k=1000000000 is above the limit", col.search, good, k=10**9)
    raises(NotFoundError, r"collection 'e' has no ids 99", col.get, [1, 99])
    raises(NotFoundError, r"has no ids 99, 98; nothing was deleted", col.delete, [1, 99, 98])
    assert len(col) == 2  # nothing was deleted
    assert col.delete([1, 99], missing_ok=True) == 1
    raises(
        InvalidArgumentError,
        r"attribute 'x' has type",
        col.upsert,
        [7],
        good[:1],
        attributes={"x": [{"a": 1}]},
    )
    raises(InvalidArgumentError, r"reserved", col.upsert, [7], good[:1], attributes={"_id": [1]})
    col.upsert([7], good[:1], attributes={"year": [2020]})
    raises(
        InvalidArgumentError,
        r"attribute 'year' holds int64 in this collection; got string",
        col.upsert,
        [8],
        good[:1],
        attributes={"year": ["x"]},
    )
    unknown = {
        "flat": ("ef", "none"),
        "hnsw": ("nprobe", "ef"),
        "partitioned": ("candidates", "ef, nprobe"),
        "multitenant": ("ef", "candidates, nprobe"),
        "spann": ("nprobe", "ef, eps_search, max_probes"),
    }[kind]
    raises(
        InvalidArgumentError,
        rf"unknown parameter '{unknown[0]}' for search on a '{kind}' index; known parameters: {unknown[1]}",
        col.search,
        good,
        **{unknown[0]: 3},
    )
