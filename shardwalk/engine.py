"""The engine: owns the collections of one data directory (or of memory)."""

from __future__ import annotations

import os
import shutil
import threading
from types import TracebackType
from typing import Any

from shardwalk.collection import Collection
from shardwalk.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from shardwalk.storage import DataDir
from shardwalk.validation import METRICS, check_choice, check_index_params, check_name
from shardwalk.wal import WriteAheadLog

__all__ = ["Engine"]

MAX_DIM = 65_536


class Engine:
    """Entry point of the embedded library.

    ``Engine.open(path)`` keeps everything durable in a data directory (created if missing);
    ``Engine.memory()`` keeps everything in memory. Use as a context manager or call
    :meth:`close`, which checkpoints every collection.
    """

    def __init__(self, datadir: DataDir | None) -> None:
        self._datadir = datadir
        self._collections: dict[str, Collection] = {}
        self._lock = threading.RLock()
        self._closed = False

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Engine:
        """Open (or create) the data directory at ``path``.

        Raises
        ------
        FailedPreconditionError
            Another process has it open, or it was written by an incompatible version.
        CorruptionError
            A snapshot fails its checksums.
        """
        return cls(DataDir(path))

    @classmethod
    def memory(cls) -> Engine:
        """An engine that keeps everything in memory (nothing survives ``close``)."""
        return cls(None)

    @property
    def path(self) -> str | None:
        return None if self._datadir is None else str(self._datadir.root)

    def __repr__(self) -> str:
        return f"Engine({self.path or ':memory:'!r})"

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPreconditionError("the engine is closed; open a new one")

    # -- collections ------------------------------------------------------------------------
    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str = "l2",
        index: str = "hnsw",
        **index_params: Any,
    ) -> Collection:
        """Create an empty collection.

        Parameters
        ----------
        name : str
            1-128 letters, digits, '_', '.', '-'.
        dim : int
            Vector dimension (1-65536).
        metric : {"l2", "ip", "cosine"}
            Squared Euclidean, inner product, or cosine (vectors normalised on the way in).
        index : {"flat", "hnsw", "partitioned"}
            Exact search, one HNSW graph, or balanced partitions of HNSW graphs.
        **index_params
            HNSW: ``m`` (M, 8-64, default 16), ``ef_construction`` (100-500, default 200),
            ``ef`` (search-time, >= k, default 64), ``seed``, ``threads``. Partitioned: those
            plus ``partitions`` (P, default 8) and ``train_size``.

        Raises
        ------
        AlreadyExistsError, InvalidArgumentError
        """
        check_name("collection", name)
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
            raise InvalidArgumentError(f"dim must be an integer in [1, {MAX_DIM}]; got {dim!r}")
        check_choice("metric", metric, METRICS)
        kind, params = check_index_params(index, index_params)
        with self._lock:
            self._check_open()
            if name in self.collections():
                raise AlreadyExistsError(
                    f"collection {name!r} already exists; use engine.collection({name!r}) or "
                    "drop it first"
                )
            collection = Collection(name=name, dim=dim, metric=metric, index=kind, params=params)
            if self._datadir is not None:
                datadir = self._datadir
                generation = datadir.next_generation()
                directory = datadir.collection_dir(name)
                shutil.rmtree(directory, ignore_errors=True)  # leftovers of a crashed create
                directory.mkdir(parents=True)
                wal = f"wal-{generation:06d}.log"
                WriteAheadLog.create(str(directory / wal))
                entry = {
                    "dim": dim,
                    "metric": metric,
                    "index": kind,
                    "params": params,
                    "snapshot": None,
                    "wal": wal,
                }

                def add(manifest: dict[str, Any]) -> None:
                    manifest["collections"][name] = entry

                datadir.commit(add)
                collection._attach(datadir, None, wal)
            self._collections[name] = collection
            return collection

    def collection(self, name: str) -> Collection:
        """The collection called ``name`` (loaded from disk on first use).

        Raises
        ------
        NotFoundError
            Listing the collections that exist.
        """
        with self._lock:
            self._check_open()
            found = self._collections.get(name)
            if found is not None:
                return found
            entry = None
            if self._datadir is not None:
                entry = self._datadir.manifest["collections"].get(name)
            if entry is None:
                known = ", ".join(repr(n) for n in self.collections()) or "none"
                raise NotFoundError(f"no collection {name!r}; collections: {known}")
            collection = Collection(
                name=name,
                dim=entry["dim"],
                metric=entry["metric"],
                index=entry["index"],
                params=entry["params"],
            )
            collection._attach(self._datadir, entry["snapshot"], entry["wal"])
            self._collections[name] = collection
            return collection

    def collections(self) -> list[str]:
        """Names of all collections, sorted."""
        with self._lock:
            self._check_open()
            names = set(self._collections)
            if self._datadir is not None:
                names |= set(self._datadir.manifest["collections"])
            return sorted(names)

    def drop_collection(self, name: str) -> None:
        """Delete a collection and its files.

        Raises
        ------
        NotFoundError
        """
        with self._lock:
            self._check_open()
            if name not in self.collections():
                known = ", ".join(repr(n) for n in self.collections()) or "none"
                raise NotFoundError(f"no collection {name!r} to drop; collections: {known}")
            collection = self._collections.pop(name, None)
            if collection is not None:
                collection._close("was dropped")
            if self._datadir is not None:

                def remove(manifest: dict[str, Any]) -> None:
                    manifest["collections"].pop(name, None)

                self._datadir.commit(remove)
                shutil.rmtree(self._datadir.collection_dir(name), ignore_errors=True)

    # -- lifecycle --------------------------------------------------------------------------
    def flush(self) -> None:
        """Checkpoint every open collection that changed."""
        with self._lock:
            self._check_open()
            for collection in self._collections.values():
                collection.flush()

    def close(self) -> None:
        """Checkpoint and release the data directory. Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._datadir is not None:
                    for collection in self._collections.values():
                        collection.flush()
            finally:
                for collection in self._collections.values():
                    collection._close("belongs to a closed engine")
                self._collections.clear()
                if self._datadir is not None:
                    self._datadir.close()
                self._closed = True

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
