"""Write-ahead log: every upsert and delete is appended and fsynced before it is acknowledged.

One file per collection and snapshot generation. A record is::

    magic (4 bytes, b"SWL1") | payload length (u32 LE) | crc32 of payload (u32 LE) | payload

and the payload is an Arrow IPC stream holding one record batch whose schema metadata names the
operation. At open the log is replayed from the start. A torn tail (a crash mid-append: a short
header, a short payload, or a bad checksum on the last record) is detected, reported and cut
off; it was never acknowledged. A bad record followed by more data is corruption, not a torn
write, and raises instead of silently dropping acknowledged writes.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from shardwalk.errors import CorruptionError

__all__ = ["WalRecord", "WriteAheadLog"]

log = logging.getLogger(__name__)

_MAGIC = b"SWL1"
_HEADER = struct.Struct("<4sII")


@dataclass(frozen=True)
class WalRecord:
    op: str  # "upsert" or "delete"
    batch: pa.RecordBatch


def _encode(op: str, batch: pa.RecordBatch) -> bytes:
    batch = batch.replace_schema_metadata({"op": op})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    payload = sink.getvalue().to_pybytes()
    return _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload


def _decode(payload: bytes) -> WalRecord:
    reader = pa.ipc.open_stream(payload)
    batch = reader.read_next_batch()
    op = (reader.schema.metadata or {}).get(b"op", b"").decode()
    return WalRecord(op=op, batch=batch)


class WriteAheadLog:
    """An append-only, checksummed log of record batches."""

    def __init__(self, path: str, *, sync: bool = True) -> None:
        self.path = path
        self.sync = sync
        self._file = open(path, "ab")

    @staticmethod
    def create(path: str) -> None:
        """Create an empty log and make its directory entry durable."""
        with open(path, "wb") as f:
            os.fsync(f.fileno())
        from shardwalk._atomic import fsync_dir

        fsync_dir(os.path.dirname(path) or ".")

    def append(self, op: str, batch: pa.RecordBatch) -> None:
        """Append one record; durable on return (fsync) unless ``sync=False``."""
        self._file.write(_encode(op, batch))
        self._file.flush()
        if self.sync:
            os.fsync(self._file.fileno())

    @property
    def size(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()

    @staticmethod
    def replay(path: str) -> Iterator[WalRecord]:
        """Yield every complete record; cut a torn tail off the file."""
        with open(path, "rb") as f:
            data = f.read()
        offset, end = 0, len(data)
        while offset < end:
            torn = None
            if end - offset < _HEADER.size:
                torn = "a short header"
            else:
                magic, length, crc = _HEADER.unpack_from(data, offset)
                start = offset + _HEADER.size
                if magic != _MAGIC:
                    # A crash can leave a zero-filled tail; anything else is corruption.
                    if data[offset:].strip(b"\0"):
                        raise CorruptionError(
                            f"write-ahead log {path!r}: no record marker at byte {offset} of "
                            f"{end}; the file is corrupt, restore it from a backup"
                        )
                    torn = "a zero-filled tail"
                elif start + length > end:
                    torn = "a short payload"
                elif zlib.crc32(data[start : start + length]) != crc:
                    if start + length < end:
                        raise CorruptionError(
                            f"write-ahead log {path!r}: record at byte {offset} fails its "
                            "checksum and is followed by more records; the file is corrupt "
                            "(not a torn write), restore it from a backup"
                        )
                    torn = "a checksum mismatch"
            if torn is not None:
                log.warning(
                    "write-ahead log %s: dropping a torn last record at byte %d (%s, %d bytes); "
                    "it was never acknowledged",
                    path,
                    offset,
                    torn,
                    end - offset,
                )
                with open(path, "r+b") as f:
                    f.truncate(offset)
                    os.fsync(f.fileno())
                return
            try:
                record = _decode(data[start : start + length])
            except pa.ArrowException as exc:
                raise CorruptionError(
                    f"write-ahead log {path!r}: record at byte {offset} has a valid checksum "
                    f"but cannot be decoded: {exc}"
                ) from exc
            yield record
            offset = start + length
