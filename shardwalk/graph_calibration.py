"""accuracy= calibrated, and calibrated again after updates (issue 22 item 3).

A graph's fingerprints carry the choice calibration made for them
(``stats["accuracy"]``, from :func:`shardwalk.walks.calibration.calibrate_accuracy`) and a record of
the edges changed since (``stats["calibration"]``). Once updates have changed
``Graph.recalibrate_ratio`` of the edges calibration saw, the hubs are selected again in the
write path and accuracy= is calibrated again in a background thread. Functions of a
:class:`shardwalk.graph.Graph`, run under its lock (the background thread takes it to install
what it found).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from shardwalk import graph_persistence
from shardwalk.errors import FailedPreconditionError, ResourceExhaustedError
from shardwalk.walks import CSRGraph, FingerprintStore, _check
from shardwalk.walks.calibration import calibrate_accuracy
from shardwalk.walks.dynamic import EdgeBatch
from shardwalk.walks.fingerprints import select_hubs
from shardwalk.walks.kept_fingerprints import build_hub_walks, reselect_hub_walks

if TYPE_CHECKING:
    from shardwalk.graph import Graph

log = logging.getLogger("shardwalk.graph")


def calibrate(graph: Graph, store: FingerprintStore, csr: CSRGraph, seed: int) -> None:
    """Calibrate accuracy= for ``store`` on ``csr`` (its stats keep the choice, the
    update it was made at and the edges it saw)."""
    store.stats["accuracy"] = calibrate_accuracy(csr, store, seed=seed)
    previous = store.stats.get("calibration") or {}
    store.stats["calibration"] = {
        "update": graph._seq,
        "edges": int(csr.num_edges),
        "edges_changed": 0,
        "recalibrations": int(previous.get("recalibrations", -1)) + 1,
    }


def edges_changed(graph: Graph, batch: EdgeBatch, change: Any) -> int:
    """The edges of the CSR an applied batch changed (a node deletion: the edges it
    removed; an undirected edge is two)."""
    both = 1 if graph._dyn.directed else 2
    return int(max(both * batch.size, abs(change.edges_delta)))


def count_change(graph: Graph, batch: EdgeBatch, change: Any) -> None:
    """Count an applied batch's edges against the calibration."""
    fp = graph._fingerprints
    state = None if fp is None else fp.stats.get("calibration")
    if state is not None:
        state["edges_changed"] = int(state["edges_changed"]) + edges_changed(graph, batch, change)


def recalibration_due(graph: Graph) -> bool:
    fp = graph._fingerprints
    state = None if fp is None else fp.stats.get("calibration")
    if state is None or graph._walks is None:
        return False
    return bool(state["edges_changed"] >= max(1, graph.recalibrate_ratio * state["edges"]))


def recalibrate(graph: Graph) -> dict[str, Any]:
    """Select the hubs again on the current graph (by the rule the fingerprints were
    built with) and rebuild the hub rows when the set moved; then calibrate accuracy=
    again on this graph in the background (the write that passed the threshold does not
    wait for the calibration's exact solves: at 1M nodes they take tens of seconds), and
    (with a data directory) compact when it is done, so the new hubs and calibration are
    saved. Until then queries use the previous calibration's choices. The caller holds
    the lock."""
    t0 = time.perf_counter()
    # the delta merged, repaired rows recounted (the walk stores' upkeep is left to a read:
    # the update that passed the threshold does not wait for it)
    index = graph._current(upkeep=False)
    csr, fp = index.graph, index.fingerprints
    assert fp is not None and graph._walks is not None
    spec = fp.stats.get("hubs_requested", "auto" if fp.num_hubs else None)
    hubs = select_hubs(csr, spec)
    old = np.zeros(0, np.int64) if fp.hubs is None else np.asarray(fp.hubs, np.int64)
    moved = int(np.setdiff1d(hubs, old).size + np.setdiff1d(old, hubs).size)
    if moved:
        mode = _check.DANGLING_MODES[fp.dangling]
        kept = graph._walks[1]
        if kept is not None and old.size:  # only the hubs new to the set are walked
            hub_store, rows = reselect_hub_walks(graph._dyn, kept, old, hubs, fp.hub_walks)
        else:
            hub_store, rows = build_hub_walks(
                graph._dyn, hubs, fp.walks_per_node, fp.hub_walks or 1000, fp.alpha, fp.seed,
                mode,
            )  # fmt: skip
        if not rows:  # no hubs any more
            rows = dict(hubs=None, hub_walks=0, hub_indptr=None, hub_nodes=None,
                        hub_counts=None)  # fmt: skip
        fp = replace(fp, stats=dict(fp.stats), **rows)
        graph._walks = (graph._walks[0], hub_store)
    previous = fp.stats.get("calibration") or {}
    # a new record: the edges changed from here on count against the next calibration;
    # the background run installs its choices only while this record is the store's
    state = {
        "update": graph._seq,
        "edges": int(csr.num_edges),
        "edges_changed": 0,
        "recalibrations": int(previous.get("recalibrations", 0)),
        "hubs_moved": moved,
        "hubs": int(hubs.size),
        "running": True,
    }
    fp.stats["calibration"] = state
    graph._fingerprints = fp
    graph._index = graph._ppr_index(fp)
    graph._calibrating = threading.Thread(
        target=calibrate_in_background,
        args=(graph, fp, csr, state),
        name=f"shardwalk-calibrate-{graph.name}",
        daemon=True,
    )
    graph._calibrating.start()
    return {"hubs_moved": moved, "hubs": int(hubs.size), "seconds": time.perf_counter() - t0,
            "calibration": "running in the background (Graph.wait_calibrated())"}  # fmt: skip


def calibrate_in_background(
    graph: Graph, fp: FingerprintStore, csr: CSRGraph, state: dict[str, Any]
) -> None:
    """accuracy= calibrated on the graph as it was when the threshold was passed (the
    same choices the write would have made in place), installed in the current store
    unless the fingerprints were rebuilt or dropped, or the graph closed, meanwhile."""
    try:
        with graph._budget.take(graph._budget.threads):
            accuracy = calibrate_accuracy(csr, fp, seed=fp.seed)
    except BaseException as exc:  # the previous choices stay; the next threshold retries
        log.error("graph %r: calibrating accuracy= again failed", graph.name, exc_info=exc)
        with graph._lock:
            state.update(running=False, failed=f"{type(exc).__name__} (see the log)")
        return
    with graph._lock:
        current = graph._fingerprints
        state["running"] = False
        if graph._closed_because is not None or current is None:
            return
        if current.stats.get("calibration") is not state:  # rebuilt meanwhile
            return
        current.stats["accuracy"] = accuracy
        state["recalibrations"] += 1
        if graph._index is not None and graph._index.fingerprints is not current:
            graph._index = None  # the next read builds it on the store that has them
        if graph._datadir is not None:
            try:
                graph_persistence.compact(graph)
            except (ResourceExhaustedError, FailedPreconditionError) as exc:
                log.warning("graph %r: compaction after recalibration failed: %s", graph.name, exc)
