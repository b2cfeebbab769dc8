"""Ownership as a condition of the write (checked where a group commits, not before it is
queued) and declared attribute schemas (kept with the collection, types fixed for every
writer)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import shardwalk
from shardwalk.errors import InvalidArgumentError, PermissionDeniedError


def _race(collection, id_: int, tenants: list[str]) -> dict[str, str]:
    """Each tenant upserts ``id_`` (new) at once, behind a barrier; tenant -> outcome."""
    barrier = threading.Barrier(len(tenants))
    outcome: dict[str, str] = {}

    def write(tenant: str, value: float) -> None:
        barrier.wait()
        try:
            collection.upsert([id_], np.full((1, 4), value), tenants=tenant, owner_must_be=tenant)
            outcome[tenant] = "written"
        except PermissionDeniedError:
            outcome[tenant] = "refused"

    threads = [threading.Thread(target=write, args=(t, i)) for i, t in enumerate(tenants)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome


def test_concurrent_writers_of_one_new_id_one_wins(tmp_path) -> None:
    with shardwalk.Engine.open(tmp_path / "data") as engine:
        docs = engine.create_collection("docs", dim=4, index="flat")
        for id_ in range(60):
            outcome = _race(docs, id_, ["a", "b", "c"])
            winners = [t for t, o in outcome.items() if o == "written"]
            assert len(winners) == 1, outcome
            record = docs.get([id_])
            assert record.tenants == winners
            assert record.vectors[0, 0] == ["a", "b", "c"].index(winners[0])
        assert len(docs) == 60
    with shardwalk.Engine.open(tmp_path / "data") as engine:  # the log agrees
        assert len(engine.collection("docs")) == 60


def _wait_for(condition) -> None:
    """Until ``condition()`` holds (a guard against a hang, not a timing assertion)."""
    give_up = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < give_up, "the writer never queued"
        time.sleep(0.001)


def test_owner_checked_against_earlier_writes_of_the_same_group() -> None:
    """Two writes of one new id by different tenants committed in ONE group: the first one
    queued is written, the second refused (the check sees the group's earlier entries)."""
    docs = shardwalk.Engine.memory().create_collection("docs", dim=4, index="flat")
    docs._writes.lock.acquire()  # the next leader waits here while the others queue
    results: dict[str, object] = {}

    def write(tenant: str, id_: int) -> None:
        try:
            results[tenant] = docs.upsert(
                [id_], np.ones((1, 4)), tenants=tenant, owner_must_be=tenant
            )
        except PermissionDeniedError as exc:
            results[tenant] = exc

    threads = [threading.Thread(target=write, args=a) for a in (("z", 1000), ("a", 7), ("b", 7))]
    try:
        threads[0].start()
        _wait_for(lambda: docs._writes._leading)
        threads[1].start()
        _wait_for(lambda: len(docs._writes._queue) >= 1)
        threads[2].start()
        _wait_for(lambda: len(docs._writes._queue) >= 2)
    finally:
        docs._writes.lock.release()
        for thread in threads:
            if thread.is_alive() or thread.ident is not None:
                thread.join()
    assert docs._writes.groups == 2  # [z], then [a, b] together
    assert results["a"] == 1 and isinstance(results["b"], PermissionDeniedError)
    assert "nothing was written" in str(results["b"]) and "another tenant" not in str(results["b"])
    assert docs.get([7]).tenants == ["a"]


def test_owner_may_replace_its_own_rows_and_deletes_only_its_own() -> None:
    docs = shardwalk.Engine.memory().create_collection("docs", dim=4, index="flat")
    docs.upsert([1, 2], np.ones((2, 4)), tenants=["a", "b"])
    assert docs.upsert([1], np.zeros((1, 4)), tenants="a", owner_must_be="a") == 1
    with pytest.raises(PermissionDeniedError, match="cannot write ids 2"):
        docs.upsert([1, 2], np.zeros((2, 4)), tenants="a", owner_must_be="a")
    assert docs.get([2]).tenants == ["b"] and docs.get([1]).vectors.sum() == 0
    assert docs.delete([1, 2], missing_ok=True, owner_must_be="a") == 1
    assert 2 in docs and 1 not in docs


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
