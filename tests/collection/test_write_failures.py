"""Writes that fail part-way (issue 20, items 11, 14 and 15).

- A read of the live write-ahead log (a search restoring a Ray actor reads the vectors written
  since the last checkpoint back from it) changes nothing: it reads up to an offset taken under
  the write lock and never cuts what looks like a torn tail, which may be an append in progress
  that is about to be acknowledged. Only an open cuts a torn tail.
- A graph whose log append failed (a full disk mid-record) closes, as a collection does:
  nothing is appended after a partial record, and the next open needs no ``recover=True``.
- A write appended to the log whose apply in memory then failed is durable (it replays at the
  next open): its caller gets ``OutcomeUnknownError`` (gRPC UNKNOWN), not a failure.

Faults are injected at ``WriteAheadLog.append_encoded`` (every append of a collection or a graph
goes through it) or at the in-memory apply.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import shardwalk
import shardwalk.wal as wal_module
from shardwalk import (
    CorruptionError,
    FailedPreconditionError,
    OutcomeUnknownError,
    collection_persistence,
    collection_writes,
)
from shardwalk.errors import error_for_code
from shardwalk.wal import WriteAheadLog

DIM = 4
_append = WriteAheadLog.append_encoded  # the real one


def vec(i: int) -> np.ndarray:
    return np.full((1, DIM), float(i), dtype=np.float32)


def vecs(ids: list[int]) -> np.ndarray:
    return np.concatenate([vec(i) for i in ids])


def _batch(i: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"id": pa.array([i], pa.int64())})


def close_failed(engine: shardwalk.Engine) -> None:
    """Close an engine holding a failed collection (which cannot be checkpointed: its log
    replays at the next open)."""
    try:
        engine.close()
    except FailedPreconditionError:
        pass


def edges_of(graph: shardwalk.Graph) -> set[tuple[int, int]]:
    csr = graph.csr
    src = np.repeat(np.arange(csr.num_nodes), np.diff(csr.indptr))
    ids = csr.node_ids
    return {(int(ids[s]), int(ids[d])) for s, d in zip(src.tolist(), csr.indices.tolist())}


# -- item 11: reading the live log --------------------------------------------------------------
def test_replay_with_an_end_never_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "wal.log")
    WriteAheadLog.create(path)
    log = WriteAheadLog(path)
    for i in range(3):
        log.append("upsert", _batch(i))
    acknowledged = log.size
    record = wal_module.encode("upsert", _batch(3))
    log.append_encoded([record[: len(record) // 2]])  # an append in progress (or torn)
    log.close()
    before = Path(path).read_bytes()
    modes = []
    real_open = open

    def spy(file, mode="r", *args, **kwargs):
        modes.append(mode)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(wal_module, "open", spy, raising=False)
    got = [r.batch.column(0).to_pylist() for r in WriteAheadLog.replay(path, end=acknowledged)]
    assert got == [[0], [1], [2]]
    # an end inside the unfinished record: corruption (every byte before end was
    # acknowledged), raised without cutting anything
    with pytest.raises(CorruptionError, match=r"is incomplete .* hold only acknowledged"):
        list(WriteAheadLog.replay(path, end=len(before)))
    with pytest.raises(CorruptionError, match="lost acknowledged writes"):
        list(WriteAheadLog.replay(path, end=len(before) + 1))
    assert Path(path).read_bytes() == before
    assert set(modes) <= {"rb"}, modes
    # the open path (no end) is the one that cuts a torn tail
    assert len(list(WriteAheadLog.replay(path))) == 3
    assert Path(path).stat().st_size == acknowledged


def test_a_reader_never_cuts_an_append_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic: the reader runs while half of a group's record is in the file."""
    path = tmp_path / "db"
    engine = shardwalk.Engine.open(path)
    col = engine.create_collection("c", dim=DIM, index="flat")
    col.upsert([1, 2], vecs([1, 2]))
    rows = col._rows.lookup(np.array([1, 2]))
    wal = col._wal.path
    half_written, go_on = threading.Event(), threading.Event()

    def paused_append(self: WriteAheadLog, records: list[bytes]) -> None:
        data = b"".join(records)
        _append(self, [data[: len(data) // 2]])
        half_written.set()
        assert go_on.wait(60)
        _append(self, [data[len(data) // 2 :]])

    monkeypatch.setattr(WriteAheadLog, "append_encoded", paused_append)
    done: list[int] = []
    writer = threading.Thread(target=lambda: done.append(col.upsert([3], vec(3))))
    writer.start()
    try:
        assert half_written.wait(60)
        size = os.path.getsize(wal)
        with col._rw.read():  # as a search restoring a Ray actor holds it
            got = collection_persistence.logged_vectors(col, rows)
        assert os.path.getsize(wal) == size  # the append in progress was not cut
        np.testing.assert_array_equal(got, vecs([1, 2]))
    finally:
        go_on.set()
        writer.join()
    assert done == [1]  # acknowledged
    monkeypatch.undo()
    engine.close()
    with shardwalk.Engine.open(path) as engine:  # no recover needed
        assert engine.recovered == []
        np.testing.assert_array_equal(
            engine.collection("c").get([1, 2, 3]).vectors, vecs([1, 2, 3])
        )


def test_reads_of_the_live_log_racing_group_commits_lose_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers group-commit (each append written in two steps, so a reader often finds half a
    record at the end of the file) while a reader reads the log back through the read path."""
    path = tmp_path / "db"
    engine = shardwalk.Engine.open(path)
    col = engine.create_collection("c", dim=DIM, index="flat")
    base = list(range(1, 9))
    col.upsert(base, vecs(base))
    rows = col._rows.lookup(np.array(base))
    wal = col._wal.path

    def split_append(self: WriteAheadLog, records: list[bytes]) -> None:
        data = b"".join(records)
        _append(self, [data[: len(data) // 2]])
        _append(self, [data[len(data) // 2 :]])

    monkeypatch.setattr(WriteAheadLog, "append_encoded", split_append)
    acknowledged: list[int] = []
    shrunk: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    writing = threading.Event()
    writing.set()

    def write(t: int) -> None:
        try:
            for j in range(20):
                i = 100 + 20 * t + j
                col.upsert([i], vec(i))
                acknowledged.append(i)
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        reads = 0
        while writing.is_set() or reads < 5:
            reads += 1
            try:
                before = os.path.getsize(wal)
                with col._rw.read():
                    got = collection_persistence.logged_vectors(col, rows)
                after = os.path.getsize(wal)
                if after < before:
                    shrunk.append((before, after))
                np.testing.assert_array_equal(got, vecs(base))
            except BaseException as exc:
                errors.append(exc)
                return

    writers = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    reader = threading.Thread(target=read)
    reader.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    writing.clear()
    reader.join()
    assert not errors, errors
    assert not shrunk, f"a reader shortened the live log: {shrunk}"
    assert sorted(acknowledged) == list(range(100, 180))
    monkeypatch.undo()
    engine.close()
    with shardwalk.Engine.open(path) as engine:
        assert engine.recovered == []
        ids = base + acknowledged
        np.testing.assert_array_equal(engine.collection("c").get(ids).vectors, vecs(ids))


# -- item 14: a failed graph-log append closes the graph ----------------------------------------
def test_a_failed_graph_log_append_closes_the_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "db"
    engine = shardwalk.Engine.open(path)
    g = engine.create_graph("g", [[0, 1], [1, 2]])
    g.upsert_edges([[2, 3]])  # acknowledged

    def full_disk(self: WriteAheadLog, records: list[bytes]) -> None:
        data = b"".join(records)
        _append(self, [data[: len(data) // 2]])  # part of the record lands, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(WriteAheadLog, "append_encoded", full_disk)
    with pytest.raises(
        FailedPreconditionError,
        match=r"graph 'g': appending this upsert_edges batch to the write-ahead log failed "
        r"\(the exception's cause says why\), so it was not acknowledged",
    ) as info:
        g.upsert_edges([[3, 4]])
    assert "No space left on device" in str(info.value.__cause__)
    monkeypatch.undo()  # space freed: still refused until reopened
    for call in (
        lambda: g.upsert_edges([[4, 5]]),
        lambda: g.delete_edges([[0, 1]]),
        lambda: g.ppr(0, k=3, method="exact"),
    ):
        with pytest.raises(FailedPreconditionError, match="stopped at a failed log append"):
            call()
    engine.close()
    with shardwalk.Engine.open(path) as engine:  # the torn tail is cut; no recover needed
        assert edges_of(engine.graph("g")) == {(0, 1), (1, 2), (2, 3)}
        assert engine.recovered == []
        engine.graph("g").upsert_edges([[5, 6]])  # and it takes writes again
    with shardwalk.Engine.open(path) as engine:
        assert edges_of(engine.graph("g")) == {(0, 1), (1, 2), (2, 3), (5, 6)}


# -- item 15: appended, not applied: outcome unknown --------------------------------------------
def _fail(*args: object, **kwargs: object) -> None:
    raise RuntimeError("injected apply failure")


def _fail_for(monkeypatch: pytest.MonkeyPatch, col: object, step: str) -> None:
    """Make ``collection_writes.<step>`` (apply_upsert, apply_delete) fail for ``col`` only."""
    original = getattr(collection_writes, step)

    def failing(collection: object, *args: object, **kwargs: object) -> None:
        if collection is col:
            _fail()
        original(collection, *args, **kwargs)

    monkeypatch.setattr(collection_writes, step, failing)


# the server may keep internal exception text out of what it sends: matched embedded only
CAUSE = r", but applying it now failed \(the exception's cause says why\)"
DURABLE = (
    r"outcome unknown: this {} is durable in the write-ahead log and will be applied when the "
    r"{} is reopened"
)


def test_outcome_unknown_error_class() -> None:
    assert OutcomeUnknownError.code == "UNKNOWN"
    assert error_for_code("UNKNOWN") is OutcomeUnknownError
    assert issubclass(OutcomeUnknownError, shardwalk.ShardwalkError)


@pytest.mark.parametrize("op", ["upsert", "delete"])
def test_a_logged_write_whose_apply_fails_has_an_unknown_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, op: str
) -> None:
    path = tmp_path / "db"
    engine = shardwalk.Engine.open(path)
    col = engine.create_collection("c", dim=DIM, index="flat")
    col.upsert([1, 2], vecs([1, 2]))
    _fail_for(monkeypatch, col, "apply_upsert" if op == "upsert" else "apply_delete")
    with pytest.raises(
        OutcomeUnknownError,
        match="collection 'c': " + DURABLE.format("write", "collection") + CAUSE,
    ) as info:
        if op == "upsert":
            col.upsert([3], vec(3))
        else:
            col.delete([1])
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(FailedPreconditionError, match="stopped at a failed write"):
        col.search(vec(1), k=1)
    with pytest.raises(FailedPreconditionError, match="stopped at a failed write"):
        col.upsert([4], vec(4))  # refused before the log: not appended
    close_failed(engine)
    with shardwalk.Engine.open(path) as engine:  # the write was durable: it is there
        c = engine.collection("c")
        assert [i for i in (1, 2, 3) if i in c] == ([1, 2, 3] if op == "upsert" else [2])
    # in memory nothing is durable: the same fault is a failure, not an unknown outcome
    with shardwalk.Engine.memory() as engine:
        col = engine.create_collection("c", dim=DIM, index="flat")
        col.upsert([1, 2], vecs([1, 2]))
        _fail_for(monkeypatch, col, "apply_upsert" if op == "upsert" else "apply_delete")
        with pytest.raises(FailedPreconditionError, match="stopped at a failed write"):
            col.upsert([3], vec(3)) if op == "upsert" else col.delete([1])


def test_a_logged_graph_batch_whose_apply_fails_has_an_unknown_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "db"
    engine = shardwalk.Engine.open(path)
    g = engine.create_graph("g", [[0, 1]])
    monkeypatch.setattr(g, "_apply", _fail)
    with pytest.raises(
        OutcomeUnknownError,
        match="graph 'g': " + DURABLE.format("upsert_edges batch", "graph") + CAUSE,
    ):
        g.upsert_edges([[1, 2]])
    with pytest.raises(FailedPreconditionError, match="stopped at a failed update"):
        g.upsert_edges([[2, 3]])
    engine.close()
    with shardwalk.Engine.open(path) as engine:
        assert edges_of(engine.graph("g")) == {(0, 1), (1, 2)}
    with shardwalk.Engine.memory() as engine:  # nothing durable: a failure
        g = engine.create_graph("g", [[0, 1]])
        monkeypatch.setattr(g, "_apply", _fail)
        with pytest.raises(FailedPreconditionError, match="stopped at a failed update"):
            g.upsert_edges([[1, 2]])


def test_outcome_unknown_through_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gRPC UNKNOWN on the wire, re-raised by the client as the same class and message."""
    from shardwalk.server.app import Server
    from shardwalk.server.config import parse_config

    import shardwalk.client as client_module

    codes = []
    translate = client_module._translate

    def spy(exc, *where):
        codes.append(exc.code().name)
        return translate(exc, *where)

    monkeypatch.setattr(client_module, "_translate", spy)
    engine = shardwalk.Engine.open(tmp_path / "db")
    config = parse_config({"api_keys": [{"key": "admin-key", "role": "admin"}]})
    server = Server(engine, config, host="127.0.0.1", port=0).start()
    try:
        with shardwalk.Client(
            f"127.0.0.1:{server.port}", api_key="admin-key", timeout=120
        ) as client:
            client.create_collection("c", dim=DIM, index="flat")
            client.create_graph("g", [[0, 1]])
            _fail_for(monkeypatch, engine.collection("c"), "apply_upsert")
            monkeypatch.setattr(engine.graph("g"), "_apply", _fail)
            with pytest.raises(OutcomeUnknownError, match=DURABLE.format("write", "collection")):
                client.collection("c").upsert([1], vec(1))
            with pytest.raises(
                OutcomeUnknownError, match=DURABLE.format("upsert_edges batch", "graph")
            ):
                client.graph("g").upsert_edges([[1, 2]])
            assert codes == ["UNKNOWN", "UNKNOWN"]
            with pytest.raises(FailedPreconditionError, match="stopped at a failed write"):
                client.collection("c").upsert([2], vec(2))
    finally:
        server.stop(grace=1)
        close_failed(engine)
    with shardwalk.Engine.open(tmp_path / "db") as engine:
        np.testing.assert_array_equal(engine.collection("c").get([1]).vectors, vec(1))
        assert edges_of(engine.graph("g")) == {(0, 1), (1, 2)}
