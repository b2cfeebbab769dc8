"""A graph owned by an engine: CSR (memory-mapped under the data directory), fingerprints,
personalized PageRank queries, FastRP embeddings."""

from __future__ import annotations

import shutil
import threading
from dataclasses import replace
from typing import Any

import numpy as np

from shardwalk._threads import ThreadBudget, default_budget
from shardwalk.errors import FailedPreconditionError, InvalidArgumentError
from shardwalk.storage import DataDir, seal_snapshot, verify_snapshot
from shardwalk.validation import check_choice
from shardwalk.walks import CSRGraph, FingerprintStore, GraphShard, PPRIndex, PPRResult
from shardwalk.walks import build_fingerprints as _build_fingerprints
from shardwalk.walks.fastrp import fastrp
from shardwalk.walks.ppr import calibrate_accuracy

__all__ = ["ACCURACY", "Graph"]

# What accuracy= runs: with fingerprints that serve the query ("hybrid"), or without ("push").
# bench/ppr.py measures both settings against the exact solver on every real graph of
# ../shared/data and the generated 1M-node graph.
ACCURACY: dict[str, dict[str, dict[str, Any]]] = {
    "fast": {"hybrid": {"r_max": 5e-5}, "push": {"r_max": 1e-6}},
    # pushing through hubs too: the hub rows' Monte Carlo noise caps what absorbing can reach
    "high": {"hybrid": {"r_max": 3e-6, "absorb": False}, "push": {"r_max": 1e-7}},
}


class Graph:
    """Nodes keyed by int64 ids (the same id space as collections, so kNN hits can seed PPR),
    with optional positive edge weights.

    Obtain one from :meth:`shardwalk.Engine.create_graph`, :meth:`~shardwalk.Engine.load_graph`
    or :meth:`~shardwalk.Engine.graph`. Queries are thread-safe.
    """

    def __init__(
        self,
        name: str,
        csr: CSRGraph,
        fingerprints: FingerprintStore | None = None,
        *,
        datadir: DataDir | None = None,
        budget: ThreadBudget | None = None,
    ) -> None:
        self.name = name
        self._csr = csr
        self._fingerprints = fingerprints
        self._budget = budget or default_budget()  # the engine's: threads for every call
        self._index = self._ppr_index(fingerprints)
        self._datadir = datadir
        self._lock = threading.RLock()
        self._closed_because: str | None = None

    def __repr__(self) -> str:
        return (
            f"Graph({self.name!r}, nodes={self.num_nodes}, edges={self.num_edges}, "
            f"directed={self.directed}, fingerprints={self._fingerprints is not None})"
        )

    def _check_open(self) -> None:
        if self._closed_because is not None:
            raise FailedPreconditionError(f"graph {self.name!r} {self._closed_because}")

    def _close(self, because: str) -> None:
        self._closed_because = because

    def _ppr_index(self, fingerprints: FingerprintStore | None) -> PPRIndex:
        index = PPRIndex(self._csr, fingerprints)
        index.max_pooled_scratch = self._budget.threads  # idle scratch kept: one per thread
        return index

    # -- shape ------------------------------------------------------------------------------
    @property
    def csr(self) -> CSRGraph:
        return self._csr

    @property
    def num_nodes(self) -> int:
        return self._csr.num_nodes

    @property
    def num_edges(self) -> int:
        return self._csr.num_edges

    @property
    def directed(self) -> bool:
        return bool(self._csr.directed)

    @property
    def node_ids(self) -> np.ndarray:
        return self._csr.node_ids

    def shards(self, n: int, *, by: str = "range") -> list[GraphShard]:
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
    ) -> dict[str, Any]:
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

        Returns
        -------
        dict
            Build statistics: seconds, walk steps, steps per second, bytes.

        Raises
        ------
        InvalidArgumentError
            alpha outside (0, 1), a bad rule (including "restart"), walks_per_node or top_k;
            the graph keeps its previous fingerprints.
        """
        with self._lock, self._budget.take(self._budget.threads):
            self._check_open()
            store = _build_fingerprints(
                self._csr,
                walks_per_node=walks_per_node,
                alpha=alpha,
                seed=seed,
                dangling=dangling,
                top_k=top_k,
                hubs=hubs,
                hub_walks=hub_walks,
            )
            # which methods serve this graph (kept with the store; accuracy=)
            store.stats["accuracy"] = calibrate_accuracy(self._csr, store, seed=seed)
            if self._datadir is not None:
                datadir = self._datadir
                generation = datadir.next_generation()
                directory = datadir.graph_dir(self.name)
                name = f"fp-{generation:06d}"
                store.save(directory / name)
                seal_snapshot(directory / name, {"graph": self.name, "kind": "fingerprints"})

                def switch(manifest: dict[str, Any]) -> None:
                    manifest["graphs"][self.name]["fingerprints"] = name

                datadir.commit(switch)
                keep = {datadir.manifest["graphs"][self.name]["csr"], name}
                datadir.remove_unreferenced(self.name, keep=keep, kind="graphs")
                store = FingerprintStore.load(directory / name, mmap=True)
            self._fingerprints = store
            self._index = self._ppr_index(store)
            return {**store.stats, "nbytes": int(store.nbytes)}

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
        **params: Any,
    ) -> str:
        """The method a :meth:`ppr` call with these arguments would run, after checking them
        as it would (seeds and k aside), without running a query.

        Raises
        ------
        InvalidArgumentError
            As :meth:`ppr` for a bad method, alpha, rule or parameter.
        """
        self._check_open()
        index = self._index
        chosen, params = self._choose(index, method, accuracy, alpha, dangling, params)
        index.check_query(chosen, alpha=alpha, dangling=dangling, **params)  # type: ignore[arg-type]
        return chosen

    def ppr(
        self,
        seeds: Any,
        k: int = 100,
        *,
        method: str | None = None,
        accuracy: str | None = None,
        alpha: float | None = None,
        dangling: str | None = None,
        **params: Any,
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
            graph when the fingerprints were built: the cheapest candidate that found
            precision@100 >= 0.8 ("fast": "hybrid" with ``r_max`` 5e-5, or "fingerprint") or
            >= 0.95 ("high": "hybrid" with ``r_max`` 3e-6 pushing through hubs, or "push" to
            1e-6) of a reference top 100 on sampled sources, else the most precise (see
            ``stats()["fingerprints"]["accuracy"]``); without fingerprints: "push" with
            ``r_max`` 1e-6 or 1e-7. ``result.method`` and
            ``result.params`` say what ran; bench/ppr.py measures each setting against the
            exact solver on real graphs.
        method : {"hybrid", "fingerprint", "push", "exact"}, optional
            "hybrid": Forward Push to ``r_max`` (default 5e-5) that stops at hubs (unless
            ``absorb=False``), then every residual composed with fingerprints (hubs have rows
            of many walks); "fingerprint":
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
        queries: Any,
        k: int = 100,
        *,
        method: str | None = None,
        accuracy: str | None = None,
        alpha: float | None = None,
        dangling: str | None = None,
        **params: Any,
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
        index = self._index  # one index for the whole call, even if fingerprints are rebuilt
        chosen, params = self._choose(index, method, accuracy, alpha, dangling, params)
        threads = (len(queries) if hasattr(queries, "__len__") else 1) if batch else 1
        with self._budget.take(threads):
            run = index.query_batch if batch else index.query
            result = run(queries, k=k, method=chosen, alpha=alpha, dangling=dangling, **params)  # type: ignore[arg-type]
        return replace(result, params=params)

    def fastrp(self, *, dim: int = 128, **params: Any) -> np.ndarray:
        """FastRP node embeddings (very sparse random projection of the degree-normalised
        adjacency, weighted sum of its powers), (num_nodes, dim) float32, row i for
        ``node_ids[i]``. See :func:`shardwalk.walks.fastrp.fastrp` for the parameters."""
        self._check_open()
        with self._budget.take(self._budget.threads):
            return fastrp(self._csr, dim=dim, **params)

    def stats(self) -> dict[str, Any]:
        fp = self._fingerprints
        return {
            "name": self.name,
            "nodes": self.num_nodes,
            "edges": self.num_edges,
            "directed": self.directed,
            "weighted": self._csr.weights is not None,
            "csr_bytes": int(self._csr.nbytes),
            "fingerprints": None
            if fp is None
            else {
                "walks_per_node": int(fp.walks_per_node),
                "alpha": float(fp.alpha),
                "dangling": fp.dangling,
                "bytes": int(fp.nbytes),
                "hubs": fp.num_hubs,
                "hub_walks": int(fp.hub_walks),
                "accuracy": fp.stats.get("accuracy", {}),  # calibrated choices (accuracy=)
            },
        }

    # -- storage ----------------------------------------------------------------------------
    @classmethod
    def _create(
        cls, name: str, csr: CSRGraph, datadir: DataDir | None, budget: ThreadBudget | None = None
    ) -> Graph:
        if datadir is None:
            return cls(name, csr, budget=budget)
        generation = datadir.next_generation()
        directory = datadir.graph_dir(name)
        shutil.rmtree(directory, ignore_errors=True)  # leftovers of a crashed create
        directory.mkdir(parents=True)
        csr_name = f"csr-{generation:06d}"
        csr.save(directory / csr_name)
        seal_snapshot(directory / csr_name, {"graph": name, "kind": "csr"})

        def add(manifest: dict[str, Any]) -> None:
            manifest["graphs"][name] = {"csr": csr_name, "fingerprints": None}

        datadir.commit(add)
        csr = CSRGraph.load(directory / csr_name, mmap=True)
        return cls(name, csr, datadir=datadir, budget=budget)

    @classmethod
    def _open(
        cls,
        name: str,
        entry: dict[str, Any],
        datadir: DataDir,
        budget: ThreadBudget | None = None,
    ) -> Graph:
        directory = datadir.graph_dir(name)
        verify_snapshot(directory / entry["csr"])
        csr = CSRGraph.load(directory / entry["csr"], mmap=True)
        store = None
        if entry.get("fingerprints"):
            verify_snapshot(directory / entry["fingerprints"])
            store = FingerprintStore.load(directory / entry["fingerprints"], mmap=True)
        keep = {entry["csr"]} | ({entry["fingerprints"]} if entry.get("fingerprints") else set())
        datadir.remove_unreferenced(name, keep=keep, kind="graphs")
        return cls(name, csr, store, datadir=datadir, budget=budget)


def check_edges(edges: Any) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst) from an (E, 2) array or a pair of sequences."""
    if isinstance(edges, tuple) and len(edges) == 2:
        return np.asarray(edges[0]), np.asarray(edges[1])
    arr = np.asarray(edges)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InvalidArgumentError(
            f"edges must be an (E, 2) array of (src, dst) ids or a (src, dst) pair of arrays; "
            f"got shape {arr.shape}"
        )
    return arr[:, 0], arr[:, 1]
