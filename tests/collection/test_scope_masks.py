"""Scope masks follow writes (issue 26.1): a write updates the bits of the rows it touches in
the cached tenant and filter masks instead of invalidating them, so a search after a write
costs what it cost before; a mask is rebuilt only when its attributes change shape."""

from __future__ import annotations

import numpy as np
import pytest

import shardwalk
from shardwalk import F, collection_writes, scope_masks
from shardwalk.collection import Collection

DIM = 4
SCOPES = [
    ("a", None),
    ("a", F("y") < 2),
    ("b", None),
    (None, F("y") >= 1),
    ("c", F("y") == 0),
]
_BUILD = scope_masks.build_mask  # a mask from scratch, uncounted


@pytest.fixture()
def builds(monkeypatch):
    """Counts the masks built from scratch."""
    counted = {"n": 0}

    def counting(collection, *args, **kwargs):
        counted["n"] += 1
        return _BUILD(collection, *args, **kwargs)

    monkeypatch.setattr(scope_masks, "build_mask", counting)
    return counted


def check_masks(col: Collection) -> None:
    """Every cached mask equals the one a rebuild from scratch would give."""
    n = col._rows.rows
    for (tenant, predicate), mask in list(col._masks.items()):
        rows = None if tenant is None else col._tenants.rows(tenant)
        fresh = _BUILD(col, tenant, rows, predicate)
        np.testing.assert_array_equal(mask.allowed[:n], fresh.allowed[:n], err_msg=str(tenant))
        assert not mask.allowed[n:].any()
        np.testing.assert_array_equal(mask.matches, fresh.matches)
        np.testing.assert_array_equal(
            mask.bits[: fresh.bits.size][: (n + 7) // 8], fresh.bits[: (n + 7) // 8]
        )


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_writes_update_the_cached_masks_and_never_rebuild_them(builds, kind):
    rng = np.random.default_rng(0)
    col = shardwalk.Engine.memory().create_collection(
        "c", dim=DIM, index=kind, attributes={"y": "int64"}
    )

    def write(ids, **kwargs):
        col.upsert(
            ids,
            rng.normal(size=(len(ids), DIM)),
            attributes={"y": rng.integers(0, 3, len(ids)).tolist()},
            **kwargs,
        )

    write(list(range(100)), tenants=["a", "b", "c", None] * 25)
    write([200, 201], tenants="b", shared_with=[["a"], ["a", "c"]])
    q = rng.normal(size=DIM)

    def search_all() -> None:
        for tenant, where in SCOPES:
            col.search(q, k=5, tenant=tenant, where=where)

    search_all()
    built = builds["n"]
    assert built >= len(SCOPES)
    steps = [
        lambda: write([300], tenant="a"),  # a new row of a's
        lambda: write([201], tenant="a"),  # a's own row of 201 shadows b's row shared with a
        lambda: col.delete([201], tenant="a"),  # and its delete shows b's row again
        lambda: write([0, 1, 2]),  # unscoped: replaces every row of the ids (now ownerless)
        lambda: col.delete([3, 4]),
        lambda: write([5], tenant="c", shared_with=[["a"]]),
        lambda: col.delete([200], tenant="b"),
        lambda: write(list(range(400, 420)), tenants="c"),
    ]
    for step in steps:
        step()
        search_all()
        check_masks(col)
        assert builds["n"] == built, "a write rebuilt a mask"
    col.upsert([500], rng.normal(size=(1, DIM)), attributes={"z": ["new"]})  # a new column
    search_all()
    check_masks(col)
    assert builds["n"] > built  # rebuilt: the attributes changed shape


def test_a_group_that_writes_a_new_id_twice_keeps_one_row_of_it():
    """Two upserts of one group share an id no row held before the group: the second still
    replaces the first's row (the apply skips the lookup of replaced rows only for ids no row
    holds before the write: before the group and after its earlier writes), and every cached
    mask equals a rebuild."""
    from shardwalk._sync import Entry
    from shardwalk.attributes import attribute_table, tenant_array
    from shardwalk.collection import _Upsert

    col = shardwalk.Engine.memory().create_collection(
        "c", dim=DIM, index="hnsw", attributes={"y": "int64"}
    )
    col.upsert([1], np.zeros((1, DIM)), tenants="a", attributes={"y": [1]})
    for tenant, where in SCOPES:
        col.search(np.zeros(DIM), k=5, tenant=tenant, where=where)  # masks cached

    def upsert(ids, owner, ys):
        ids = np.array(ids, dtype=np.int64)
        return _Upsert(
            ids,
            np.full((ids.size, DIM), float(ids[0]), dtype=np.float32),
            tenant_array(owner, ids.size),
            attribute_table({"y": ys}, ids.size),
            None,
            everywhere=True,
        )

    group = [Entry(upsert([10, 11], "a", [1, 1])), Entry(upsert([11, 12], "b", [1, 0]))]
    with col._writes.lock:  # as a group's leader
        collection_writes.commit_group(col, group)
    assert all(e.error is None for e in group)
    assert sorted(col.get([11]).tenants) == ["b"] and len(col) == 4
    check_masks(col)
    got = col.search(np.zeros(DIM), k=10, tenant="a").ids[0]
    assert set(got[got >= 0].tolist()) == {1, 10}


def test_a_predicate_searched_again_is_checked_against_the_schema_as_it_is_now():
    """A search keeps a predicate object's validation (Collection._validated) only while the
    schema stays: once a write types an attribute, the same object is checked again, and an
    equal predicate of another type is checked on its own."""
    col = shardwalk.Engine.memory().create_collection("c", dim=DIM, index="flat")
    vectors = np.eye(DIM, dtype=np.float32)
    col.upsert([1, 2], vectors[:2], attributes={"tag": [None, None]})  # typed null so far
    where = F("tag") == 3
    for _ in range(2):  # a null attribute admits any value; nothing matches yet
        assert (col.search(vectors[0], k=2, where=where).ids == -1).all()
    col.upsert([3], vectors[2:3], attributes={"tag": ["x"]})  # now a string attribute
    with pytest.raises(shardwalk.InvalidArgumentError, match="tag"):
        col.search(vectors[0], k=2, where=where)
    col.upsert([4], vectors[3:4], attributes={"n": [1]})
    ok = F("n") == 1
    assert col.search(vectors[0], k=1, where=ok).ids.tolist() == [[4]]
    with pytest.raises(shardwalk.InvalidArgumentError, match="n"):
        col.search(vectors[0], k=1, where=F("n") == 1.5)  # equal hash class, another type
    with pytest.raises(shardwalk.InvalidArgumentError, match="n"):
        col.search(vectors[0], k=1, where=F("n") == True)  # noqa: E712  (== 1, but a bool)


def test_new_rows_without_an_attribute_follow_every_kind_of_filter_mask(builds):
    """Groups of new ids (whose filter values come from the group's own attribute tables):
    rows that lack the attribute, hold None, or another value, under predicates where a
    missing value is unknown (==, ~==, range) or false (exists), equal a rebuild."""
    rng = np.random.default_rng(1)
    col = shardwalk.Engine.memory().create_collection("c", dim=DIM, index="flat")
    col.upsert([0, 1], rng.normal(size=(2, DIM)), attributes={"w": [1, 2]})
    scopes = [F("w") == 1, ~(F("w") == 1), F("w").exists(), ~F("w").exists(), F("w") >= 2]
    for where in scopes:
        col.search(rng.normal(size=DIM), k=3, where=where)
    built = builds["n"]
    writes = [
        dict(ids=[10, 11]),  # no attributes at all
        dict(ids=[12], attributes={"w": [None]}),
        dict(ids=[13, 14], attributes=[{"w": 1}, {}]),
        dict(ids=[15], attributes={"w": [2]}, tenants="a"),
    ]
    for write in writes:
        ids = write.pop("ids")
        col.upsert(ids, rng.normal(size=(len(ids), DIM)), **write)
        check_masks(col)
    assert builds["n"] == built, "a write rebuilt a mask"
    for where in scopes:  # and the searches agree with the masks
        found = set(col.search(rng.normal(size=DIM), k=20, where=where).ids[0].tolist()) - {-1}
        assert found == set(col._rows.ids[col._masks[(None, where)].matches].tolist())
