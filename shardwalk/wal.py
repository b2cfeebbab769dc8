"""Write-ahead log: every upsert and delete is appended and fsynced before it is acknowledged.

One file per collection and snapshot generation. A record is::

    magic (4 bytes, b"SWL1") | payload length (u32 LE) | crc32 of payload (u32 LE) | payload

and the payload is an Arrow IPC stream holding one record batch whose schema metadata names the
operation. At open the log is replayed from the start. A live log (open for appends: a
collection reading back vectors written since its last checkpoint) is read with
``replay(path, end=offset)``, up to an offset taken under the write lock after a complete
append: that read changes nothing, since the bytes after the offset may be an append in
progress, not a torn write. Only an open cuts a torn tail.

A torn write is a *short* last record: a crash mid-append leaves a short header, a short
payload (with no intact record anywhere after it), or a zero-filled tail (what some
filesystems leave after a power loss). Such a record was never acknowledged (``append``
returns only after the whole record is fsynced), so it is reported and cut off. A record is
short only if the file ends before the length its header declares: a complete record that
fails its checksum may have been acknowledged, even when its payload ends in zeros.

Anything else that fails is corruption of data that may have been acknowledged: a complete
record whose checksum fails (last in the file or not), a record with no marker, a payload that
passes its checksum but does not decode, or a short record followed by intact records (a
damaged length field). Replay raises :class:`~shardwalk.errors.CorruptionError` and changes
nothing. ``Engine.open(path, recover=True)`` opens anyway: :meth:`WriteAheadLog.salvage` cuts
the log at the first bad record after saving the cut bytes to a side file
``<log>.corrupt-<offset>`` next to it, and reports what was cut as a :class:`RecoveredLog`.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from shardwalk import _fs
from shardwalk._files import fsync_dir
from shardwalk.errors import CorruptionError, InvalidArgumentError

__all__ = ["SIDE_FILE_MARK", "AppendUndone", "RecoveredLog", "WalRecord", "WriteAheadLog", "encode"]

log = logging.getLogger(__name__)

_MAGIC = b"SWL1"
_HEADER = struct.Struct("<4sII")
# ``<log>.corrupt-<offset>``: bytes cut off a log by a recovering open (kept, never removed
# automatically: they may hold acknowledged writes)
SIDE_FILE_MARK = ".corrupt-"
_SECTOR = 512  # a shorter run of zeros at the end of a payload is ordinary Arrow padding


class AppendUndone(OSError):
    """An append's write failed and the log was cut back to where it was: nothing of it is
    in the log."""


@dataclass(frozen=True)
class WalRecord:
    op: str  # "upsert" or "delete"
    batch: pa.RecordBatch


@dataclass(frozen=True, kw_only=True)
class RecoveredLog:
    """What ``Engine.open(path, recover=True)`` cut off one write-ahead log.

    Attributes
    ----------
    collection : str
        The collection the log belongs to.
    log : str
        Path of the log file (now ending just before ``offset``).
    offset : int
        Byte offset of the first bad record; every byte from here on was cut.
    bytes_dropped : int
        How many bytes were cut (all of them are in ``side_file``).
    records_dropped : int or None
        Records in the cut bytes, the bad one included, counted by walking the record headers
        after it (a torn fragment at the very end is not counted); None when a header on the
        way cannot be read.
    side_file : str
        Where the cut bytes were saved, byte for byte.
    reason : str
        What was wrong with the first bad record.
    """

    collection: str
    log: str
    offset: int
    bytes_dropped: int
    records_dropped: int | None
    side_file: str
    reason: str


@dataclass(frozen=True)
class _Fault:
    """A record that cannot be replayed."""

    offset: int
    torn: bool  # a short last record (never acknowledged), not corruption
    reason: str  # what was found, e.g. "fails its checksum"
    length: int | None = None  # the record's length in bytes (header included), if readable
    resync: int | None = None  # offset of the next intact record, when one was found


def encode(op: str, batch: pa.RecordBatch) -> bytes:
    """One log record (header and Arrow IPC payload) for ``append_encoded``."""
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


def _intact_at(data: bytes, offset: int) -> bool:
    """Whether a complete record with a matching checksum starts at ``offset``."""
    if len(data) - offset < _HEADER.size:
        return False
    magic, length, crc = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    return (
        magic == _MAGIC
        and start + length <= len(data)
        and zlib.crc32(data[start : start + length]) == crc
    )


def _next_intact(data: bytes, start: int) -> int | None:
    """Offset of the first intact record at or after ``start`` (None: there is none)."""
    at = data.find(_MAGIC, start)
    while at != -1:
        if _intact_at(data, at):
            return at
        at = data.find(_MAGIC, at + 1)
    return None


def _examine(data: bytes, offset: int) -> tuple[int, int] | _Fault:
    """The payload span of the intact record at ``offset``, or what is wrong with it."""
    end = len(data)
    if end - offset < _HEADER.size:
        # fewer bytes than a header: no complete record can be here
        return _Fault(offset, torn=True, reason="a short header")
    magic, length, crc = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    if magic != _MAGIC:
        if not data[offset:].strip(b"\0"):
            return _Fault(offset, torn=True, reason="a zero-filled tail")
        return _Fault(
            offset,
            torn=False,
            reason="has no record marker and non-zero bytes follow, so it is not a torn write",
            resync=_next_intact(data, offset + 1),
        )
    if start + length > end:
        # A torn append leaves a prefix of one record; an intact record after this header
        # means the length field itself is damaged and acknowledged records follow.
        resync = _next_intact(data, start)
        if resync is None:
            return _Fault(offset, torn=True, reason="a short payload")
        return _Fault(
            offset,
            torn=False,
            reason=f"declares a {length}-byte payload running past the end of the file, but an "
            f"intact record follows at byte {resync}, so it is not a torn write",
            resync=resync,
        )
    if zlib.crc32(data[start : start + length]) != crc:
        reason = (
            "fails its checksum although it is complete, so it is not a torn write "
            "(a torn write is a short last record)"
        )
        zeros = length - len(data[start : start + length].rstrip(b"\0"))
        if start + length == end and zeros >= _SECTOR:
            # Some filesystems extend a file before its data lands; after a power loss the
            # missing blocks read as zeros. Still not dropped silently: the blocks could as
            # well have been lost after the fsync.
            reason += (
                f"; its last {zeros} bytes are zeros, which a power loss can leave in an "
                "append that was never acknowledged"
            )
        return _Fault(offset, torn=False, reason=reason, length=_HEADER.size + length)
    return start, start + length


def _count_records(data: bytes, fault: _Fault) -> int | None:
    """Records from the bad one to the end, walking the headers; None if one is unreadable."""
    if fault.length is not None:
        count, offset = 1, fault.offset + fault.length
    elif fault.resync is not None:
        count, offset = 1, fault.resync
    else:
        return None
    end = len(data)
    while offset < end:
        if end - offset < _HEADER.size:
            break  # a torn fragment: never acknowledged, not counted
        magic, length, _ = _HEADER.unpack_from(data, offset)
        if magic != _MAGIC:
            if not data[offset:].strip(b"\0"):
                break  # a zero-filled tail
            return None
        if offset + _HEADER.size + length > end:
            break  # a torn fragment
        count += 1
        offset += _HEADER.size + length
    return count


def _corruption(path: str, fault: _Fault, size: int) -> CorruptionError:
    shape = "length unreadable" if fault.length is None else f"{fault.length} bytes"
    following = size - fault.offset - (fault.length or 0)
    place = (
        "the last record in the file"
        if fault.length is not None and following == 0
        else f"{size - fault.offset} bytes from the end of the {size}-byte file"
    )
    return CorruptionError(
        f"write-ahead log {path!r}: the record at byte {fault.offset} ({shape}; {place}) "
        f"{fault.reason}. The log is corrupt and may hold acknowledged writes; nothing was "
        "changed. Restore the data directory from a backup, or open it anyway with "
        f"Engine.open(path, recover=True), which cuts the log at byte {fault.offset}, saves "
        f"the {size - fault.offset} cut bytes to {path + SIDE_FILE_MARK + str(fault.offset)!r} "
        "and lists them in engine.recovered"
    )


def _first_fault(path: str, data: bytes) -> Iterator[WalRecord | _Fault]:
    """Every decodable record in order, then the first fault (if any) as the last item."""
    offset = 0
    while offset < len(data):
        found = _examine(data, offset)
        if isinstance(found, _Fault):
            yield found
            return
        start, stop = found
        try:
            record = _decode(data[start:stop])
        except (pa.ArrowException, StopIteration, UnicodeDecodeError) as exc:
            yield _Fault(
                offset,
                torn=False,
                reason=f"passes its checksum but cannot be decoded ({type(exc).__name__}: {exc}), "
                "so it is not a torn write",
                length=stop - offset,
            )
            return
        yield record
        offset = stop


def _replay_live(path: str, end: int) -> Iterator[WalRecord]:
    """The records in the first ``end`` bytes of a live log; reads only (see ``replay``)."""
    if isinstance(end, bool) or not isinstance(end, int) or end < 0:
        raise InvalidArgumentError(f"end must be a byte offset (an int >= 0); got {end!r}")
    with open(path, "rb") as f:
        data = f.read(end)
    if len(data) < end:
        raise CorruptionError(
            f"write-ahead log {path!r} is {len(data)} bytes long, but {end} bytes of it were "
            "acknowledged: the log lost acknowledged writes. Nothing was changed; restore the "
            "data directory from a backup"
        )
    for item in _first_fault(path, data):
        if isinstance(item, WalRecord):
            yield item
        elif item.torn:  # every byte before ``end`` was acknowledged: not a torn write
            raise CorruptionError(
                f"write-ahead log {path!r}: the record at byte {item.offset} is incomplete "
                f"({item.reason}) although the first {end} bytes of the log hold only "
                "acknowledged records. Nothing was changed; reopen the engine (an open checks "
                "the whole log)"
            )
        else:
            raise _corruption(path, item, len(data))


def _side_file(path: str, offset: int, cut: bytes) -> str:
    """Save ``cut`` durably beside the log; never overwrite an earlier side file."""
    base = f"{path}{SIDE_FILE_MARK}{offset}"
    for attempt in range(1, 1000):
        name = base if attempt == 1 else f"{base}.{attempt}"
        try:
            f = open(name, "xb", buffering=0)
        except FileExistsError:
            with open(name, "rb") as old:
                if old.read() == cut:  # saved by an earlier recovery that died before the cut
                    return name
            continue
        with f:
            _fs.write(f.fileno(), cut)
            _fs.fsync(f.fileno())
        fsync_dir(os.path.dirname(path) or ".")
        return name
    raise CorruptionError(f"write-ahead log {path!r}: too many side files named {base}.*")


class WriteAheadLog:
    """An append-only, checksummed log of record batches."""

    def __init__(self, path: str, *, sync: bool = True) -> None:
        self.path = path
        self.sync = sync
        self._file = open(path, "ab", buffering=0)
        self._size = os.fstat(self._file.fileno()).st_size

    @staticmethod
    def create(path: str) -> None:
        """Create an empty log and make its directory entry durable."""
        with open(path, "wb") as f:
            _fs.fsync(f.fileno())
        fsync_dir(os.path.dirname(path) or ".")

    def append(self, op: str, batch: pa.RecordBatch) -> None:
        """Append one record; durable on return (fsync) unless ``sync=False``."""
        self.append_encoded([encode(op, batch)])

    def append_encoded(self, records: list[bytes]) -> None:
        """Append records made by :func:`encode` with one write and one fsync (group commit):
        all durable on return unless ``sync=False``.

        A failed write (no space left, say) cuts the log back to where it was and raises
        :class:`AppendUndone` (the write's errno): nothing of the records is in the log and the
        log takes further appends. If the cut fails too, its error is raised instead (the log's tail is then
        unknown: the caller must stop using it). A failed fsync raises
        :class:`shardwalk._fs.SyncFailed`: the records may or may not be durable.
        """
        data = b"".join(records)
        fd = self._file.fileno()
        try:
            _fs.write(fd, data)
        except OSError as exc:
            _fs.truncate(fd, self._size)  # O_APPEND: the next append writes at the cut
            raise AppendUndone(
                exc.errno, f"{exc.strerror}; the log was cut back to byte {self._size}"
            ) from exc
        self._size += len(data)
        if self.sync:
            _fs.fsync(fd)

    @property
    def size(self) -> int:
        return self._size

    def close(self) -> None:
        self._file.close()

    @staticmethod
    def replay(path: str, *, end: int | None = None) -> Iterator[WalRecord]:
        """Yield every record of the log at ``path``.

        Parameters
        ----------
        path : str
            The log file.
        end : int, optional
            Read a *live* log (one open for appends elsewhere): only its first ``end`` bytes,
            an offset taken under the write lock after a complete append, so every record
            before it was acknowledged. Nothing is written: a record that is short or bad
            before ``end`` is corruption, never a torn write to cut (the bytes after ``end``
            may be an append in progress). Without it, the open path: the whole file, and a
            torn (short) last record is cut off the file (only an open may do this, before
            the log is opened for appends).

        Raises
        ------
        CorruptionError
            A record is bad and not a torn write (see the module docstring), or, with ``end``,
            the file is shorter than ``end`` or a record before ``end`` is incomplete. Records
            before it may already have been yielded; the file is left as it was.
        """
        if end is not None:
            yield from _replay_live(path, end)
            return
        with open(path, "rb") as f:
            data = f.read()
        for item in _first_fault(path, data):
            if isinstance(item, WalRecord):
                yield item
            elif item.torn:
                log.warning(
                    "write-ahead log %s: cutting a torn last record at byte %d (%s, %d bytes); "
                    "it was never acknowledged",
                    path,
                    item.offset,
                    item.reason,
                    len(data) - item.offset,
                )
                with open(path, "r+b") as f:
                    _fs.truncate(f.fileno(), item.offset)
                    _fs.fsync(f.fileno())
            else:
                raise _corruption(path, item, len(data))

    @staticmethod
    def salvage(path: str, *, collection: str) -> RecoveredLog | None:
        """Cut the log at its first bad record, saving the cut bytes to a side file first.

        A torn last record is left for :meth:`replay` to cut as usual. Returns None when the
        log has no bad record.
        """
        with open(path, "rb") as f:
            data = f.read()
        fault = None
        for item in _first_fault(path, data):
            if isinstance(item, _Fault) and not item.torn:
                fault = item
        if fault is None:
            return None
        side = _side_file(path, fault.offset, data[fault.offset :])
        with open(path, "r+b") as f:
            _fs.truncate(f.fileno(), fault.offset)
            _fs.fsync(f.fileno())
        report = RecoveredLog(
            collection=collection,
            log=path,
            offset=fault.offset,
            bytes_dropped=len(data) - fault.offset,
            records_dropped=_count_records(data, fault),
            side_file=side,
            reason=fault.reason,
        )
        log.warning(
            "write-ahead log %s of collection %r: the record at byte %d %s; recover=True cut "
            "%d bytes (%s) off the log and saved them to %s",
            path,
            collection,
            report.offset,
            report.reason,
            report.bytes_dropped,
            "records uncounted"
            if report.records_dropped is None
            else f"{report.records_dropped} record(s)",
            side,
        )
        return report
