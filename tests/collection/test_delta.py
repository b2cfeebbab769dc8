"""Writes acknowledged before the index holds them (issue 21.3): rows wait in a delta that
every read sees exactly, a background thread indexes them, writers wait when it is full, and
a crash with rows still in the delta loses none of them.

A test holds a collection's indexer back by taking its ``_indexing`` lock (the lock the
background indexer and every drain take): the rows then stay in the delta for as long as the
test needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import shardwalk
from shardwalk import F

DIM = 4
KINDS = ["flat", "hnsw", "partitioned", "multitenant", "spann"]
PARAMS = {
    "partitioned": {"partitions": 2, "train_size": 8},
    "multitenant": {"train_size": 8, "leaves": 3},
    "spann": {"max_list_size": 4, "eps_search": 1000.0, "maintenance": "inline"},
}


@contextmanager
def indexer_held(col: shardwalk.Collection):
    """No row leaves the delta while the block runs."""
    col._indexing.acquire()
    try:
        yield
    finally:
        col._indexing.release()


def wait_until(condition, what: str, limit: float = 60.0) -> None:
    """Poll for a state another thread reaches (a bound against hanging, not a speed check)."""
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.005)


def exact_ids(vectors: dict, query: np.ndarray, k: int) -> list[float]:
    distances = sorted(float(np.sum((v.astype(np.float64) - query) ** 2)) for v in vectors.values())
    return distances[:k]


@pytest.mark.parametrize("kind", KINDS)
def test_reads_see_rows_in_the_delta_exactly(kind):
    """Searches (plain, tenant, filtered), gets and counts see rows that wait in the delta,
    including rows replaced or deleted there and rows replacing indexed ones."""
    rng = np.random.default_rng(1)
    col = shardwalk.Engine.memory().create_collection(
        "c", dim=DIM, index=kind, **PARAMS.get(kind, {})
    )
    model: dict[tuple[str, int], tuple[np.ndarray, int]] = {}

    def write(ids, tenant):
        vectors = rng.normal(size=(len(ids), DIM)).astype(np.float32)
        ys = rng.integers(0, 4, len(ids))
        col.upsert(ids, vectors, attributes={"y": ys.tolist()}, tenant=tenant)
        for i, v, y in zip(ids, vectors, ys.tolist()):
            model[(tenant, i)] = (v, y)

    write(list(range(40)), "a")
    write(list(range(20, 60)), "b")
    col.flush()  # in the index
    assert col.stats()["delta"]["rows"] == 0
    with indexer_held(col):
        for i in range(60, 70):
            write([i], "a")  # new rows, one write each
        write([5, 25, 61], "a")  # replace indexed rows and a row of the delta
        write([30], "b")
        col.delete([7, 62], tenant="a")  # an indexed row and a delta row
        col.delete([26], tenant="b")
        del model[("a", 7)], model[("a", 62)], model[("b", 26)]
        assert col.stats()["delta"]["rows"] == 10 + 3 + 1
        assert len(col) == len(model)
        check_reads(col, model, rng)
    col.flush()
    assert col.stats()["delta"]["rows"] == 0
    check_reads(col, model, rng)


def check_reads(col, model, rng):
    for _ in range(5):
        q = rng.normal(size=DIM).astype(np.float32)
        scopes = [
            (None, None, lambda y: True),
            ("a", None, lambda y: True),
            ("b", F("y") < 2, lambda y: y < 2),
            (None, F("y") == 1, lambda y: y == 1),
        ]
        for tenant, where, keep in scopes:
            rows = {
                key: v
                for key, (v, y) in model.items()
                if (tenant is None or key[0] == tenant) and keep(y)
            }
            result = col.search(q, k=8, tenant=tenant, where=where)
            expect = exact_ids(rows, q, 8)
            got = result.distances[0][: len(expect)]
            np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-4)
            for id_ in result.ids[0][: len(expect)].tolist():
                assert any(i == id_ for (_, i) in rows), f"{id_} is out of scope"
    for (tenant, id_), (v, _) in model.items():
        np.testing.assert_array_equal(col.get([id_], tenant=tenant).vectors[0], v)


def test_an_acknowledged_upsert_is_visible_to_the_next_search_and_get(tmp_path):
    """Read-your-writes while the background indexer runs: each write, once acknowledged, is
    found by the writer's next exact-match search and get; readers in other threads meanwhile
    never see an error or a row that was never written."""
    engine = shardwalk.Engine.open(tmp_path / "db")
    col = engine.create_collection("c", dim=8, index="hnsw", ef=64)
    rng = np.random.default_rng(2)
    pool = rng.normal(size=(600, 8)).astype(np.float32)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        r = np.random.default_rng(3)
        try:
            while not stop.is_set():
                res = col.search(pool[int(r.integers(600))], k=5)
                found = res.ids[0][res.ids[0] >= 0]
                assert ((found >= 0) & (found < 600)).all()
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for i in range(600):
            col.upsert([i], pool[i : i + 1])
            assert col.search(pool[i], k=1).ids[0, 0] == i
            np.testing.assert_array_equal(col.get([i]).vectors[0], pool[i])
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors[0]
    assert col.stats()["delta"]["indexed_in_background"] > 0
    engine.close()


def test_writers_wait_while_the_delta_is_full():
    col = shardwalk.Engine.memory().create_collection("c", dim=DIM, index="hnsw")
    col.delta_limit = 8
    vectors = np.eye(DIM, dtype=np.float32).repeat(5, axis=0) * np.arange(1, 21)[:, None]
    done = []

    def writer() -> None:
        for i in range(20):
            col.upsert([i], vectors[i : i + 1])
            done.append(i)

    with indexer_held(col):
        t = threading.Thread(target=writer)
        t.start()
        wait_until(lambda: col.stats()["delta"]["waits"] >= 1, "a writer to wait")
        assert len(done) == 8 and col.stats()["delta"]["rows"] == 8  # full: the 9th waits
        assert col.search(vectors[3], k=1).ids[0, 0] == 3
    t.join(60)
    assert len(done) == 20
    stats = col.stats()["delta"]
    assert stats["waits"] >= 1 and stats["rows"] <= 8
    for i in range(20):
        assert col.search(vectors[i], k=1).ids[0, 0] == i


def _record_inserts(col: shardwalk.Collection) -> list[int]:
    """The rows of each of the collection's index inserts, from now on."""
    sizes: list[int] = []
    add = col._add_to_index

    def recorded(rows, *args, **kwargs):
        sizes.append(int(rows.size))
        return add(rows, *args, **kwargs)

    col._add_to_index = recorded
    return sizes


def test_small_writes_are_folded_into_one_index_insert(monkeypatch):
    """The background indexer waits for a fold (the delta holding _FOLD_ROWS rows, or its
    rows waiting _FOLD_DELAY) instead of inserting after every small write: four writes of
    5 rows make one insert of 20; the rows waiting meanwhile are searched exactly."""
    from shardwalk import collection_indexer

    monkeypatch.setattr(collection_indexer, "_FOLD_ROWS", 20, raising=False)
    monkeypatch.setattr(collection_indexer, "_FOLD_DELAY", 600.0, raising=False)
    col = shardwalk.Engine.memory().create_collection("c", dim=DIM, index="hnsw")
    sizes = _record_inserts(col)
    vectors = np.random.default_rng(9).normal(size=(20, DIM)).astype(np.float32)
    for a in range(0, 15, 5):
        col.upsert(list(range(a, a + 5)), vectors[a : a + 5])
        # read-your-writes while the rows wait for the fold
        assert col.search(vectors[a + 4], k=1).ids[0, 0] == a + 4
    col.upsert(list(range(15, 20)), vectors[15:20])  # the delta holds 20 rows: a fold is due
    wait_until(lambda: col.stats()["delta"]["rows"] == 0, "the fold")
    assert sizes == [20]
    assert col.stats()["delta"]["indexed_in_background"] == 20
    for i in range(20):
        assert col.search(vectors[i], k=1).ids[0, 0] == i


def test_a_writer_waiting_for_room_does_not_wait_for_a_folds_delay(monkeypatch):
    """A write group that finds the delta full wakes an indexer waiting for a fold's delay
    (here far beyond the test's bound against hanging): it folds the delta at once."""
    from shardwalk import collection_indexer

    monkeypatch.setattr(collection_indexer, "_FOLD_DELAY", 600.0, raising=False)
    col = shardwalk.Engine.memory().create_collection("c", dim=DIM, index="hnsw")
    col.delta_limit = 12
    vectors = np.random.default_rng(10).normal(size=(20, DIM)).astype(np.float32)
    col.upsert(list(range(10)), vectors[:10])  # the indexer waits for a fold
    done = threading.Event()

    def writer() -> None:
        col.upsert(list(range(10, 20)), vectors[10:])  # no room for 10 more: waits
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    wait_until(done.is_set, "the writer to find room")
    t.join()
    assert col.stats()["delta"]["waits"] >= 1
    for i in range(20):
        assert col.search(vectors[i], k=1).ids[0, 0] == i


def test_a_large_write_is_indexed_before_it_is_acknowledged():
    col = shardwalk.Engine.memory().create_collection("c", dim=DIM, index="hnsw")
    col.delta_limit = 16
    rng = np.random.default_rng(4)
    with indexer_held(col):
        col.upsert([0, 1], rng.normal(size=(2, DIM)))
        assert col.stats()["delta"]["rows"] == 2
    col.upsert(list(range(2, 40)), rng.normal(size=(38, DIM)))  # drains the delta, then inserts
    stats = col.stats()
    assert stats["delta"]["rows"] == 0 and stats["index_stats"]["live"] == 40


def test_a_crash_with_rows_in_the_delta_loses_none(tmp_path):
    rng = np.random.default_rng(5)
    engine = shardwalk.Engine.open(tmp_path / "db")
    col = engine.create_collection("c", dim=DIM, index="hnsw")
    base = rng.normal(size=(50, DIM)).astype(np.float32)
    col.upsert(list(range(50)), base)
    col.flush()
    late = rng.normal(size=(10, DIM)).astype(np.float32)
    with indexer_held(col):
        for i in range(10):
            col.upsert([100 + i], late[i : i + 1])
        col.delete([3, 104])
        assert col.stats()["delta"]["rows"] == 10
        engine._datadir.close()  # a crash: no checkpoint, the delta only in the log
        reopened = shardwalk.Engine.open(tmp_path / "db")
    col = reopened.collection("c")
    assert col.stats()["delta"]["rows"] == 0  # replayed and indexed at open
    expect = {i: base[i] for i in range(50) if i != 3} | {
        100 + i: late[i] for i in range(10) if i != 4
    }
    assert len(col) == len(expect)
    for id_, v in expect.items():
        np.testing.assert_array_equal(col.get([id_]).vectors[0], v)
        assert col.search(v, k=1).ids[0, 0] == id_
    reopened.close()


def test_a_failed_background_insert_stops_the_collection_and_the_log_recovers(tmp_path):
    engine = shardwalk.Engine.open(tmp_path / "db")
    col = engine.create_collection("c", dim=DIM, index="hnsw")
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise MemoryError("no memory for the graph")

    with indexer_held(col):
        col._index.add = broken
        col.upsert([1], np.ones((1, DIM)))  # acknowledged: logged and in the delta
    wait_until(lambda: col._closed_because is not None, "the indexer to fail")
    with pytest.raises(shardwalk.FailedPreconditionError, match="reopen"):
        col.search(np.ones(DIM), k=1)
    engine._datadir.close()
    reopened = shardwalk.Engine.open(tmp_path / "db")
    assert reopened.collection("c").get([1]).ids.tolist() == [1]
    reopened.close()


# --- a state machine with tenants, namespaced ids, filters and a held-back indexer ----------
IDS = st.integers(min_value=0, max_value=30)
COORD = st.floats(min_value=-100, max_value=100, allow_nan=False, width=32)
VECTOR = st.lists(COORD, min_size=DIM, max_size=DIM)
TENANTS = st.sampled_from([None, "a", "b"])


class DeltaMachine(RuleBasedStateMachine):
    """Upserts (scoped to a tenant's namespace or not), deletes, searches (plain, tenant,
    filtered) and gets against a model of (owner, id) rows answered exactly, while the
    indexer is held back or runs, across checkpoints and crashes."""

    def __init__(self) -> None:
        super().__init__()
        self.path = tempfile.mkdtemp(prefix="sw-delta-")
        self.model: dict[tuple[str | None, int], tuple[np.ndarray, int]] = {}
        self.engine: shardwalk.Engine | None = None
        self.held: shardwalk.Collection | None = None

    @initialize(kind=st.sampled_from(KINDS), disk=st.booleans())
    def open(self, kind: str, disk: bool) -> None:
        self.kind, self.disk = kind, disk
        self.engine = shardwalk.Engine.open(self.path) if disk else shardwalk.Engine.memory()
        self.col = self.engine.create_collection(
            "c", dim=DIM, index=kind, attributes={"y": "int64"}, **PARAMS.get(kind, {})
        )
        self.col.delta_limit = 64  # above every write here: a held indexer never blocks one

    def release(self) -> None:
        if self.held is not None:
            self.held._indexing.release()
            self.held = None

    @precondition(lambda self: self.held is None)
    @rule()
    def hold_indexer(self) -> None:
        self.col._indexing.acquire()
        self.held = self.col

    @rule()
    def release_indexer(self) -> None:
        self.release()

    @rule(
        items=st.dictionaries(IDS, st.tuples(VECTOR, st.integers(0, 3)), min_size=1, max_size=6),
        owner=TENANTS,
        scoped=st.booleans(),
    )
    def upsert(self, items, owner, scoped) -> None:
        if self.held is not None and self.col.stats()["delta"]["rows"] + 6 > 64:
            self.release()
        ids = list(items)
        vectors = np.array([items[i][0] for i in ids], dtype=np.float32)
        ys = [items[i][1] for i in ids]
        if scoped and owner is not None:
            self.col.upsert(ids, vectors, attributes={"y": ys}, tenant=owner)
        else:
            self.col.upsert(ids, vectors, tenants=owner, attributes={"y": ys})
            for key in [key for key in self.model if key[1] in items]:
                del self.model[key]  # an unscoped write replaces every row of its ids
        for i, v, y in zip(ids, vectors, ys):
            self.model[(owner, i)] = (v, y)

    @rule(
        ids=st.lists(IDS, min_size=1, max_size=4, unique=True), owner=TENANTS, scoped=st.booleans()
    )
    def delete(self, ids, owner, scoped) -> None:
        if scoped and owner is not None:
            self.col.delete(ids, tenant=owner, missing_ok=True)
            gone = [key for key in self.model if key[0] == owner and key[1] in ids]
        else:
            self.col.delete(ids, missing_ok=True)
            gone = [key for key in self.model if key[1] in ids]
        for key in gone:
            del self.model[key]

    @rule(query=VECTOR, k=st.integers(1, 12), tenant=TENANTS, below=st.none() | st.integers(0, 4))
    def search(self, query, k, tenant, below) -> None:
        q = np.array(query, dtype=np.float32)
        where = None if below is None else F("y") < below
        res = self.col.search(q, k=k, tenant=tenant, where=where)
        rows = {
            key: v
            for key, (v, y) in self.model.items()
            if (tenant is None or key[0] == tenant) and (below is None or y < below)
        }
        expect = exact_ids(rows, q, k)
        ids, distances = res.ids[0], res.distances[0]
        assert (ids[: len(expect)] >= 0).all() and (ids[len(expect) :] == -1).all()
        np.testing.assert_allclose(distances[: len(expect)], expect, rtol=1e-3, atol=1e-2)
        for id_, d in zip(ids[: len(expect)].tolist(), distances[: len(expect)].tolist()):
            true = [
                float(np.sum((v.astype(np.float64) - q) ** 2))
                for (_, i), v in rows.items()
                if i == id_
            ]
            assert true and min(abs(t - d) for t in true) <= 1e-3 * max(1.0, d), id_

    @precondition(lambda self: self.disk)
    @rule(checkpoint=st.booleans())
    def reopen(self, checkpoint: bool) -> None:
        assert self.engine is not None
        if checkpoint:
            self.release()
            self.engine.close()
        else:
            self.engine._datadir.close()  # a crash, the delta possibly non-empty
            # a crash ends every thread: a background compaction of the crashed engine may
            # only leave files behind (its writes are refused from the close on), never go
            # on writing beside the next engine
            self.col.wait_compacted()
        self.engine = shardwalk.Engine.open(self.path)
        self.col = self.engine.collection("c")
        self.col.delta_limit = 64
        self.release()  # the crashed collection's indexer may go on: it writes no file

    @invariant()
    def same_contents(self) -> None:
        if self.engine is None:
            return
        assert len(self.col) == len(self.model)
        for (owner, id_), (v, y) in self.model.items():
            if owner is None:
                continue
            got = self.col.get([id_], tenant=owner)
            np.testing.assert_array_equal(got.vectors[0], v)
            assert got.attributes["y"] == [y]

    def teardown(self) -> None:
        self.release()
        if self.engine is not None:
            try:
                self.engine.close()
            except Exception:
                if self.engine._datadir is not None:
                    self.engine._datadir.close()
        shutil.rmtree(self.path, ignore_errors=True)


DeltaMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("SHARDWALK_SM_EXAMPLES", "15")),
    stateful_step_count=20,
    deadline=None,
)
TestDeltaMachine = DeltaMachine.TestCase


EXIT_CHILD = """
import sys
import numpy as np
import shardwalk
engine = shardwalk.Engine.open(sys.argv[1])
col = engine.create_collection("c", dim=64, index="hnsw")
rng = np.random.default_rng(0)
for i in range(200):
    col.upsert(np.arange(i * 10, i * 10 + 10), rng.standard_normal((10, 64), dtype=np.float32))
"""


def test_a_process_that_exits_while_its_indexer_inserts_exits_cleanly(tmp_path):
    """A script that writes and ends without closing its engine: the background indexer is
    still inserting the delta's rows when the interpreter exits. It stops between two turns
    (before, a native insert running through the teardown aborted the process: exit status
    134, 'terminate called without an active exception', in 5 runs of 6), and the rows it
    had not indexed are in the log."""
    for run in range(3):
        db = tmp_path / f"db{run}"
        proc = subprocess.run(
            [sys.executable, "-c", EXIT_CHILD, str(db)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        with shardwalk.Engine.open(db) as engine:
            col = engine.collection("c")
            assert len(col) == 2000
            col.wait_indexed()
            assert col.stats()["delta"]["rows"] == 0
            assert col.search(np.zeros(64, np.float32), k=3).ids.size == 3
