"""Coalesced single-query searches (server/coalesce.py, ``[server] coalesce_window_us``): the
batching itself, made deterministic with a search that blocks, and a real server whose
coalesced answers are exactly the uncoalesced ones, per tenant, filter and parameters."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import numpy as np
import pytest
from shardwalk.index.base import SearchResult
from shardwalk.server.app import Server
from shardwalk.server.coalesce import Coalescer
from shardwalk.server.config import parse_config

import shardwalk
from shardwalk import F
from shardwalk.errors import InvalidArgumentError

from .conftest import ADMIN, TENANTS, key_of, seeded_rows


class Blocking:
    """A batch search that records each call's queries; the first call blocks until released,
    so that the calls arriving meanwhile pile up in one pending batch."""

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, queries: np.ndarray) -> SearchResult:
        with self.lock:
            first = not self.calls
            self.calls.append(queries.copy())
        if first:
            self.entered.set()
            assert self.release.wait(10)
        if np.isnan(queries).any():
            raise InvalidArgumentError("queries contain NaN")
        # each query's answer is a function of that query alone
        ids = np.repeat(queries[:, :1].astype(np.int64), 3, axis=1)
        return SearchResult(ids=ids, distances=queries[:, :3].copy())


def query(i: float) -> np.ndarray:
    return np.full((1, 4), i, dtype=np.float32)


def run_alone_then_pile(coalescer: Coalescer, run: Blocking, values: list[float]) -> dict:
    """The first call (value -1) runs alone and blocks; the others arrive while it runs."""
    out: dict = {}

    def call(v: float) -> None:
        try:
            out[v] = coalescer.search("key", query(v), run)
        except Exception as exc:
            out[v] = exc

    first = threading.Thread(target=call, args=(-1.0,))
    first.start()
    assert run.entered.wait(10)
    others = [threading.Thread(target=call, args=(v,)) for v in values]
    for t in others:
        t.start()
    deadline = 100
    while sum(len(b.queries) for b in _pending(coalescer)) < len(values) and deadline:
        threading.Event().wait(0.01)
        deadline -= 1
    run.release.set()
    for t in [first, *others]:
        t.join(10)
    return out


def _pending(coalescer: Coalescer) -> list:
    return [s.pending for s in coalescer._keys.values() if s.pending is not None]


def test_calls_arriving_while_one_runs_share_one_batch() -> None:
    coalescer, run = Coalescer(window=10.0, max_queries=64), Blocking()
    out = run_alone_then_pile(coalescer, run, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert [c.shape[0] for c in run.calls] == [1, 5]  # the lone call, then one batch of five
    for v, (ids, distances) in out.items():  # each gets its own row
        assert ids.tolist() == [[int(v)] * 3] and distances.tolist() == [[v] * 3]
    assert (coalescer.batches, coalescer.coalesced) == (1, 5)
    assert coalescer._keys == {}  # nothing left behind


def test_a_full_batch_starts_at_once_and_the_rest_form_the_next() -> None:
    coalescer, run = Coalescer(window=10.0, max_queries=3), Blocking()
    out = run_alone_then_pile(coalescer, run, [1.0, 2.0, 3.0, 4.0])
    assert sorted(c.shape[0] for c in run.calls) == [1, 1, 3]
    assert all(not isinstance(v, Exception) for v in out.values())


def test_a_pending_batch_waits_at_most_its_window() -> None:
    coalescer, run = Coalescer(window=0.05, max_queries=64), Blocking()
    done = threading.Event()
    first = threading.Thread(target=lambda: coalescer.search("key", query(-1), run))
    first.start()
    assert run.entered.wait(10)

    def second() -> None:
        coalescer.search("key", query(7), run)
        done.set()

    threading.Thread(target=second).start()
    # the first call still blocks: the second ran beside it once its window passed
    assert done.wait(10)
    assert not run.release.is_set()
    run.release.set()
    first.join(10)


def test_a_failing_batch_runs_each_member_alone() -> None:
    """One member's bad query: it gets its own error, the others their own results."""
    coalescer, run = Coalescer(window=10.0, max_queries=64), Blocking()
    out = run_alone_then_pile(coalescer, run, [1.0, float("nan"), 3.0])
    assert isinstance(out[next(v for v in out if v != v)], InvalidArgumentError)
    assert out[1.0][0].tolist() == [[1] * 3] and out[3.0][0].tolist() == [[3] * 3]


def test_config_switch() -> None:
    base = {"api_keys": [{"key": ADMIN, "role": "admin"}]}
    assert parse_config(base).coalesce_window_s == 0  # off by default
    on = parse_config({**base, "server": {"coalesce_window_us": 250, "coalesce_max_queries": 8}})
    assert (on.coalesce_window_s, on.coalesce_max_queries) == (250e-6, 8)
    for bad in (
        {"coalesce_window_us": -1},
        {"coalesce_window_us": "1ms"},
        {"coalesce_max_queries": 1},
    ):
        with pytest.raises(InvalidArgumentError, match="coalesce_"):
            parse_config({**base, "server": bad})


N, DIM = 3000, 16


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    engine = shardwalk.Engine.open(tmp_path_factory.mktemp("coalesce"))
    rows = seeded_rows(N, DIM)
    docs = engine.create_collection(
        "docs", dim=DIM, index="hnsw", attributes={"year": "int64", "lang": "string"}
    )
    docs.upsert(**rows)
    docs.wait_indexed()  # rankings compared across calls: none may run while rows are indexed
    config = parse_config(
        {
            "api_keys": [{"key": ADMIN, "role": "admin"}]
            + [{"key": key_of(t), "tenant": t} for t in TENANTS],
            # a long window: concurrent calls of one key are nearly always coalesced
            "server": {"coalesce_window_us": 20_000, "coalesce_max_queries": 16},
            "limits": {"threads": 16},
        }
    )
    server = Server(engine, config, host="127.0.0.1", port=0).start()
    yield engine, server, rows
    server.stop(grace=1)
    engine.close()


def test_served_coalesced_results_are_exactly_the_uncoalesced_ones(served) -> None:
    """16 threads of single-query calls, admin and tenant keys, with filters and ef: every
    answer equals the same search made alone in process, and calls were in fact coalesced."""
    engine, server, _ = served
    docs = engine.collection("docs")
    alone_search = docs.search

    def slow_search(*args, **kwargs):  # a search long enough for calls to overlap
        time.sleep(0.003)
        return alone_search(*args, **kwargs)

    docs.search = slow_search  # what the server's handler calls
    queries = np.random.default_rng(7).standard_normal((96, DIM)).astype(np.float32)
    kinds = [
        (ADMIN, {}, None),
        (ADMIN, {"ef": 16}, None),
        (ADMIN, {}, F("year") >= 2010),
        (ADMIN, {"tenant": "t2"}, None),
        (key_of("t1"), {}, None),
        (key_of("t1"), {}, F("lang") == "de"),
        (key_of("t3"), {"ef": 200}, None),
    ]
    clients = {key: shardwalk.Client(f"127.0.0.1:{server.port}", api_key=key) for key, *_ in kinds}

    def one(kind: tuple, i: int) -> tuple[np.ndarray, ...]:
        key, options, where = kind
        got = clients[key].collection("docs").search(queries[i], k=7, where=where, **options)
        tenant = options.get("tenant") or (None if key == ADMIN else key[len("key-of-") :])
        params = {n: v for n, v in options.items() if n != "tenant"}
        alone = alone_search(queries[i], k=7, tenant=tenant, where=where, **params)
        return got.ids, alone.ids, got.distances, alone.distances

    coalescer = server.dispatcher.service.coalescer
    with futures.ThreadPoolExecutor(16) as pool:
        for kind in kinds:  # the calls of one kind at once (each kind its own key)
            before = coalescer.batches
            for _attempt in range(5):  # batches form when calls overlap: nearly always at once
                for got, alone, got_d, alone_d in pool.map(
                    lambda i, kind=kind: one(kind, i), range(len(queries))
                ):
                    assert got.tolist() == alone.tolist()
                    np.testing.assert_allclose(got_d, alone_d, rtol=1e-5, atol=1e-5)
                if coalescer.batches > before:
                    break
            assert coalescer.batches > before, kind
    assert coalescer.coalesced >= 2 * coalescer.batches
    for client in clients.values():
        client.close()
    del docs.search
