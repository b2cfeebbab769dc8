"""The write-ahead log and snapshots: torn writes are detected and skipped, corruption raises;
one owner per data directory, and the lock error says who it is."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

import shardwalk
from shardwalk import CorruptionError
from shardwalk.wal import WriteAheadLog


def batch(i: int) -> pa.RecordBatch:
    return pa.record_batch({"_id": pa.array([i, i + 1], pa.int64())})


def test_wal_round_trip(tmp_path):
    path = str(tmp_path / "w.log")
    WriteAheadLog.create(path)
    log = WriteAheadLog(path)
    for i in range(5):
        log.append("delete", batch(i))
    log.close()
    got = [(r.op, r.batch.column(0).to_pylist()) for r in WriteAheadLog.replay(path)]
    assert got == [("delete", [i, i + 1]) for i in range(5)]


def test_every_torn_tail_is_skipped_and_cut(tmp_path):
    path = str(tmp_path / "w.log")
    WriteAheadLog.create(path)
    log = WriteAheadLog(path)
    log.append("delete", batch(0))
    good = log.size
    log.append("delete", batch(10))
    full = log.size
    log.close()
    data = open(path, "rb").read()
    for cut in range(good, full):  # every prefix of the last record, header included
        with open(path, "wb") as f:
            f.write(data[:cut])
        got = [r.batch.column(0).to_pylist() for r in WriteAheadLog.replay(path)]
        assert got == [[0, 1]], cut
        assert os.path.getsize(path) == good  # the torn bytes are cut off
    # a zero-filled tail (what some filesystems leave after a power loss)
    open(path, "wb").write(data + b"\0" * 37)
    assert len(list(WriteAheadLog.replay(path))) == 2
    assert os.path.getsize(path) == full


def test_a_flipped_bit_in_a_complete_last_record_is_corruption_not_a_torn_write(tmp_path):
    """Issue 8: a full-length last record that fails its checksum may have been acknowledged
    (fsynced whole); dropping it as torn would silently lose an acknowledged write."""
    path = str(tmp_path / "w.log")
    WriteAheadLog.create(path)
    log = WriteAheadLog(path)
    log.append("delete", batch(0))
    good = log.size
    log.append("delete", batch(10))
    full = log.size
    log.close()
    corrupt = bytearray(open(path, "rb").read())
    corrupt[full - 1] ^= 0xFF
    open(path, "wb").write(bytes(corrupt))
    with pytest.raises(
        CorruptionError,
        match=re.escape(
            f"record at byte {good} ({full - good} bytes; the last record in the file) fails "
            "its checksum although it is complete, so it is not a torn write"
        ),
    ):
        list(WriteAheadLog.replay(path))
    assert open(path, "rb").read() == bytes(corrupt)  # nothing cut


def test_corruption_in_the_middle_raises(tmp_path):
    path = str(tmp_path / "w.log")
    WriteAheadLog.create(path)
    log = WriteAheadLog(path)
    log.append("delete", batch(0))
    first = log.size
    log.append("delete", batch(10))
    log.close()
    data = bytearray(open(path, "rb").read())
    data[first - 1] ^= 0xFF  # inside the first record's payload
    open(path, "wb").write(bytes(data))
    with pytest.raises(CorruptionError, match=r"record at byte 0 .* fails its checksum although"):
        list(WriteAheadLog.replay(path))
    data = bytearray(open(path, "rb").read())
    data[0:4] = b"XXXX"
    open(path, "wb").write(bytes(data))
    with pytest.raises(CorruptionError, match=r"record at byte 0 .* has no record marker"):
        list(WriteAheadLog.replay(path))


def test_torn_upsert_at_open_loses_only_the_unacknowledged_record(tmp_path):
    path = tmp_path / "db"
    eng = shardwalk.Engine.open(path)
    col = eng.create_collection("c", dim=4, index="flat")
    col.upsert([1, 2], np.eye(4)[:2])
    col.upsert([3], np.eye(4)[2:3])
    wal = path / "collections" / "c" / eng._datadir.manifest["collections"]["c"]["wal"]
    eng._datadir.close()  # crash: no checkpoint
    size = os.path.getsize(wal)
    with open(wal, "r+b") as f:
        f.truncate(size - 5)
    with shardwalk.Engine.open(path) as eng:
        col = eng.collection("c")
        assert len(col) == 2 and 3 not in col
        col.upsert([4], np.eye(4)[3:4])  # the log continues cleanly after the cut
    with shardwalk.Engine.open(path) as eng:
        assert sorted(eng.collection("c").search(np.eye(4)[3], k=5).ids[0][:3].tolist()) == [
            1,
            2,
            4,
        ]


def test_snapshot_corruption_is_detected(tmp_path):
    path = tmp_path / "db"
    with shardwalk.Engine.open(path) as eng:
        eng.create_collection("c", dim=4, index="hnsw").upsert(
            np.arange(50), np.random.default_rng(0).random((50, 4))
        )
    manifest = json.loads((path / "manifest.json").read_text())
    snap = path / "collections" / "c" / manifest["collections"]["c"]["snapshot"]
    graph = snap / "index" / "graph.faiss"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01
    graph.write_bytes(bytes(data))
    with shardwalk.Engine.open(path) as eng:
        with pytest.raises(CorruptionError, match="fails its checksum"):
            eng.collection("c")
    graph.write_bytes(bytes(data[:100]))
    with shardwalk.Engine.open(path) as eng:
        with pytest.raises(CorruptionError, match="missing or has the wrong size"):
            eng.collection("c")


def test_leftovers_of_an_interrupted_checkpoint_are_removed(tmp_path):
    path = tmp_path / "db"
    with shardwalk.Engine.open(path) as eng:
        col = eng.create_collection("c", dim=2, index="flat")
        col.upsert([1], [[1.0, 2.0]])
    leftover = path / "collections" / "c" / "snap-999999"
    (leftover / "index").mkdir(parents=True)
    (leftover / "rows.parquet").write_bytes(b"partial")
    (path / "collections" / "c" / "wal-999999.log").write_bytes(b"")
    with shardwalk.Engine.open(path) as eng:
        col = eng.collection("c")
        assert not leftover.exists()
        assert not (path / "collections" / "c" / "wal-999999.log").exists()
        assert len(col) == 1


def test_files_of_a_collection_not_in_the_manifest_are_removed_at_open(tmp_path):
    path = tmp_path / "db"
    with shardwalk.Engine.open(path) as eng:
        eng.create_collection("kept", dim=2)
    orphan = path / "collections" / "dropped-mid-way"
    orphan.mkdir()
    (orphan / "wal-000001.log").write_bytes(b"x")
    with shardwalk.Engine.open(path) as eng:
        assert eng.collections() == ["kept"]
        assert not orphan.exists()


def test_manifest_of_a_newer_format_is_refused(tmp_path):
    path = tmp_path / "db"
    shardwalk.Engine.open(path).close()
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(shardwalk.FailedPreconditionError, match="format version 99"):
        shardwalk.Engine.open(path)


class Crash(Exception):
    pass


@pytest.mark.parametrize("step", ["next_generation", "commit", "remove_unreferenced"])
def test_crash_at_each_step_of_a_checkpoint(tmp_path, monkeypatch, step):
    """Die before the manifest switch, at it, or after it: reopening finds every write."""
    path = tmp_path / "db"
    eng = shardwalk.Engine.open(path)
    col = eng.create_collection("c", dim=4, index="hnsw")
    vectors = np.random.default_rng(1).random((40, 4))
    col.upsert(np.arange(20), vectors[:20])
    col.flush()
    col.upsert(np.arange(20, 40), vectors[20:])
    col.delete([0])

    def die(*args, **kwargs):
        raise Crash(step)

    monkeypatch.setattr(type(eng._datadir), step, die)
    with pytest.raises(Crash):
        col.flush()
    monkeypatch.undo()
    eng._datadir.close()  # the process is gone: no close(), no checkpoint
    with shardwalk.Engine.open(path) as eng2:
        col2 = eng2.collection("c")
        assert len(col2) == 39 and 0 not in col2
        np.testing.assert_allclose(
            col2.get(np.arange(1, 40)).vectors, vectors[1:].astype(np.float32)
        )
        names = sorted(p.name for p in (path / "collections" / "c").iterdir())
        assert len(names) == 2, names  # one snapshot and one log: leftovers were removed


# -- one owner per data directory --------------------------------------------------------------
def test_a_second_open_in_the_same_process_says_so(tmp_path):
    path = tmp_path / "db"
    first = shardwalk.Engine.open(path)
    (tmp_path / "alias").symlink_to(path)
    for again in (path, tmp_path / "alias"):  # the same directory under another name too
        with pytest.raises(shardwalk.FailedPreconditionError) as info:
            shardwalk.Engine.open(again)
        message = str(info.value)
        assert message == (
            f"data directory {str(again)!r} is already open by an Engine in this process; "
            "use that engine, or close it first"
        )
        assert "another process" not in message and "server" not in message
        back = pickle.loads(pickle.dumps(info.value))
        assert type(back) is shardwalk.FailedPreconditionError and str(back) == message
    assert first.collections() == []  # the first engine is unharmed
    first.close()
    with shardwalk.Engine.open(path):  # released on close
        pass


HOLDER = r"""
import sys
import shardwalk

with shardwalk.Engine.open(sys.argv[1]):
    print("open", flush=True)
    sys.stdin.read()  # hold the directory until the parent closes our stdin
"""


def test_an_open_in_another_process_names_it(tmp_path):
    path = tmp_path / "db"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(shardwalk.FailedPreconditionError) as info:
            shardwalk.Engine.open(path)
        message = str(info.value)
        assert message == (
            f"data directory {str(path)!r} is already open in another process "
            f"(pid {holder.pid}); one process owns a data directory; close the other one"
        )
        assert "server" not in message and "this process" not in message
        assert str(pickle.loads(pickle.dumps(info.value))) == message
    finally:
        holder.communicate(input="", timeout=60)
    assert holder.returncode == 0
    with shardwalk.Engine.open(path):  # the other process exited: the lock is free
        pass


def test_a_failed_open_releases_the_directory(tmp_path):
    path = tmp_path / "db"
    shardwalk.Engine.open(path).close()
    manifest = (path / "manifest.json").read_text()
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptionError, match="is not valid JSON"):
        shardwalk.Engine.open(path)
    (path / "manifest.json").write_text(manifest)
    with shardwalk.Engine.open(path):  # not "already open": the failed open let go
        pass
