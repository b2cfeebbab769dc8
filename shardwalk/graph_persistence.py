"""The files of a graph and their upkeep: its creation and opening (the CSR snapshot read,
the fingerprints and their walks loaded, the write-ahead log replayed), fingerprint snapshots,
compaction (the delta merged into a new CSR snapshot beside a new fingerprint snapshot, an
empty log, the manifest switched) and the log's record format.

Functions of a :class:`shardwalk.graph.Graph` (which keeps the queries and the update path and
calls them), run under its lock. Durability rests on :class:`shardwalk.storage.DataDir`: every
file the manifest names is fsynced before the manifest that names it is renamed into place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from shardwalk import _fs
from shardwalk._threads import ThreadBudget
from shardwalk.errors import CorruptionError, FailedPreconditionError
from shardwalk.storage import DataDir, remove_dir, seal_snapshot, verify_snapshot
from shardwalk.wal import WriteAheadLog
from shardwalk.walks import CSRGraph, FingerprintStore, PPRIndex
from shardwalk.walks.dynamic import DynamicGraph, EdgeBatch
from shardwalk.walks.walkstore import WalkStore

if TYPE_CHECKING:
    from shardwalk.graph import Graph

WAL_OPS = {"upsert": "upsert_edges", "delete": "delete_edges", "delete_nodes": "delete_nodes"}
OPS = {v: k for k, v in WAL_OPS.items()}


def record(batch: EdgeBatch) -> pa.RecordBatch:
    columns = {"src": pa.array(batch.src, pa.int64())}
    if batch.op != "delete_nodes":
        columns["dst"] = pa.array(batch.dst, pa.int64())
    if batch.weights is not None:
        columns["weight"] = pa.array(batch.weights, pa.float32())
    return pa.RecordBatch.from_pydict(columns)


def batch(op: str, record: pa.RecordBatch, path: str) -> EdgeBatch:
    names = record.schema.names
    if op not in OPS or "src" not in names or (op != "delete_nodes" and "dst" not in names):
        raise CorruptionError(f"graph write-ahead log {path!r}: a record of unknown kind {op!r}")
    weights = record.column("weight").to_numpy() if "weight" in names else None
    src = record.column("src").to_numpy().astype(np.int64)
    return EdgeBatch(
        OPS[op],
        src,
        record.column("dst").to_numpy().astype(np.int64) if "dst" in names else src[:0],
        None if weights is None else weights.astype(np.float32),
    )


def save_fingerprints(
    graph: Graph, store: FingerprintStore, walks: tuple[WalkStore, WalkStore | None] | None
) -> FingerprintStore:
    """Write a fingerprint snapshot (with its walks) and point the manifest at it."""
    datadir = graph._datadir
    assert datadir is not None
    with datadir.guard(f"saving the fingerprints of graph {graph.name!r}"):
        generation = datadir.next_generation()
        directory = datadir.graph_dir(graph.name)
        name = f"fp-{generation:06d}"
        try:
            store.save(directory / name)
            if walks is not None:
                walks[0].save(directory / name, "walks")
                if walks[1] is not None:
                    walks[1].save(directory / name, "hub_walks")
            seal_snapshot(directory / name, {"graph": graph.name, "kind": "fingerprints"})
        except BaseException:  # not committed
            with suppress(OSError):
                remove_dir(directory / name)
            raise

        def switch(manifest: dict[str, Any]) -> None:
            manifest["graphs"][graph.name]["fingerprints"] = name

        datadir.commit(switch)
        entry = datadir.manifest["graphs"][graph.name]
        keep = {entry["csr"], name, entry.get("wal")} - {None}
        datadir.remove_unreferenced(graph.name, keep=keep, kind="graphs")
    return FingerprintStore.load(directory / name, mmap=True)


def wal(graph: Graph) -> WriteAheadLog:
    if graph._wal is None:  # a graph created before graphs took updates: start its log
        datadir = graph._datadir
        assert datadir is not None
        name = f"gwal-{datadir.next_generation():06d}.log"
        WriteAheadLog.create(str(datadir.graph_dir(graph.name) / name))

        def add(manifest: dict[str, Any]) -> None:
            manifest["graphs"][graph.name].update(wal=name, seq=graph._seq)

        datadir.commit(add)
        graph._wal = WriteAheadLog(str(datadir.graph_dir(graph.name) / name))
    return graph._wal


@contextmanager
def checkpointed(graph: Graph) -> Iterator[tuple[dict[str, Any], int]]:
    """Hold updates back, compact if anything changed, and yield this graph's manifest
    entry and its log's size: a consistent cut for a backup (shardwalk.backup), which pins
    the files the entry names before the block ends. Queries run meanwhile (the first after
    an update waits for the compaction, which merges that update)."""
    with graph._lock:
        graph._check_open()
        if graph._datadir is None:
            raise FailedPreconditionError(f"graph {graph.name!r} has no files to back up")
        if graph._dyn.changed:
            compact(graph)
        size = graph._wal.size if graph._wal is not None else 0
        yield graph._datadir.manifest["graphs"][graph.name], size


def compact(graph: Graph) -> None:
    csr = graph._dyn.merged()
    index = graph._current()
    if graph._datadir is None:
        graph._dyn = DynamicGraph(csr, self_loops=graph._dyn.self_loops)
        graph._index = index
        return
    datadir = graph._datadir
    with datadir.guard(f"a compaction of graph {graph.name!r}"):
        write_compacted(graph, datadir, csr, index)


def write_compacted(graph: Graph, datadir: DataDir, csr: CSRGraph, index: PPRIndex) -> None:
    """Write the snapshot (CSR, fingerprints) and an empty log; switch the manifest."""
    directory = datadir.graph_dir(graph.name)
    generation = datadir.next_generation()
    csr_name = f"csr-{generation:06d}"
    fp_name = None
    fp = index.fingerprints
    wal = f"gwal-{generation:06d}.log"
    try:
        csr.save(directory / csr_name)
        seal_snapshot(directory / csr_name, {"graph": graph.name, "kind": "csr"})
        if fp is not None:
            fp_name = f"fp-{generation:06d}"
            fp.save(directory / fp_name)
            if graph._walks is not None:
                graph._walks[0].save(directory / fp_name, "walks")
                if graph._walks[1] is not None:
                    graph._walks[1].save(directory / fp_name, "hub_walks")
            seal_snapshot(directory / fp_name, {"graph": graph.name, "kind": "fingerprints"})
        WriteAheadLog.create(str(directory / wal))
    except BaseException:  # not committed: the old snapshot and log stay current
        with suppress(OSError):
            for name in (csr_name, fp_name):
                if name is not None:
                    remove_dir(directory / name)
            _fs.unlink(directory / wal, missing_ok=True)
        raise

    def switch(manifest: dict[str, Any]) -> None:
        manifest["graphs"][graph.name].update(
            csr=csr_name, fingerprints=fp_name, wal=wal, seq=graph._seq
        )

    datadir.commit(switch)
    try:
        if graph._wal is not None:
            graph._wal.close()
        graph._wal = WriteAheadLog(str(directory / wal))
        datadir.remove_unreferenced(
            graph.name, keep={csr_name, wal} | ({fp_name} if fp_name else set()), kind="graphs"
        )
        loaded = CSRGraph.load(directory / csr_name, mmap=True)
        graph._dyn = DynamicGraph(loaded, self_loops=graph._dyn.self_loops)
        if fp_name is not None:
            graph._fingerprints = FingerprintStore.load(directory / fp_name, mmap=True)
        graph._index = graph._ppr_index(graph._fingerprints)
    except BaseException as exc:  # the manifest names the new log: no way back
        datadir.fail(exc)
        raise


def create(
    cls: type[Graph],
    name: str,
    csr: CSRGraph,
    datadir: DataDir | None,
    budget: ThreadBudget | None = None,
    self_loops: str = "keep",
) -> Graph:
    if datadir is None:
        return cls(name, csr, budget=budget, self_loops=self_loops)
    with datadir.guard(f"creating graph {name!r}"):
        generation, directory = datadir.new_dir("graph", name)
        csr_name = f"csr-{generation:06d}"
        wal = f"gwal-{generation:06d}.log"
        try:
            csr.save(directory / csr_name)
            seal_snapshot(directory / csr_name, {"graph": name, "kind": "csr"})
            WriteAheadLog.create(str(directory / wal))
        except BaseException:  # not committed
            with suppress(OSError):
                remove_dir(directory)
            raise

        def add(manifest: dict[str, Any]) -> None:
            manifest["graphs"][name] = {
                "csr": csr_name, "fingerprints": None, "wal": wal, "seq": 0,
                "self_loops": self_loops,
            }  # fmt: skip

        datadir.commit(add)
    csr = CSRGraph.load(directory / csr_name, mmap=True)
    graph = cls(name, csr, datadir=datadir, budget=budget, self_loops=self_loops)
    graph._wal = WriteAheadLog(str(directory / wal))
    return graph


def open_graph(
    cls: type[Graph],
    name: str,
    entry: dict[str, Any],
    datadir: DataDir,
    budget: ThreadBudget | None = None,
) -> Graph:
    directory = datadir.graph_dir(name)
    verify_snapshot(directory / entry["csr"])
    csr = CSRGraph.load(directory / entry["csr"], mmap=True)
    store = None
    walks = None
    if entry.get("fingerprints"):
        fp_dir = directory / entry["fingerprints"]
        verify_snapshot(fp_dir)
        store = FingerprintStore.load(fp_dir, mmap=True)
        if (fp_dir / "walks.json").exists():
            hubs = None
            if (fp_dir / "hub_walks.json").exists():
                hubs = WalkStore.load(fp_dir, "hub_walks", csr.num_nodes)
            walks = (WalkStore.load(fp_dir, "walks", csr.num_nodes), hubs)
    wal = entry.get("wal")
    keep = {entry["csr"], wal} | ({entry["fingerprints"]} if entry.get("fingerprints") else set())
    datadir.remove_unreferenced(name, keep=keep - {None}, kind="graphs")
    graph = cls(
        name, csr, store, datadir=datadir, budget=budget,
        self_loops=entry.get("self_loops", "keep"), walks=walks, seq=int(entry.get("seq", 0)),
    )  # fmt: skip
    graph._compose = {name: dict(r) for name, r in entry.get("compose", {}).items()}
    if wal is not None:
        path = str(directory / wal)
        for record in WriteAheadLog.replay(path):
            graph._apply(batch(record.op, record.batch, path))
        graph._wal = WriteAheadLog(path)
    return graph
