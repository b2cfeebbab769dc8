"""The engine's catalog: the collections and graphs of one data directory (or of memory), by
name, through their life: created (a directory, an empty log, a manifest entry), loaded on
first use (one load per name, outside the catalog's lock), listed, dropped (their entry, then
their files), checkpointed and closed with the engine.

The Engine holds one :class:`Catalog` and checks its callers' arguments; what the catalog
does with a name is in this module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

from shardwalk import collection_persistence, graph_persistence
from shardwalk._threads import ThreadBudget
from shardwalk.collection import Collection
from shardwalk.errors import AlreadyExistsError, FailedPreconditionError, NotFoundError
from shardwalk.graph import Graph
from shardwalk.index import IndexHost
from shardwalk.storage import DataDir, remove_dir
from shardwalk.wal import RecoveredLog, WriteAheadLog
from shardwalk.walks import CSRGraph

__all__ = ["Catalog"]

Kind = Literal["collection", "graph"]
_Loaded = TypeVar("_Loaded", Collection, Graph)


class Catalog:
    """The named collections and graphs of one engine.

    Thread safety: ``lock`` is held only to look up and insert, never to load: loading a
    collection or graph from disk holds up only the callers of that same name, who all get the
    one object loaded.
    """

    def __init__(self, datadir: DataDir | None, budget: ThreadBudget, host: IndexHost | None):
        self.datadir = datadir
        self._budget = budget
        self._host = host  # keeps the indexes of some kinds elsewhere (Engine.open(ray=...))
        self.collections: dict[str, Collection] = {}  # loaded
        self.graphs: dict[str, Graph] = {}  # loaded
        # loads in progress, by ("collection" | "graph", name): callers of the same name wait
        # for the one load instead of starting another
        self._loading: dict[tuple[str, str], Future[Any]] = {}
        self.lock = threading.RLock()  # held only to look up and insert, never to load
        self.closed = False

    def check_open(self) -> None:
        if self.closed:
            raise FailedPreconditionError("the engine is closed; open a new one")

    def salvage_logs(self) -> list[RecoveredLog]:
        """Cut every corrupt write-ahead log at its first bad record (``Engine.open(path,
        recover=True)``): what was cut, one report per log."""
        datadir = self.datadir
        assert datadir is not None
        recovered = []
        for kind in ("collection", "graph"):
            for name, entry in sorted(datadir.manifest[f"{kind}s"].items()):
                if not entry.get("wal"):  # graphs written before their logs have none
                    continue
                wal = self._directory(datadir, kind, name) / entry["wal"]
                if wal.is_file():  # a missing log is reported when its owner is loaded
                    report = WriteAheadLog.salvage(str(wal), collection=name)
                    if report is not None:
                        recovered.append(report)
        return recovered

    @staticmethod
    def _directory(datadir: DataDir, kind: Kind, name: str) -> Path:
        return datadir.collection_dir(name) if kind == "collection" else datadir.graph_dir(name)

    # -- names ------------------------------------------------------------------------------
    def names(self, kind: Kind) -> list[str]:
        """The names of ``kind``, loaded or only on disk, sorted."""
        loaded: dict[str, Any] = self.collections if kind == "collection" else self.graphs
        with self.lock:
            self.check_open()
            names = set(loaded)
            if self.datadir is not None:
                names |= set(self.datadir.manifest[f"{kind}s"])
            return sorted(names)

    def _entry(self, kind: Kind, name: str) -> tuple[DataDir, dict[str, Any]] | None:
        """The data directory and the manifest entry of ``name`` (None: there is none)."""
        if self.datadir is None:
            return None
        entry = self.datadir.manifest[f"{kind}s"].get(name)
        return None if entry is None else (self.datadir, entry)

    # -- create -----------------------------------------------------------------------------
    def create_collection(self, name: str, spec: dict[str, Any]) -> Collection:
        """A new empty collection, durable on return on disk. ``spec`` (checked) is what its
        manifest entry keeps of it: ``dim``, ``metric``, ``index``, ``params`` and, when
        declared, ``attributes`` (absent in directories written before declarations)."""
        with self.lock:
            self.check_open()
            if name in self.names("collection"):
                raise AlreadyExistsError(
                    f"collection {name!r} already exists; use engine.collection({name!r}) or "
                    "drop it first"
                )
            collection = self._new_collection(name, spec)
            if self.datadir is not None:
                datadir = self.datadir
                with datadir.guard(f"creating collection {name!r}"):
                    generation, directory = datadir.new_dir("collection", name)
                    wal = f"wal-{generation:06d}.log"
                    WriteAheadLog.create(str(directory / wal))
                entry = {**spec, "snapshot": None, "wal": wal}

                def add(manifest: dict[str, Any]) -> None:
                    manifest["collections"][name] = entry

                datadir.commit(add)
                collection_persistence.attach(collection, datadir, None, wal)
            self.collections[name] = collection
            return collection

    def _new_collection(self, name: str, entry: dict[str, Any]) -> Collection:
        """The collection a manifest entry (or a new collection's spec) describes, empty."""
        return Collection(
            name=name,
            dim=entry["dim"],
            metric=entry["metric"],
            index=entry["index"],
            params=entry["params"],
            attributes=entry.get("attributes"),
            budget=self._budget,
            host=self._host,
        )

    def add_graph(self, name: str, csr: CSRGraph, self_loops: str = "keep") -> Graph:
        """A new graph of these edges, durable on return on disk."""
        with self.lock:
            self.check_open()
            if name in self.names("graph"):
                raise AlreadyExistsError(f"graph {name!r} already exists; drop it first")
            graph = graph_persistence.create(
                Graph, name, csr, self.datadir, self._budget, self_loops
            )
            self.graphs[name] = graph
            return graph

    # -- load -------------------------------------------------------------------------------
    def collection(self, name: str) -> Collection:
        """The collection ``name``, loaded from disk on first use."""
        return self._get_or_load("collection", name, self.collections, self._load_collection)

    def graph(self, name: str) -> Graph:
        """The graph ``name``, memory-mapped from disk on first use."""
        return self._get_or_load("graph", name, self.graphs, self._load_graph)

    def _load_collection(self, name: str) -> Callable[[], Collection] | None:
        """What loads collection ``name`` (None: there is none); called under the lock."""
        found = self._entry("collection", name)
        if found is None:
            return None
        datadir, entry = found

        def load() -> Collection:
            collection = self._new_collection(name, entry)
            collection_persistence.attach(collection, datadir, entry["snapshot"], entry["wal"])
            return collection

        return load

    def _load_graph(self, name: str) -> Callable[[], Graph] | None:
        found = self._entry("graph", name)
        if found is None:
            return None
        datadir, entry = found
        return lambda: graph_persistence.open_graph(Graph, name, entry, datadir, self._budget)

    def _get_or_load(
        self,
        kind: Kind,
        name: str,
        loaded: dict[str, _Loaded],
        loader: Callable[[str], Callable[[], _Loaded] | None],
    ) -> _Loaded:
        """``loaded[name]``, loading it first if needed, outside the lock: the first caller of
        a name loads it; later callers of that name wait for it and get the same object (or
        the same error); callers of other names never wait for it."""
        key = (kind, name)
        with self.lock:
            self.check_open()
            found = loaded.get(name)
            if found is not None:
                return found
            pending = self._loading.get(key)
            if pending is None:
                load = loader(name)
                if load is None:
                    known = ", ".join(repr(n) for n in self.names(kind)) or "none"
                    raise NotFoundError(f"no {kind} {name!r}; {kind}s: {known}")
                pending = self._loading[key] = Future()
                pending.set_running_or_notify_cancel()
            else:
                load = None
        if load is None:  # another caller loads it
            found_by_another: _Loaded = pending.result()
            return found_by_another
        try:
            value = load()
        except BaseException as error:
            with self.lock:
                del self._loading[key]
            pending.set_exception(error)
            raise
        with self.lock:
            del self._loading[key]
            closed = self.closed
            if not closed:
                loaded[name] = value
        if closed:  # close() waited for this load; the engine no longer owns it
            value._close("belongs to a closed engine")
            closed_error = FailedPreconditionError("the engine is closed; open a new one")
            pending.set_exception(closed_error)
            raise closed_error
        pending.set_result(value)
        return value

    # -- drop -------------------------------------------------------------------------------
    @contextmanager
    def _settled(self, kind: Kind, name: str) -> Iterator[None]:
        """Hold the lock while no load of ``name`` is in progress (so dropping it cannot
        remove files a load is reading)."""
        while True:
            with self.lock:
                pending = self._loading.get((kind, name))
                if pending is None:
                    yield
                    return
            pending.exception()  # waits; the outcome, error or not, is the loader's

    def drop(self, kind: Kind, name: str) -> None:
        """Close ``name`` if loaded, remove its manifest entry, then its files. A collection's
        compose calibrations (kept with the graphs) go with it."""
        with self._settled(kind, name):
            self.check_open()
            if name not in self.names(kind):
                known = ", ".join(repr(n) for n in self.names(kind)) or "none"
                raise NotFoundError(f"no {kind} {name!r} to drop; {kind}s: {known}")
            loaded: dict[str, Any] = self.collections if kind == "collection" else self.graphs
            dropped = loaded.pop(name, None)
            if dropped is not None:
                dropped._close("was dropped")
            if kind == "collection":
                for graph in self.graphs.values():  # its compose calibrations
                    graph._compose.pop(name, None)
            if self.datadir is not None:

                def remove(manifest: dict[str, Any]) -> None:
                    manifest[f"{kind}s"].pop(name, None)
                    if kind == "collection":
                        for entry in manifest["graphs"].values():  # its compose calibrations
                            entry.get("compose", {}).pop(name, None)

                self.datadir.commit(remove)
                with self.datadir.guard(f"removing {kind} {name!r}"):
                    remove_dir(self._directory(self.datadir, kind, name))

    # -- checkpoint and close ---------------------------------------------------------------
    def flush(self) -> None:
        """Checkpoint every loaded collection that changed (outside the lock: other callers
        look collections up meanwhile)."""
        with self.lock:
            self.check_open()
            collections = list(self.collections.values())
        for collection in collections:
            try:
                collection.flush()
            except FailedPreconditionError:
                with self.lock:  # dropped meanwhile: nothing left to flush
                    if self.collections.get(collection.name) is collection:
                        raise

    def close(self) -> None:
        """Checkpoint, close every loaded object, release the data directory and the index
        host. Idempotent; loads in progress finish first, later calls are refused."""
        with self.lock:
            if self.closed:
                return
            self.closed = True  # refuses new calls and loads from here on
            pending = list(self._loading.values())
        for load in pending:  # none may read the directory once it is released
            load.exception()
        with self.lock:
            try:
                # read-only after a failed fsync: nothing more is written (the logs replay)
                if self.datadir is not None and self.datadir.failed is None:
                    for collection in self.collections.values():
                        collection.flush()
            finally:
                for collection in self.collections.values():
                    collection._close("belongs to a closed engine")
                for graph in self.graphs.values():
                    graph._close("belongs to a closed engine")
                self.collections.clear()
                self.graphs.clear()
                if self.datadir is not None:
                    self.datadir.close()
                if self._host is not None:
                    self._host.close()
