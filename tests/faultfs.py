"""A fault-injecting file system for crash tests (RocksDB's FaultInjectionTestFS, SQLite's
crash-test VFS, LazyFS): installed as the storage layer's file system (``shardwalk._fs``), it
records what each fsync made durable and, at :meth:`FaultFS.crash`, "loses power": every
file under the tracked root goes back to its content at its last fsync and every directory to
the entries it had at its last fsync; everything else disappears. ``kill -9`` cannot show a
missing fsync (the page cache survives it); this can.

The model:

- ``fsync`` of a file records its bytes under its inode ``(st_dev, st_ino)`` (hard links
  share them), wherever the file is (spann posting files are written outside the data
  directory and linked in);
- ``fsync`` of a directory under the root records its entries, name -> inode (and kind);
- the state at install time counts as durable;
- at a crash every tracked directory is rebuilt from its durable entries, each file with its
  inode's durable bytes (a file never fsynced comes back empty), a directory never fsynced
  comes back empty, and everything else is removed.

A removal through ``shardwalk._fs`` of an inode's last link forgets the inode number, so a
new file that reuses it starts with nothing durable. Library writers that write by name
(``np.save``, parquet, ``faiss.write_index``) need no interception: only fsyncs define what
survives.

Injection: ``fail("fsync", n, errno.EIO)`` makes the n-th fsync from now fail (1-based; a write
fails after writing half its bytes); ``power_cut_at("write", n)`` cuts the power at the n-th
write or fsync: it and every later file operation raise :class:`PowerLoss`, and what is
durable is what was durable just before. :attr:`ops` counts the calls by kind ("write",
"fsync"), so a test can enumerate every site of a reference run.
"""

from __future__ import annotations

import errno as errno_
import os
import stat
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shardwalk import _fs

__all__ = ["FaultFS", "PowerLoss", "abandon", "fault_fs"]

_Key = tuple[int, int]


class PowerLoss(BaseException):
    """The power went out: nothing after this reaches the disk."""


class FaultFS(_fs.FileSystem):
    """The real file system, plus a record of what is durable under ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.ops: Counter[str] = Counter()
        self.log: list[tuple[str, str]] = []  # (operation, path) of fsyncs, renames, removals
        self._faults: dict[str, tuple[int, int]] = {}  # kind -> (op number, errno)
        self._cut: tuple[str, int] | None = None
        # (kind, path) -> errno to fail with, or None (see fail_when)
        self.rule: Callable[[str, str], int | None] | None = None
        self.cross_device = False  # links fail with EXDEV (a workdir on another file system)
        self.dead = False
        self._reset()

    # -- the durable record -----------------------------------------------------------------
    def _reset(self) -> None:
        """Count everything there now as durable (install time, and after a crash)."""
        self._tokens: dict[_Key, int] = {}
        self._content: dict[int, bytes] = {}
        self._entries: dict[int, dict[str, tuple[str, int]]] = {}
        self._next = 0
        for directory, _, files in os.walk(self.root):
            self._record_dir(directory)
            for name in files:
                path = os.path.join(directory, name)
                with open(path, "rb") as f:
                    self._content[self._token(os.stat(path))] = f.read()
        self._root_token = self._token(os.stat(self.root))

    def _token(self, st: os.stat_result) -> int:
        key = (st.st_dev, st.st_ino)
        token = self._tokens.get(key)
        if token is None:
            token = self._tokens[key] = self._next
            self._next += 1
        return token

    def _record_dir(self, path: str) -> None:
        entries = {}
        with os.scandir(path) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    entries[entry.name] = ("d", self._token(st))
                elif stat.S_ISREG(st.st_mode):
                    entries[entry.name] = ("f", self._token(st))
        self._entries[self._token(os.stat(path))] = entries

    def _tracked(self, path: str) -> bool:
        p = Path(path)
        return p == self.root or self.root in p.parents

    def _forget(self, path: str | os.PathLike[str]) -> None:
        """``path`` is about to lose a link: a last link frees the inode number for reuse."""
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return
        if (stat.S_ISREG(st.st_mode) and st.st_nlink <= 1) or stat.S_ISDIR(st.st_mode):
            self._tokens.pop((st.st_dev, st.st_ino), None)

    # -- injection --------------------------------------------------------------------------
    def fail(self, kind: str, n: int, errno: int) -> None:
        """Fail the ``n``-th ``kind`` ("write" or "fsync") operation from now with ``errno``."""
        self._faults[kind] = (self.ops[kind] + n, errno)

    def fail_when(self, rule: Callable[[str, str], int | None] | None) -> None:
        """Fail every operation for which ``rule(kind, path)`` gives an errno."""
        self.rule = rule

    def power_cut_at(self, kind: str, n: int) -> None:
        """Cut the power at the ``n``-th ``kind`` operation from now (it does not happen)."""
        self._cut = (kind, self.ops[kind] + n)

    def _count(self, kind: str, path: str = "") -> int | None:
        """Count one operation; the errno it must fail with (None: it runs)."""
        if self.rule is not None:
            code = self.rule(kind, path)
            if code is not None:
                self.ops[kind] += 1
                return code
        if self.dead:
            raise PowerLoss("the power is out")
        self.ops[kind] += 1
        if self._cut is not None and self._cut == (kind, self.ops[kind]):
            self.dead = True
            raise PowerLoss(f"power cut at {kind} #{self.ops[kind]}")
        fault = self._faults.get(kind)
        if fault is not None and fault[0] == self.ops[kind]:
            del self._faults[kind]
            return fault[1]
        return None

    def _alive(self) -> None:
        if self.dead:
            raise PowerLoss("the power is out")

    # -- the operations ---------------------------------------------------------------------
    def fsync(self, fd: int) -> None:
        with self._lock:
            path = os.readlink(f"/proc/self/fd/{fd}")
            code = self._count("fsync", path)
            if code is not None:
                raise _fs.SyncFailed(code, f"fsync failed: {os.strerror(code)} (injected)")
            # no real fsync: this model decides what survives (and the tests run faster)
            st = os.fstat(fd)
            self.log.append(("fsync", path))
            if stat.S_ISDIR(st.st_mode):
                if self._tracked(path):
                    self._record_dir(path)
            elif stat.S_ISREG(st.st_mode):
                with open(f"/proc/self/fd/{fd}", "rb") as f:
                    self._content[self._token(st)] = f.read()

    def write(self, fd: int, data: bytes) -> None:
        with self._lock:
            code = self._count("write")
            if code is not None:
                super().write(fd, bytes(data[: len(data) // 2]))
                raise OSError(code, f"{os.strerror(code)} (injected)")
        super().write(fd, data)

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        with self._lock:
            code = self._count("write")
            if code is not None:
                super().pwrite(fd, bytes(data[: len(data) // 2]), offset)
                raise OSError(code, f"{os.strerror(code)} (injected)")
        super().pwrite(fd, data, offset)

    def write_with(self, path: str | os.PathLike[str], writer: Callable[[str], None]) -> None:
        with self._lock:
            code = self._count("write", os.fspath(path))
        writer(os.fspath(path))
        if code is not None:  # the writer's write failed half way
            size = os.path.getsize(path)
            os.truncate(path, size // 2)
            raise OSError(code, f"{os.strerror(code)} (injected)", os.fspath(path))

    def truncate(self, fd: int, size: int) -> None:
        self._alive()
        super().truncate(fd, size)

    def replace(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        with self._lock:
            self._alive()
            self._forget(dst)
            self.log.append(("replace", os.fspath(dst)))
            super().replace(src, dst)

    def link(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        self._alive()
        if self.cross_device:
            raise OSError(errno_.EXDEV, "Invalid cross-device link (simulated)", os.fspath(dst))
        super().link(src, dst)

    def unlink(self, path: str | os.PathLike[str], *, missing_ok: bool = False) -> None:
        with self._lock:
            self._alive()
            self._forget(path)
            self.log.append(("unlink", os.fspath(path)))
            super().unlink(path, missing_ok=missing_ok)

    def rmtree(self, path: str | os.PathLike[str]) -> None:
        with self._lock:
            self._alive()
            for directory, _, files in os.walk(path):
                for name in files:
                    self._forget(os.path.join(directory, name))
                self._forget(directory)
            self.log.append(("rmtree", os.fspath(path)))
            super().rmtree(path)

    def mkdir(self, path: str | os.PathLike[str], *, exist_ok: bool = False) -> None:
        self._alive()
        super().mkdir(path, exist_ok=exist_ok)

    def copyfile(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        self._alive()
        super().copyfile(src, dst)

    # -- the power cut ----------------------------------------------------------------------
    def durable_tree(self) -> dict[str, bytes | None]:
        """What would survive a power cut now: relative path -> bytes (None: a directory)."""
        out: dict[str, bytes | None] = {}

        def walk(token: int, prefix: str) -> None:
            for name, (kind, child) in sorted(self._entries.get(token, {}).items()):
                rel = f"{prefix}{name}"
                if kind == "d":
                    out[rel] = None
                    walk(child, rel + "/")
                else:
                    out[rel] = self._content.get(child, b"")

        walk(self._root_token, "")
        return out

    def crash(self) -> None:
        """Lose power: rebuild the tree under the root from what was durable, then carry on
        as a fresh boot (the power is back; the new state counts as durable)."""
        with self._lock:
            tree = self.durable_tree()
            links: dict[int, str] = {}
            files: dict[str, int] = {}

            def tokens(token: int, prefix: str) -> None:
                for name, (kind, child) in self._entries.get(token, {}).items():
                    if kind == "d":
                        tokens(child, f"{prefix}{name}/")
                    else:
                        files[f"{prefix}{name}"] = child

            tokens(self._root_token, "")
            for entry in list(self.root.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    _fs.FileSystem().rmtree(entry)
                else:
                    entry.unlink()
            for rel, content in tree.items():  # parents come before their entries
                path = self.root / rel
                if content is None:
                    path.mkdir()
                    continue
                first = links.get(files[rel])
                if first is not None:
                    os.link(first, path)
                else:
                    path.write_bytes(content)
                    links[files[rel]] = str(path)
            self.dead = False
            self._cut = None
            self._faults.clear()
            self._reset()


def abandon(engine: object) -> None:
    """Drop an engine as a power cut would: release its data directory (lock and registry)
    without a checkpoint or any other write, and close its logs' descriptors."""
    datadir = getattr(engine, "_datadir", None)
    catalog = engine._catalog  # type: ignore[attr-defined]
    for collection in list(catalog.collections.values()):
        wal = getattr(collection, "_wal", None)
        if wal is not None:
            wal._file.close()
        collection._closed_because = "was abandoned at a power cut"
    for graph in list(catalog.graphs.values()):
        wal = getattr(graph, "_wal", None)
        if wal is not None:
            wal._file.close()
        graph._closed_because = "was abandoned at a power cut"
    catalog.closed = True
    if datadir is not None:
        datadir.close()


@pytest.fixture
def fault_fs(tmp_path: Path) -> Iterator[FaultFS]:
    """A FaultFS tracking ``tmp_path / "data"``, installed as the storage layer's file system."""
    fs = FaultFS(tmp_path / "data")
    with _fs.use(fs):
        yield fs


ENOSPC, EIO = errno_.ENOSPC, errno_.EIO
