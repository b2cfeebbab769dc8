"""File helpers that the engine, index/ and walks/ share; a leaf (it imports only errors).

- Atomic replacement: write a temporary file, fsync it, rename it over the target, fsync the
  directory. A reader sees either the old file or the complete new one, never a torn one.
- Durable directories: created one level at a time, each parent fsynced after.
- Every fsync, rename and removal goes through ``shardwalk._fs`` (tests swap in a file system
  that loses what was not made durable).
- Checksums: crc32 of a file, streamed.
- Versioned metadata: a JSON file written atomically, read back with the kind and format
  version it must have (a mismatch or unreadable file is ``CorruptionError``).
- numpy arrays: written atomically, read (optionally memory-mapped) as ``CorruptionError`` when
  damaged.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from shardwalk import _fs
from shardwalk.errors import CorruptionError

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_with",
    "crc32_file",
    "fsync_dir",
    "make_dirs",
    "load_npy",
    "read_meta",
    "save_npy",
    "write_meta",
]

_Path = str | os.PathLike[str]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename or a new file in it survives a power loss."""
    _fs.fsync_dir(path)


def make_dirs(path: str | os.PathLike[str]) -> None:
    """Create ``path`` and any missing parents, fsyncing each parent after its new entry (a
    no-op for what exists)."""
    target = Path(path)
    missing = []
    while not target.is_dir():
        missing.append(target)
        target = target.parent
    for directory in reversed(missing):
        _fs.mkdir(directory, exist_ok=True)
        fsync_dir(directory.parent)


def _written(path: str) -> None:
    """The writer of :func:`atomic_write`'s block: it already wrote ``path``."""


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on a clean exit it atomically becomes ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    f = open(tmp, "wb")
    try:
        yield f
        f.flush()
        _fs.write_with(tmp, _written)
        _fs.fsync(f.fileno())
        f.close()
        _fs.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        f.close()
        _fs.unlink(tmp, missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_write(path) as f:
        f.write(data)


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[str], None]) -> None:
    """Atomically produce ``path`` with a library writer that takes a file name
    (``np.save``, ``hnswlib.Index.save_index``, ``pyarrow.parquet.write_table``)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        _fs.write_with(tmp, writer)
        _fs.fsync_path(tmp)
        _fs.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        _fs.unlink(tmp, missing_ok=True)
        raise


def crc32_file(path: _Path) -> int:
    """crc32 of a file's bytes, read in 4 MiB chunks."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def write_meta(path: _Path, meta: Mapping[str, Any]) -> None:
    """Atomically write a metadata JSON file."""
    atomic_write_bytes(path, json.dumps(meta, indent=1).encode())


def read_meta(path: _Path, expect: Mapping[str, Any], *, hint: str = "") -> dict[str, Any]:
    """Read a metadata JSON file and check that it has every ``expect`` key's value (its kind
    and format version, say); ``hint`` is added to a mismatch's message."""
    try:
        with open(path, "rb") as f:
            meta = json.loads(f.read())
    except (OSError, ValueError) as exc:
        raise CorruptionError(f"cannot read metadata {str(path)!r}: {exc}") from exc
    if not isinstance(meta, dict):
        raise CorruptionError(f"metadata {str(path)!r} is not a JSON object")
    for key, want in expect.items():
        if meta.get(key) != want:
            raise CorruptionError(
                f"{str(path)!r} has {key} {meta.get(key)!r}; expected {want!r}{hint}"
            )
    return meta


def save_npy(path: _Path, array: np.ndarray) -> None:
    """Atomically write one array as .npy."""
    with atomic_write(path) as f:
        np.save(f, array)


def load_npy(path: _Path, *, mmap: bool = False) -> np.ndarray:
    """Read a .npy file (memory-mapped read-only if ``mmap``); a missing file raises
    FileNotFoundError, a damaged one CorruptionError."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise CorruptionError(f"cannot read {str(path)!r}: {exc}") from exc
