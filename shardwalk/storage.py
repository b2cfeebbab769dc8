"""The data directory: a manifest, immutable versioned snapshots, write-ahead logs.

Layout::

    <root>/manifest.json                  format version, generation, every collection
    <root>/LOCK                           held (flock) by the one process that has it open;
                                          holds that process's pid (for error messages)
    <root>/collections/<name>/snap-<gen>/ an immutable snapshot: rows, vectors, index files,
                                          and snapshot.json with every file's size and crc32
    <root>/collections/<name>/wal-<gen>.log  the upserts and deletes since that snapshot
    <root>/collections/<name>/wal-<gen>.log.corrupt-<offset>
                                          bytes a recovering open cut off a corrupt log (kept)
    <root>/graphs/<name>/csr-<gen>/       a graph's CSR arrays (memory-mapped when opened)
    <root>/graphs/<name>/fp-<gen>/        its fingerprints

A checkpoint writes a new snapshot and an empty log under a new generation, fsyncs them, and
only then atomically replaces the manifest; the old snapshot and log are removed afterwards.
A crash at any point leaves the manifest naming a complete snapshot and a log that holds every
acknowledged write since it. Files the manifest does not name are leftovers of an interrupted
checkpoint and are removed at open (except the side files of a recovering open, which may
hold acknowledged writes).

Every file a manifest names is fsynced before the manifest that names it is renamed into
place, and every directory after an entry is created, renamed or removed in it; all of it
through ``shardwalk._fs`` (tests swap in a file system that loses what was not made durable).
A failed fsync (or another I/O error while writing) is fatal: the directory turns read-only
(:meth:`DataDir.guard`, :meth:`DataDir.append`) and every write is refused until the engine
is reopened; reads go on. No space left fails only the write at hand, which is undone.

A non-empty directory without a manifest is refused, not made a data directory: an interrupted
backup (``BACKUP-INCOMPLETE``, see ``backup.py``), a data directory that lost its manifest, or
someone else's files.

One process owns a data directory, and within it one open ``DataDir`` (one Engine). The flock
keeps other processes out; a registry of the directories open in this process tells a second
open here apart from another process, so the error says which it is.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import io
import json
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shardwalk import _fs
from shardwalk._files import atomic_write_bytes, crc32_file, fsync_dir, make_dirs
from shardwalk.errors import CorruptionError, FailedPreconditionError, ResourceExhaustedError
from shardwalk.wal import SIDE_FILE_MARK, AppendUndone, WriteAheadLog

__all__ = ["FORMAT_VERSION", "DataDir", "remove_dir", "seal_snapshot", "verify_snapshot"]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SNAPSHOT_META = "snapshot.json"
LOCK = "LOCK"
# in a directory a backup is writing (removed once its manifest is in place, written last)
BACKUP_MARKER = "BACKUP-INCOMPLETE"

# (st_dev, st_ino) of each data directory a DataDir of this process holds -> that DataDir
_OPEN_HERE: dict[tuple[int, int], weakref.ref[DataDir]] = {}
_OPEN_HERE_MUTEX = threading.Lock()
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _snapshot_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != SNAPSHOT_META)


def seal_snapshot(directory: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """Record every file's size and checksum in ``snapshot.json``; fsync everything.

    Every file is made durable before its checksum is taken (a checksum of the page cache
    proves nothing after a power cut): fsynced, unless an fsync here already did since it last
    changed (``shardwalk._fs.synced``: most files are written atomically, fsync included), every
    directory of the snapshot after its entries, and the snapshot's own entry in its parent
    last, so the snapshot is whole on disk before any manifest names it.
    """
    root = Path(directory)
    files = {}
    for path in _snapshot_files(root):
        if not _fs.synced(path):  # written by a writer that did not fsync, or copied
            _fs.fsync_path(path)
        files[str(path.relative_to(root))] = {
            "size": path.stat().st_size,
            "crc32": crc32_file(path),
        }
    subdirectories = [p for p in root.rglob("*") if p.is_dir()]
    for sub in sorted(subdirectories, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(sub)
    body = {"format_version": FORMAT_VERSION, **meta, "files": files}
    atomic_write_bytes(root / SNAPSHOT_META, json.dumps(body, indent=1).encode())  # fsyncs root
    fsync_dir(root.parent)


def verify_snapshot(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a snapshot against its ``snapshot.json``; return that metadata."""
    root = Path(directory)
    try:
        meta = json.loads((root / SNAPSHOT_META).read_bytes())
    except (OSError, ValueError) as exc:
        raise CorruptionError(
            f"snapshot {str(root)!r} has no readable {SNAPSHOT_META}: {exc}"
        ) from exc
    for name, expect in meta["files"].items():
        path = root / name
        if not path.is_file() or path.stat().st_size != expect["size"]:
            raise CorruptionError(
                f"snapshot file {str(path)!r} is missing or has the wrong size "
                f"(expected {expect['size']} bytes); restore the data directory from a backup"
            )
        if crc32_file(path) != expect["crc32"]:
            raise CorruptionError(f"snapshot file {str(path)!r} fails its checksum")
    return meta


class DataDir:
    """An open data directory: the lock, the manifest, and its atomic replacement."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path)
        if self.root.exists() and not self.root.is_dir():
            raise FailedPreconditionError(f"{str(self.root)!r} exists and is not a directory")
        self._failed: BaseException | None = None  # the failure that made it read-only
        _refuse_foreign(self.root)
        self._lock_file: io.FileIO | None = None
        self._pid = 0  # the process that took the lock (see _acquire)
        make_dirs(self.root)
        self._key = self._acquire()
        try:
            make_dirs(self.root / "collections")
            make_dirs(self.root / "graphs")
            self._load()
        except BaseException:
            self.close()
            raise

    def _acquire(self) -> tuple[int, int]:
        """Take the directory's lock, or say who holds it: this process or which other one."""
        st = os.stat(self.root)
        key = (st.st_dev, st.st_ino)  # the same directory under any path or symlink
        with _OPEN_HERE_MUTEX:
            ref = _OPEN_HERE.get(key)
            holder = None if ref is None else ref()
            # a DataDir inherited through fork() belongs to the parent process
            if holder is not None and holder._lock_file is not None and holder._pid == os.getpid():
                raise self._open_here_error()
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            lock_file = os.fdopen(fd, "r+b", buffering=0)  # closed (lock released) if collected
            try:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _recorded_pid(lock_file)
                lock_file.close()
                if pid == os.getpid():
                    raise self._open_here_error() from None
                who = "another process" if pid is None else f"another process (pid {pid})"
                raise FailedPreconditionError(
                    f"data directory {str(self.root)!r} is already open in {who}; one process "
                    "owns a data directory; close the other one"
                ) from None
            with contextlib.suppress(OSError):  # the pid only serves error messages
                lock_file.truncate(0)
                lock_file.write(f"{os.getpid()}\n".encode())
            self._lock_file = lock_file
            self._pid = os.getpid()
            _OPEN_HERE[key] = weakref.ref(self)
        return key

    def _open_here_error(self) -> FailedPreconditionError:
        return FailedPreconditionError(
            f"data directory {str(self.root)!r} is already open by an Engine in this process; "
            "use that engine, or close it first"
        )

    def _load(self) -> None:
        self._mutex = threading.Lock()
        path = self.root / MANIFEST
        if path.exists():
            try:
                self._manifest = json.loads(path.read_bytes())
            except ValueError as exc:
                raise CorruptionError(f"manifest {str(path)!r} is not valid JSON: {exc}") from exc
            version = self._manifest.get("format_version")
            if version != FORMAT_VERSION:
                raise FailedPreconditionError(
                    f"data directory {str(self.root)!r} has format version {version}; this "
                    f"shardwalk reads version {FORMAT_VERSION}"
                )
        else:
            self._manifest = {
                "format_version": FORMAT_VERSION,
                "generation": 0,
                "collections": {},
                "graphs": {},
            }
            self._write(self._manifest)
        self._manifest.setdefault("graphs", {})
        # The manifest read may not be durable yet (its rename's directory fsync failed before
        # a reopen): make it so before removing anything it no longer names.
        _fs.fsync_path(path)
        fsync_dir(self.root)
        # a collection or graph dropped (or created) by a process that died before removing
        # its files
        for kind in ("collections", "graphs"):
            for entry in (self.root / kind).iterdir():
                if entry.name not in self._manifest[kind]:
                    remove_dir(entry)

    @property
    def manifest(self) -> dict[str, Any]:
        with self._mutex:
            return copy.deepcopy(self._manifest)

    # -- failure: read-only until reopened --------------------------------------------------
    @property
    def failed(self) -> BaseException | None:
        """The failure that made the directory read-only (None: writable)."""
        return self._failed

    def fail(self, exc: BaseException) -> None:
        """Refuse every further write until reopened (the first failure is the one named)."""
        if self._failed is None:
            self._failed = exc

    def _failed_error(self) -> FailedPreconditionError:
        exc = self._failed
        error = FailedPreconditionError(
            f"data directory {str(self.root)!r} is read-only after a failed write "
            f"({type(exc).__name__}: {exc}): what it wrote may not be on disk, so writes are "
            "refused until the engine is reopened (reads go on; reopening replays the logs)"
        )
        error.__cause__ = exc
        return error

    def check_writable(self) -> None:
        """Raise FailedPreconditionError once a failed fsync (or I/O error) made the directory
        read-only, or once it is closed (released: another engine may own it now)."""
        if self._failed is not None:
            raise self._failed_error()
        if self._lock_file is None:
            raise FailedPreconditionError(
                f"data directory {str(self.root)!r} is closed: nothing more is written through "
                "it (another engine may own it now); open the engine again to write"
            )

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Around a write of ``what`` (a log append, a checkpoint, a manifest change): refused
        when read-only; a failed fsync or an I/O error makes the directory read-only (never
        retried: PostgreSQL's fsyncgate) and raises FailedPreconditionError; no space left
        raises ResourceExhaustedError (the caller undid what it wrote; nothing is lost)."""
        self.check_writable()
        try:
            yield
        except OSError as exc:
            if isinstance(exc, _fs.SyncFailed) or exc.errno not in _NO_SPACE:
                self.fail(exc)
                raise self._failed_error() from exc
            raise ResourceExhaustedError(
                f"no space left on the device of data directory {str(self.root)!r} during "
                f"{what} ({exc.strerror}); it was not done and nothing acknowledged was lost; "
                "free space and retry"
            ) from exc

    def append(self, wal: WriteAheadLog, records: list[bytes], what: str) -> None:
        """Append ``records`` to a log of this directory (durable on return). Refused when
        read-only. No space left: the log was cut back, nothing is in it, the caller goes on
        (ResourceExhaustedError). A failed fsync (or another error with the log cut back) is
        fatal: read-only until reopened (FailedPreconditionError). Any other failure (the
        log's tail unknown) propagates as it came: the caller stops using the log."""
        self.check_writable()
        try:
            wal.append_encoded(records)
        except AppendUndone as exc:
            if exc.errno in _NO_SPACE:
                raise ResourceExhaustedError(
                    f"no space left on the device of data directory {str(self.root)!r} for "
                    f"{what}; it was not written (nothing acknowledged was lost): free space "
                    "and retry"
                ) from exc
            self.fail(exc)
            raise self._failed_error() from exc
        except _fs.SyncFailed as exc:
            self.fail(exc)
            raise self._failed_error() from exc

    def _write(self, manifest: dict[str, Any]) -> None:
        atomic_write_bytes(self.root / MANIFEST, json.dumps(manifest, indent=1).encode())

    def _write_or_fail(self, manifest: dict[str, Any]) -> None:
        """Replace the manifest. If that fails past the rename (the directory's fsync), the
        new manifest may or may not survive a power cut: memory takes what the file now holds
        and the directory turns read-only, so no write is acknowledged against either one
        (reopening then finds a consistent pair of snapshot and log whichever survived)."""
        with self.guard("a manifest update"):
            try:
                self._write(manifest)
            except OSError:
                with contextlib.suppress(OSError, ValueError):
                    self._manifest = json.loads((self.root / MANIFEST).read_bytes())
                raise

    def next_generation(self) -> int:
        """Reserve a generation number for new files (committed later by ``commit``)."""
        with self._mutex:
            self.check_writable()
            manifest = copy.deepcopy(self._manifest)
            manifest["generation"] += 1
            # Persisting the counter keeps names unique across restarts even if the files are
            # written but never committed.
            self._write_or_fail(manifest)
            self._manifest = manifest
            return int(manifest["generation"])

    def commit(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``change`` to a copy of the manifest and atomically make it current."""
        with self._mutex:
            self.check_writable()
            manifest = copy.deepcopy(self._manifest)
            change(manifest)
            self._write_or_fail(manifest)
            self._manifest = manifest

    def collection_dir(self, name: str) -> Path:
        return self.root / "collections" / name

    def graph_dir(self, name: str) -> Path:
        return self.root / "graphs" / name

    def new_dir(self, kind: str, name: str) -> tuple[int, Path]:
        """A new generation number and the empty directory of the collection or graph
        (``kind``) ``name`` being created (leftovers of a crashed create removed). Call under
        :meth:`guard`."""
        generation = self.next_generation()
        directory = self.collection_dir(name) if kind == "collection" else self.graph_dir(name)
        remove_dir(directory)
        make_dirs(directory)
        return generation, directory

    def remove_unreferenced(self, name: str, keep: set[str], *, kind: str = "collections") -> None:
        """Delete a collection's (or graph's) files the manifest no longer names."""
        directory = self.root / kind / name
        if not directory.is_dir():
            return
        removed = False
        for entry in directory.iterdir():
            if entry.name not in keep and SIDE_FILE_MARK not in entry.name:
                if entry.is_dir():
                    _fs.rmtree(entry)
                else:
                    _fs.unlink(entry, missing_ok=True)
                removed = True
        if removed:
            fsync_dir(directory)

    def close(self) -> None:
        """Release the directory. Idempotent."""
        with _OPEN_HERE_MUTEX:
            if self._lock_file is None:
                return
            ref = _OPEN_HERE.get(self._key)
            if ref is not None and ref() is self:
                del _OPEN_HERE[self._key]
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None


def remove_dir(path: str | os.PathLike[str]) -> None:
    """Remove a directory tree (if there) and make its removal durable."""
    path = Path(path)
    if path.exists():
        _fs.rmtree(path)
        fsync_dir(path.parent)


def _refuse_foreign(root: Path) -> None:
    """Refuse a directory that has entries but no manifest: an interrupted backup, a data
    directory that lost its manifest, or someone else's files. Opening it would make it an
    empty data directory (and remove the collections the missing manifest named). What a first
    open that crashed leaves (the lock file, empty ``collections/`` and ``graphs/``, a
    temporary manifest) is a new directory still."""
    if not root.is_dir() or (root / MANIFEST).exists():
        return
    names = sorted(os.listdir(root))
    if BACKUP_MARKER in names:
        raise FailedPreconditionError(
            f"{str(root)!r} is an incomplete backup (it has {BACKUP_MARKER} and no {MANIFEST}, "
            "which a backup writes last): the backup was interrupted; delete the directory and "
            "back up again"
        )
    foreign = [
        name
        for name in names
        if name != LOCK
        and not name.startswith(f".{MANIFEST}.tmp-")
        and not (name in ("collections", "graphs") and _empty_dir(root / name))
    ]
    if foreign:
        shown = ", ".join(repr(n) for n in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise FailedPreconditionError(
            f"{str(root)!r} is not empty ({shown}) and has no {MANIFEST}: it is not a shardwalk "
            "data directory (or an incomplete backup, or a data directory that lost its "
            "manifest); nothing was changed. Open a missing or empty directory to create a data "
            "directory, or restore a complete backup"
        )


def _empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not any(path.iterdir())
    except OSError:
        return False


def _recorded_pid(lock_file: io.FileIO) -> int | None:
    """The pid the holder wrote into the lock file (None: not written yet, or unreadable)."""
    try:
        text = os.pread(lock_file.fileno(), 32, 0).decode("ascii").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
