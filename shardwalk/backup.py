"""Online backup of a data directory (:meth:`shardwalk.Engine.backup`): a consistent copy
that opens as a data directory of its own (restore is ``Engine.open(copy)``).

What it holds back, and for how long
------------------------------------
Each collection, then each graph, in turn:

1. Under the object's write lock (a collection's commit lock, the one its group commits and
   checkpoints take; a graph's update lock) it checkpoints the object if anything changed
   since its last snapshot, reads the object's manifest entry and the size of its log, and
   *pins* the files the entry names: a hard link into the destination (same filesystem), or
   an open file descriptor (another filesystem, or ``link=False``). Pinning touches metadata
   only; no data is copied under the lock. Writes to that object wait for the checkpoint and
   the pinning, as they wait for any checkpoint; searches and gets never wait, nor do PPR
   queries but the first after an edge update (it waits for the compaction that merges it).
2. With the lock released, the pinned files are copied through their descriptors and
   fsynced. A later checkpoint may delete the source files meanwhile: a hard link keeps the
   data, and so does an open descriptor (an unlinked file stays readable until its last
   descriptor is closed). Snapshot files are immutable, so the copy is the file as pinned.
   The log is copied up to the size read under the lock: it is append-only, the bytes before
   that size are acknowledged records (none being appended while the lock is held), and the
   writes after the cut go after them (or into the next log) and are not in the backup.
   After a checkpoint that size is 0.
3. Once every object is in, every new directory is fsynced, and the manifest, naming the
   entries read in step 1, is written last (temporary file, fsync, rename, fsync of the
   directory).

So every write acknowledged before ``backup`` began is in the copy (each object is cut after
it); writes acknowledged meanwhile may or may not be. Each object is cut at its own instant,
not all at one instant (as ``Engine.flush`` checkpoints one collection after another).
Files the manifest does not name (side files of a recovering open, the lock) are not copied.

An interrupted backup (a crash, ``kill -9``) is recognisable: the destination holds
``BACKUP-INCOMPLETE`` from the start until the manifest is in place, and has no manifest;
``Engine.open`` refuses such a directory (see ``storage.py``). A backup that fails with an
exception removes what it created.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from shardwalk import _fs
from shardwalk._deadline import check as check_deadline
from shardwalk._files import atomic_write, atomic_write_bytes, fsync_dir
from shardwalk.errors import (
    AlreadyExistsError,
    CorruptionError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from shardwalk.storage import BACKUP_MARKER, MANIFEST, DataDir
from shardwalk.types import BackupReport

if TYPE_CHECKING:
    from shardwalk.engine import Engine

__all__ = ["backup"]

# manifest keys of the immutable snapshot directories of each kind of object
_SNAPSHOTS = {"collections": ("snapshot",), "graphs": ("csr", "fingerprints")}
# os.link errors that mean "link elsewhere impossible here": copy instead
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}
_CHUNK = 1 << 24

# Tests: called with each destination file once it is written (tests/engine/test_backup.py stops a
# backup there to kill it mid-way).
after_file: Callable[[str], None] | None = None


@dataclass
class _Pinned:
    """A source file held for the copy: linked already (``fd`` None) or open for reading."""

    target: Path
    fd: int | None
    limit: int | None = None  # bytes to copy (a log's size at the cut); None: all


def backup(
    engine: Engine, datadir: DataDir, dest: str | os.PathLike[str], *, link: bool
) -> BackupReport:
    """Back up every collection and graph of ``engine`` (whose data directory is ``datadir``)
    into ``dest``; see the module's docstring. Returns a report (JSON-serialisable)."""
    start = time.perf_counter()
    writer = _Writer(datadir.root, dest, link=link)
    try:
        for kind, names, get in (
            ("collections", engine.collections(), engine.collection),
            ("graphs", engine.graphs(), engine.graph),
        ):
            for name in names:
                check_deadline(f"backing up {kind[:-1]} {name!r}")
                try:
                    obj = get(name)
                    held = time.perf_counter()
                    with obj._checkpointed() as (entry, log_size):
                        pinned = writer.pin(kind, name, entry, log_size)
                    writer.held = max(writer.held, time.perf_counter() - held)
                except (NotFoundError, FailedPreconditionError):
                    # dropped since the backup began: not in the copy (nothing to hold)
                    listed = engine.collections() if kind == "collections" else engine.graphs()
                    if name in listed:
                        raise
                    continue
                writer.copy(pinned)
        writer.finish(datadir.manifest)
    except BaseException:
        writer.abandon()
        raise
    return {
        "destination": str(writer.dest),
        "collections": sorted(writer.entries["collections"]),
        "graphs": sorted(writer.entries["graphs"]),
        "files": writer.linked + writer.copied,
        "linked": writer.linked,
        "copied": writer.copied,
        "bytes_copied": writer.bytes,
        "max_locked_seconds": writer.held,
        "seconds": time.perf_counter() - start,
    }


def check_destination(dest: str | os.PathLike[str], source: Path) -> Path:
    """``dest`` as an absolute path, if a backup may go there: missing or an empty
    directory, outside the data directory ``source``."""
    if not isinstance(dest, (str, os.PathLike)) or not os.fspath(dest):
        raise InvalidArgumentError(f"a backup destination is a directory path; got {dest!r}")
    path = Path(os.path.abspath(os.fspath(dest)))
    real, root = os.path.realpath(path), os.path.realpath(source)
    if real == root or real.startswith(root + os.sep):
        raise InvalidArgumentError(
            f"backup destination {str(path)!r} is inside the data directory it backs up; "
            "choose a directory outside it"
        )
    if os.path.lexists(path):
        if not path.is_dir():
            raise AlreadyExistsError(
                f"backup destination {str(path)!r} exists and is not a directory; back up "
                "into a new or empty directory"
            )
        entries = sorted(os.listdir(path))
        if entries:
            shown = ", ".join(repr(n) for n in entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise AlreadyExistsError(
                f"backup destination {str(path)!r} is not empty ({shown}); back up into a new "
                "or empty directory (a backup never overwrites files)"
            )
    return path


class _Writer:
    """The destination directory as it fills up."""

    def __init__(self, source: Path, dest: str | os.PathLike[str], *, link: bool) -> None:
        self.source = source
        self.dest = check_destination(dest, source)
        self.link = link
        self.entries: dict[str, dict[str, Any]] = {"collections": {}, "graphs": {}}
        self.linked = self.copied = self.bytes = 0
        self.held = 0.0  # longest time one object's writes were held back
        self._dirs: list[Path] = []  # directories made, parents first
        self._open: list[_Pinned] = []  # pinned files not copied yet
        # the topmost directory made for dest (None: dest was an empty directory)
        self._created: Path | None = None
        probe = self.dest
        while not os.path.lexists(probe):
            self._created, probe = probe, probe.parent
        marker = (
            f"An incomplete shardwalk backup of {str(source)!r}, begun at "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}. A complete backup has "
            f"{MANIFEST} (written last) and no {BACKUP_MARKER}.\n"
        )
        try:
            self._mkdir(self.dest)
            atomic_write_bytes(self.dest / BACKUP_MARKER, marker.encode())
            for kind in self.entries:
                self._mkdir(self.dest / kind)
        except BaseException:
            self.abandon()
            raise

    def _mkdir(self, path: Path) -> None:
        missing = []
        while not path.is_dir():
            missing.append(path)
            path = path.parent
        for directory in reversed(missing):
            _fs.mkdir(directory)
            self._dirs.append(directory)

    def pin(self, kind: str, name: str, entry: dict[str, Any], log_size: int) -> list[_Pinned]:
        """Hold every file ``entry`` names (the caller holds the object's write lock)."""
        source, target = self.source / kind / name, self.dest / kind / name
        self._mkdir(target)
        pinned = self._open = []
        for key in _SNAPSHOTS[kind]:
            if not entry.get(key):
                continue
            if not (source / entry[key]).is_dir():
                raise CorruptionError(
                    f"{kind[:-1]} {name!r}: its snapshot {entry[key]!r} is missing from the data "
                    "directory, so it cannot be backed up"
                )
            for directory, _, files in sorted(os.walk(source / entry[key])):
                here = target / Path(directory).relative_to(source)
                self._mkdir(here)
                for file in sorted(files):
                    pinned.append(self._pin_file(Path(directory) / file, here / file))
        if entry.get("wal"):
            fd = os.open(source / entry["wal"], os.O_RDONLY | os.O_CLOEXEC)
            pinned.append(_Pinned(target / entry["wal"], fd, log_size))
        self.entries[kind][name] = entry
        return pinned

    def _pin_file(self, path: Path, target: Path) -> _Pinned:
        if self.link:
            try:
                _fs.link(path, target)
                return _Pinned(target, None)
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
                self.link = False  # another filesystem: copies from here on
        return _Pinned(target, os.open(path, os.O_RDONLY | os.O_CLOEXEC))

    def copy(self, pinned: list[_Pinned]) -> None:
        """Copy the pinned files (no lock held), each fsynced."""
        for item in pinned:
            if item.fd is None:
                # the same inode as the source file, which its checkpoint fsynced; the new
                # directory entry is fsynced with its directory in finish()
                self.linked += 1
            else:
                check_deadline(f"copying {item.target.name!r}")
                with atomic_write(item.target) as out:
                    self.bytes += _copy_fd(item.fd, out, item.limit)
                os.close(item.fd)
                item.fd = None
                self.copied += 1
            if after_file is not None:
                after_file(str(item.target))
        self._open = []

    def finish(self, manifest: dict[str, Any]) -> None:
        """Fsync every new directory, then write the manifest (last), then drop the marker."""
        for directory in reversed(self._dirs):  # children before their parents
            fsync_dir(directory)
        fsync_dir(self.dest)
        if self._created is not None:
            fsync_dir(self._created.parent)
        manifest = dict(manifest)  # other keys (format version, generation) as the source's
        manifest["collections"] = self.entries["collections"]
        manifest["graphs"] = self.entries["graphs"]
        atomic_write_bytes(self.dest / MANIFEST, _json(manifest))
        # from here the backup is complete whether or not the marker's removal survives
        _fs.unlink(self.dest / BACKUP_MARKER)
        fsync_dir(self.dest)

    def abandon(self) -> None:
        """After a failure: close what is open and remove what this backup created."""
        for item in self._open:
            if item.fd is not None:
                with contextlib.suppress(OSError):
                    os.close(item.fd)
        if (self.dest / MANIFEST).exists():
            return  # complete: keep it (only the marker's removal failed)
        if self._created is not None:
            _fs.rmtree(self._created)
        elif self.dest.is_dir():
            for entry in os.listdir(self.dest):
                path = self.dest / entry
                if path.is_dir() and not path.is_symlink():
                    _fs.rmtree(path)
                else:
                    with contextlib.suppress(OSError):
                        _fs.unlink(path)


def _copy_fd(source: int, target: BinaryIO, limit: int | None) -> int:
    """Copy ``limit`` bytes (None: all) of ``source`` from its start into ``target``."""
    total = os.fstat(source).st_size if limit is None else limit
    done = 0
    while done < total:
        chunk = os.pread(source, min(_CHUNK, total - done), done)
        if not chunk:  # a pinned file never shrinks (immutable, or a log cut only at open)
            raise FailedPreconditionError(
                f"a file being backed up ended after {done} of {total} bytes"
            )
        target.write(chunk)
        done += len(chunk)
    return done


def _json(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=1).encode()
