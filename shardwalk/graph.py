"""A graph owned by an engine: CSR (memory-mapped under the data directory), fingerprints,
personalized PageRank queries, FastRP embeddings, and updates.

Updates (``upsert_edges``, ``delete_edges``, ``delete_nodes``) are durable like collection
writes: each batch is validated whole, appended to the graph's write-ahead log and fsynced
before it is applied and acknowledged, and replayed on open (torn tail vs corruption as for
collections, ``shardwalk.wal``). The graph is its CSR snapshot plus a log-structured delta
(edges appended per node, ``shardwalk.walks.dynamic``); :meth:`Graph.compact` (explicit, or
automatic once the delta holds ``compact_ratio`` of the edges) writes a new snapshot and
starts an empty log. Reads see every acknowledged batch: the first read after a write merges the delta into a CSR (O(edges)).
Fingerprints built with ``keep_walks=True`` (the default) keep their walks
(``shardwalk.walks.walkstore``) and are repaired after every batch by re-simulating only the
affected walks (a batch that changes ``rebuild_ratio`` of the edges rebuilds them instead);
the first fingerprint query after a batch recounts the repaired rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shardwalk import graph_calibration, graph_persistence
from shardwalk._progress import Progress, check_progress
from shardwalk._threads import ThreadBudget, default_budget
from shardwalk.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    OutcomeUnknownError,
    ResourceExhaustedError,
)
from shardwalk.storage import DataDir
from shardwalk.types import Edges, Param, Report, Seeds
from shardwalk.validation import check_choice
from shardwalk.wal import WriteAheadLog, encode
from shardwalk.walks import CSRGraph, FingerprintStore, GraphShard, PPRIndex, PPRResult
from shardwalk.walks import build_fingerprints as _build_fingerprints
from shardwalk.walks.dynamic import DynamicGraph, EdgeBatch
from shardwalk.walks.fastrp import fastrp
from shardwalk.walks.kept_fingerprints import (
    build_kept,
    dropped_report,
    rebuild_kept,
    refresh_fingerprints,
    repair_kept,
)
from shardwalk.walks.walkstore import WalkStore

__all__ = ["ACCURACY", "Graph"]

log = logging.getLogger(__name__)

# What accuracy= runs: with fingerprints that serve the query ("hybrid"), or without ("push").
# bench/ppr.py measures both settings against the exact solver on every real graph of
# ../shared/data and the generated 1M-node graph.
# (Fingerprints calibrated when built run what calibration chose; "hybrid" here serves stores
# saved without a calibration.)
ACCURACY: dict[str, dict[str, dict[str, Any]]] = {
    "fast": {"hybrid": {"r_max": 2e-5, "absorb": False, "prune": 0.1}, "push": {"r_max": 1e-6}},
    # pushing through hubs too: the hub rows' Monte Carlo noise caps what absorbing can reach
    "high": {"hybrid": {"r_max": 3e-6, "absorb": False, "prune": 0.01}, "push": {"r_max": 1e-7}},
}


class Graph:
    """Nodes keyed by int64 ids (the same id space as collections, so kNN hits can seed PPR),
    with optional positive edge weights.

    Obtain one from :meth:`shardwalk.Engine.create_graph`, :meth:`~shardwalk.Engine.load_graph`
    or :meth:`~shardwalk.Engine.graph`. Queries are thread-safe.
    """

    #: automatic compaction once the delta holds this share of the snapshot's edges
    compact_ratio: float = 0.25
    #: once updates have changed this share of the edges the fingerprints' calibration saw,
    #: hubs are selected again (their rows rebuilt if the set moved) and accuracy= calibrated
    #: again (``stats()["fingerprints"]["calibration"]``)
    recalibrate_ratio: float = 0.1
    #: a batch that changes at least this share of the graph's edges rebuilds the kept walks
    #: (and the fingerprints) instead of repairing them: past it a repair, which rewrites
    #: whole blocks and recounts their rows, costs more than walking every walk anew
    #: (bench/graph_updates.py measures both). Counted edges, not seconds: the same graph,
    #: batch and seed take the same path, so replaying the log after a restart does too.
    rebuild_ratio: float = 0.1

    def __init__(
        self,
        name: str,
        csr: CSRGraph,
        fingerprints: FingerprintStore | None = None,
        *,
        datadir: DataDir | None = None,
        budget: ThreadBudget | None = None,
        self_loops: str = "keep",
        walks: tuple[WalkStore, WalkStore | None] | None = None,
        seq: int = 0,
    ) -> None:
        self.name = name
        self._dyn = DynamicGraph(csr, self_loops=self_loops)
        self._fingerprints = fingerprints
        self._walks = walks  # (walks, hub walks) of the fingerprints, kept for repairs
        self._seq = seq  # update batches applied since the graph was created
        self._budget = budget or default_budget()  # the engine's: threads for every call
        self._index: PPRIndex | None = None  # built on first read after a change
        self._datadir = datadir
        self._wal: WriteAheadLog | None = None
        self._lock = threading.RLock()
        self._calibrating: threading.Thread | None = None  # accuracy= calibrated again
        self._closed_because: str | None = None
        self._closed_cause: BaseException | None = None  # chained to the errors it causes
        self.last_update: dict[str, Any] = {}
        # compose defaults per collection name (Engine.calibrate_compose), kept in the manifest
        self._compose: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return (
            f"Graph({self.name!r}, nodes={self.num_nodes}, edges={self.num_edges}, "
            f"directed={self.directed}, fingerprints={self._fingerprints is not None})"
        )

    def _check_open(self) -> None:
        if self._closed_because is not None:
            raise FailedPreconditionError(
                f"graph {self.name!r} {self._closed_because}"
            ) from self._closed_cause

    def _close(self, because: str) -> None:
        with self._lock:
            self._closed_because = because
            if self._wal is not None:
                self._wal.close()
                self._wal = None
        self.wait_calibrated()  # it installs and writes nothing once the graph is closed

    def _stop(self, because: str, cause: BaseException) -> None:
        """Refuse every further call until the engine is reopened, and let go of the log
        (after a failed append a partial record may end it: nothing is appended after that).
        The cause's text stays out of the messages (a server passes them to its clients): it
        is chained to the errors, and logged."""
        self._closed_because = f"{because}; reopen the engine"
        self._closed_cause = cause
        log.error("graph %r %s", self.name, because, exc_info=cause)
        wal, self._wal = self._wal, None
        if wal is not None:
            try:
                wal.close()
            except OSError:  # the failed append's bytes, flushed again: the log is given up
                log.warning("graph %r: closing its write-ahead log failed", self.name)

    def _ppr_index(self, fingerprints: FingerprintStore | None) -> PPRIndex:
        index = PPRIndex(self._dyn.merged(), fingerprints)
        index.max_pooled_scratch = self._budget.threads  # idle scratch kept: one per thread
        return index

    def _current(self, *, upkeep: bool = True) -> PPRIndex:
        """The PPR index of the graph with every acknowledged update (built on first use
        after a change: the delta merged, repaired fingerprint rows recounted; with
        ``upkeep``, the walk stores' index folded as due; without, as the recalibration in
        an update asks, left for a later read)."""
        index = self._index
        if index is not None:
            return index
        with self._lock:
            if self._index is None:
                csr = self._dyn.merged()
                fp = self._fingerprints
                if fp is not None and fp.graph_digest != csr.digest():
                    main, hubs = self._walks  # type: ignore[misc]

                    def publish(store: FingerprintStore) -> None:
                        self._fingerprints = store  # (then the walks' dirty marks clear)

                    fp = refresh_fingerprints(fp, main, hubs, csr, publish=publish)
                    # upkeep of the walk stores that can wait: here, not in the update (the
                    # acknowledgement does not wait for it)
                    if upkeep:
                        for store in (main, hubs):
                            if store is not None and store.fold_due:
                                store.fold(csr.num_nodes)
                self._index = self._ppr_index(fp)
            return self._index

    @property
    def _csr(self) -> CSRGraph:
        return self._current().graph

    # -- shape ------------------------------------------------------------------------------
    @property
    def csr(self) -> CSRGraph:
        """The current graph as one CSR. Nodes removed by :meth:`delete_nodes` keep their
        internal slot (isolated) under a negative placeholder id, which no query can name."""
        return self._csr

    @property
    def num_nodes(self) -> int:
        return int(self.node_ids.shape[0])

    @property
    def num_edges(self) -> int:
        return self._csr.num_edges

    @property
    def directed(self) -> bool:
        return bool(self._dyn.directed)

    @property
    def node_ids(self) -> NDArray[np.int64]:
        """The ids of the graph's nodes (internal order; deleted nodes left out)."""
        ids = self._csr.node_ids
        return ids[ids >= 0] if ids.size and ids.min() < 0 else ids

    def shards(self, n: int, *, by: Literal["range", "hash"] = "range") -> list[GraphShard]:
        """Split the nodes into ``n`` shards (``by="range"`` of internal ids or ``"hash"``),
        each with its nodes' out-edges, as Ray workers take them."""
        self._check_open()
        return self._csr.shards(n, by=by)

    # -- fingerprints -----------------------------------------------------------------------
    def build_fingerprints(
        self,
        *,
        walks_per_node: int = 10,
        alpha: float = 0.15,
        seed: int = 0,
        dangling: str = "self_loop",
        top_k: int | None = None,
        hubs: int | str | None = "auto",
        hub_walks: int = 1000,
        keep_walks: bool = True,
        progress: Progress | None = None,
    ) -> Report:
        """Build (or rebuild) the Monte Carlo fingerprints (PowerWalk offline): R walks of
        stop probability ``alpha`` from every node, counting every visit.

        Parameters
        ----------
        walks_per_node : int
            R, walks per node (10-100; error falls as 1/sqrt(R)).
        alpha : float
            Stop (teleport) probability in (0, 1); default 0.15 (networkx's damping 0.85).
        seed : int
            Same seed, same fingerprints, on any number of threads.
        dangling : {"self_loop", "drop"}
            Dangling-node rule of the walks, kept in the stats. ``"restart"`` is refused:
            build with ``"drop"``, which also serves ``ppr(..., dangling="restart")``
            (restart is composed from drop and renormalised).
        top_k : int, optional
            Keep only each node's top-k visit counts (smaller, less accurate).
        hubs : int, "auto" or None
            Hubs (the nodes with the most in-links) that get rows of ``hub_walks`` walks: the
            default ``accuracy="fast"`` and ``"high"`` queries stop pushing at hubs and answer
            from these rows. "auto" (default): the fewest top nodes holding 20% of the
            in-links, at most 1% of the nodes; None or 0: none.
        hub_walks : int
            Walks per hub row (default 1000).
        keep_walks : bool
            Keep the walks and an index of the nodes they visit (about 2-2.2x the
            fingerprints' memory on the generated graphs of bench/graph_updates.py) so that
            updates repair the fingerprints incrementally (default). Without them (and for
            fingerprints built on Ray, which keep none) an update drops the fingerprints, and
            its report says so (queries fall back to push) until they are built again.
        progress : callable, optional
            ``progress(stage, done, total)``, called in this thread as blocks of walks end:
            stage ``"walks"`` (walks ended, of nodes x ``walks_per_node``), then, with hubs,
            ``"hub walks"`` (of hubs x ``hub_walks``); each starts at 0 and ends at its
            total (``"walks"`` reaches it at the last walk; the kept walks are then indexed
            and counted into rows, about 40% of the build). It runs under the graph's lock: it must not call into this graph. If it
            raises, the build stops, the graph keeps its previous fingerprints and the
            exception propagates (raise to cancel).

        Returns
        -------
        dict
            Build statistics: seconds, walk steps, steps per second, bytes.

        Raises
        ------
        InvalidArgumentError
            alpha outside (0, 1), a bad rule (including "restart"), walks_per_node or top_k,
            a ``progress`` that is not callable; the graph keeps its previous fingerprints.
        """
        if not isinstance(keep_walks, (bool, np.bool_)):
            raise InvalidArgumentError(f"keep_walks must be a bool; got {keep_walks!r}")
        progress = check_progress(progress)
        with self._lock, self._budget.take(self._budget.threads):
            self._check_open()
            if self._dyn.changed:
                graph_persistence.compact(self)  # the store describes the snapshot it is saved with
            csr = self._dyn.merged()
            options = dict(
                walks_per_node=walks_per_node, alpha=alpha, seed=seed, dangling=dangling,
                top_k=top_k, hubs=hubs, hub_walks=hub_walks, progress=progress,
            )  # fmt: skip
            walks = None
            hubs_requested = hubs  # kept with the store: updates select hubs again by it
            if keep_walks:
                store, main, hub_walks_kept = build_kept(self._dyn, **options)  # type: ignore[arg-type]
                walks = (main, hub_walks_kept)
            else:
                store = _build_fingerprints(csr, **options)  # type: ignore[arg-type]
            store.stats["hubs_requested"] = hubs_requested
            return self._install(store, walks, csr, seed)

    def _install(
        self,
        store: FingerprintStore,
        walks: tuple[WalkStore, WalkStore | None] | None,
        csr: CSRGraph,
        seed: int,
    ) -> dict[str, Any]:
        """Calibrate, save and switch to fingerprints built for ``csr`` (the current graph,
        compacted), here or by a Ray job (shardwalk.jobs); the caller holds the lock."""
        # which methods serve this graph (kept with the store; accuracy=)
        graph_calibration.calibrate(self, store, csr, seed)
        if self._datadir is not None:
            store = graph_persistence.save_fingerprints(self, store, walks)
        self._fingerprints = store
        self._walks = walks
        self._index = self._ppr_index(store)
        out = {**store.stats, "nbytes": int(store.nbytes)}
        if walks is not None:
            out["walks_nbytes"] = _walks_nbytes(walks)
        return out

    def _compacted_csr(self) -> CSRGraph:
        """The current graph as one CSR, its delta first merged into a snapshot (fingerprints
        describe the snapshot they are saved with): what a Ray job builds fingerprints on."""
        with self._lock:
            self._check_open()
            if self._dyn.changed:
                graph_persistence.compact(self)
            return self._dyn.merged()

    def _adopt_fingerprints(self, store: FingerprintStore, seed: int) -> dict[str, Any]:
        """Make fingerprints built elsewhere (a Ray job, on :meth:`_compacted_csr`) the
        graph's, as :meth:`build_fingerprints` does with its own. They come without walks:
        an update drops them until they are built again (its report says so, and how)."""
        with self._lock, self._budget.take(self._budget.threads):
            self._check_open()
            csr = self._dyn.merged()
            if self._dyn.changed or store.graph_digest != csr.digest():
                raise FailedPreconditionError(
                    f"graph {self.name!r} changed while its fingerprints were built; build "
                    "them again"
                )
            store.stats["built_on"] = "ray"  # saved with the store: an update's report says so
            out = self._install(store, None, csr, seed)
            out["walks_kept"] = False
            out["note"] = (
                "fingerprints built on Ray keep no walks: the next edge update drops them "
                f"(queries then use push) until they are built again; {_REBUILD}"
            )
            return out

    @property
    def has_fingerprints(self) -> bool:
        return self._fingerprints is not None

    # -- queries ----------------------------------------------------------------------------
    @staticmethod
    def _choose(
        index: PPRIndex,
        method: str | None,
        accuracy: str | None,
        alpha: Any,
        dangling: Any,
        params: dict[str, Any],
    ) -> tuple[str, dict[str, Any]]:
        """The method and parameters a query runs (see :meth:`ppr`)."""
        if method is not None:
            if accuracy is not None:
                raise InvalidArgumentError(
                    f"give method= or accuracy=, not both (got method={method!r}, "
                    f"accuracy={accuracy!r}): accuracy picks the method and its parameters"
                )
            return method, params
        serves = (
            index.fingerprints is not None and index.fingerprint_mismatch(alpha, dangling) is None
        )
        if params and accuracy is None:  # a method's parameters alone: that method, as before
            return ("fingerprint" if serves else "push"), params
        accuracy = check_choice("accuracy", accuracy or "fast", ACCURACY)
        if params:
            raise InvalidArgumentError(
                f"accuracy={accuracy!r} picks the parameters itself; got {sorted(params)} "
                "(give method= with them instead)"
            )
        if not serves:
            return "push", dict(ACCURACY[accuracy]["push"])
        calibrated = index.fingerprints.stats.get("accuracy", {}).get(accuracy)  # type: ignore[union-attr]
        if calibrated is not None:
            return calibrated["method"], dict(calibrated["params"])
        return "hybrid", dict(ACCURACY[accuracy]["hybrid"])

    def ppr_method(
        self,
        *,
        method: str | None = None,
        accuracy: str | None = None,
        alpha: float | None = None,
        dangling: str | None = None,
        **params: Param,
    ) -> str:
        """The method a :meth:`ppr` call with these arguments would run, after checking them
        as it would (seeds and k aside), without running a query.

        Raises
        ------
        InvalidArgumentError
            As :meth:`ppr` for a bad method, alpha, rule or parameter.
        """
        self._check_open()
        index = self._current()
        chosen, params = self._choose(index, method, accuracy, alpha, dangling, params)
        index.check_query(chosen, alpha=alpha, dangling=dangling, **params)  # type: ignore[arg-type]
        return chosen

    def ppr(
        self,
        seeds: Seeds,
        k: int = 100,
        *,
        method: str | None = None,
        accuracy: str | None = None,
        alpha: float | None = None,
        dangling: str | None = None,
        **params: Param,
    ) -> PPRResult:
        """Personalized PageRank from one seed node, several (equal weights), or a
        personalization ``{node: weight}`` (PPR is linear in its seeds).

        Parameters
        ----------
        seeds : int, sequence of int, or mapping {int: float}
        k : int
            Top nodes returned (padded with -1 / 0).
        accuracy : {"fast", "high"}, optional
            Let the engine pick the method and its parameters (the default, "fast", when
            neither ``method`` nor method parameters are given). With fingerprints that serve
            the query's alpha and rule, each setting runs the method calibrated for this
            graph when the fingerprints were built (and again after updates past
            ``recalibrate_ratio``): among the candidates of
            ``shardwalk.walks.calibration.ACCURACY_CANDIDATES`` whose counted work fits the latency
            budget (2 ms "fast", 25 ms "high"), the cheapest that reaches precision@100 0.8
            ("fast") or 0.95 ("high") against power iteration on sampled sources, else the
            most precise within the budget, with a warning (see
            ``stats()["fingerprints"]["accuracy"]``: method, precision, ``met``). Counted
            work, not time: the same graph and seed always choose the same method. Without
            fingerprints: "push" with ``r_max`` 1e-6 or 1e-7. ``result.method`` and
            ``result.params`` say what ran; bench/ppr.py measures each setting against the
            exact solver on real graphs.
        method : {"hybrid", "fingerprint", "push", "exact"}, optional
            "hybrid": Forward Push to ``r_max`` (default 5e-5) that stops at hubs (unless
            ``absorb=False``), then every residual composed with fingerprints (hubs have rows
            of many walks); ``prune`` > 0 composes rows exactly only down to prune x a lower
            bound of the k-th score and samples below it (unbiased, far less work);
            "fingerprint":
            push the query's mass for ``rounds`` (T, default 5) rounds, then compose with the
            stored fingerprints (``threshold`` prunes small mass, default 1e-4); "push":
            Forward Push to residual ``r_max`` (default 1e-6); "exact": power iteration to
            ``tol`` (default 1e-10). Method parameters without a method run "fingerprint"
            when fingerprints serve the query, else "push".
        alpha : float, optional
            Stop (teleport) probability in (0, 1) (networkx's damping 0.85 is alpha 0.15).
            Default: the fingerprints' alpha when they exist, else 0.15.
        dangling : {"self_loop", "drop", "restart"}, optional
            Rule at nodes without out-edges; "restart" jumps back to the seeds (networkx's
            convention). Default: the fingerprints' rule when they exist, else "self_loop".
            "exact" and "push" take any alpha and rule; "hybrid" and "fingerprint" only the
            fingerprints' alpha and rule, or "restart" when they were built with "drop".
        **params
            The method's parameters named above.

        Returns
        -------
        PPRResult
            ``ids`` (1, k) int64, ``scores`` (1, k) float32, ``error`` (an estimate for
            hybrid and fingerprint, a bound for push and exact), ``method``, ``params``,
            ``alpha``, ``dangling``, ``seconds``.

        Raises
        ------
        InvalidArgumentError
            Bad seeds, k, method, accuracy, alpha, rule or parameters; both ``method`` and
            ``accuracy``; a fingerprint method without fingerprints or with an alpha or rule
            they were not built for (the message names what they were built with).
        NotFoundError
            A seed is not a node of the graph.
        """
        return self._query(False, seeds, k, method, accuracy, alpha, dangling, params)

    def ppr_batch(
        self,
        queries: Sequence[Seeds],
        k: int = 100,
        *,
        method: str | None = None,
        accuracy: str | None = None,
        alpha: float | None = None,
        dangling: str | None = None,
        **params: Param,
    ) -> PPRResult:
        """Many PPR queries in one parallel pass; row i answers ``queries[i]``. Arguments as in
        :meth:`ppr`."""
        return self._query(True, queries, k, method, accuracy, alpha, dangling, params)

    def _query(
        self,
        batch: bool,
        queries: Any,
        k: int,
        method: str | None,
        accuracy: str | None,
        alpha: Any,
        dangling: Any,
        params: dict[str, Any],
    ) -> PPRResult:
        self._check_open()
        index = self._current()  # one index for the whole call, even if the graph changes
        chosen, params = self._choose(index, method, accuracy, alpha, dangling, params)
        threads = (len(queries) if hasattr(queries, "__len__") else 1) if batch else 1
        with self._budget.take(threads):
            run = index.query_batch if batch else index.query
            result = run(queries, k=k, method=chosen, alpha=alpha, dangling=dangling, **params)  # type: ignore[arg-type]
        return replace(result, params=params)

    def fastrp(self, *, dim: int = 128, **params: Param) -> NDArray[np.float32]:
        """FastRP node embeddings (very sparse random projection of the degree-normalised
        adjacency, weighted sum of its powers), (num_nodes, dim) float32, row i for
        ``node_ids[i]``. See :func:`shardwalk.walks.fastrp.fastrp` for the parameters."""
        self._check_open()
        csr = self._csr
        with self._budget.take(self._budget.threads):
            options: dict[str, Any] = dict(params)  # checked by fastrp
            vectors = fastrp(csr, dim=dim, **options)
        ids = csr.node_ids
        return vectors[ids >= 0] if ids.size and ids.min() < 0 else vectors

    def stats(self) -> Report:
        fp = self._fingerprints
        csr = self._csr
        return {
            "name": self.name,
            "nodes": self.num_nodes,
            "edges": self.num_edges,
            "directed": self.directed,
            "weighted": csr.weights is not None,
            "csr_bytes": int(csr.nbytes),
            "updates": self._seq,
            "delta_edges": self._dyn.delta_edges,
            "wal_bytes": self._wal.size if self._wal is not None else 0,
            "fingerprints": None
            if fp is None
            else {
                "walks_per_node": int(fp.walks_per_node),
                "alpha": float(fp.alpha),
                "dangling": fp.dangling,
                "bytes": int(fp.nbytes),
                "hubs": fp.num_hubs,
                # when accuracy= was calibrated, and the edges changed since (recalibrate_ratio)
                "calibration": fp.stats.get("calibration"),
                "hub_walks": int(fp.hub_walks),
                "accuracy": fp.stats.get("accuracy", {}),  # calibrated choices (accuracy=)
                "walks_bytes": None if self._walks is None else _walks_nbytes(self._walks),
                "walks_kept": self._walks is not None,  # without: an update drops them
            },
            # per collection: the compose defaults Engine.calibrate_compose chose, its recall
            "compose": {name: dict(record) for name, record in sorted(self._compose.items())},
        }

    # -- compose defaults (Engine.calibrate_compose) ----------------------------------------
    def compose_defaults(self, collection: str) -> Report | None:
        """The calibration stored for composing over ``collection`` and this graph, or None."""
        record = self._compose.get(collection)
        return None if record is None else dict(record)

    def _store_compose(self, collection: str, record: dict[str, Any] | None) -> None:
        """Keep (or, with None, forget) a collection's compose calibration; durable on return:
        it lives in the manifest entry of the graph, which is fsynced before it is renamed into
        place."""
        with self._lock:
            self._check_open()
            if self._datadir is not None:

                def change(manifest: dict[str, Any]) -> None:
                    entry = manifest["graphs"][self.name].setdefault("compose", {})
                    if record is None:
                        entry.pop(collection, None)
                    else:
                        entry[collection] = record

                with self._datadir.guard(f"storing the compose calibration of {self.name!r}"):
                    self._datadir.commit(change)
            if record is None:
                self._compose.pop(collection, None)
            else:
                self._compose[collection] = dict(record)

    # -- updates ----------------------------------------------------------------------------
    def upsert_edges(self, edges: Edges, weights: ArrayLike | None = None) -> Report:
        """Add edges, or replace the weights of existing ones; durable on return.

        Parameters
        ----------
        edges : (E, 2) array of (src, dst) ids, or a (src, dst) pair of arrays
            Ids not yet in the graph become new nodes. In an undirected graph each edge
            changes both directions. Within one call the last copy of an edge wins.
        weights : (E,) array of float, optional
            Weighted graphs only: finite and > 0 (default 1.0).

        Returns
        -------
        dict
            ``edges`` applied, ``nodes_added``, ``seconds`` (log, apply and repair), and the
            fingerprint repair: ``walks`` re-simulated, ``steps`` walked, ``blocks_scanned``
            (the blocks of the walks planned), ``blocks_rewritten`` (of the walks rerouted),
            ``repair_seconds`` and ``repair_stages`` (seconds of each part: finding the walks,
            planning, rewriting them with their index entries and hub-row visit changes,
            adding new sources, folding the index, compacting; see :attr:`last_update`), and
            ``rebuilt``: True when the batch changed ``rebuild_ratio`` of the edges or more,
            so the walks and fingerprints were built anew instead (``walks`` and ``steps``
            are then the whole build's).

        Raises
        ------
        InvalidArgumentError
            Wrong shape, non-integer or negative ids, weights on an unweighted graph,
            negative, zero or NaN weights, a self-loop in a graph created with
            ``self_loops="drop"``. Nothing is applied.
        """
        return self._update("upsert", edges, weights)

    def delete_edges(self, edges: Edges) -> Report:
        """Remove edges (both directions in an undirected graph); durable on return.

        Raises
        ------
        NotFoundError
            An endpoint is not a node, or an edge is not in the graph. Nothing is deleted.
        InvalidArgumentError
            Wrong shape or non-integer ids.
        """
        return self._update("delete", edges, None)

    def delete_nodes(self, ids: ArrayLike) -> Report:
        """Remove nodes with all their in- and out-edges; durable on return. A removed id
        may come back later as a new node (with its first edge).

        Raises
        ------
        NotFoundError
            An id is not a node. Nothing is deleted.
        """
        return self._update("delete_nodes", ids, None)

    def _update(self, op: str, edges: Any, weights: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        with self._lock:
            self._check_open()
            batch = self._dyn.prepare(op, edges, weights)  # raises before anything changes
            if batch.size == 0:
                return _report(batch, 0, {}, t0)
            if self._datadir is not None:
                call = graph_persistence.WAL_OPS[op]  # upsert_edges, delete_edges, delete_nodes
                wal = graph_persistence.wal(self)
                record = encode(call, graph_persistence.record(batch))
                try:
                    self._datadir.append(wal, [record], f"an update of graph {self.name!r}")
                except (ResourceExhaustedError, FailedPreconditionError):
                    # no space: the log was cut back, nothing written, the graph goes on; a
                    # failed fsync: the data directory is read-only until reopened (reads go on)
                    raise
                except BaseException as exc:
                    # A partial record may now end the log: a batch appended after it would
                    # make the next open refuse the log (and recover=True cut every batch
                    # from here on). Closed, as a collection is; the open cuts the torn tail.
                    self._stop("stopped at a failed log append", exc)
                    raise FailedPreconditionError(
                        f"graph {self.name!r}: appending this {call} batch to the "
                        "write-ahead log failed (the exception's cause says why), so it was not "
                        "acknowledged; the graph refuses further calls until the engine is "
                        "reopened"
                    ) from exc
            try:
                before = self._dyn.num_nodes
                report = self._apply(batch)
            except BaseException as exc:
                # memory may now disagree with the log (which holds the batch, with a data
                # directory): refuse further use until reopened
                self._stop("stopped at a failed update", exc)
                if self._datadir is None:  # nothing durable: a failure
                    raise FailedPreconditionError(
                        f"graph {self.name!r} {self._closed_because}"
                    ) from exc
                raise OutcomeUnknownError.logged(
                    f"graph {self.name!r}", f"{call} batch", "graph", exc
                ) from exc
            out = _report(batch, self._dyn.num_nodes - before, report, t0)
            if graph_calibration.recalibration_due(self):
                out["recalibrated"] = graph_calibration.recalibrate(self)
            self.last_update = out
            if self._datadir is not None and self._dyn.delta_edges > max(
                1024, self.compact_ratio * self._dyn.base.num_edges
            ):
                try:
                    graph_persistence.compact(self)
                except (ResourceExhaustedError, FailedPreconditionError) as exc:
                    # the batch is durable (logged) and applied: acknowledged all the same
                    log.warning("graph %r: automatic compaction failed: %s", self.name, exc)
            return out

    def _apply(self, batch: EdgeBatch) -> dict[str, Any]:
        """Apply a validated (or replayed) batch: the delta, then the walk repair."""
        change = self._dyn.apply(batch)
        self._index = None
        seq = self._seq
        self._seq += 1
        graph_calibration.count_change(self, batch, change)
        if self._fingerprints is None:
            return {}
        if self._walks is None:
            report = dropped_report(self._fingerprints, _REBUILD)
            self._fingerprints = None  # they describe the old graph: dropped
            return report
        if graph_calibration.edges_changed(self, batch, change) >= self.rebuild_ratio * max(
            1, self._dyn.num_edges - change.edges_delta
        ):
            self._fingerprints, main, hubs, rebuilt = rebuild_kept(self._fingerprints, self._dyn)
            self._walks = (main, hubs)
            return rebuilt
        return repair_kept(self._walks, self._dyn, change, seq)

    # -- calibration after updates (shardwalk.graph_calibration) ----------------------------
    def wait_calibrated(self, timeout: float | None = None) -> bool:
        """Wait for the background calibration that graph updates start once the changed
        edges pass ``recalibrate_ratio`` (``stats()["fingerprints"]["calibration"]["running"]``
        while it runs). True when none is running (any more); False on timeout."""
        thread = self._calibrating
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def compact(self) -> None:
        """Merge the delta into a new CSR snapshot (and the repaired fingerprints and walks
        into a new fingerprint snapshot), start an empty log, switch the manifest. Reads run
        meanwhile; updates wait. A no-op when nothing changed since the last snapshot."""
        with self._lock:
            self._check_open()
            if self._dyn.changed:
                graph_persistence.compact(self)

    # -- files (shardwalk.graph_persistence) ------------------------------------------------
    def _checkpointed(self) -> AbstractContextManager[tuple[dict[str, Any], int]]:
        """Updates held back, compacted: this graph's manifest entry and log size (a
        consistent cut for shardwalk.backup)."""
        return graph_persistence.checkpointed(self)


_REBUILD = (
    "Graph.build_fingerprints(), or `shardwalk graph fingerprints --data DIR --name GRAPH`, "
    "which keeps the walks by default"
)


def _report(batch: EdgeBatch, added: int, repair: dict[str, Any], t0: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "op": graph_persistence.WAL_OPS[batch.op],
        "edges" if batch.op != "delete_nodes" else "nodes": batch.size,
        "nodes_added": int(added),
    }
    if "walks" in repair:
        out.update(
            walks=repair["walks"], steps=repair["steps"], blocks_scanned=repair["blocks_scanned"],
            blocks_rewritten=repair["blocks_rewritten"], repair_seconds=repair["seconds"], repair_stages=repair.get("stages", {}),
            rebuilt=bool(repair.get("rebuilt", False)),
        )  # fmt: skip
    elif repair:
        out.update(repair)
    out["seconds"] = time.perf_counter() - t0
    return out


def _walks_nbytes(walks: tuple[WalkStore, WalkStore | None]) -> int:
    return int(walks[0].nbytes + (walks[1].nbytes if walks[1] is not None else 0))
