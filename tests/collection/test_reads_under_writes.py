"""Reads under writes (issue 26): every search answers from one state between its call and its
return (some prefix of the acknowledged writes), holds every write acknowledged before it
started, and stays inside its tenant's scope while tenants write; a scoped search whose path
reads only the vectors (exact) runs beside the background indexer's insert instead of waiting
for it (the insert leaves the stored vectors in place).

Searches ask for every row in scope (k above the collection's size), so an approximate index
must return the exact set too (a graph search it leaves short is searched deeper, then
exactly): the check is then exact for HNSW as for flat."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
from shardwalk.index.hnsw import HNSWIndex

import shardwalk
from shardwalk import F, collection_writes, scope_masks
from shardwalk.collection import Collection
from shardwalk.errors import InvalidArgumentError

from .test_concurrency import run_until_written
from .test_delta import wait_until

DIM = 8
WRITERS, IDS_PER_WRITER, OPS_PER_WRITER = 3, 30, 90
ALL = 1000  # k: every row in scope
SCOPES = {  # name -> (tenant, where, test on (owner, y))
    "plain": (None, None, lambda owner, y: True),
    "tenant": ("a", None, lambda owner, y: owner == "a"),
    "filter": (None, F("y") < 2, lambda owner, y: y < 2),
    "both": ("b", F("y") >= 1, lambda owner, y: owner == "b" and y >= 1),
}


@dataclass
class Writer:
    """One writer's operations on its own ids, and the state after each prefix:
    id -> (vector, owner, y)."""

    number: int
    ops: list[tuple] = field(default_factory=list)
    states: list[dict] = field(default_factory=lambda: [{}])
    started: int = 0
    acked: int = 0

    def plan(self, rng: np.random.Generator) -> None:
        state: dict = {}
        for _ in range(OPS_PER_WRITER):
            id_ = self.number * 1000 + int(rng.integers(IDS_PER_WRITER))
            if id_ in state and rng.random() < 0.3:
                self.ops.append(("delete", id_))
                state = {i: v for i, v in state.items() if i != id_}
            else:  # new ids and replacements (an unscoped upsert replaces every row of the id)
                row = (
                    rng.random(DIM, dtype=np.float32),
                    "ab"[int(rng.integers(2))],
                    int(rng.integers(4)),
                )
                self.ops.append(("upsert", id_, *row))
                state = {**state, id_: row}
            self.states.append(state)

    def run(self, col: Collection, errors: list) -> None:
        try:
            for op in self.ops:
                self.started += 1
                if op[0] == "upsert":
                    _, id_, v, owner, y = op
                    col.upsert([id_], v[None, :], tenants=owner, attributes={"y": [y]})
                else:
                    col.delete([op[1]])
                self.acked += 1
        except BaseException as exc:
            errors.append(exc)


def check(query, ids, distances, windows, test) -> None:
    """Every returned (id, distance) is a row in scope in some allowed state; every id in
    scope, unchanged, in every allowed state (acknowledged before the call) is returned."""
    maybe: dict[int, list[float]] = {}
    certain: set[int] = set()
    for states in windows:
        for state in states:
            for id_, (v, owner, y) in state.items():
                if test(owner, y):
                    maybe.setdefault(id_, []).append(float(((query - v) ** 2).sum()))
        first = states[0]
        for id_, row in first.items():
            if test(*row[1:]) and all(s.get(id_) is row for s in states[1:]):
                certain.add(id_)
    found = {int(i): float(d) for i, d in zip(ids, distances) if i >= 0}
    assert len(found) == int(np.count_nonzero(ids >= 0)), "an id came back twice"
    for id_, d in found.items():
        assert id_ in maybe, f"id {id_} is in scope in no state between the call and its return"
        assert any(abs(d - e) <= 1e-4 * max(1.0, e) for e in maybe[id_]), (id_, d, maybe[id_])
    missing = certain - set(found)
    assert not missing, f"ids {sorted(missing)[:5]} acknowledged before the search are missing"


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_every_search_under_writes_is_one_prefix_of_the_acknowledged_writes(kind, monkeypatch):
    """(HNSW: the scoped searches are answered through the published view, without a lock,
    while writes, indexer turns and compactions run: no torn rows, no other tenant's row.)"""
    served = [0]
    through_view = scope_masks.search_view

    def counted(*args, **kwargs):
        found = through_view(*args, **kwargs)
        served[0] += found is not None
        return found

    monkeypatch.setattr(scope_masks, "search_view", counted)
    rng = np.random.default_rng(3)
    writers = [Writer(n) for n in range(WRITERS)]
    for w in writers:
        w.plan(rng)
    engine = shardwalk.Engine.memory()
    col = engine.create_collection("c", dim=DIM, index=kind, attributes={"y": "int64"})
    col.compaction_min_dead = 40  # background compactions swap in while searches run
    errors: list[BaseException] = []
    stop = threading.Event()
    searched = {name: 0 for name in SCOPES}

    def reader(seed: int) -> None:
        r = np.random.default_rng(seed)
        names = list(SCOPES)
        ended = None  # when the writers were done: on a loaded machine they may finish
        try:  # before every scope was searched a few times; then go on a little (bounded)
            while not stop.is_set() or min(searched.values()) < 5:
                ended = ended or (time.monotonic() if stop.is_set() else None)
                if ended is not None and time.monotonic() - ended > 20:
                    break
                name = names[int(r.integers(len(names)))]
                tenant, where, test = SCOPES[name]
                query = r.random(DIM, dtype=np.float32)
                low = [w.acked for w in writers]
                result = col.search(query, k=ALL, tenant=tenant, where=where)
                high = [w.started for w in writers]
                windows = [w.states[lo : hi + 1] for w, lo, hi in zip(writers, low, high)]
                check(query, result.ids[0], result.distances[0], windows, test)
                searched[name] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=w.run, args=(col, errors)) for w in writers]
    readers = [threading.Thread(target=reader, args=(s,)) for s in range(2)]
    run_until_written(threads, readers, stop)
    assert not errors, errors[0]
    assert min(searched.values()) >= 5, searched
    col.wait_compacted()
    stats = col.stats()
    if kind == "hnsw":  # the background indexer's turns ran beside the searches
        assert stats["delta"]["indexed_in_background"] > 0, stats["delta"]
        assert served[0] > 0, "no scoped search was answered through the published view"
    final = {i: row for w in writers for i, row in w.states[-1].items()}
    assert len(col) == len(final)
    for tenant, where, test in SCOPES.values():
        query = np.zeros(DIM, dtype=np.float32)
        result = col.search(query, k=ALL, tenant=tenant, where=where)
        check(query, result.ids[0], result.distances[0], [[final]], test)
    engine.close()


def test_tenants_writing_at_once_never_see_each_others_rows(monkeypatch):
    """Two tenants write the same ids in their own namespaces (rows of their own) while each
    searches its scope: a's vectors lie in [0, 1)^d, b's in [10, 11)^d, so a row of the other
    tenant would show as a distance past d. Each search holds every id its tenant had
    acknowledged before it started and did not delete meanwhile (most answered through the
    published view, without a lock)."""
    served = [0]
    through_view = scope_masks.search_view

    def counted(*args, **kwargs):
        found = through_view(*args, **kwargs)
        served[0] += found is not None
        return found

    monkeypatch.setattr(scope_masks, "search_view", counted)
    col = shardwalk.Engine.memory().create_collection("c", dim=DIM, index="hnsw")
    errors: list[BaseException] = []
    stop = threading.Event()
    plans: dict[str, list] = {}
    states: dict[str, list[set[int]]] = {}
    progress = {t: {"started": 0, "acked": 0} for t in "ab"}
    for tenant in "ab":
        r = np.random.default_rng(ord(tenant))
        live: set[int] = set()
        plans[tenant], states[tenant] = [], [set()]
        for step in range(60):
            ids = [int(i) for i in r.choice(80, size=3, replace=False)]
            plans[tenant].append(("delete" if step % 4 == 3 else "upsert", ids))
            live = live - set(ids) if step % 4 == 3 else live | set(ids)
            states[tenant].append(live)
    checked = {"a": 0, "b": 0}

    def write(tenant: str, offset: float) -> None:
        r = np.random.default_rng(ord(tenant) + 1)
        try:
            for kind, ids in plans[tenant]:
                progress[tenant]["started"] += 1
                if kind == "delete":
                    col.delete(ids, tenant=tenant, missing_ok=True)
                else:
                    col.upsert(ids, r.random((3, DIM), dtype=np.float32) + offset, tenant=tenant)
                progress[tenant]["acked"] += 1
        except BaseException as exc:
            errors.append(exc)

    def search(tenant: str, offset: float) -> None:
        r = np.random.default_rng(ord(tenant) + 7)
        try:
            while not stop.is_set():
                low = progress[tenant]["acked"]
                query = r.random(DIM, dtype=np.float32) + offset
                result = col.search(query, k=ALL, tenant=tenant)
                high = progress[tenant]["started"]
                window = states[tenant][low : high + 1]
                hits = result.ids[0][result.ids[0] >= 0]
                assert (result.distances[0][: hits.size] < DIM).all(), "another tenant's row"
                assert len(set(hits.tolist())) == hits.size
                assert set(hits.tolist()) <= set().union(*window)
                assert set.intersection(*window) <= set(hits.tolist()), "an acknowledged row"
                checked[tenant] += 1
        except BaseException as exc:
            errors.append(exc)

    pairs = (("a", 0.0), ("b", 10.0))
    writers = [threading.Thread(target=write, args=pair) for pair in pairs]
    searchers = [threading.Thread(target=search, args=pair) for pair in pairs]
    run_until_written(writers, searchers, stop)
    assert not errors, errors[0]
    assert min(checked.values()) > 3, checked
    assert served[0] > 0, "no search was answered through the published view"


def _run_aside(fn) -> tuple[threading.Thread, list]:
    out: list = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_a_scoped_exact_search_does_not_wait_for_an_index_turn(monkeypatch):
    """The background indexer stops inside its HNSW insert (holding the index's lock): a
    tenant-scoped and a filtered search (exact paths: few rows match) run beside it and see
    every acknowledged row, the ones waiting in the delta too; a plain search (the graph's
    path: beside the insert, or after it when the graph alone cannot answer) sees the same."""
    col = shardwalk.Engine.memory().create_collection(
        "c", dim=DIM, index="hnsw", attributes={"y": "int64"}
    )
    rng = np.random.default_rng(1)
    col.upsert(np.arange(100), rng.random((100, DIM)), tenants="a", attributes={"y": [1] * 100})
    col.wait_indexed()
    entered, release = threading.Event(), threading.Event()
    add = HNSWIndex.add

    def held(self, *args, **kwargs):  # the background indexer stops inside its insert
        if threading.current_thread().name.startswith("shardwalk-index"):
            entered.set()
            assert release.wait(60)
        return add(self, *args, **kwargs)

    monkeypatch.setattr(HNSWIndex, "add", held)
    col.upsert(np.arange(100, 110), rng.random((10, DIM)), tenants="a", attributes={"y": [1] * 10})
    assert entered.wait(60)
    plain = None
    try:
        for tenant, where in [("a", None), (None, F("y") == 1), ("a", F("y") == 1)]:
            search, out = _run_aside(
                lambda t=tenant, w=where: col.search(np.zeros(DIM), k=ALL, tenant=t, where=w)
            )
            search.join(timeout=30)
            assert not search.is_alive(), "a scoped exact search waited for an index turn"
            assert not isinstance(out[0], BaseException), out[0]
            assert set(out[0].ids[0][out[0].ids[0] >= 0].tolist()) == set(range(110))
        plain, found = _run_aside(lambda: col.search(np.zeros(DIM), k=ALL))
    finally:
        release.set()
    assert plain is not None
    plain.join(timeout=60)
    assert set(found[0].ids[0].tolist()) - {-1} == set(range(110))
    wait_until(lambda: col.stats()["delta"]["rows"] == 0, "the turn to finish")
    assert col.stats()["index_stats"]["live"] == 110


def test_an_insert_with_room_leaves_the_stored_vectors_in_place():
    """HNSWIndex.reserve makes room; an insert within it moves no stored vector (what lets an
    exact search read them beside the insert), and one past it grows the storage itself."""
    rng = np.random.default_rng(2)
    index = HNSWIndex(dim=DIM, metric="l2", m=8, ef_construction=32)
    first = rng.random((300, DIM), dtype=np.float32)
    index.reserve(300)  # room for a quarter more than held, at least 1,024 vectors
    index.add(np.arange(300), first)
    assert index.room(724) and not index.room(725)
    index.reserve(500)  # there is room already: nothing moves
    before = index.store.segments(np.arange(300))[0][0]
    address = before.__array_interface__["data"][0]
    index.add(np.arange(300, 800), rng.random((500, DIM), dtype=np.float32))
    after = index.store.segments(np.arange(300))[0][0]
    assert after.__array_interface__["data"][0] == address  # the same memory
    assert np.array_equal(index.get(np.arange(300)), first)
    index.add(np.arange(800, 5000), rng.random((4200, DIM), dtype=np.float32))  # past the room
    assert np.array_equal(index.get(np.arange(300)), first)
    assert len(index) == 5000


def test_a_scoped_search_does_not_wait_for_a_write_groups_exclusive_section(monkeypatch):
    """A write group of new rows stops inside its exclusive section (applying its upsert):
    tenant-scoped, filtered and both-scoped searches (exact paths) answer meanwhile from the
    published view, and a plain one from the index (the group leaves it alone) and the view's
    delta, all without the group's rows (not yet acknowledged); they see them once it
    returns."""
    col = shardwalk.Engine.memory().create_collection(
        "c", dim=DIM, index="hnsw", attributes={"y": "int64"}
    )
    rng = np.random.default_rng(5)
    col.upsert(np.arange(100), rng.random((100, DIM)), tenants="a", attributes={"y": [1] * 100})
    col.wait_indexed()
    where = F("y") == 1
    scopes = [("a", None), (None, where), ("a", where), (None, None)]
    for tenant, w in scopes:  # the scopes' masks cached, the predicate validated
        col.search(np.zeros(DIM), k=ALL, tenant=tenant, where=w)
    entered, release = threading.Event(), threading.Event()
    apply = collection_writes.apply_upsert

    def held(*args, **kwargs):  # the group's leader stops inside the exclusive section
        entered.set()
        assert release.wait(60)
        return apply(*args, **kwargs)

    monkeypatch.setattr(collection_writes, "apply_upsert", held)
    writer, wrote = _run_aside(
        lambda: col.upsert(
            np.arange(100, 110), rng.random((10, DIM)), tenants="a", attributes={"y": [1] * 10}
        )
    )
    assert entered.wait(60)
    try:
        for tenant, w in scopes:
            search, out = _run_aside(
                lambda t=tenant, w=w: col.search(np.zeros(DIM), k=ALL, tenant=t, where=w)
            )
            search.join(timeout=30)
            assert not search.is_alive(), "a scoped search waited for a write group"
            assert not isinstance(out[0], BaseException), out[0]
            assert set(out[0].ids[0].tolist()) - {-1} == set(range(100))
    finally:
        release.set()
    writer.join(timeout=60)
    assert wrote == [10]
    for tenant, w in scopes:
        found = col.search(np.zeros(DIM), k=ALL, tenant=tenant, where=w)
        assert set(found.ids[0].tolist()) - {-1} == set(range(110))


def test_the_published_view_answers_as_the_locked_path(monkeypatch):
    """Rows in the index and in the delta, some deleted or replaced, a tenant's and a filter's
    scope and none: a search through the view (a single query, no explanation) returns the
    ids and distances the locked path does (``explain=True`` takes it): the exact one, or
    the index's merged with the delta."""
    # no background indexer at all (one still running from the first upsert would take the
    # next rows out of the delta): wait_indexed inserts in this thread, the later rows stay
    monkeypatch.setattr(collection_writes.collection_indexer, "kick", lambda c: None)
    col = shardwalk.Engine.memory().create_collection(
        "c", dim=DIM, index="hnsw", attributes={"y": "int64"}
    )
    rng = np.random.default_rng(6)
    owners = ["a" if i % 3 else "b" for i in range(600)]
    col.upsert(np.arange(600), rng.random((600, DIM)), tenants=owners, attributes={"y": [
        i % 5 for i in range(600)
    ]})  # fmt: skip
    col.wait_indexed()
    col.delta_limit = 10_000
    col.upsert(np.arange(590, 700), rng.random((110, DIM)), tenants="a", attributes={"y": [
        i % 5 for i in range(110)
    ]})  # fmt: skip
    col.delete(np.arange(0, 600, 7))
    assert col.stats()["delta"]["rows"] > 0
    where = F("y") < 2
    served = 0
    for q in rng.random((20, DIM), dtype=np.float32):
        for tenant, w in [("a", None), ("b", None), (None, where), ("a", where), (None, None)]:
            locked = col.search(q, k=10, tenant=tenant, where=w, explain=True)
            assert locked.explain is not None
            assert locked.explain.path == ("index" if w is None and tenant is None else "exact")
            view = scope_masks.search_view(col, q[None], 10, tenant, w, {})
            served += view is not None
            found = col.search(q, k=10, tenant=tenant, where=w)
            for got in [found] + ([view] if view is not None else []):
                assert np.array_equal(got.ids, locked.ids)
                np.testing.assert_allclose(got.distances, locked.distances, rtol=1e-5)
    assert served == 100
    # a predicate equal to a validated one, not the same object (a server decodes one per
    # request), is checked against the view's schema; one of the wrong type is not served,
    # and the search refuses it as before
    assert scope_masks.search_view(col, q[None], 10, None, F("y") < 2, {}) is not None
    assert scope_masks.search_view(col, q[None], 10, None, F("y") == "x", {}) is None
    with pytest.raises(InvalidArgumentError, match="attribute 'y'"):
        col.search(q, k=10, where=F("y") == "x")


def test_the_index_storage_stays_put_while_a_search_reads_it_through_the_view(monkeypatch):
    """A tenant-scoped search through the view stops inside its scan of the index's storage;
    the background indexer, out of room, must move that storage (HNSWIndex.reserve) before
    its next insert: the move waits for the scan, and the search's answer is whole."""
    col = shardwalk.Engine.memory().create_collection("c", dim=DIM, index="hnsw")
    rng = np.random.default_rng(8)
    vectors = rng.random((100, DIM), dtype=np.float32)
    col.upsert(np.arange(100), vectors, tenants="a")
    col.wait_indexed()
    col.search(np.zeros(DIM), k=ALL, tenant="a")  # the scope's mask cached, a view published
    entered, release, moved = threading.Event(), threading.Event(), threading.Event()
    scan = scope_masks.scan_split_serial

    def held(*args):
        entered.set()
        assert release.wait(60)
        return scan(*args)

    reserve = HNSWIndex.reserve

    def reserved(self, n):
        reserve(self, n)
        moved.set()

    monkeypatch.setattr(scope_masks, "scan_split_serial", held)
    monkeypatch.setattr(HNSWIndex, "reserve", reserved)
    search, out = _run_aside(lambda: col.search(np.zeros(DIM), k=ALL, tenant="a"))
    assert entered.wait(60)
    graph = col._index._graph
    graph._capacity = graph.slots  # no room left: the next insert must move the storage
    col.upsert(np.arange(100, 110), rng.random((10, DIM), dtype=np.float32), tenants="a")
    try:
        assert not moved.wait(1.0), "the storage moved under a search reading it"
    finally:
        release.set()
    search.join(timeout=60)
    assert not isinstance(out[0], BaseException), out[0]
    ids, distances = out[0].ids[0], out[0].distances[0]
    assert set(ids.tolist()) - {-1} == set(range(100))
    expected = ((vectors[ids[ids >= 0]]) ** 2).sum(axis=1)
    np.testing.assert_allclose(distances[ids >= 0], expected, rtol=1e-5)
    assert moved.wait(60)


def test_a_delete_does_not_wait_for_an_index_insert_nor_for_plain_searches():
    """An hnsw collection's deletes tombstone rows beside its searches: one commits while the
    background indexer holds the index for an insert (as a plain search waiting on it would
    too), and a plain search that started before it keeps the tombstones it started with
    (the published view's), while one after it never returns the deleted rows."""
    col = shardwalk.Engine.memory().create_collection("c", dim=DIM, index="hnsw")
    rng = np.random.default_rng(8)
    vectors = rng.random((200, DIM), dtype=np.float32)
    col.upsert(np.arange(200), vectors)
    col.wait_indexed()
    before = col._view
    with col._index_rw.write():  # an insert in progress: plain searches wait for it
        deleter, deleted = _run_aside(lambda: col.delete(np.arange(50)))
        deleter.join(timeout=60)
        assert not deleter.is_alive(), "a delete waited for the index's exclusive lock"
    assert deleted == [50]
    found = col.search(vectors[:50], k=5).ids  # (a batch: the locked path)
    assert not np.isin(found, np.arange(50)).any()
    for i in range(0, 50, 7):
        assert not np.isin(col.search(vectors[i], k=5).ids, np.arange(50)).any()  # the view's
    # the view published before the delete keeps its tombstones: its rows come back there
    assert before is not None and before.marks is not None
    old = before.index.search(vectors[:1], 1, marks=before.marks).ids[0, 0]
    assert old == 0
