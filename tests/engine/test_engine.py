import os
import pickle

import numpy as np
import pytest

import shardwalk
from shardwalk import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)


def test_create_list_get_drop(engine):
    a = engine.create_collection("a", dim=4)
    engine.create_collection("b", dim=4, metric="cosine", index="flat")
    assert engine.collections() == ["a", "b"]
    assert engine.collection("a") is a
    engine.drop_collection("a")
    assert engine.collections() == ["b"]
    with pytest.raises(FailedPreconditionError, match="collection 'a' was dropped"):
        a.search(np.ones(4))
    with pytest.raises(NotFoundError, match=r"no collection 'a'; collections: 'b'"):
        engine.collection("a")
    with pytest.raises(NotFoundError, match="no collection 'zzz' to drop"):
        engine.drop_collection("zzz")


def test_bad_collection_arguments(engine):
    with pytest.raises(
        InvalidArgumentError, match=r"metric must be one of 'l2', 'ip', 'cosine'; got 'l3'"
    ):
        engine.create_collection("x", dim=4, metric="l3")
    with pytest.raises(
        InvalidArgumentError,
        match=r"index must be one of 'flat', 'hnsw', 'partitioned', 'multitenant', 'spann'; got 'ivf'",
    ):
        engine.create_collection("x", dim=4, index="ivf")
    with pytest.raises(
        InvalidArgumentError, match=r"dim must be an integer in \[1, 65536\]; got 0"
    ):
        engine.create_collection("x", dim=0)
    with pytest.raises(
        InvalidArgumentError,
        match=r"unknown parameter 'M' for index 'hnsw'; known parameters: ef, ef_construction, m, seed, threads",
    ):
        engine.create_collection("x", dim=4, M=16)
    with pytest.raises(InvalidArgumentError, match=r"parameter m must be in \[2, 256\]; got 1"):
        engine.create_collection("x", dim=4, m=1)
    with pytest.raises(
        InvalidArgumentError, match=r"parameter partitions must be an integer; got 'four'"
    ):
        engine.create_collection("x", dim=4, index="partitioned", partitions="four")
    with pytest.raises(InvalidArgumentError, match="collection name must be"):
        engine.create_collection("../evil", dim=4)
    engine.create_collection("x", dim=4)
    with pytest.raises(AlreadyExistsError, match="collection 'x' already exists"):
        engine.create_collection("x", dim=4)


def test_cosine_rejects_zero_vectors(engine):
    col = engine.create_collection("c", dim=3, metric="cosine")
    with pytest.raises(InvalidArgumentError, match="all zeros; cosine distance needs non-zero"):
        col.upsert([1], np.zeros((1, 3)))


def test_closed_engine_refuses_work(tmp_path):
    eng = shardwalk.Engine.open(tmp_path / "db")
    col = eng.create_collection("a", dim=2)
    eng.close()
    eng.close()  # idempotent
    with pytest.raises(FailedPreconditionError, match="the engine is closed"):
        eng.collections()
    with pytest.raises(FailedPreconditionError, match="belongs to a closed engine"):
        col.upsert([1], np.ones((1, 2)))


def test_data_directory_has_one_owner(tmp_path):
    with shardwalk.Engine.open(tmp_path / "db"):
        with pytest.raises(
            FailedPreconditionError, match="already open by an Engine in this process"
        ):
            shardwalk.Engine.open(tmp_path / "db")
    with shardwalk.Engine.open(tmp_path / "db"):  # released on close
        pass


def test_thread_budget_is_an_engine_option(tmp_path):
    for bad in (0, 1.5, "4"):
        with pytest.raises(
            InvalidArgumentError, match=r"threads must be an integer in \[1, 1024\]"
        ):
            shardwalk.Engine.open(tmp_path / "db", threads=bad)
    with shardwalk.Engine.open(tmp_path / "db", threads=3) as eng:  # the refusals took nothing
        assert eng.threads == 3 and eng.budget.stats()["threads"] == 3
    with shardwalk.Engine.memory() as eng:
        assert eng.threads == len(os.sched_getaffinity(0))
    with shardwalk.Engine.memory(threads=1) as eng:
        assert eng.threads == 1


def test_search_result_unpacks_and_pickles(engine):
    col = engine.create_collection("a", dim=2, index="flat")
    col.upsert([5], [[1.0, 0.0]])
    ids, distances = col.search([1.0, 0.0], k=1)
    assert ids.tolist() == [[5]] and distances.tolist() == [[0.0]]
    again = pickle.loads(pickle.dumps(col.search([1.0, 0.0], k=1)))
    assert again.ids.tolist() == [[5]]


def test_stats_are_json_ready(engine, data):
    import json

    col = engine.create_collection("s", dim=32, index="partitioned", partitions=2)
    col.upsert(data.ids, data.vectors, attributes=data.attributes)
    col.flush()  # the index holds every row (not only the rows it indexed so far)
    stats = col.stats()
    json.dumps(stats)
    assert stats["count"] == data.ids.size
    assert sum(stats["index_stats"]["partition_sizes"]) == data.ids.size
    assert stats["attributes"] == {
        "year": "int64",
        "score": "double",
        "lang": "string",
        "tags": "list<item: string>",
    }


def test_compact_drops_dead_rows_and_keeps_results(engine, data):
    col = engine.create_collection("c", dim=32, index="hnsw")
    col.compaction_threshold = None  # this test compacts itself (the background's: test_compaction)
    col.upsert(data.ids, data.vectors, tenants=data.tenants)
    col.delete(data.ids[::2])
    col.upsert(data.ids[1:100:2], data.vectors[1:100:2])
    col.wait_indexed()  # rankings compared across the compaction: none from the delta's scan
    before = col.search(data.queries, k=5).ids
    assert col.stats()["dead_rows"] > 0
    col.compact()
    assert col.stats()["dead_rows"] == 0 and len(col) == data.ids.size // 2
    after = col.search(data.queries, k=5).ids
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(before, after)]) >= 0.95
    assert col.get([101]).tenants == [data.tenants[101]]  # untouched
    assert col.get([1]).tenants == [None]  # re-upserted without a tenant


def test_an_attribute_first_seen_empty_takes_its_type_later(engine):
    col = engine.create_collection("a", dim=2, index="flat")
    col.upsert([1], [[0.0, 1.0]], attributes={"year": [None]})
    assert col.search([0.0, 1.0], k=1, where=shardwalk.F("year") > 3).ids[0, 0] == -1
    col.upsert([2], [[0.0, 1.0]], attributes={"year": [2020]})
    col.upsert([3], [[0.0, 1.0]], attributes={"year": [None]})
    assert col.stats()["attributes"] == {"year": "int64"}
    assert col.search([0.0, 1.0], k=3, where=shardwalk.F("year") > 3).ids[0].tolist() == [2, -1, -1]
    with pytest.raises(InvalidArgumentError, match="holds int64 in this collection; got string"):
        col.upsert([4], [[0.0, 1.0]], attributes={"year": ["x"]})
