"""Many threads on one collection: searches, gets, upserts, deletes and checkpoints at once.

Every writer thread owns its own ids, so the collection's state at any moment is one prefix of
each writer's operations. A search or get must agree with some state between its call and its
return: for each writer, a prefix between the operations it had acknowledged when the call
started and the operations it had begun when the call returned. The check is sound (it never
fails a correct engine) and strict: a returned id must exist, with that distance, in some
allowed state; an id that exists unchanged in every allowed state and is closer than the k-th
result must be returned. The same writers in a child process killed with SIGKILL lose nothing
they acknowledged.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

import shardwalk

DIM, K = 8, 5
WRITERS, IDS_PER_WRITER, OPS_PER_WRITER = 4, 40, 120


def vector(writer: int, op: int) -> np.ndarray:
    return np.random.default_rng(writer * 100_003 + op).random(DIM, dtype=np.float32)


@dataclass
class Writer:
    """One writer's operations, and their effect after each prefix (id -> vector)."""

    number: int
    ops: list[tuple[str, int, np.ndarray | None]] = field(default_factory=list)
    states: list[dict[int, np.ndarray]] = field(default_factory=lambda: [{}])
    started: int = 0  # operations begun (the call was made)
    acked: int = 0  # operations acknowledged (the call returned)

    def plan(self, rng: np.random.Generator) -> None:
        state: dict[int, np.ndarray] = {}
        for op in range(OPS_PER_WRITER):
            id_ = self.number * 1000 + int(rng.integers(IDS_PER_WRITER))
            if id_ in state and rng.random() < 0.3:
                self.ops.append(("delete", id_, None))
                state = {i: v for i, v in state.items() if i != id_}
            else:
                v = vector(self.number, op)
                self.ops.append(("upsert", id_, v))
                state = {**state, id_: v}
            self.states.append(state)


def allowed(writers: list[Writer], low: list[int], high: list[int]) -> list[list[dict]]:
    return [w.states[lo : hi + 1] for w, lo, hi in zip(writers, low, high)]


def check_search(query, ids, distances, windows) -> None:
    maybe: dict[int, set[float]] = {}  # id -> distances it may have in some allowed state
    certain: dict[int, float] = {}  # ids in every allowed state, with one vector
    for states in windows:
        for state in states:
            for id_, v in state.items():
                maybe.setdefault(id_, set()).add(float(((query - v) ** 2).sum()))
        first = states[0]
        for id_, v in first.items():
            if all(id_ in s and s[id_] is v for s in states[1:]):
                certain[id_] = float(((query - v) ** 2).sum())
    found = [(int(i), float(d)) for i, d in zip(ids, distances) if i >= 0]
    for id_, d in found:
        assert id_ in maybe, f"returned id {id_} exists in no state of the call's window"
        assert any(abs(d - e) <= 1e-4 * max(1.0, e) for e in maybe[id_]), (id_, d, maybe[id_])
    returned = {i for i, _ in found}
    kth = found[-1][1] if len(found) == K else np.inf
    for id_, d in certain.items():
        if d < kth - 1e-4 * max(1.0, kth):
            assert id_ in returned, f"id {id_} at {d} beats the k-th result {kth} but is missing"
    if len(found) < K:  # fewer than k came back: then fewer than k existed throughout
        assert len(certain) <= len(found), (len(certain), len(found))


def run_writer(col, w: Writer, errors: list) -> None:
    try:
        for kind, id_, v in w.ops:
            w.started += 1
            if kind == "upsert":
                col.upsert([id_], v[None, :])
            else:
                col.delete([id_])
            w.acked += 1
    except BaseException as exc:  # reported by the main thread
        errors.append(exc)


def run_until_written(writers: list, readers: list, stop: threading.Event) -> None:
    """Start readers and writers, wait for the writers, then stop and wait for the readers
    (bounded joins: a hang fails the test's asserts instead of hanging the suite)."""
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(timeout=120)
    stop.set()
    for t in readers:
        t.join(timeout=60)


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_threads_search_get_write_and_checkpoint_against_a_model(tmp_path, where):
    rng = np.random.default_rng(0)
    writers = [Writer(n) for n in range(WRITERS)]
    for w in writers:
        w.plan(rng)
    engine = (
        shardwalk.Engine.memory() if where == "memory" else shardwalk.Engine.open(tmp_path / "db")
    )
    col = engine.create_collection("c", dim=DIM, index="flat")
    errors: list[BaseException] = []
    stop = threading.Event()
    checked = {"searches": 0, "gets": 0, "checkpoints": 0}

    def reader(seed: int) -> None:
        r = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                query = r.random(DIM, dtype=np.float32)
                low = [w.acked for w in writers]
                if r.random() < 0.7:
                    result = col.search(query, k=K)
                    high = [w.started for w in writers]
                    check_search(
                        query, result.ids[0], result.distances[0], allowed(writers, low, high)
                    )
                    checked["searches"] += 1
                else:
                    w = writers[int(r.integers(WRITERS))]
                    id_ = w.number * 1000 + int(r.integers(IDS_PER_WRITER))
                    try:
                        got = col.get([id_]).vectors[0]
                    except shardwalk.NotFoundError:
                        got = None
                    high = [x.started for x in writers]
                    states = w.states[low[w.number] : high[w.number] + 1]
                    if got is None:
                        assert any(id_ not in s for s in states), f"{id_} vanished"
                    else:
                        assert any(id_ in s and np.array_equal(s[id_], got) for s in states)
                    checked["gets"] += 1
        except BaseException as exc:
            errors.append(exc)

    def checkpointer() -> None:
        try:
            while not stop.is_set():
                col.flush()
                checked["checkpoints"] += 1
                time.sleep(0.2)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run_writer, args=(col, w, errors)) for w in writers]
    readers = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    readers.append(threading.Thread(target=checkpointer))
    run_until_written(threads, readers, stop)
    assert not errors, errors[0]
    assert all(w.acked == OPS_PER_WRITER for w in writers)
    # the final state is every writer's last state, and it survives a reopen
    final = {i: v for w in writers for i, v in w.states[-1].items()}
    assert len(col) == len(final)
    got = col.get(sorted(final))
    assert np.array_equal(got.vectors, np.stack([final[i] for i in sorted(final)]))
    assert checked["searches"] > 50 and checked["gets"] > 10, checked
    groups = col.stats()["group_commits"]
    engine.close()
    if where == "disk":
        assert checked["checkpoints"] > 2, checked
        with shardwalk.Engine.open(tmp_path / "db") as again:
            col = again.collection("c")
            assert len(col) == len(final)
            got = col.get(sorted(final))
            assert np.array_equal(got.vectors, np.stack([final[i] for i in sorted(final)]))
    assert groups["writes"] == WRITERS * OPS_PER_WRITER


CHILD = r"""
import sys, threading
import numpy as np
import shardwalk
sys.path.insert(0, sys.argv[2])
from test_concurrency import Writer, WRITERS

rng = np.random.default_rng(0)
writers = [Writer(n) for n in range(WRITERS)]
for w in writers:
    w.plan(rng)
lock = threading.Lock()

def say(text):
    with lock:
        print(text, flush=True)

def run(w):
    for p, (kind, id_, v) in enumerate(w.ops):
        say(f"start {w.number} {p + 1}")
        if kind == "upsert":
            col.upsert([id_], v[None, :])
        else:
            col.delete([id_])
        say(f"ack {w.number} {p + 1}")

engine = shardwalk.Engine.open(sys.argv[1])
col = engine.create_collection("c", dim=8, index="hnsw")
say("ready")
threads = [threading.Thread(target=run, args=(w,)) for w in writers]
for t in threads:
    t.start()
for t in threads:
    t.join()
say("done")
"""


def test_sigkill_during_concurrent_writes_loses_nothing_acknowledged(tmp_path):
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "db"), here],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = [0] * WRITERS
    acked = [0] * WRITERS
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    deadline = time.monotonic() + 60
    while sum(acked) < WRITERS * OPS_PER_WRITER // 3 and time.monotonic() < deadline:
        line = proc.stdout.readline().split()
        if not line:
            break
        if line[0] in ("start", "ack"):
            (started if line[0] == "start" else acked)[int(line[1])] = int(line[2])
    proc.send_signal(signal.SIGKILL)
    for line in proc.stdout.read().splitlines():  # what was printed before it died
        parts = line.split()
        if parts and parts[0] in ("start", "ack"):
            (started if parts[0] == "start" else acked)[int(parts[1])] = int(parts[2])
    proc.wait(timeout=30)
    assert sum(acked) >= WRITERS * OPS_PER_WRITER // 3, (acked, proc.stderr.read())

    rng = np.random.default_rng(0)
    writers = [Writer(n) for n in range(WRITERS)]
    for w in writers:
        w.plan(rng)
    with shardwalk.Engine.open(tmp_path / "db") as engine:
        col = engine.collection("c")
        for w in writers:
            ids = [w.number * 1000 + j for j in range(IDS_PER_WRITER)]
            stored = {}
            for id_ in ids:
                try:
                    stored[id_] = col.get([id_]).vectors[0]
                except shardwalk.NotFoundError:
                    pass
            matches = [
                p
                for p in range(acked[w.number], started[w.number] + 1)
                if set(w.states[p]) == set(stored)
                and all(np.array_equal(w.states[p][i], v) for i, v in stored.items())
            ]
            assert matches, (
                f"writer {w.number}: the reopened state is no prefix between its "
                f"{acked[w.number]} acknowledged and {started[w.number]} started operations"
            )


def test_concurrent_upserts_with_different_attributes_and_tenants_coalesce_correctly(tmp_path):
    """Writes of one group are applied as one insert: each keeps its tenants, sharing and
    attributes (columns differ between writers), before and after a reopen."""
    with shardwalk.Engine.open(tmp_path / "db") as engine:
        col = engine.create_collection("c", dim=DIM, index="hnsw")

        def write(t: int) -> None:
            for j in range(20):
                id_ = t * 100 + j
                attributes = {f"a{t % 3}": [j]} if t % 2 else None
                shared = [[f"s{t}"]] if t % 4 == 1 else None
                col.upsert(
                    [id_],
                    vector(t, j)[None, :],
                    tenants=f"t{t}",
                    attributes=attributes,
                    shared_with=shared,
                )

        threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        groups = col.stats()["group_commits"]
        assert groups["writes"] == 160 and groups["groups"] < 160, groups
    with shardwalk.Engine.open(tmp_path / "db") as engine:
        col = engine.collection("c")
        for t in range(8):
            got = col.get([t * 100 + j for j in range(20)])
            assert got.tenants == [f"t{t}"] * 20
            assert np.array_equal(got.vectors, np.stack([vector(t, j) for j in range(20)]))
            if t % 2:
                assert got.attributes[f"a{t % 3}"] == list(range(20))
            assert got.shared_with == ([[f"s{t}"]] * 20 if t % 4 == 1 else [[]] * 20)
            ids = col.search(vector(t, 3), k=1, tenant=f"t{t}").ids[0]
            assert ids[0] == t * 100 + 3
