"""A graph owned by an engine: CSR (memory-mapped under the data directory), fingerprints,
personalized PageRank queries, FastRP embeddings."""

from __future__ import annotations

import shutil
import threading
from typing import Any

import numpy as np

from shardwalk._threads import ThreadBudget, default_budget
from shardwalk.errors import FailedPreconditionError, InvalidArgumentError
from shardwalk.storage import DataDir, seal_snapshot, verify_snapshot
from shardwalk.walks import CSRGraph, FingerprintStore, GraphShard, PPRIndex, PPRResult
from shardwalk.walks import build_fingerprints as _build_fingerprints
from shardwalk.walks.fastrp import fastrp

__all__ = ["Graph"]


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
            )
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
    def _method(index: PPRIndex, method: str | None, alpha: Any, dangling: Any) -> str:
        """The method a query runs. Given: that one (it refuses what it cannot serve). None:
        "fingerprint" when fingerprints exist and were built for this alpha and rule, else
        "push", the method the graph would use without fingerprints."""
        if method is not None:
            return method
        if index.fingerprints is not None and index.fingerprint_mismatch(alpha, dangling) is None:
            return "fingerprint"
        return "push"

    def ppr_method(
        self,
        *,
        method: str | None = None,
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
        chosen = self._method(index, method, alpha, dangling)
        index.check_query(chosen, alpha=alpha, dangling=dangling, **params)  # type: ignore[arg-type]
        return chosen

    def ppr(
        self,
        seeds: Any,
        k: int = 100,
        *,
        method: str | None = None,
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
        method : {"fingerprint", "push", "exact"}, optional
            "fingerprint": push the query's mass for ``rounds`` (T, default 5) rounds, then
            compose with the stored fingerprints (``threshold`` prunes small mass, default
            1e-4); "push": Forward Push to residual ``r_max`` (default 1e-6); "exact": power
            iteration to ``tol`` (default 1e-10). Default: "fingerprint" when fingerprints are
            built and serve this query's alpha and rule, else "push"; ``result.method`` says
            which ran.
        alpha : float, optional
            Stop (teleport) probability in (0, 1) (networkx's damping 0.85 is alpha 0.15).
            Default: the fingerprints' alpha when they exist, else 0.15.
        dangling : {"self_loop", "drop", "restart"}, optional
            Rule at nodes without out-edges; "restart" jumps back to the seeds (networkx's
            convention). Default: the fingerprints' rule when they exist, else "self_loop".
            "exact" and "push" take any alpha and rule; "fingerprint" only the fingerprints'
            alpha and rule, or "restart" when they were built with "drop".
        **params
            The method's parameters named above.

        Returns
        -------
        PPRResult
            ``ids`` (1, k) int64, ``scores`` (1, k) float32, ``error`` (an estimate for
            fingerprints, a bound for push and exact), ``method``, ``alpha``, ``dangling``,
            ``seconds``.

        Raises
        ------
        InvalidArgumentError
            Bad seeds, k, method, alpha, rule or parameters; ``method="fingerprint"`` without
            fingerprints or with an alpha or rule they were not built for (the message names
            what they were built with).
        NotFoundError
            A seed is not a node of the graph.
        """
        self._check_open()
        index = self._index  # one index for the whole call, even if fingerprints are rebuilt
        with self._budget.take(1):
            return index.query(
                seeds,
                k=k,
                method=self._method(index, method, alpha, dangling),
                alpha=alpha,
                dangling=dangling,
                **params,
            )

    def ppr_batch(
        self,
        queries: Any,
        k: int = 100,
        *,
        method: str | None = None,
        alpha: float | None = None,
        dangling: str | None = None,
        **params: Any,
    ) -> PPRResult:
        """Many PPR queries in one parallel pass; row i answers ``queries[i]``. Arguments as in
        :meth:`ppr`."""
        self._check_open()
        index = self._index
        with self._budget.take(len(queries) if hasattr(queries, "__len__") else 1):
            return index.query_batch(
                queries,
                k=k,
                method=self._method(index, method, alpha, dangling),
                alpha=alpha,
                dangling=dangling,
                **params,
            )

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
