"""Plain (unscoped) single searches on an hnsw collection run beside the background indexer's
inserts (issue 26): the graph search reads faiss's arrays in place (HNSWIndex.search_beside),
holding only the lock that keeps them where they are, not the index's lock the indexer holds
for its inserts. They return no row twice (rows just linked into the graph are still the
delta's), never one deleted before they began, and keep their recall."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from shardwalk.index.hnsw import HNSWIndex

import shardwalk

from .test_delta import wait_until
from .test_reads_under_writes import _run_aside

DIM = 8
ALL = 1000  # k: every row


@pytest.fixture()
def served(monkeypatch):
    """How many searches HNSWIndex.search_beside answered."""
    count = [0]
    beside = HNSWIndex.search_beside

    def counted(self, *args, **kwargs):
        found = beside(self, *args, **kwargs)
        count[0] += found is not None
        return found

    monkeypatch.setattr(HNSWIndex, "search_beside", counted)
    return count


@pytest.mark.parametrize("hold", ["before", "after"])
def test_a_plain_search_does_not_wait_for_an_index_insert(monkeypatch, served, hold):
    """The background indexer stops inside its insert (holding the index's lock exclusively),
    before faiss links the rows or once it has: a plain search answers meanwhile, with every
    acknowledged row once (the ones the insert links come from the delta), exactly scored."""
    col = shardwalk.Engine.memory().create_collection("c", dim=DIM, index="hnsw")
    rng = np.random.default_rng(1)
    vectors = rng.random((110, DIM), dtype=np.float32)
    col.upsert(np.arange(100), vectors[:100])
    col.wait_indexed()
    entered, release = threading.Event(), threading.Event()
    add = HNSWIndex.add

    def held(self, *args, **kwargs):
        if not threading.current_thread().name.startswith("shardwalk-index"):
            return add(self, *args, **kwargs)
        if hold == "after":
            add(self, *args, **kwargs)
        entered.set()
        assert release.wait(60)
        if hold == "before":
            add(self, *args, **kwargs)

    monkeypatch.setattr(HNSWIndex, "add", held)
    col.upsert(np.arange(100, 110), vectors[100:])
    assert entered.wait(60)
    query = np.full(DIM, 0.5, dtype=np.float32)
    try:
        search, out = _run_aside(lambda: col.search(query, k=ALL))
        search.join(timeout=30)
        assert not search.is_alive(), "a plain search waited for an index insert"
        assert not isinstance(out[0], BaseException), out[0]
    finally:
        release.set()
    ids, distances = out[0].ids[0], out[0].distances[0]
    assert sorted(ids[ids >= 0].tolist()) == list(range(110))  # each once
    np.testing.assert_allclose(
        distances[ids >= 0], ((vectors[ids[ids >= 0]] - query) ** 2).sum(axis=1), rtol=1e-5
    )
    assert served[0] >= 1
    wait_until(lambda: col.stats()["delta"]["rows"] == 0, "the turn to finish")


def test_plain_searches_beside_a_streaming_writer(served):
    """A writer streams upserts of new ids and deletes of old ones (the indexer inserting
    them a turn at a time, making room as it goes) while two threads search: no answer holds
    an id deleted before the search began or one not yet written, none holds an id twice,
    and recall@10 against exact search over the ids live when it began stays high."""
    col = shardwalk.Engine.memory().create_collection("c", dim=DIM, index="hnsw")
    rng = np.random.default_rng(2)
    total = 6000
    vectors = rng.random((total, DIM), dtype=np.float32)
    col.upsert(np.arange(1000), vectors[:1000])
    col.wait_indexed()
    written = np.zeros(total, dtype=bool)  # acknowledged upserts
    written[:1000] = True
    started = 1000  # ids below it may have been written
    deleted = np.zeros(total, dtype=bool)  # acknowledged deletes
    stop = threading.Event()
    errors: list[BaseException] = []
    recalls: list[float] = []

    def write() -> None:
        nonlocal started
        r = np.random.default_rng(3)
        try:
            for start in range(1000, total, 10):
                started = start + 10
                col.upsert(np.arange(start, start + 10), vectors[start : start + 10])
                written[start : start + 10] = True
                gone = r.choice(start, size=3, replace=False)
                gone = gone[~deleted[gone]]
                if gone.size:
                    col.delete(gone)
                    deleted[gone] = True
        except BaseException as exc:
            errors.append(exc)

    def search(seed: int) -> None:
        r = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                query = r.random(DIM, dtype=np.float32)
                live = np.flatnonzero(written & ~deleted)  # acknowledged before the search
                dead = np.flatnonzero(deleted)
                ids = col.search(query, k=10).ids[0]
                top = started
                assert (ids >= 0).all() and len(set(ids.tolist())) == 10
                assert (ids < top).all(), "an id not yet written"
                assert not np.isin(ids, dead).any(), "an id deleted before the search"
                exact = live[np.argsort(((vectors[live] - query) ** 2).sum(axis=1))[:10]]
                recalls.append(len(set(exact.tolist()) & set(ids.tolist())) / 10)
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    readers = [threading.Thread(target=search, args=(s,)) for s in range(2)]
    for t in [writer, *readers]:
        t.start()
    writer.join(timeout=120)
    stop.set()
    for t in readers:
        t.join(timeout=60)
    assert not errors, errors[0]
    assert len(recalls) >= 50, len(recalls)
    assert np.mean(recalls) >= 0.9, np.mean(recalls)  # observed ~0.99
    assert served[0] >= 0.9 * len(recalls), (served[0], len(recalls))
    assert col.stats()["delta"]["indexed_in_background"] > 0
