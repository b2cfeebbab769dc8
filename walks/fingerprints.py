"""Monte Carlo full-path fingerprints (PowerWalk's offline MCFP index).

For every node u, R = ``walks_per_node`` alpha-terminated walks start at u and *every* visit is
counted. ``p_hat_u(v) = alpha * visits_u(v) / R`` is an unbiased estimate of the PPR value
pi_u(v): the expected number of visits of v is pi_u(v) / alpha. The store keeps the counts
(uint16 when they fit, else uint32) in a CSR of node -> (node, count), scaled on read.

Dangling nodes follow the store's ``dangling`` rule (``"self_loop"`` or ``"drop"``; see
``shardwalk.walks.ppr`` for the rules). Both are independent of the query source, so composing
fingerprints at query time is exact in expectation. There is no ``"restart"`` store: restart
walks depend on their source and would not compose. Queries under the ``"restart"`` rule use a
``"drop"`` store and renormalise (restart = drop / mass, proven in ``ppr.py``), so a store's
``dangling`` always names the rule its walks followed.

Hubs (the nodes with the most in-links, where walks and pushed PPR mass concentrate) may get
rows of their own built from ``hub_walks`` walks each, far more than R: queries that stop
pushing at hubs (the "hybrid" method of ``ppr.py``) compose the mass that gathers there with
these accurate rows. They are optional files of the store (``hubs.npy``, ``hub_*.npy``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

import numba
import numpy as np
from shardwalk.walks import _check
from shardwalk.walks.graph import CSRGraph, CSRRows, _load_saved
from shardwalk.walks.kernels.walks import (
    compact_fingerprints,
    fingerprint_block,
    sample_walk_paths,
    walk_lengths,
    walk_visit_bounds,
)

from shardwalk._files import write_meta
from shardwalk._progress import Progress, Stage, check_progress
from shardwalk.errors import CorruptionError, InvalidArgumentError

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "FINGERPRINT_SCHEMA",
    "FINGERPRINT_SCHEMA_VERSION",
    "FingerprintOptions",
    "FingerprintStore",
    "build_fingerprints",
    "select_hubs",
]

FINGERPRINT_SCHEMA = "shardwalk.fingerprints"
FINGERPRINT_SCHEMA_VERSION = 1
_HUB_FILES = ("hubs", "hub_indptr", "hub_nodes", "hub_counts")


@dataclass(frozen=True, kw_only=True, eq=False)
class FingerprintStore(CSRRows):
    """Sparse fingerprints: row u lists the nodes visited by u's walks and their visit counts.

    Attributes
    ----------
    indptr : ndarray int64 (n + 1,)
    nodes : ndarray int32 (nnz,)
        Internal node indices of the graph the store was built on.
    counts : ndarray uint16 or uint32 (nnz,)
        Visit counts; the estimate is ``scale * counts`` with ``scale = alpha / R``.
    truncated : ndarray float32 (n,) or None
        With top-K truncation: the estimated PPR mass each row lost (alpha / R * dropped counts).
    alpha : float
        Stop probability of the walks.
    walks_per_node : int
        R in the paper.
    dangling : {"self_loop", "drop"}
        The rule the walks followed (never "restart": a "drop" store serves restart queries).
    seed : int
    top_k : int or None
    graph_digest : str
        ``CSRGraph.digest()`` of the graph it was built on.
    stats : dict
        Build report: seconds, walks, visits, steps, steps_per_second, threads, nbytes.
    hubs : ndarray int64 (H,) or None
        Internal ids of the hub nodes that have rows of their own (most in-links first).
    hub_walks : int
        Walks per hub row (0 without hubs); a hub row's estimate is ``alpha / hub_walks *
        counts``.
    hub_indptr, hub_nodes, hub_counts : ndarray or None
        The hub rows, a CSR over ``hubs`` (row h belongs to node ``hubs[h]``).
    """

    indptr: np.ndarray
    nodes: np.ndarray
    counts: np.ndarray
    truncated: np.ndarray | None
    alpha: float
    walks_per_node: int
    dangling: str
    seed: int
    top_k: int | None
    graph_digest: str
    stats: dict = field(default_factory=dict, compare=False)
    hubs: np.ndarray | None = None
    hub_walks: int = 0
    hub_indptr: np.ndarray | None = None
    hub_nodes: np.ndarray | None = None
    hub_counts: np.ndarray | None = None

    @property
    def num_hubs(self) -> int:
        return 0 if self.hubs is None else int(self.hubs.shape[0])

    @property
    def num_entries(self) -> int:
        return int(self.nodes.shape[0])

    @property
    def scale(self) -> float:
        """alpha / R: multiply a count by this to get a PPR estimate."""
        return self.alpha / self.walks_per_node

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays (what the store costs in memory, or on disk without headers)."""
        t = 0 if self.truncated is None else self.truncated.nbytes
        hubs = sum(
            a.nbytes
            for a in (self.hubs, self.hub_indptr, self.hub_nodes, self.hub_counts)
            if a is not None
        )
        return int(self.indptr.nbytes + self.nodes.nbytes + self.counts.nbytes + t + hubs)

    def row(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        """(internal nodes, PPR estimates float64) of internal node ``u``'s fingerprint."""
        a, b = self.indptr[u], self.indptr[u + 1]
        return np.asarray(self.nodes[a:b]), self.counts[a:b].astype(np.float64) * self.scale

    def __repr__(self) -> str:
        return (
            f"FingerprintStore(nodes={self.num_nodes}, entries={self.num_entries}, "
            f"R={self.walks_per_node}, alpha={self.alpha}, dangling={self.dangling!r}, "
            f"top_k={self.top_k}, nbytes={self.nbytes})"
        )

    # ----------------------------------------------------------------------------- storage

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``indptr.npy``, ``nodes.npy``, ``counts.npy`` [, ``truncated.npy``] and
        ``meta.json`` (schema ``shardwalk.fingerprints`` version 1, parameters, dtypes, sizes,
        graph digest) into ``directory``; files are atomic and meta.json comes last."""
        d = self._save_arrays(directory, ("indptr", "nodes", "counts", "truncated", *_HUB_FILES))
        meta = {
            "schema": FINGERPRINT_SCHEMA,
            "version": FINGERPRINT_SCHEMA_VERSION,
            "num_nodes": self.num_nodes,
            "num_entries": self.num_entries,
            "counts_dtype": str(self.counts.dtype),
            "alpha": self.alpha,
            "walks_per_node": self.walks_per_node,
            "dangling": self.dangling,
            "seed": self.seed,
            "top_k": self.top_k,
            "graph_digest": self.graph_digest,
            "estimate": "pi_u(v) = alpha / walks_per_node * counts",
            "stats": self.stats,
            # optional (absent in stores without hubs, which older builds read as before)
            "num_hubs": self.num_hubs,
            "hub_walks": self.hub_walks,
            "hub_entries": 0 if self.hub_nodes is None else int(self.hub_nodes.shape[0]),
        }
        write_meta(d / "meta.json", meta)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, mmap: bool = True) -> FingerprintStore:
        """Open a store written by :meth:`save` (memory-mapped by default).

        Raises
        ------
        NotFoundError
            No store in ``directory``.
        CorruptionError
            Wrong schema or version, missing files, or sizes that disagree with meta.json.
        """
        d, meta, found = _load_saved(
            directory, FINGERPRINT_SCHEMA, FINGERPRINT_SCHEMA_VERSION, "fingerprint store",
            arrays=("indptr", "nodes", "counts"),
            optional={"truncated": "top_k", **{name: "num_hubs" for name in _HUB_FILES}},
            mmap=mmap,
        )  # fmt: skip
        ip, nodes, counts = found.pop("indptr"), found.pop("nodes"), found.pop("counts")
        trunc = found.pop("truncated", None)
        hub_arrays = found  # the hub rows' arrays, with hubs
        n, m = meta["num_nodes"], meta["num_entries"]
        if (
            ip.shape != (n + 1,)
            or nodes.shape != (m,)
            or counts.shape != (m,)
            or str(counts.dtype) != meta["counts_dtype"]
            or (trunc is not None and trunc.shape != (n,))
            or int(ip[-1]) != m
        ):
            raise CorruptionError(f"fingerprints at {d}: array shapes do not match meta.json")
        h = int(meta.get("num_hubs") or 0)
        if h and (
            hub_arrays["hubs"].shape != (h,)
            or hub_arrays["hub_indptr"].shape != (h + 1,)
            or hub_arrays["hub_nodes"].shape != (int(meta["hub_entries"]),)
            or hub_arrays["hub_counts"].shape != (int(meta["hub_entries"]),)
            or int(hub_arrays["hub_indptr"][-1]) != int(meta["hub_entries"])
        ):
            raise CorruptionError(f"fingerprints at {d}: hub arrays do not match meta.json")
        if meta["dangling"] not in _check.STORE_RULES:
            raise CorruptionError(
                f"fingerprints at {d}: meta.json names dangling={meta['dangling']!r}; a store is "
                f"built with one of {', '.join(repr(r) for r in _check.STORE_RULES)}"
            )
        return cls(
            indptr=ip,
            nodes=nodes,
            counts=counts,
            truncated=trunc,
            alpha=float(meta["alpha"]),
            walks_per_node=int(meta["walks_per_node"]),
            dangling=meta["dangling"],
            seed=int(meta["seed"]),
            top_k=meta["top_k"],
            graph_digest=meta["graph_digest"],
            stats=dict(meta.get("stats", {})),
            hub_walks=int(meta.get("hub_walks") or 0) if h else 0,
            **hub_arrays,
        )

    def check_graph(self, graph: CSRGraph) -> None:
        """Raise InvalidArgumentError unless the store was built on ``graph``."""
        if self.num_nodes != graph.num_nodes or self.graph_digest != graph.digest():
            raise InvalidArgumentError(
                f"these fingerprints were built on graph {self.graph_digest}, not on this graph "
                f"({graph.digest()}); rebuild them with build_fingerprints(graph, ...)"
            )


def select_hubs(graph: CSRGraph, hubs: int | str | None) -> np.ndarray:
    """Internal ids of the hubs: the nodes with the most in-links (ties: lower id first).

    ``"auto"``: the fewest such nodes that hold 20% of all in-links (walks arrive at a node in
    proportion to its in-links, so that is where their mass gathers), at most 1% of the nodes.
    """
    n = graph.num_nodes
    if hubs is None or (isinstance(hubs, int) and not isinstance(hubs, bool) and hubs == 0):
        return np.zeros(0, np.int64)
    indeg = np.bincount(np.asarray(graph.indices, dtype=np.int64), minlength=n)
    order = np.lexsort((np.arange(n), -indeg))
    if hubs == "auto":
        share = np.cumsum(indeg[order]) / max(1, int(indeg.sum()))
        count = min(int(np.searchsorted(share, 0.2)) + 1, max(1, n // 100), n)
    else:
        count = _check.check_int("hubs", hubs, minimum=0, maximum=n)
    return np.sort(order[:count]).astype(np.int64)


class _Walker:
    """Fingerprint rows of blocks of sources: R walks per source, counted in a CSR."""

    def __init__(self, graph: CSRGraph, alpha: float, seed: int, mode: int) -> None:
        self.graph, self.alpha, self.seed, self.mode = graph, alpha, seed, mode
        self.indptr = np.ascontiguousarray(graph.indptr)
        self.indices = np.ascontiguousarray(graph.indices)
        self.a_prob, self.a_idx = graph.alias()
        self.chunks = max(1, numba.get_num_threads())

    def rows(
        self, blocks: Any, r: int, k: int, done: Callable[[int], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """(indptr, nodes, counts, visit counts cut per row by keeping the top ``k`` (0: all),
        total visits); ``done(sources)`` after each block."""
        n = self.graph.num_nodes
        parts_ip, parts_nodes, parts_counts, parts_cut = [np.zeros(1, np.int64)], [], [], []
        total_visits = 0
        base = 0
        for sources in blocks:
            bounds = walk_visit_bounds(sources, r, self.alpha, self.seed)
            offsets = np.zeros(sources.size + 1, np.int64)
            np.cumsum(bounds, out=offsets[1:])
            buf_nodes = np.empty(int(offsets[-1]), self.indices.dtype)
            buf_counts = np.empty(int(offsets[-1]), np.uint32)
            nnz = np.empty(sources.size, np.int64)
            visits = np.empty(sources.size, np.int64)
            fingerprint_block(
                self.indptr, self.indices, self.a_prob, self.a_idx, self.graph.weighted,
                sources, r, self.alpha, self.seed, self.mode,
                offsets, buf_nodes, buf_counts, nnz, visits, self.chunks,
            )  # fmt: skip
            kept = np.minimum(nnz, k) if k else nnz
            out_ip = np.zeros(sources.size + 1, np.int64)
            np.cumsum(kept, out=out_ip[1:])
            out_nodes = np.empty(
                int(out_ip[-1]), np.int32 if n - 1 <= np.iinfo(np.int32).max else np.int64
            )
            out_counts = np.empty(int(out_ip[-1]), np.uint32)
            cut = np.empty(sources.size, np.int64)
            compact_fingerprints(
                offsets, buf_nodes, buf_counts, nnz, k, out_ip, out_nodes, out_counts, cut
            )
            del buf_nodes, buf_counts
            parts_ip.append(out_ip[1:] + base)
            base += int(out_ip[-1])
            parts_nodes.append(out_nodes)
            parts_counts.append(out_counts)
            parts_cut.append(cut)
            total_visits += int(visits.sum())
            if done is not None:
                done(sources.size)
        fp_indptr = np.concatenate(parts_ip)
        nodes = np.concatenate(parts_nodes) if parts_nodes else np.zeros(0, np.int32)
        counts = np.concatenate(parts_counts) if parts_counts else np.zeros(0, np.uint32)
        if counts.size == 0 or counts.max() <= np.iinfo(np.uint16).max:
            counts = counts.astype(np.uint16)
        cut = np.concatenate(parts_cut) if parts_cut else np.zeros(0, np.int64)
        return fp_indptr, nodes, counts, cut, total_visits


def hub_store_rows(
    hubs: np.ndarray, hub_walks: int, indptr: np.ndarray, nodes: np.ndarray, counts: np.ndarray
) -> dict[str, Any]:
    """The :class:`FingerprintStore` fields of hub rows (``hub_walks`` walks per hub)."""
    return dict(hubs=hubs, hub_walks=hub_walks, hub_indptr=indptr, hub_nodes=nodes,
                hub_counts=counts)  # fmt: skip


class FingerprintOptions(TypedDict, total=False):
    """The parameters of a fingerprint build, as keywords, each optional: every builder takes
    them (:func:`build_fingerprints`, which says what each means, and the builders on Ray and
    of kept walks); :meth:`BuildParams.check` holds their defaults and checks them."""

    walks_per_node: int
    alpha: float
    seed: int
    dangling: str
    top_k: int | None
    hubs: int | str | None
    hub_walks: int


@dataclass(frozen=True)
class BuildParams:
    """The checked parameters of a fingerprint build, checked alike by every builder
    (embedded, on Ray, kept walks) and the store they make from them."""

    alpha: float
    walks: int  # walks per node (R)
    seed: int
    rule: str
    top_k: int  # 0: rows not truncated
    hubs: np.ndarray
    hub_walks: int

    @property
    def mode(self) -> int:
        return _check.DANGLING_MODES[self.rule]

    @classmethod
    def check(cls, graph: CSRGraph, *, walks_per_node: int = 10, alpha: float = 0.15,
              seed: int = 0, dangling: str = "self_loop", top_k: int | None = None,
              hubs: int | str | None = None, hub_walks: int = 1000,
              max_walks: int = 2**31 - 1, max_hub_walks: int = 2**31 - 1) -> BuildParams:  # fmt: skip
        """The parameters of a build (:class:`FingerprintOptions`, these defaults where one is
        not given); raises InvalidArgumentError for a bad value (hubs chosen on ``graph``)."""
        return cls(
            alpha=_check.check_alpha(alpha),
            walks=_check.check_int("walks_per_node", walks_per_node, minimum=1, maximum=max_walks),
            seed=_check.check_seed(seed),
            rule=_check.check_store_dangling(dangling),
            top_k=0 if top_k is None else _check.check_int("top_k", top_k, minimum=1),
            hubs=select_hubs(graph, hubs),
            hub_walks=_check.check_int("hub_walks", hub_walks, minimum=1, maximum=max_hub_walks),
        )

    def hub_rows(self, indptr: np.ndarray, nodes: np.ndarray, counts: np.ndarray) -> dict[str, Any]:
        return hub_store_rows(self.hubs, self.hub_walks, indptr, nodes, counts)

    def store(
        self, graph: CSRGraph, rows: tuple, cut: np.ndarray, hub_rows: dict[str, Any],
        visits: int, seconds: float, **stats: Any,
    ) -> FingerprintStore:  # fmt: skip
        """The store of rows ``(indptr, nodes, counts)`` built on ``graph`` (the mass cut by
        top_k per row in ``cut``, in visits), with its ``stats``: seconds, walks, hubs,
        visits, steps (transitions), steps_per_second, nbytes, entries_per_node, then
        ``stats``."""
        indptr, nodes, counts = rows
        n = int(indptr.shape[0] - 1)
        store = FingerprintStore(
            indptr=indptr, nodes=nodes, counts=counts,
            truncated=(cut * (self.alpha / self.walks)).astype(np.float32) if self.top_k else None,
            alpha=self.alpha, walks_per_node=self.walks, dangling=self.rule, seed=self.seed,
            top_k=self.top_k or None, graph_digest=graph.digest(), **hub_rows,
        )  # fmt: skip
        walks = n * self.walks + self.hubs.size * self.hub_walks
        steps = visits - walks  # transitions: every visit but each walk's first
        store.stats.update(
            seconds=seconds, walks=walks, hubs=int(self.hubs.size), visits=visits, steps=steps,
            steps_per_second=steps / seconds if seconds > 0 else float("nan"),
            nbytes=store.nbytes, entries_per_node=store.num_entries / max(n, 1), **stats,
        )  # fmt: skip
        return store


def build_fingerprints(
    graph: CSRGraph,
    *,
    block_size: int = 1 << 16,
    progress: Progress | None = None,
    **options: Unpack[FingerprintOptions],
) -> FingerprintStore:
    """Build the MCFP index: R = ``walks_per_node`` full-path walks from every node.

    Parameters
    ----------
    graph : CSRGraph
    walks_per_node : int, default 10
        R in PowerWalk (10-100 typical; the error of one fingerprint falls as 1/sqrt(R)).
    alpha : float, default 0.15
        Stop (teleport) probability in (0, 1); c in PowerWalk.
    seed : int, default 0
        Walk w from node u uses the counter stream (seed, u, w): the same seed gives the same
        store on any number of threads.
    dangling : {"self_loop", "drop"}, default "self_loop"
        Rule at nodes without out-edges. ``"restart"`` is refused: restart-at-source walks
        would not compose; build with ``"drop"``, and queries with ``dangling="restart"``
        compose from that store and renormalise.
    top_k : int, optional
        Keep only the K most visited nodes per row (ties: first visited); the mass dropped per
        row is kept in ``truncated`` and reported in query error estimates.
    block_size : int
        Sources per kernel call (bounds the temporary buffers: ~block_size * R / alpha entries).
    hubs : int or "auto", optional
        Give this many hubs (the nodes with the most in-links) rows of their own from
        ``hub_walks`` walks each; "auto" takes the fewest top nodes that hold 20% of all
        in-links, at most 1% of the nodes. None or 0: no hub rows.
    hub_walks : int
        Walks per hub row (default 1000): the hybrid PPR method composes the mass that gathers
        at hubs with these rows.
    progress : callable, optional
        ``progress(stage, done, total)`` as blocks of walks end (``shardwalk._progress``):
        stage ``"walks"`` counts the walks of the rows (total: nodes x R), then, with hubs,
        ``"hub walks"`` those of the hub rows (hubs x ``hub_walks``). If it raises, the
        build stops and the exception propagates.

    Returns
    -------
    FingerprintStore
        ``stats`` reports seconds, visits, steps (transitions), steps_per_second, threads,
        nbytes.

    Raises
    ------
    InvalidArgumentError
        alpha outside (0, 1), walks_per_node < 1, a bad rule (including "restart") or top_k.
    """
    if not isinstance(graph, CSRGraph):
        raise InvalidArgumentError(f"graph must be a CSRGraph; got {type(graph).__name__}")
    p = BuildParams.check(graph, **options)
    block = _check.check_int("block_size", block_size, minimum=1)
    progress = check_progress(progress)

    t0 = time.perf_counter()
    n = graph.num_nodes
    r, r_hub = p.walks, p.hub_walks
    walker = _Walker(graph, p.alpha, p.seed, p.mode)
    blocks = (np.arange(lo, min(n, lo + block), dtype=np.int64) for lo in range(0, n, block))
    walked = Stage(progress, "walks", n * r)
    fp_indptr, nodes, counts, cut, total_visits = walker.rows(
        blocks, r, p.top_k, lambda sources: walked.advance(sources * r)
    )
    walked.finish()
    hub_rows: dict[str, Any] = {}
    if p.hubs.size:
        # never truncated: hub rows exist to be accurate. In blocks of about a block's walks
        # (a row depends only on its source, so the same rows as in one block)
        per_block = max(1, block * r // r_hub)
        hub_blocks = (p.hubs[lo : lo + per_block] for lo in range(0, p.hubs.size, per_block))
        walked = Stage(progress, "hub walks", p.hubs.size * r_hub)
        hub_ip, hub_nodes, hub_counts, _, hub_visits = walker.rows(
            hub_blocks, r_hub, 0, lambda sources: walked.advance(sources * r_hub)
        )
        walked.finish()
        hub_rows = p.hub_rows(hub_ip, hub_nodes, hub_counts)
        total_visits += hub_visits
    return p.store(
        graph, (fp_indptr, nodes, counts), cut, hub_rows, total_visits,
        time.perf_counter() - t0, threads=walker.chunks,
    )  # fmt: skip


def sample_walks(
    graph: CSRGraph,
    sources: Any,
    *,
    walks_per_node: int = 1,
    alpha: float = 0.15,
    seed: int = 0,
    dangling: str = "self_loop",
) -> list[np.ndarray]:
    """The node sequences (external ids) of alpha-terminated walks, the same walks the
    fingerprint builder counts: ``walks_per_node`` walks per source, source-major order.

    Under ``"drop"`` a walk ends at the first dangling node; under ``"restart"`` it jumps back
    to its source; under ``"self_loop"`` it stays until it stops.
    """
    alpha = _check.check_alpha(alpha)
    r = _check.check_int("walks_per_node", walks_per_node, minimum=1)
    seed = _check.check_seed(seed)
    rule = _check.check_dangling(dangling)
    src = graph.to_internal(np.atleast_1d(np.asarray(sources)), what="source")
    a_prob, a_idx = graph.alias()
    room = walk_lengths(src, r, alpha, seed)
    offsets = np.zeros(room.size + 1, np.int64)
    np.cumsum(room, out=offsets[1:])
    path = np.empty(int(offsets[-1]), graph.indices.dtype)
    lengths = np.empty(room.size, np.int64)
    sample_walk_paths(
        np.ascontiguousarray(graph.indptr), np.ascontiguousarray(graph.indices), a_prob, a_idx,
        graph.weighted, src, r, alpha, seed, _check.DANGLING_MODES[rule], offsets, path, lengths,
    )  # fmt: skip
    return [graph.to_external(path[offsets[i] : offsets[i] + lengths[i]]) for i in range(room.size)]
