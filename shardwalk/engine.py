"""The engine: the public API of the embedded library over one data directory (or memory).

What it does with the names of collections and graphs (create, load, list, drop, close) is
its catalog's (:mod:`shardwalk.catalog`); compose's stages are :mod:`shardwalk.compose`'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from shardwalk._threads import ThreadBudget, check_threading_layer
from shardwalk.attributes import declared_schema
from shardwalk.backup import backup as _backup
from shardwalk.catalog import Catalog
from shardwalk.collection import Collection
from shardwalk.compose import ComposeResult, check_options, resolve
from shardwalk.compose import compose as _compose
from shardwalk.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from shardwalk.graph import Graph
from shardwalk.index import IndexHost
from shardwalk.index.filters import Predicate
from shardwalk.storage import DataDir
from shardwalk.types import BackupReport, Edges, Param, Report
from shardwalk.validation import (
    METRICS,
    check_choice,
    check_index_params,
    check_name,
    edge_pairs,
)
from shardwalk.wal import RecoveredLog
from shardwalk.walks import CSRGraph

__all__ = ["Engine"]

MAX_DIM = 65_536


class Engine:
    """Entry point of the embedded library.

    ``Engine.open(path)`` keeps everything durable in a data directory (created if missing);
    ``Engine.memory()`` keeps everything in memory. Use as a context manager or call
    :meth:`close`, which checkpoints every collection.

    Thread safety: every method may be called from many threads at once. Loading a collection
    or graph from disk (``collection(name)``, ``graph(name)``) holds up only the callers of
    that same name, who all get the one object loaded. Every parallel call (a batch search, a
    PPR batch, an index build) draws its threads from the engine's :attr:`budget`.
    """

    def __init__(
        self, datadir: DataDir | None, *, threads: int | None = None, host: IndexHost | None = None
    ) -> None:
        self._budget = ThreadBudget(threads)
        check_threading_layer()
        self._datadir = datadir
        # the collections and graphs by name: created, loaded, listed, dropped, closed
        self._catalog = Catalog(datadir, self._budget, host)
        self._recovered: list[RecoveredLog] = []

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        recover: bool = False,
        threads: int | None = None,
        ray: bool | str | None = False,
        ray_actors: int | None = None,
    ) -> Engine:
        """Open (or create) the data directory at ``path``.

        Parameters
        ----------
        path : str or path-like
            The data directory (created if missing).
        recover : bool, default False
            Open even if a write-ahead log is corrupt: cut each log at its first bad record,
            after saving the cut bytes to a side file next to it (``<log>.corrupt-<offset>``,
            never removed automatically). Every log is checked before ``open`` returns; what
            was cut is listed in :attr:`recovered` and logged as a warning. Without it, a
            corrupt log raises ``CorruptionError`` when its collection is loaded. A torn last
            record (a crash mid-write, never acknowledged) is cut either way.
        threads : int, optional
            The engine's thread budget, 1-1024 (default: the cores available to the process):
            at most this many threads run the engine's parallel work at once, shared by every
            concurrent call (see :attr:`budget`).
        ray : bool or str, default False (None: the same)
            Serve the partitioned collections from Ray actors: ``True`` on the Ray this process
            is connected to, or a local one bound to 127.0.0.1 that it starts (and stops at
            :meth:`close`); a string joins the cluster at that address (``"HOST:6379"``).
            Each actor holds some of a collection's partitions (its vectors are nowhere else),
            searches them with the tenant scope and filter applied there, and the top-k lists
            are merged exactly: the same answers as in process. Every node must see the data
            directory. An actor that dies is started again from the last checkpoint plus the
            log. Other index kinds stay in this process. Needs ``shardwalk[ray]``.
        ray_actors : int, optional
            Actors per partitioned collection (default: one per CPU of the cluster, at most
            one per partition).

        Raises
        ------
        InvalidArgumentError
            ``threads`` is not an integer in [1, 1024].
        FailedPreconditionError
            The directory is open elsewhere (by another Engine of this process, or by another
            process), or it was written by an incompatible version; or numba has no
            thread-safe threading layer (omp or tbb).
        CorruptionError
            When a collection is loaded (:meth:`collection`): a snapshot fails its checksums,
            or (unless ``recover``) its write-ahead log holds a bad record that is not a torn
            write.
        """
        ThreadBudget(threads)  # a bad ``threads`` fails before the directory is taken
        check_threading_layer()
        address = _ray_address(ray)
        on_ray = ray is True or address is not None
        if ray_actors is not None and not on_ray:
            raise InvalidArgumentError("ray_actors needs ray=True or ray='HOST:PORT'")
        datadir = DataDir(path)
        host = None
        try:
            if on_ray:
                host = _ray_host(address, ray_actors)
            engine = cls(datadir, threads=threads, host=host)
            if recover:
                engine._recovered = engine._catalog.salvage_logs()
        except BaseException:
            if host is not None:
                host.close()
            datadir.close()
            raise
        return engine

    @property
    def recovered(self) -> list[RecoveredLog]:
        """What ``Engine.open(path, recover=True)`` cut off corrupt write-ahead logs, one
        :class:`~shardwalk.wal.RecoveredLog` per log (collection, log, offset, bytes_dropped,
        records_dropped, side_file, reason). Empty when nothing was cut or without
        ``recover``."""
        return list(self._recovered)

    @classmethod
    def memory(cls, *, threads: int | None = None) -> Engine:
        """An engine that keeps everything in memory (nothing survives ``close``).

        ``threads``: the thread budget, as for :meth:`open`."""
        return cls(None, threads=threads)

    @property
    def threads(self) -> int:
        """The thread budget: most threads the engine's parallel work adds to its callers'."""
        return self._budget.threads

    @property
    def budget(self) -> ThreadBudget:
        """The engine's thread slots, shared by numba and faiss in every call: a call
        runs on its caller's thread plus as many of the other slots as are free (up to what it
        can use; it never waits), so a single query starts no thread and concurrent batches
        do not start a team each. ``budget.stats()`` counts the parallel calls."""
        return self._budget

    @property
    def path(self) -> str | None:
        return None if self._datadir is None else str(self._datadir.root)

    def __repr__(self) -> str:
        return f"Engine({self.path or ':memory:'!r})"

    # -- collections ------------------------------------------------------------------------
    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str = "l2",
        index: str = "hnsw",
        *,
        attributes: Mapping[str, str] | None = None,
        **index_params: Param,
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
        index : {"flat", "hnsw", "partitioned", "multitenant", "spann"}
            Exact search, one HNSW graph, balanced partitions of HNSW graphs, a multi-tenant
            index, or SPANN posting lists on disk with their centroids in memory.
        attributes : dict of name -> type, optional
            The collection's declared attribute schema, e.g. ``{"year": "int64", "tags":
            "list<string>"}`` (types: int64, float64, bool, string, list<string>): declared
            attributes keep their type whoever writes them (ints are stored as floats in a
            float64 one), and a server's tenant keys write, filter on and see only declared
            attributes. Kept with the collection. Undeclared attributes stay open to library
            and admin writes (the first non-null type written fixes theirs).
        **index_params
            HNSW: ``m`` (M, 8-64, default 16), ``ef_construction`` (100-500, default 200),
            ``ef`` (search-time, >= k, default 64), ``seed``, ``threads``. Partitioned: those
            plus ``partitions`` (P, default 8) and ``train_size``. Spann: ``max_list_size``,
            ``eps_build``, ``max_replicas``, ``eps_search``, ``max_probes``, ``m``,
            ``ef_construction``, ``ef``, ``maintenance``, ``io``, ``train_size``, ``seed``.

        Raises
        ------
        AlreadyExistsError, InvalidArgumentError
        """
        check_name("collection", name)
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
            raise InvalidArgumentError(f"dim must be an integer in [1, {MAX_DIM}]; got {dim!r}")
        check_choice("metric", metric, METRICS)
        kind, params = check_index_params(index, index_params)
        spec: dict[str, Any] = {"dim": dim, "metric": metric, "index": kind, "params": params}
        if attributes is not None:
            spec["attributes"] = declared_schema(attributes)
        return self._catalog.create_collection(name, spec)

    def collection(self, name: str) -> Collection:
        """The collection called ``name`` (loaded from disk on first use).

        Raises
        ------
        NotFoundError
            Listing the collections that exist.
        """
        return self._catalog.collection(name)

    def collections(self) -> list[str]:
        """Names of all collections, sorted."""
        return self._catalog.names("collection")

    def drop_collection(self, name: str) -> None:
        """Delete a collection and its files.

        Raises
        ------
        NotFoundError
        """
        self._catalog.drop("collection", name)

    # -- graphs -----------------------------------------------------------------------------
    def create_graph(
        self,
        name: str,
        edges: Edges | CSRGraph,
        weights: ArrayLike | None = None,
        *,
        directed: bool = True,
        node_ids: ArrayLike | None = None,
        self_loops: str = "keep",
        duplicates: str = "collapse",
    ) -> Graph:
        """Create a graph from edges between int64 node ids.

        Parameters
        ----------
        name : str
        edges : (E, 2) array of (src, dst) ids, a (src, dst) pair of arrays, or a CSRGraph
            Node ids share the id space of collections, so kNN hits can seed PPR.
        weights : (E,) array of float, optional
            Finite and > 0 (signed graphs need a transform first, e.g. ``w - w.min() + 1``).
        directed : bool
            If False every edge is stored both ways.
        node_ids : array of int, optional
            The full node set (lets isolated nodes exist).
        self_loops : {"keep", "drop"}
        duplicates : {"collapse", "count", "error"}
            Repeated edges: keep one (weights summed), keep the count as weight, or refuse.

        Raises
        ------
        AlreadyExistsError, InvalidArgumentError
        """
        check_name("graph", name)
        check_choice("self_loops", self_loops, ("keep", "drop"))
        if isinstance(edges, CSRGraph):
            return self._catalog.add_graph(name, edges, self_loops)
        src, dst = edge_pairs(edges)
        csr = CSRGraph.from_edges(
            src,
            dst,
            weights,
            directed=directed,
            node_ids=node_ids,
            self_loops=self_loops,  # type: ignore[arg-type]
            duplicates=duplicates,  # type: ignore[arg-type]
        )
        return self._catalog.add_graph(name, csr, self_loops)

    def load_graph(
        self, name: str, path: str | os.PathLike[str], *, format: str = "auto", **options: Param
    ) -> Graph:
        """Create a graph from a file: a SNAP edge list (``.txt``, ``.gz``, ``.csv``), Parquet
        (``src``, ``dst`` [, weight] columns) or a directory of ``edges.npy`` [+ ``ids.npy``,
        ``weights.npy``]. ``options`` go to the loader (``directed``, ``weighted``,
        ``delimiter``, ``weight`` column name, ...)."""
        from shardwalk.walks import load_edge_list, load_npy_dir, load_parquet

        check_name("graph", name)
        path = os.fspath(path)
        fmt = format
        if fmt == "auto":
            if os.path.isdir(path):
                fmt = "npy"
            elif path.endswith((".parquet", ".pq")):
                fmt = "parquet"
            else:
                fmt = "snap"
        loaders: dict[str, Callable[..., CSRGraph]] = {
            "snap": load_edge_list,
            "parquet": load_parquet,
            "npy": load_npy_dir,
        }
        if fmt not in loaders:
            raise InvalidArgumentError(
                f"format must be one of 'auto', 'snap', 'parquet', 'npy'; got {format!r}"
            )
        if not os.path.exists(path):
            raise NotFoundError(f"no such file or directory: {path!r}")
        return self._catalog.add_graph(name, loaders[fmt](path, **options))

    def graph(self, name: str) -> Graph:
        """The graph called ``name`` (memory-mapped from disk on first use, outside the engine
        lock, as for :meth:`collection`)."""
        return self._catalog.graph(name)

    def graphs(self) -> list[str]:
        """Names of all graphs, sorted."""
        return self._catalog.names("graph")

    def drop_graph(self, name: str) -> None:
        """Delete a graph, its fingerprints and its files."""
        self._catalog.drop("graph", name)

    def embed_graph(
        self,
        graph: str,
        collection: str,
        *,
        dim: int = 128,
        index: str = "hnsw",
        **fastrp_params: Param,
    ) -> Collection:
        """Write FastRP embeddings of a graph's nodes into a new cosine collection keyed by node
        id, so node similarity search works through the ordinary vector API."""
        g = self.graph(graph)
        vectors = g.fastrp(dim=dim, **fastrp_params)
        norms = np.linalg.norm(vectors, axis=1)
        keep = norms > 0  # isolated nodes embed to zero: no direction to compare
        col = self.create_collection(collection, dim=dim, metric="cosine", index=index)
        if keep.any():
            col.upsert(g.node_ids[keep], vectors[keep])
        return col

    # -- composed retrieval -----------------------------------------------------------------
    def compose(
        self,
        collection: str,
        graph: str,
        queries: ArrayLike,
        *,
        k: int = 10,
        tenant: str | None = None,
        where: Predicate | None = None,
        knn_k: int | None = None,
        ppr_k: int | None = None,
        alpha: float | None = None,
        fuse: str | None = None,
        weight: float | None = None,
        temperature: float | None = None,
        rank_constant: float | None = None,
        knn_params: Mapping[str, Param] | None = None,
        ppr_params: Mapping[str, Param] | None = None,
        **unexpected: object,
    ) -> ComposeResult:
        """kNN-seeded personalized PageRank with fused ranking, in one call: kNN in
        ``collection`` (scoped to ``tenant``, filtered by ``where``), the hits that are nodes of
        ``graph`` seed PPR (weighted by similarity), the kNN list and the PPR list are fused,
        the same scope filters the output, and the top ``k`` come back. Stages, seed weights
        and normalisation: :mod:`shardwalk.compose`.

        ``knn_k``, ``alpha``, ``fuse``, ``weight`` and ``temperature`` left out (None) take
        the values :meth:`calibrate_compose` stored for this collection and graph, else the
        defaults below; ``result.explain`` says which ran and where each came from.

        Parameters
        ----------
        collection, graph : str
            Names. Collection ids and graph node ids are one id space.
        queries : array-like, shape (q, dim) or (dim,)
            One query per row, answered in one batched pass.
        k : int, default 10
            Results per query (rows padded beyond what exists).
        tenant : str, optional
            Every result is a row this tenant owns or that is shared with it.
        where : predicate, optional
            Every result satisfies this filter (:class:`shardwalk.F`), as in ``search``.
        knn_k : int, default calibrated, else 10
            kNN hits per query: the seeds and the kNN list.
        ppr_k : int, optional
            Length of the PPR list: the top visible PPR nodes that enter the fusion (default
            ``max(k, knn_k)``; deeper lists give more kNN hits their PPR share).
        alpha : float, default calibrated, else 0.5
            PPR stop (teleport) probability in (0, 1); 0.5 as HippoRAG.
        fuse : {"rrf", "weighted", "weighted_rank", "weighted_z"}, default calibrated, else "rrf"
            Reciprocal rank fusion, or ``weight * knn_term + (1 - weight) * ppr_term`` with
            the PPR term max-normalised, rank-based or (both terms) z-scored per query.
        weight : float, optional
            Weighted fusions only: the kNN term's share in [0, 1]; default calibrated (when
            the calibrated fusion is a weighted one too), else 0.5.
        temperature : float, optional
            Seeds weighted by a softmax ``exp(s / temperature)`` of their normalised
            similarity s in [0, 1]; default calibrated, else none (linear ``(1 + s) / 2``).
        rank_constant : float, optional
            fuse="rrf" only: the constant of ``1 / (rank_constant + rank)``, default 60.
        knn_params : dict, optional
            Search parameters of the collection's index, e.g. ``{"ef": 128}``.
        ppr_params : dict, optional
            ``method`` ("fingerprint", "hybrid", "push", "exact") or ``accuracy``,
            ``dangling`` and the method's parameters (``rounds``, ``threshold``, ``r_max``,
            ``tol``, ...), as :meth:`Graph.ppr`. Without a method or method parameter,
            compose's own PPR runs (:func:`shardwalk.compose.default_ppr`: Forward Push to
            ``r_max = PUSH_WORK / alpha``, the PPR calibration scores with); ``{"accuracy":
            "fast"}`` runs the graph's own choice (its fingerprints when built for this
            alpha). ``result.ppr_method`` says which ran.

        Returns
        -------
        ComposeResult
            ``ids``, ``scores`` (fused), ``distances`` (NaN: not a kNN hit), ``ppr_scores``
            (NaN: not in the PPR list), all (q, k); ``seeds``, ``seeds_dropped``,
            ``ppr_error`` per query; ``ppr_method``; stage timings; ``explain``.

        Raises
        ------
        InvalidArgumentError
            Bad queries (dimension, NaN, empty), k, knn_k, ppr_k, alpha, fuse, weight,
            rank_constant, tenant name, filter, or parameter (an unknown keyword included).
        ResourceExhaustedError
            k, knn_k or ppr_k above 100,000.
        NotFoundError
            No collection or graph of that name.
        """
        given = {"knn_k": knn_k, "alpha": alpha, "fuse": fuse, "weight": weight}
        given["temperature"] = temperature
        rest: dict[str, Any] = {
            "k": k, "ppr_k": ppr_k, "rank_constant": rank_constant, "knn_params": knn_params,
            "ppr_params": ppr_params, "unexpected": unexpected,
        }  # fmt: skip
        # bad arguments fail before the lookups (a weight alone may meet a calibrated
        # weighted fusion: checked as one here)
        early, _ = resolve(given, {"fuse": "weighted"} if weight is not None else None)
        check_options(**rest, **early)
        col, g = self._pair(collection, graph)
        values, explain = resolve(given, g.compose_defaults(col.name))
        options = check_options(**rest, **values)
        # the values as checked (e.g. alpha a float) with their sources
        for name in explain:
            explain[name]["value"] = _checked(options, name)
        return _compose(col, g, queries, options, tenant=tenant, where=where, explain=explain)

    def _pair(self, collection: Any, graph: Any) -> tuple[Collection, Graph]:
        for what, name in (("collection", collection), ("graph", graph)):
            if not isinstance(name, str):
                raise InvalidArgumentError(
                    f"{what} must be a {what} name (str); got {type(name).__name__}"
                    + (f" (pass its name: {name.name!r})" if hasattr(name, "name") else "")
                )
        return self.collection(collection), self.graph(graph)

    def calibrate_compose(
        self,
        collection: str,
        graph: str,
        *,
        queries: int = 300,
        k: int = 10,
        seed: int = 0,
        min_degree: int = 2,
        grid: Mapping[str, Sequence[Param]] | None = None,
    ) -> Report:
        """Tune :meth:`compose` for this collection and graph on the graph's own edges, and
        store the result as the pair's defaults.

        Holds out ``queries`` nodes that are rows of the collection with >= ``min_degree``
        edges (their edges leave the graph, their rows the candidates), queries with each
        one's vector, and keeps the ``knn_k``, ``alpha``, ``fuse``, ``weight`` and
        ``temperature`` whose compose recovers most of its held-out neighbours (recall@k), by
        successive halving over :data:`shardwalk.evaluate.GRID` (every setting on a few
        queries, the best tenth on three times as many, ...;
        :func:`shardwalk.evaluate.calibrate`). Deterministic for a seed and data.

        Only explicit calls calibrate: compose never does on its own (a calibration takes
        seconds on a large graph; no query should pay for it). The result is stored with the
        graph (in its manifest entry: durable on return, survives reopening), shown in
        ``graph.stats()["compose"][collection]`` with the recall it reached, used by every
        later compose over the pair for the parameters a call leaves out, and forgotten when
        the collection or the graph is dropped. A call again (e.g. after large updates)
        replaces it. The task's PPR is compose's own (Forward Push to ``PUSH_WORK / alpha``)
        on the graph without the held-out edges, so a setting scores here what compose at
        its default PPR returns; no fingerprints are needed at the calibrated alpha.

        Parameters
        ----------
        collection, graph : str
            Names; one id space.
        queries : int
            Held-out nodes sampled (more: a steadier choice, a longer calibration).
        k : int
            Recall@k is the objective (compose's default k is 10).
        seed : int
            Chooses the sample.
        min_degree : int
            Fewest edges of a held-out node.
        grid : dict, optional
            Values to try per parameter, replacing those of ``GRID`` it names (e.g.
            ``{"alpha": (0.15,)}`` to keep one alpha).

        Returns
        -------
        dict
            The stored record: the chosen values, ``recall``, ``knn_recall`` (kNN alone)
            and ``default_recall`` (library defaults) on the same sample, ``queries``, ``k``,
            ``seed``, ``settings`` scored, ``seconds``.

        Raises
        ------
        FailedPreconditionError
            The collection and graph share fewer than 30 ids of nodes with ``min_degree``
            edges (nothing to hold out); the message says how many they share.
        NotFoundError
            No collection or graph of that name.
        """
        from shardwalk.evaluate import calibrate

        col, g = self._pair(collection, graph)
        record = calibrate(
            col, g, queries=queries, k=k, seed=seed, min_degree=min_degree, grid=grid
        )
        g._store_compose(col.name, record)
        return record

    # -- lifecycle --------------------------------------------------------------------------
    def flush(self) -> None:
        """Checkpoint every open collection that changed (outside the engine lock: other
        callers look collections up meanwhile)."""
        self._catalog.flush()

    def backup(self, dest: str | os.PathLike[str], *, link: bool = True) -> BackupReport:
        """Copy the data directory, online, into ``dest``: a consistent copy that
        ``Engine.open(dest)`` opens (that is the restore).

        Each collection and graph in turn is checkpointed (if it changed) and its files are
        pinned under its write lock (hard-linked into ``dest`` on the same filesystem, else
        opened: metadata only): writes to it wait for that checkpoint, as for :meth:`flush`;
        searches never wait, nor do PPR queries but the first after an edge update (it waits
        for the compaction). Unlinked files are then copied and fsynced with no lock held,
        and the manifest is written last. The copy holds every write acknowledged before
        ``backup`` was called. An interrupted backup (a crash) leaves ``dest`` with
        ``BACKUP-INCOMPLETE`` and no manifest, which ``Engine.open`` refuses; a backup that
        fails with an error removes what it wrote. Details: :mod:`shardwalk.backup`.

        Parameters
        ----------
        dest : str or path-like
            A directory that does not exist yet or is empty, outside the data directory.
        link : bool, default True
            Hard-link the immutable files where ``dest`` is on the same filesystem (instant,
            no extra space; the copy then shares the disk with the source). False copies
            every byte.

        Returns
        -------
        dict
            ``destination``, the ``collections`` and ``graphs`` copied, ``files``, ``linked``,
            ``copied``, ``bytes_copied``, ``max_locked_seconds`` (the longest time one
            object's writes waited: its checkpoint and pinning), ``seconds``.

        Raises
        ------
        AlreadyExistsError
            ``dest`` exists and is not an empty directory.
        InvalidArgumentError
            ``dest`` is inside the data directory.
        FailedPreconditionError
            An in-memory engine, a closed engine, or a collection or graph stopped at a failed
            write.
        """
        self._catalog.check_open()
        if self._datadir is None:
            raise FailedPreconditionError(
                "an in-memory engine (Engine.memory()) has no data directory to back up; "
                "back up an engine opened with Engine.open(path)"
            )
        return _backup(self, self._datadir, dest, link=link)

    def close(self) -> None:
        """Checkpoint and release the data directory (no checkpoint once a failed fsync made
        it read-only). Idempotent.

        Loads in progress finish first (their callers get FailedPreconditionError); calls
        that start afterwards are refused."""
        self._catalog.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _checked(options: Any, name: str) -> Any:
    """A tuned parameter as compose runs it (weight None under rrf, which ignores it)."""
    if name == "weight" and options.fuse == "rrf":
        return None
    return getattr(options, name)


def _ray_address(ray: Any) -> str | None:
    """The cluster address of ``Engine.open(ray=...)`` (None: a local Ray, or none)."""
    if ray is None or ray is False or ray is True:
        return None
    if not isinstance(ray, str) or not ray.strip():
        raise InvalidArgumentError(
            "ray must be True (a local Ray, or the one this process joined) or a cluster "
            f"address 'HOST:PORT'; got {ray!r}"
        )
    return ray.strip()


def _ray_host(address: str | None, actors: int | None) -> IndexHost:
    """The host that keeps partitioned collections in Ray actors (imported here only: the
    engine works without Ray installed)."""
    try:
        from shardwalk.index.distributed import RayHost
    except ImportError as exc:
        raise FailedPreconditionError(
            f"Engine.open(ray=...) needs Ray ({exc}); pip install 'shardwalk[ray]'"
        ) from exc
    return RayHost(address, actors=actors)
