"""Every file operation of the storage layer, in one place; a leaf (it imports nothing of the
package).

The write-ahead logs, snapshots, the manifest, the data directory, graph logs and generations
and spann posting files make their fsyncs, renames, links, removals, directory creations,
log writes and truncations through the functions here. They call the *current* file system
(:func:`current`), the real one by default; tests install another (:func:`use`) that records
what was made durable, loses the rest at a simulated power cut and injects ENOSPC or EIO
(``tests/faultfs.py``, in the manner of RocksDB's FaultInjectionTestFS and SQLite's crash-test
VFS).

A failed fsync raises :class:`SyncFailed` (an ``OSError`` with the original errno): after one,
the kernel may have dropped the dirty pages it could not write, so a retry can "succeed"
without the data (PostgreSQL's fsyncgate). Callers treat it as fatal: the data directory turns
read-only until reopened.

Library writers that produce a file by name (``np.save``, parquet, ``faiss.write_index``) run
through :func:`write_with`, so a test can fail them like any other write.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterator

__all__ = [
    "FileSystem",
    "SyncFailed",
    "copyfile",
    "current",
    "fsync",
    "fsync_dir",
    "fsync_path",
    "link",
    "mkdir",
    "pwrite",
    "replace",
    "rmtree",
    "synced",
    "truncate",
    "unlink",
    "use",
    "write",
    "write_with",
]

_Path = str | os.PathLike[str]


class SyncFailed(OSError):
    """An fsync failed: what it should have made durable is in an unknown state."""


class FileSystem:
    """The real file system. Subclasses (tests) override the operations they watch."""

    def fsync(self, fd: int) -> None:
        try:
            os.fsync(fd)
        except OSError as exc:
            raise SyncFailed(exc.errno, f"fsync failed: {exc.strerror}") from exc

    def write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n

    def write_with(self, path: _Path, writer: Callable[[str], None]) -> None:
        writer(os.fspath(path))

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def replace(self, src: _Path, dst: _Path) -> None:
        os.replace(src, dst)

    def link(self, src: _Path, dst: _Path) -> None:
        os.link(src, dst)

    def unlink(self, path: _Path, *, missing_ok: bool = False) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self, path: _Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def mkdir(self, path: _Path, *, exist_ok: bool = False) -> None:
        try:
            os.mkdir(path)
        except FileExistsError:
            if not exist_ok or not os.path.isdir(path):
                raise

    def copyfile(self, src: _Path, dst: _Path) -> None:
        """Copy ``src`` to ``dst`` and fsync the copy (not its directory entry)."""
        shutil.copyfile(src, dst)
        fsync_path(dst)


_current: FileSystem = FileSystem()


def current() -> FileSystem:
    """The file system the storage layer uses now."""
    return _current


@contextlib.contextmanager
def use(fs: FileSystem) -> Iterator[FileSystem]:
    """Make ``fs`` the storage layer's file system inside the block (tests)."""
    global _current
    previous, _current = _current, fs
    try:
        yield fs
    finally:
        _current = previous


# (st_dev, st_ino) of a regular file -> its (size, mtime) at its last successful fsync here:
# lets seal_snapshot skip files already durable (an fsync costs a device flush even when the
# file is clean). Forgotten when this module removes or replaces the file (its inode number
# may be reused); bounded.
_synced: dict[tuple[int, int], tuple[int, int]] = {}
_synced_mutex = threading.Lock()
_SYNCED_MAX = 1 << 16


def _signature(st: os.stat_result) -> tuple[int, int]:
    return (st.st_size, st.st_mtime_ns)


def _forget(path: _Path) -> None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return
    with _synced_mutex:
        _synced.pop((st.st_dev, st.st_ino), None)


def fsync(fd: int) -> None:
    _current.fsync(fd)
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        with _synced_mutex:
            if len(_synced) >= _SYNCED_MAX:
                _synced.clear()
            _synced[(st.st_dev, st.st_ino)] = _signature(st)


def fsync_path(path: _Path) -> None:
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: _Path) -> None:
    fd = os.open(os.fspath(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        _current.fsync(fd)
    finally:
        os.close(fd)


def synced(path: _Path) -> bool:
    """Whether ``path`` is unchanged since an fsync of it here succeeded."""
    st = os.stat(path)
    with _synced_mutex:
        return _synced.get((st.st_dev, st.st_ino)) == _signature(st)


def write(fd: int, data: bytes) -> None:
    _current.write(fd, data)


def pwrite(fd: int, data: bytes, offset: int) -> None:
    _current.pwrite(fd, data, offset)


def write_with(path: _Path, writer: Callable[[str], None]) -> None:
    _current.write_with(path, writer)


def truncate(fd: int, size: int) -> None:
    _current.truncate(fd, size)


def replace(src: _Path, dst: _Path) -> None:
    _forget(dst)
    _current.replace(src, dst)


def link(src: _Path, dst: _Path) -> None:
    _current.link(src, dst)


def unlink(path: _Path, *, missing_ok: bool = False) -> None:
    _forget(path)
    _current.unlink(path, missing_ok=missing_ok)


def rmtree(path: _Path) -> None:
    for directory, _, files in os.walk(path):
        for name in files:
            _forget(os.path.join(directory, name))
    _current.rmtree(path)


def mkdir(path: _Path, *, exist_ok: bool = False) -> None:
    _current.mkdir(path, exist_ok=exist_ok)


def copyfile(src: _Path, dst: _Path) -> None:
    _current.copyfile(src, dst)
