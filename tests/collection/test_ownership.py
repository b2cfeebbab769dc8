"""Ids namespaced by owner (a row's key is (owner, id): a write lands in its owner's namespace
where the group commits, so writers of one id never touch each other's rows; tenant reads see
one row per id; the log and snapshots keep the namespaces) and declared attribute schemas
(kept with the collection, types fixed for every writer)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pytest

import shardwalk
from shardwalk import collection_persistence
from shardwalk.errors import InvalidArgumentError


def _race(collection, id_: int, tenants: list[str]) -> dict[str, str]:
    """Each tenant upserts ``id_`` (new) at once, behind a barrier; tenant -> outcome."""
    barrier = threading.Barrier(len(tenants))
    outcome: dict[str, str] = {}

    def write(tenant: str, value: float) -> None:
        barrier.wait()
        try:
            collection.upsert([id_], np.full((1, 4), value), tenant=tenant)
            outcome[tenant] = "written"
        except Exception as exc:  # reported, not raised in the thread
            outcome[tenant] = repr(exc)

    threads = [threading.Thread(target=write, args=(t, i)) for i, t in enumerate(tenants)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome


def test_concurrent_writers_of_one_new_id_each_write_their_own_row(tmp_path) -> None:
    """Issue 20, item 4, with ids namespaced by owner: the writers of one new id race, and each
    gets a row of its own, untouched by the others (and the log replays the same)."""
    tenants = ["a", "b", "c"]
    with shardwalk.Engine.open(tmp_path / "data") as engine:
        docs = engine.create_collection("docs", dim=4, index="flat")
        for id_ in range(60):
            outcome = _race(docs, id_, tenants)
            assert outcome == dict.fromkeys(tenants, "written"), outcome
            for value, tenant in enumerate(tenants):
                mine = docs.get([id_], tenant=tenant)
                assert mine.tenants == [tenant] and mine.vectors[0, 0] == value
            everyone = docs.get([id_])  # an admin's get: every owner's row, by owner name
            assert everyone.tenants == tenants and everyone.ids.tolist() == [id_] * 3
        assert len(docs) == 180
    with shardwalk.Engine.open(tmp_path / "data") as engine:  # the log agrees
        docs = engine.collection("docs")
        assert len(docs) == 180
        assert docs.get([59], tenant="b").vectors[0, 0] == 1


def _wait_for(condition) -> None:
    """Until ``condition()`` holds (a guard against a hang, not a timing assertion)."""
    give_up = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < give_up, "the writer never queued"
        time.sleep(0.001)


def test_writes_of_one_id_by_two_owners_in_one_group() -> None:
    """Two writes of one new id by different tenants committed in ONE group, then a delete by
    one of them: each write lands in its owner's namespace, the delete in its tenant's only
    (the group's checks see the earlier entries' namespaces)."""
    docs = shardwalk.Engine.memory().create_collection("docs", dim=4, index="flat")
    docs._writes.lock.acquire()  # the next leader waits here while the others queue
    results: dict[str, object] = {}

    def write(name: str, call) -> None:
        try:
            results[name] = call()
        except Exception as exc:
            results[name] = exc

    calls = [
        ("z", lambda: docs.upsert([1000], np.ones((1, 4)), tenant="z")),
        ("a", lambda: docs.upsert([7], np.full((1, 4), 1.0), tenant="a")),
        ("b", lambda: docs.upsert([7], np.full((1, 4), 2.0), tenant="b")),
        ("del-a", lambda: docs.delete([7], tenant="a")),
        ("del-c", lambda: docs.delete([7], tenant="c", missing_ok=True)),
    ]
    threads = [threading.Thread(target=write, args=c) for c in calls]
    try:
        threads[0].start()
        _wait_for(lambda: docs._writes._leading)
        for queued, thread in enumerate(threads[1:], 1):
            thread.start()
            _wait_for(lambda queued=queued: len(docs._writes._queue) >= queued)
    finally:
        docs._writes.lock.release()
        for thread in threads:
            if thread.is_alive() or thread.ident is not None:
                thread.join()
    assert docs._writes.groups == 2  # [z], then the rest together
    assert results == {"z": 1, "a": 1, "b": 1, "del-a": 1, "del-c": 0}
    assert docs.get([7]).tenants == ["b"] and docs.get([7]).vectors[0, 0] == 2.0
    with pytest.raises(shardwalk.NotFoundError):
        docs.get([7], tenant="a")


def test_an_upsert_replaces_only_its_owners_row_and_a_delete_only_its_tenants() -> None:
    docs = shardwalk.Engine.memory().create_collection("docs", dim=4, index="flat")
    docs.upsert([1, 2], np.ones((2, 4)), tenants=["a", "b"])
    assert docs.upsert([1], np.zeros((1, 4)), tenant="a") == 1
    assert docs.upsert([1, 2], np.full((2, 4), 3.0), tenant="a") == 2  # b's 2 untouched
    assert docs.get([2], tenant="b").vectors.sum() == 4 and docs.get([1]).vectors.sum() == 12
    assert docs.get([2]).tenants == ["a", "b"] and len(docs) == 3
    assert docs.delete([1, 2], tenant="b", missing_ok=True) == 1  # b holds no 1
    with pytest.raises(shardwalk.NotFoundError, match="has no ids 1, 2; nothing was deleted"):
        docs.delete([1, 2], tenant="b")
    assert docs.get([1, 2]).tenants == ["a", "a"]
    docs.upsert([2], np.ones((1, 4)))  # unscoped: replaces every row of 2 with an ownerless one
    assert docs.get([2]).tenants == [None]
    assert docs.delete([2, 1]) == 2  # without a tenant: every row of the ids
    assert len(docs) == 0 and 2 not in docs


def test_own_row_shadows_a_shared_row_of_the_same_id() -> None:
    """A tenant sees one row per id: its own, else the shared row whose owner comes first by
    name (the ownerless first); search never returns an id twice for it."""
    docs = shardwalk.Engine.memory().create_collection("docs", dim=4, index="flat")
    docs.upsert([5, 6], np.ones((2, 4)), tenant="c", shared_with=[["a"], ["a"]])
    docs.upsert([5, 6], np.full((2, 4), 2.0), tenant="b", shared_with=[["a"], ["a"]])
    docs.upsert([5], np.full((1, 4), 3.0), tenant="a")
    records = docs.get([5, 6], tenant="a")
    assert records.tenants == ["a", "b"] and records.vectors[:, 0].tolist() == [3.0, 2.0]
    for index in ("flat", "hnsw"):
        many = shardwalk.Engine.memory().create_collection("m", dim=4, index=index)
        many.upsert([5, 6], np.ones((2, 4)), tenant="c", shared_with=[["a"], ["a"]])
        many.upsert([5, 6], np.full((2, 4), 2.0), tenant="b", shared_with=[["a"], ["a"]])
        many.upsert([5], np.full((1, 4), 3.0), tenant="a")
        found = many.search(np.full((1, 4), 3.0), 10, tenant="a", explain=True)
        assert found.ids[0].tolist() == [5, 6] + [-1] * 8 and found.explain.visible == 2
        assert found.distances[0, 0] == 0  # a's own 5, not a shared one
        assert sorted(many.search(np.ones((1, 4)), 10).ids[0].tolist()[:5]) == [5, 5, 5, 6, 6]
        assert many.visible([5, 6, 7], tenant="a").tolist() == [True, True, False]
        assert many.visible([5, 6], tenant="a", owned=True).tolist() == [True, False]


def _close_without_checkpoint(engine, monkeypatch) -> None:
    """Close as a crash would leave the files: the writes since the last checkpoint only in
    the log (``close`` checkpoints otherwise), so the next open replays them."""
    with monkeypatch.context() as patch:
        patch.setattr(shardwalk.Collection, "flush", lambda self: None)
        engine.close()


def _strip_namespace(batch):
    """An upsert record as logs before namespaces wrote it (no ``namespaced`` mark)."""
    fields = [batch.schema.field(0).remove_metadata(), *list(batch.schema)[1:]]
    return pa.RecordBatch.from_arrays(batch.columns, schema=pa.schema(fields))


def test_old_upsert_records_keep_their_meaning_at_replay(tmp_path, monkeypatch) -> None:
    """A log written before namespaces: its upsert of an id replaced that id's row whoever
    owned it, and so it does when replayed."""
    from shardwalk import collection as module

    real = module.upsert_record
    engine = shardwalk.Engine.open(tmp_path)
    docs = engine.create_collection("docs", dim=4, index="flat")
    with monkeypatch.context() as patch:
        patch.setattr(module, "upsert_record", lambda w, d: _strip_namespace(real(w, d)))
        docs.upsert([1, 2, 3], np.ones((3, 4)), tenant="a")
        docs.upsert([1], np.full((1, 4), 2.0), tenant="b")
        docs.delete([2])  # a delete without an owner: every row of 2, old logs and new alike
    assert len(docs) == 3  # live, the marks were only stripped from the log
    _close_without_checkpoint(engine, monkeypatch)
    with shardwalk.Engine.open(tmp_path) as engine:
        docs = engine.collection("docs")
        assert len(docs) == 2 and docs.get([1, 3]).tenants == ["b", "a"]
        assert docs.get([1]).vectors[0, 0] == 2.0


def test_namespaced_writes_survive_replay_and_checkpoints(tmp_path, monkeypatch) -> None:
    """Two tenants (and the ownerless namespace) holding the same ids, upserts and deletes by
    each, a checkpoint between: the log replays them and the snapshot keeps them."""
    rng = np.random.default_rng(0)
    model: dict[tuple[str | None, int], np.ndarray] = {}

    def upsert(docs, ids, tenant) -> None:
        vectors = rng.standard_normal((len(ids), 4)).astype(np.float32)
        docs.upsert(ids, vectors, tenant=tenant)  # None: unscoped, every row of the ids
        if tenant is None:
            for key in [k for k in model if k[1] in ids]:
                del model[key]
        model.update({(tenant, i): v for i, v in zip(ids, vectors)})

    def delete(docs, ids, tenant) -> None:
        docs.delete(ids, tenant=tenant, missing_ok=True)
        for key in [k for k in model if k[1] in ids and (tenant is None or k[0] == tenant)]:
            del model[key]

    def check(docs) -> None:
        assert len(docs) == len(model)
        for tenant in ("a", "b"):
            mine = sorted(i for t, i in model if t == tenant)
            records = docs.get(mine, tenant=tenant)
            assert records.tenants == [tenant] * len(mine)
            np.testing.assert_array_equal(records.vectors, [model[(tenant, i)] for i in mine])
            found = docs.search(np.zeros(4), 50, tenant=tenant).ids[0]
            assert sorted(found[found >= 0].tolist()) == mine
        every = sorted({i for _, i in model})
        assert docs.get(every).ids.size == len(model)

    engine = shardwalk.Engine.open(tmp_path)
    docs = engine.create_collection("docs", dim=4, index="hnsw")
    upsert(docs, [1, 2, 3, 4], "a")
    upsert(docs, [3, 4, 5], "b")
    upsert(docs, [4, 6], None)
    delete(docs, [3], "a")  # a's 3 only
    docs.flush()  # a snapshot holding ids of two owners
    upsert(docs, [3, 2], "b")
    delete(docs, [4], "b")  # logged with its owner: replay deletes b's 4 only
    upsert(docs, [1], "a")
    check(docs)
    _close_without_checkpoint(engine, monkeypatch)
    engine = shardwalk.Engine.open(tmp_path)  # the snapshot, then the log replayed
    docs = engine.collection("docs")
    check(docs)
    delete(docs, [4], None)  # every row of 4
    docs.flush()
    upsert(docs, [4], "b")
    docs.compact()  # rebuilt from the live rows, then checkpointed
    upsert(docs, [5], "a")
    delete(docs, [5], "b")
    check(docs)
    _close_without_checkpoint(engine, monkeypatch)
    with shardwalk.Engine.open(tmp_path) as engine:
        check(engine.collection("docs"))


def test_logged_vectors_are_the_rows_own_owners(tmp_path) -> None:
    """A Ray-served partition restored from the log takes each row's vector from the last
    upsert of its (owner, id), not of its id."""
    with shardwalk.Engine.open(tmp_path) as engine:
        docs = engine.create_collection("docs", dim=4, index="flat")
        docs.upsert([99, 1], np.full((2, 4), 1.0), tenant="a")
        docs.upsert([99], np.full((1, 4), 2.0), tenant="b")
        docs.upsert([99], np.full((1, 4), 3.0))  # unscoped: replaces a's and b's 99
        docs.upsert([99], np.full((1, 4), 4.0), tenant="a")
        live = np.flatnonzero(docs._rows.alive)
        vectors = collection_persistence.logged_vectors(docs, live)
        owners = docs._rows.owners(live)
        expected = {"a": 4.0, None: 3.0}
        assert [expected[o] if i == 99 else 1.0 for o, i in zip(owners, docs._rows.ids[live])] == (
            vectors[:, 0].tolist()
        )


def test_declared_attributes_are_kept_and_typed(tmp_path) -> None:
    with shardwalk.Engine.open(tmp_path) as engine:
        docs = engine.create_collection(
            "docs", dim=4, index="flat", attributes={"year": "int64", "score": "float64"}
        )
        assert docs.attributes == {"year": "int64", "score": "float64"}
        engine.create_collection("old", dim=4, index="flat")  # no declaration: as before
        docs.upsert([1], np.ones((1, 4)), attributes={"score": [3]})  # int into float64
        with pytest.raises(InvalidArgumentError, match="'year' is declared int64"):
            docs.upsert([2], np.ones((1, 4)), attributes={"year": ["x"]})
        docs.upsert([3], np.ones((1, 4)), attributes={"free": ["x"]})  # undeclared: open
    with shardwalk.Engine.open(tmp_path) as engine:
        docs = engine.collection("docs")
        assert docs.attributes == {"year": "int64", "score": "float64"}
        assert list(docs.declared_types) == ["year", "score"]
        assert docs.get([1]).attributes["score"] == [3.0]
        with pytest.raises(InvalidArgumentError, match="'year' is declared int64"):
            docs.upsert([2], np.ones((1, 4)), attributes={"year": [1.5]})
        assert engine.collection("old").attributes is None
    with pytest.raises(InvalidArgumentError, match="declarable types"):
        shardwalk.Engine.memory().create_collection("x", dim=4, attributes={"y": "int32"})


def test_get_for_a_tenant_names_hidden_ids_like_absent_ones() -> None:
    docs = shardwalk.Engine.memory().create_collection("docs", dim=4, index="flat")
    with pytest.raises(shardwalk.NotFoundError, match=r"has no ids 3$"):
        docs.get([3], tenant="a")  # an empty collection
    docs.upsert([1, 2, 4], np.ones((3, 4)), tenants=["a", "b", "c"], shared_with=[[], [], ["a"]])
    for asked, named in (([2, 3], "2, 3"), ([3, 2], "3, 2"), ([1, 2, 4, 3], "2, 3")):
        with pytest.raises(shardwalk.NotFoundError) as caught:
            docs.get(asked, tenant="a")
        assert str(caught.value) == f"collection 'docs' has no ids {named}"
    assert docs.get([4, 1], tenant="a").tenants == ["c", "a"]
