"""Many threads at once: the parallel kernels, per-call ef, the engine's thread budget, loading.

Every concurrent run is compared with the same calls made serially on seeded data: answers
must be identical (not merely close), whatever the interleaving and the threads each call got.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import faiss
import numba
import numpy as np
import pytest
from shardwalk.index import HNSWIndex, MultiTenantIndex, PartitionedIndex
from shardwalk.index._kernels import scan_rows
from shardwalk.walks import PPRIndex, build_fingerprints
from shardwalk.walks.generators import power_law_graph

import shardwalk
from shardwalk import _threads, collection_persistence
from shardwalk._threads import SAFE_LAYERS, ThreadBudget
from shardwalk.datasets import clustered_vectors
from shardwalk.errors import FailedPreconditionError, InvalidArgumentError

THREADS = 8


def concurrently(calls: list[Callable[[], Any]], threads: int = THREADS) -> list[Any]:
    """Run ``calls`` from ``threads`` Python threads started together; results in call order."""
    start = threading.Barrier(threads)

    def run(chunk: list[tuple[int, Callable[[], Any]]]) -> list[tuple[int, Any]]:
        start.wait()
        return [(i, call()) for i, call in chunk]

    chunks = [list(enumerate(calls))[t::threads] for t in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        done = [pair for part in pool.map(run, chunks) for pair in part]
    return [result for _, result in sorted(done, key=lambda pair: pair[0])]


@pytest.fixture(scope="module")
def vectors():
    return clustered_vectors(3000, 16, queries=64, tenants=4, seed=11)


# -- parallel kernels from many threads ---------------------------------------------------------
def test_scan_rows_from_many_threads_equals_serial(vectors):
    rows = np.arange(0, 3000, 3, dtype=np.int64)
    batches = [vectors.queries[i : i + 8] for i in range(0, 64, 8)] * 2
    serial = [scan_rows(q, vectors.vectors, rows, 10, False) for q in batches]
    budget = ThreadBudget(2)

    def call(q):  # alternately 1 and 2 numba threads: the answer must not depend on it
        with budget.take(q.shape[0] if int(q[0, 0] * 1e6) % 2 else 1):
            return scan_rows(q, vectors.vectors, rows, 10, False)

    got = concurrently([lambda q=q: call(q) for q in batches])
    for (ids, dist), (ids_s, dist_s) in zip(got, serial):
        np.testing.assert_array_equal(ids, ids_s)
        np.testing.assert_array_equal(dist, dist_s)


@pytest.mark.parametrize("quantization", ["none", "sq8"])
def test_probe_leaves_from_many_threads_equals_serial(vectors, quantization):
    """probe_leaves through MultiTenantIndex.search, with the caches it fills on the read path
    (a row set's view of the tree, the packed live bitmap) emptied first, so the threads race
    to build them."""
    index = MultiTenantIndex(dim=16, metric="l2", train_size=1000, quantization=quantization)
    index.add(np.arange(3000), vectors.vectors)
    index.delete(np.arange(0, 3000, 7))
    tenant_rows = np.arange(1, 3000, 2, dtype=np.int64)
    calls = []
    for i in range(0, 64, 4):
        q = vectors.queries[i : i + 4]
        calls.append(lambda q=q: index.search(q, 10))
        calls.append(lambda q=q: index.search(q[:1], 5, rows=tenant_rows, rows_key="odd"))
    serial = [call() for call in calls]
    index._lists.clear()
    index._packed_alive = None
    got = concurrently(calls)
    for a, b in zip(got, serial):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.distances, b.distances)


@pytest.fixture(scope="module")
def graph():
    return power_law_graph(2000, 12000, seed=3)


def test_fingerprint_walk_kernels_from_many_threads_equal_serial(graph):
    serial = build_fingerprints(graph, walks_per_node=6, seed=9, block_size=300)
    got = concurrently(
        [lambda: build_fingerprints(graph, walks_per_node=6, seed=9, block_size=300)] * THREADS
    )
    for store in got:
        np.testing.assert_array_equal(store.indptr, serial.indptr)
        np.testing.assert_array_equal(store.nodes, serial.nodes)
        np.testing.assert_array_equal(store.counts, serial.counts)


@pytest.mark.parametrize("method", ["fingerprint", "push"])
def test_ppr_queries_from_many_threads_equal_serial(graph, method):
    index = PPRIndex(graph, build_fingerprints(graph, walks_per_node=6, seed=9))
    params = {"r_max": 1e-5} if method == "push" else {}
    seeds = [[int(s)] for s in np.random.default_rng(5).choice(2000, 48, replace=False)]
    batches = [seeds[i : i + 6] for i in range(0, 48, 6)]
    calls = [lambda b=b: index.query_batch(b, k=20, method=method, **params) for b in batches]
    calls += [lambda s=s: index.query(s, k=20, method=method, **params) for s in seeds[:16]]
    serial = [call() for call in calls]
    got = concurrently(calls)
    for a, b in zip(got, serial):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.error, b.error)


def test_ppr_scratch_pool_is_bounded(graph):
    index = PPRIndex(graph)
    index.max_pooled_scratch = 2
    with ExitStack() as stack:  # five calls at once hold five scratch sets
        held = [stack.enter_context(index._scratch(1)) for _ in range(5)]
        assert len({id(s) for s in held}) == 5
    assert len(index._pool) == 2
    concurrently([lambda: index.query(1, k=5, method="push")] * 16)
    assert len(index._pool) <= 2


def test_ppr_scratch_of_a_failed_call_is_not_reused(graph):
    index = PPRIndex(graph)
    with index._scratch(1) as s:
        pass
    with pytest.raises(RuntimeError), index._scratch(1) as dirty:
        assert dirty is s
        dirty.flow[0, :3] = 1.0  # what a kernel interrupted mid-way would leave
        raise RuntimeError("kernel failed")
    assert index._pool == []


# -- per-call ef ----------------------------------------------------------------------------------
def ef_calls(index, queries, efs):
    calls = []
    for ef in efs:
        for i in range(0, queries.shape[0], 16):
            calls.append(lambda ef=ef, i=i: index.search(queries[i : i + 16], 10, ef=ef))
            calls.append(lambda ef=ef, i=i: index.search(queries[i : i + 1], 10, ef=ef))
    order = np.random.default_rng(1).permutation(len(calls))  # efs interleaved
    return [calls[j] for j in order]


@pytest.mark.parametrize("kind", ["hnsw", "partitioned"])
def test_searches_with_different_ef_from_many_threads_equal_serial(vectors, kind):
    if kind == "hnsw":
        index = HNSWIndex(dim=16, metric="l2", m=8, ef_construction=100, threads=1)
    else:
        index = PartitionedIndex(
            dim=16, metric="l2", partitions=4, m=8, ef_construction=100, train_size=500, threads=1
        )
    index.add(np.arange(3000), vectors.vectors)
    calls = ef_calls(index, vectors.queries, [10, 12, 40, 200])
    serial = [call() for call in calls]
    # the efs must give different answers, or this test could not see a race
    low = index.search(vectors.queries, 10, ef=10).ids
    assert not np.array_equal(low, index.search(vectors.queries, 10, ef=200).ids)
    for _ in range(3):
        got = concurrently(calls)
        for a, b in zip(got, serial):
            np.testing.assert_array_equal(a.ids, b.ids)
            np.testing.assert_array_equal(a.distances, b.distances)


# -- the thread budget ----------------------------------------------------------------------------
def test_budget_grants_what_is_free_and_sets_numba_and_faiss_threads():
    budget = ThreadBudget(2)
    numba_before, faiss_before = numba.get_num_threads(), faiss.omp_get_max_threads()
    with budget.take(8) as granted:
        assert granted == 2
        assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
        assert faiss.omp_get_max_threads() == 2
        with budget.take(8) as nested:  # a nested call takes nothing more
            assert nested == 2
        with ThreadBudget(4).take(1) as nested:  # also from another budget
            assert nested == 1
            assert numba.get_num_threads() == 1
        assert budget.stats()["in_use"] == 2
    assert (numba.get_num_threads(), faiss.omp_get_max_threads()) == (numba_before, faiss_before)
    with budget.take(1) as granted:
        assert granted == 1 and numba.get_num_threads() == 1
    assert budget.stats() == {
        "threads": 2,
        "in_use": 0,
        "peak": 2,
        "parallel_calls": 1,
        "largest_grant": 2,
        "squeezed": 0,
    }


def test_budget_shares_its_slots_and_never_makes_a_call_wait():
    """Regression: calls waited for a free slot; eight threads searching one query each then
    queued on the budget's lock (0.5x the QPS of one thread). A call always has its caller's
    thread; the other N - 1 slots go to whoever asks first."""
    budget = ThreadBudget(3)
    holding = threading.Event()
    release = threading.Event()

    def hold_two():
        with budget.take(2):
            holding.set()
            assert release.wait(10)

    t = threading.Thread(target=hold_two)
    t.start()
    assert holding.wait(10)
    with budget.take(8) as granted:  # one slot left besides its own thread
        assert granted == 2
        got = []
        other = threading.Thread(target=lambda: got.append(budget.take(4).__enter__()))
        other.start()
        other.join(10)
        assert got == [1]  # none free: it runs on its own thread at once
    release.set()
    t.join(10)
    stats = budget.stats()
    assert stats["squeezed"] == 2 and stats["peak"] == 4 and stats["in_use"] == 0


def test_budget_validates_threads():
    for bad in (0, -1, 1.5, True, "2", 2000):
        with pytest.raises(
            InvalidArgumentError, match=r"threads must be an integer in \[1, 1024\]"
        ):
            ThreadBudget(bad)
    with pytest.raises(InvalidArgumentError, match="threads must be an integer"):
        shardwalk.Engine.memory(threads=0)


def test_threading_layer_is_thread_safe():
    assert _threads.check_threading_layer() in SAFE_LAYERS
    assert numba.threading_layer() in SAFE_LAYERS


def test_import_leaves_numba_threading_layer_setting_alone():
    """``import shardwalk`` changes no process-wide setting; the engine's first parallel work
    loads a thread-safe layer and puts numba's setting back as it was."""
    code = (
        "import numba\n"
        "before = numba.config.THREADING_LAYER\n"
        "import shardwalk\n"
        "print('import:', before, numba.config.THREADING_LAYER)\n"
        "shardwalk.Engine.memory().close()\n"
        "print('engine:', numba.config.THREADING_LAYER, numba.threading_layer())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    assert lines["import"] == "default default", out.stderr
    setting, layer = lines["engine"].split()
    assert setting == "default" and layer in SAFE_LAYERS


def test_an_unsafe_threading_layer_is_refused_with_a_hint():
    code = (
        "import shardwalk\n"
        "try:\n"
        "    shardwalk.Engine.memory()\n"
        "except shardwalk.FailedPreconditionError as e:\n"
        "    print('refused:', e)\n"
    )
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert "refused: numba's threading layer is 'workqueue'" in out.stdout, out.stderr
    assert "pip install tbb" in out.stdout


def test_engine_threads_1_runs_a_batch_search_on_one_thread(tmp_path, vectors, monkeypatch):
    import shardwalk.index.tenancy as tenancy

    seen = []
    probe = tenancy.probe_leaves

    def counting_probe(*args):
        seen.append(numba.get_num_threads())
        return probe(*args)

    monkeypatch.setattr(tenancy, "probe_leaves", counting_probe)
    with shardwalk.Engine.open(tmp_path / "db", threads=1) as engine:
        assert engine.threads == 1
        for kind, params in [("hnsw", {}), ("multitenant", {"train_size": 1000})]:
            col = engine.create_collection(kind, dim=16, index=kind, **params)
            col.upsert(vectors.ids, vectors.vectors)
            col.wait_indexed()  # searched through the index, not the delta's exact scan
            col.search(vectors.queries, 10)
        stats = engine.budget.stats()
        assert stats["parallel_calls"] == 0 and stats["largest_grant"] == 1
        assert seen and set(seen) == {1}
    seen.clear()
    with shardwalk.Engine.open(tmp_path / "db", threads=1) as engine:  # loaded from disk
        for kind in ("hnsw", "multitenant"):
            engine.collection(kind).search(vectors.queries, 10)
        stats = engine.budget.stats()
        assert stats["parallel_calls"] == 0 and stats["largest_grant"] == 1
        assert seen and set(seen) == {1}


def test_engine_budget_a_batch_takes_the_free_slots_and_one_query_takes_one(vectors):
    with shardwalk.Engine.memory(threads=2) as engine:
        col = engine.create_collection("v", dim=16, index="hnsw")
        col.upsert(vectors.ids, vectors.vectors)
        col.wait_indexed()  # the searches below run through the index, not the delta's scan
        before = engine.budget.stats()["parallel_calls"]
        col.search(vectors.queries[0], 10)  # one query: its own thread, no slot
        assert engine.budget.stats()["parallel_calls"] == before
        col.search(vectors.queries, 10)
        assert engine.budget.stats()["largest_grant"] == 2


def test_engine_concurrent_searches_never_exceed_the_budget(vectors):
    with shardwalk.Engine.memory(threads=2) as engine:
        col = engine.create_collection("v", dim=16, index="hnsw")
        col.upsert(vectors.ids, vectors.vectors)
        # serial and concurrent answers compared: no row may move from the write delta (scored
        # exactly) into the index between them
        col.wait_indexed()
        serial = [col.search(vectors.queries[i : i + 8], 10, ef=16 + i) for i in range(0, 64, 8)]
        got = concurrently(
            [
                lambda i=i: col.search(vectors.queries[i : i + 8], 10, ef=16 + i)
                for i in range(0, 64, 8)
            ]
        )
        for a, b in zip(got, serial):
            np.testing.assert_array_equal(a.ids, b.ids)
        assert engine.budget.stats()["peak"] <= 2


# -- loading ----------------------------------------------------------------------------------------
@pytest.fixture
def two_collections(tmp_path: Path, vectors) -> Path:
    with shardwalk.Engine.open(tmp_path / "db") as engine:
        for name in ("slow", "fast"):
            engine.create_collection(name, dim=16, index="flat").upsert(
                vectors.ids[:200], vectors.vectors[:200]
            )
    return tmp_path / "db"


def slow_attach(monkeypatch, name: str):
    """Make loading collection ``name`` block until ``release`` is set; counts its loads."""
    entered, release, loads = threading.Event(), threading.Event(), []
    attach = collection_persistence.attach

    def attach_slowly(collection, *args, **kwargs):
        if collection.name == name:
            loads.append(1)
            entered.set()
            assert release.wait(20)
        return attach(collection, *args, **kwargs)

    monkeypatch.setattr(collection_persistence, "attach", attach_slowly)
    return entered, release, loads


def test_a_slow_load_does_not_hold_up_other_collections(two_collections, monkeypatch, vectors):
    entered, release, _ = slow_attach(monkeypatch, "slow")
    with shardwalk.Engine.open(two_collections) as engine, ThreadPoolExecutor(2) as pool:
        slow = pool.submit(engine.collection, "slow")
        assert entered.wait(10)
        fast = pool.submit(engine.collection, "fast")
        found = fast.result(timeout=10)  # while "slow" is still loading
        assert not slow.done()
        assert found.search(vectors.vectors[:1], 1).ids[0, 0] == vectors.ids[0]
        assert engine.collections() == ["fast", "slow"]  # the engine lock is free meanwhile
        release.set()
        assert slow.result(timeout=20) is engine.collection("slow")


def test_callers_of_one_collection_share_one_load(two_collections, monkeypatch):
    entered, release, loads = slow_attach(monkeypatch, "slow")
    with shardwalk.Engine.open(two_collections) as engine, ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(engine.collection, "slow") for _ in range(4)]
        assert entered.wait(10)
        time.sleep(0.1)
        release.set()
        got = [f.result(timeout=20) for f in futures]
        assert all(c is got[0] for c in got)
        assert loads == [1]


def test_a_failed_load_fails_its_waiters_and_can_be_retried(two_collections, monkeypatch):
    attach, calls = collection_persistence.attach, []

    def failing_once(collection, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.2)  # let the other caller start waiting
            raise OSError("disk hiccup")
        return attach(collection, *args, **kwargs)

    monkeypatch.setattr(collection_persistence, "attach", failing_once)
    with shardwalk.Engine.open(two_collections) as engine, ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(engine.collection, "slow") for _ in range(2)]
        for f in futures:
            with pytest.raises(OSError, match="disk hiccup"):
                f.result(timeout=20)
        assert len(engine.collection("slow")) == 200
        assert len(calls) == 2


def test_drop_and_close_wait_for_a_load_in_progress(two_collections, monkeypatch):
    entered, release, _ = slow_attach(monkeypatch, "slow")
    engine = shardwalk.Engine.open(two_collections)
    with ThreadPoolExecutor(2) as pool:
        loading = pool.submit(engine.collection, "slow")
        assert entered.wait(10)
        dropping = pool.submit(engine.drop_collection, "slow")
        time.sleep(0.2)
        assert not dropping.done()  # the files stay until the load is done
        release.set()
        loading.result(timeout=20)
        dropping.result(timeout=20)
        assert engine.collections() == ["fast"]
        entered.clear()
        release.clear()
    entered, release, _ = slow_attach(monkeypatch, "fast")
    with ThreadPoolExecutor(2) as pool:
        loading = pool.submit(engine.collection, "fast")
        assert entered.wait(10)
        closing = pool.submit(engine.close)
        time.sleep(0.2)
        assert not closing.done()
        release.set()
        with pytest.raises(FailedPreconditionError, match="the engine is closed"):
            loading.result(timeout=20)
        closing.result(timeout=20)
    shardwalk.Engine.open(two_collections).close()  # the directory was released


def test_in_thread_runs_in_a_named_thread_and_its_wait_raises_what_failed() -> None:
    names: list[str] = []
    wait = _threads.in_thread(lambda: names.append(threading.current_thread().name), "sw-test")
    wait()
    assert names == ["sw-test"]

    def fails() -> None:
        raise ValueError("in the thread")

    wait = _threads.in_thread(fails, "sw-test-fails")
    with pytest.raises(ValueError, match="in the thread"):
        wait()
