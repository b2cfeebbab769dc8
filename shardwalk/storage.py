"""The data directory: a manifest, immutable versioned snapshots, write-ahead logs.

Layout::

    <root>/manifest.json                  format version, generation, every collection
    <root>/LOCK                           held (flock) by the one process that has it open
    <root>/collections/<name>/snap-<gen>/ an immutable snapshot: rows, vectors, index files,
                                          and snapshot.json with every file's size and crc32
    <root>/collections/<name>/wal-<gen>.log  the upserts and deletes since that snapshot
    <root>/graphs/<name>/csr-<gen>/       a graph's CSR arrays (memory-mapped when opened)
    <root>/graphs/<name>/fp-<gen>/        its fingerprints

A checkpoint writes a new snapshot and an empty log under a new generation, fsyncs them, and
only then atomically replaces the manifest; the old snapshot and log are removed afterwards.
A crash at any point leaves the manifest naming a complete snapshot and a log that holds every
acknowledged write since it. Files the manifest does not name are leftovers of an interrupted
checkpoint and are removed at open.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import shutil
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shardwalk._atomic import atomic_write_bytes, fsync_dir
from shardwalk.errors import CorruptionError, FailedPreconditionError

__all__ = ["FORMAT_VERSION", "DataDir", "seal_snapshot", "verify_snapshot"]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SNAPSHOT_META = "snapshot.json"


def _crc32_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def _snapshot_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != SNAPSHOT_META)


def seal_snapshot(directory: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """Record every file's size and checksum in ``snapshot.json``; fsync everything."""
    root = Path(directory)
    files = {}
    for path in _snapshot_files(root):
        files[str(path.relative_to(root))] = {
            "size": path.stat().st_size,
            "crc32": _crc32_file(path),
        }
    for sub in sorted({p.parent for p in _snapshot_files(root)}):
        fsync_dir(sub)
    body = {"format_version": FORMAT_VERSION, **meta, "files": files}
    atomic_write_bytes(root / SNAPSHOT_META, json.dumps(body, indent=1).encode())


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
        if _crc32_file(path) != expect["crc32"]:
            raise CorruptionError(f"snapshot file {str(path)!r} fails its checksum")
    return meta


class DataDir:
    """An open data directory: the lock, the manifest, and its atomic replacement."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path)
        if self.root.exists() and not self.root.is_dir():
            raise FailedPreconditionError(f"{str(self.root)!r} exists and is not a directory")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "collections").mkdir(exist_ok=True)
        (self.root / "graphs").mkdir(exist_ok=True)
        self._lock_file = open(self.root / "LOCK", "a+")
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise FailedPreconditionError(
                f"data directory {str(self.root)!r} is open in another process; close that "
                "engine first (one process owns a data directory, others use the server)"
            ) from None
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
        # a collection or graph dropped (or created) by a process that died before removing
        # its files
        for kind in ("collections", "graphs"):
            for entry in (self.root / kind).iterdir():
                if entry.name not in self._manifest[kind]:
                    shutil.rmtree(entry, ignore_errors=True)

    @property
    def manifest(self) -> dict[str, Any]:
        with self._mutex:
            return copy.deepcopy(self._manifest)

    def _write(self, manifest: dict[str, Any]) -> None:
        atomic_write_bytes(self.root / MANIFEST, json.dumps(manifest, indent=1).encode())

    def next_generation(self) -> int:
        """Reserve a generation number for new files (committed later by ``commit``)."""
        with self._mutex:
            self._manifest["generation"] += 1
            # Persisting the counter keeps names unique across restarts even if the files are
            # written but never committed.
            self._write(self._manifest)
            return int(self._manifest["generation"])

    def commit(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``change`` to a copy of the manifest and atomically make it current."""
        with self._mutex:
            manifest = copy.deepcopy(self._manifest)
            change(manifest)
            self._write(manifest)
            self._manifest = manifest

    def collection_dir(self, name: str) -> Path:
        return self.root / "collections" / name

    def graph_dir(self, name: str) -> Path:
        return self.root / "graphs" / name

    def remove_unreferenced(self, name: str, keep: set[str], *, kind: str = "collections") -> None:
        """Delete a collection's (or graph's) files the manifest no longer names."""
        directory = self.root / kind / name
        if not directory.is_dir():
            return
        for entry in directory.iterdir():
            if entry.name not in keep:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    def close(self) -> None:
        if not self._lock_file.closed:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
