"""A corrupt write-ahead log raises instead of losing acknowledged writes; ``recover=True`` opens
anyway, keeping the cut bytes in a side file and reporting them (issue 8).

The data directories are written by a real process that acknowledges three upserts and dies
without a checkpoint, so every test starts from a log holding three acknowledged records.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import shardwalk
from shardwalk import CorruptionError
from shardwalk.wal import RecoveredLog, WriteAheadLog

DIM = 4
BATCHES = [[1, 2], [3], [4, 5]]  # one upsert (one log record) each
HEADER = 12  # magic, payload length, crc32

WRITER = r"""
import os, sys
import numpy as np
import shardwalk

engine = shardwalk.Engine.open(sys.argv[1])
col = engine.create_collection("c", dim=4, index="flat")
for ids in ([1, 2], [3], [4, 5]):
    col.upsert(ids, np.array([[float(i)] * 4 for i in ids]))  # acknowledged: in the log, fsynced
os._exit(0)  # die without close(): no checkpoint, the log carries every write
"""


def vector(i: int) -> np.ndarray:
    return np.full(DIM, float(i), dtype=np.float32)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wal") / "db"
    subprocess.run([sys.executable, "-c", WRITER, str(path)], check=True, timeout=120)
    return path


@pytest.fixture
def db(written: Path, tmp_path: Path) -> Path:
    path = tmp_path / "db"
    shutil.copytree(written, path)
    return path


def wal_of(path: Path) -> Path:
    manifest = json.loads((path / "manifest.json").read_text())
    return path / "collections" / "c" / manifest["collections"]["c"]["wal"]


def record_offsets(data: bytes) -> list[int]:
    """Start of each record, walking the headers."""
    offsets, offset = [], 0
    while offset < len(data):
        offsets.append(offset)
        (length,) = struct.unpack_from("<I", data, offset + 4)
        offset += HEADER + length
    assert offset == len(data)
    return offsets


def flip(path: Path, at: int) -> bytes:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    return bytes(data)


def test_the_writer_left_three_acknowledged_records(db):
    data = wal_of(db).read_bytes()
    assert len(record_offsets(data)) == 3
    with shardwalk.Engine.open(db) as engine:
        assert sorted(engine.collection("c").get([1, 2, 3, 4, 5]).ids.tolist()) == [1, 2, 3, 4, 5]


def test_flipped_byte_in_a_complete_last_record_raises(db):
    wal = wal_of(db)
    last = record_offsets(wal.read_bytes())[-1]
    corrupt = flip(wal, len(wal.read_bytes()) - 20)  # inside the last record's payload
    length = len(corrupt) - last
    with shardwalk.Engine.open(db) as engine:
        with pytest.raises(CorruptionError) as info:
            engine.collection("c")
    message = str(info.value)
    assert str(wal) in message
    assert f"record at byte {last} ({length} bytes; the last record in the file)" in message
    assert "fails its checksum although it is complete, so it is not a torn write" in message
    assert "Engine.open(path, recover=True)" in message
    assert f"{wal}.corrupt-{last}" in message
    assert wal.read_bytes() == corrupt  # nothing was cut
    assert not list(wal.parent.glob("*.corrupt-*"))
    # every shardwalk error pickles (Ray re-raises it unchanged)
    back = pickle.loads(pickle.dumps(info.value))
    assert type(back) is CorruptionError and str(back) == message and back.code == "DATA_LOSS"


def test_recover_keeps_the_rows_before_a_bad_last_record(db):
    wal = wal_of(db)
    last = record_offsets(wal.read_bytes())[-1]
    corrupt = flip(wal, len(wal.read_bytes()) - 20)
    with shardwalk.Engine.open(db, recover=True) as engine:
        side = Path(f"{wal}.corrupt-{last}")
        assert engine.recovered == [
            RecoveredLog(
                collection="c",
                log=str(wal),
                offset=last,
                bytes_dropped=len(corrupt) - last,
                records_dropped=1,
                side_file=str(side),
                reason="fails its checksum although it is complete, so it is not a torn write "
                "(a torn write is a short last record)",
            )
        ]
        assert side.read_bytes() == corrupt[last:]  # nothing destroyed
        assert wal.read_bytes() == corrupt[:last]
        col = engine.collection("c")
        assert len(col) == 3 and 4 not in col and 5 not in col
        np.testing.assert_array_equal(col.get([1, 2, 3]).vectors, [vector(1), vector(2), vector(3)])
        col.upsert([6], vector(6)[None])  # the log continues after the cut
    with shardwalk.Engine.open(db) as engine:  # a plain open now works
        assert engine.recovered == []
        assert sorted(engine.collection("c").get([1, 2, 3, 6]).ids.tolist()) == [1, 2, 3, 6]
    assert side.read_bytes() == corrupt[last:]  # checkpoints never remove a side file


def test_recover_cuts_mid_file_corruption_at_the_first_bad_record(db):
    wal = wal_of(db)
    offsets = record_offsets(wal.read_bytes())
    corrupt = flip(wal, offsets[2] - 20)  # inside the second record's payload
    with shardwalk.Engine.open(db) as engine:
        with pytest.raises(CorruptionError, match=rf"record at byte {offsets[1]} .*not a torn"):
            engine.collection("c")
    with shardwalk.Engine.open(db, recover=True) as engine:
        [report] = engine.recovered
        assert (report.offset, report.bytes_dropped) == (offsets[1], len(corrupt) - offsets[1])
        assert report.records_dropped == 2  # the bad one and the intact one after it
        assert Path(report.side_file).read_bytes() == corrupt[offsets[1] :]
        col = engine.collection("c")
        assert sorted(col.get([1, 2]).ids.tolist()) == [1, 2] and len(col) == 2


def test_recover_cuts_garbage_without_a_record_marker(db):
    wal = wal_of(db)
    offsets = record_offsets(wal.read_bytes())
    data = bytearray(wal.read_bytes())
    data[offsets[1] : offsets[1] + 4] = b"XXXX"
    wal.write_bytes(bytes(data))
    with shardwalk.Engine.open(db) as engine:
        with pytest.raises(
            CorruptionError, match=rf"record at byte {offsets[1]} .*no record marker"
        ):
            engine.collection("c")
    with shardwalk.Engine.open(db, recover=True) as engine:
        [report] = engine.recovered
        assert report.offset == offsets[1]
        assert report.records_dropped == 2  # found the third record again by its checksum
        assert len(engine.collection("c")) == 2


@pytest.mark.parametrize("recover", [False, True])
@pytest.mark.parametrize(
    "damage", ["short payload", "short header", "one header byte", "zero-filled tail"]
)
def test_a_torn_last_record_still_opens_cleanly(db, damage, recover):
    wal = wal_of(db)
    data = wal.read_bytes()
    last = record_offsets(data)[-1]
    torn = {
        "short payload": data[:-5],
        "short header": data[: last + 7],
        "one header byte": data[: last + 1],
        "zero-filled tail": data[:last] + b"\0" * 4096,
    }[damage]
    wal.write_bytes(torn)
    engine = shardwalk.Engine.open(db, recover=recover)
    assert engine.recovered == []
    col = engine.collection("c")
    assert sorted(col.get([1, 2, 3]).ids.tolist()) == [1, 2, 3] and len(col) == 3
    assert wal.read_bytes() == data[:last]  # the torn bytes are cut
    assert not list(wal.parent.glob("*.corrupt-*"))
    engine.close()


def test_a_complete_record_with_a_zeroed_payload_is_not_taken_for_torn(db):
    """Full length, payload zeros: a power loss can leave this, but so can blocks lost after
    the fsync; it is reported (with the zeros named), never dropped silently."""
    wal = wal_of(db)
    data = wal.read_bytes()
    last = record_offsets(data)[-1]
    wal.write_bytes(data[: last + HEADER] + b"\0" * (len(data) - last - HEADER))
    with shardwalk.Engine.open(db) as engine:
        with pytest.raises(CorruptionError, match=r"not a torn write .*bytes are zeros"):
            engine.collection("c")
    with shardwalk.Engine.open(db, recover=True) as engine:
        assert [r.offset for r in engine.recovered] == [last]
        assert len(engine.collection("c")) == 3


def test_recover_on_a_healthy_directory_changes_nothing(db):
    wal = wal_of(db)
    before = wal.read_bytes()
    engine = shardwalk.Engine.open(db, recover=True)
    assert engine.recovered == []
    assert wal.read_bytes() == before
    engine.close()
    with pytest.raises(TypeError):
        shardwalk.Engine.open(db, True)  # type: ignore[misc]  # keyword-only


def test_the_report_is_a_frozen_dataclass(db):
    wal = wal_of(db)
    flip(wal, len(wal.read_bytes()) - 20)
    with shardwalk.Engine.open(db, recover=True) as engine:
        [report] = engine.recovered
        with pytest.raises(dataclasses.FrozenInstanceError):
            report.offset = 0  # type: ignore[misc]
        engine.recovered.clear()  # a copy: the engine's report stays
        assert len(engine.recovered) == 1


def test_a_second_recovery_never_overwrites_a_side_file(db):
    wal = wal_of(db)
    last = record_offsets(wal.read_bytes())[-1]
    first = flip(wal, len(wal.read_bytes()) - 20)
    engine = shardwalk.Engine.open(db, recover=True)
    assert engine.recovered[0].side_file == f"{wal}.corrupt-{last}"
    engine.collection("c").upsert([7], vector(7)[None])
    engine._datadir.close()  # die again before a checkpoint
    second = flip(wal, len(wal.read_bytes()) - 20)  # the new record at the same offset
    assert second[last:] != first[last:]
    with shardwalk.Engine.open(db, recover=True) as engine:
        [report] = engine.recovered
        assert report.side_file == f"{wal}.corrupt-{last}.2"
    assert Path(f"{wal}.corrupt-{last}").read_bytes() == first[last:]
    assert Path(f"{wal}.corrupt-{last}.2").read_bytes() == second[last:]


# -- the log alone ----------------------------------------------------------------------------
def write_log(path: Path, n: int) -> bytes:
    import pyarrow as pa

    WriteAheadLog.create(str(path))
    log = WriteAheadLog(str(path))
    for i in range(n):
        log.append("delete", pa.record_batch({"_id": pa.array([i], pa.int64())}))
    log.close()
    return path.read_bytes()


def test_a_damaged_length_field_is_not_mistaken_for_a_torn_write(tmp_path):
    """A length grown past the end of the file looks like a short payload; the intact records
    after it show it is not one."""
    path = tmp_path / "w.log"
    data = bytearray(write_log(path, 3))
    second = record_offsets(bytes(data))[1]
    struct.pack_into("<I", data, second + 4, 1 << 30)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match=rf"byte {second} .*an intact record follows"):
        list(WriteAheadLog.replay(str(path)))
    assert path.read_bytes() == bytes(data)
    report = WriteAheadLog.salvage(str(path), collection="c")
    assert report is not None and report.offset == second and report.records_dropped == 2
    assert [r.batch.column(0).to_pylist() for r in WriteAheadLog.replay(str(path))] == [[0]]


def test_an_undecodable_record_with_a_valid_checksum_is_corruption(tmp_path):
    import zlib

    path = tmp_path / "w.log"
    data = write_log(path, 1)
    junk = b"not an arrow stream"
    path.write_bytes(data + struct.pack("<4sII", b"SWL1", len(junk), zlib.crc32(junk)) + junk)
    with pytest.raises(CorruptionError, match=rf"byte {len(data)} .*cannot be decoded"):
        list(WriteAheadLog.replay(str(path)))
    report = WriteAheadLog.salvage(str(path), collection="c")
    assert report is not None and report.records_dropped == 1
    assert os.path.getsize(path) == len(data)
