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
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numba
import numpy as np
from shardwalk.walks import _check, _kernels
from shardwalk.walks.graph import CSRGraph, _read_meta

from shardwalk._files import load_npy, save_npy, write_meta
from shardwalk.errors import CorruptionError, InvalidArgumentError

__all__ = [
    "FINGERPRINT_SCHEMA",
    "FINGERPRINT_SCHEMA_VERSION",
    "FingerprintStore",
    "build_fingerprints",
]

FINGERPRINT_SCHEMA = "shardwalk.fingerprints"
FINGERPRINT_SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True, eq=False)
class FingerprintStore:
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

    @property
    def num_nodes(self) -> int:
        return int(self.indptr.shape[0] - 1)

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
        return int(self.indptr.nbytes + self.nodes.nbytes + self.counts.nbytes + t)

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
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_npy(d / "indptr.npy", self.indptr)
        save_npy(d / "nodes.npy", self.nodes)
        save_npy(d / "counts.npy", self.counts)
        if self.truncated is not None:
            save_npy(d / "truncated.npy", self.truncated)
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
        d = Path(directory)
        meta = _read_meta(d, FINGERPRINT_SCHEMA, FINGERPRINT_SCHEMA_VERSION)
        try:
            ip = load_npy(d / "indptr.npy", mmap=mmap)
            nodes = load_npy(d / "nodes.npy", mmap=mmap)
            counts = load_npy(d / "counts.npy", mmap=mmap)
            trunc = load_npy(d / "truncated.npy", mmap=mmap) if meta["top_k"] else None
        except FileNotFoundError as exc:
            raise CorruptionError(
                f"fingerprints at {d} are incomplete: {exc.filename} is missing"
            ) from exc
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
        )

    def check_graph(self, graph: CSRGraph) -> None:
        """Raise InvalidArgumentError unless the store was built on ``graph``."""
        if self.num_nodes != graph.num_nodes or self.graph_digest != graph.digest():
            raise InvalidArgumentError(
                f"these fingerprints were built on graph {self.graph_digest}, not on this graph "
                f"({graph.digest()}); rebuild them with build_fingerprints(graph, ...)"
            )


def build_fingerprints(
    graph: CSRGraph,
    *,
    walks_per_node: int = 10,
    alpha: float = 0.15,
    seed: int = 0,
    dangling: str = "self_loop",
    top_k: int | None = None,
    block_size: int = 1 << 16,
) -> FingerprintStore:
    """Build the MCFP index: R = ``walks_per_node`` full-path walks from every node.

    Parameters
    ----------
    graph : CSRGraph
    walks_per_node : int
        R in PowerWalk (10-100 typical; the error of one fingerprint falls as 1/sqrt(R)).
    alpha : float
        Stop (teleport) probability in (0, 1); c in PowerWalk. Default 0.15.
    seed : int
        Walk w from node u uses the counter stream (seed, u, w): the same seed gives the same
        store on any number of threads.
    dangling : {"self_loop", "drop"}
        Rule at nodes without out-edges. ``"restart"`` is refused: restart-at-source walks
        would not compose; build with ``"drop"``, and queries with ``dangling="restart"``
        compose from that store and renormalise.
    top_k : int, optional
        Keep only the K most visited nodes per row (ties: first visited); the mass dropped per
        row is kept in ``truncated`` and reported in query error estimates.
    block_size : int
        Sources per kernel call (bounds the temporary buffers: ~block_size * R / alpha entries).

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
    alpha = _check.check_alpha(alpha)
    r = _check.check_int("walks_per_node", walks_per_node, minimum=1, maximum=2**31 - 1)
    seed = _check.check_seed(seed)
    rule = _check.check_store_dangling(dangling)
    k = 0 if top_k is None else _check.check_int("top_k", top_k, minimum=1)
    block = _check.check_int("block_size", block_size, minimum=1)

    t0 = time.perf_counter()
    n = graph.num_nodes
    indptr = np.ascontiguousarray(graph.indptr)
    indices = np.ascontiguousarray(graph.indices)
    a_prob, a_idx = graph.alias()
    mode = _check.DANGLING_MODES[rule]
    threads = numba.get_num_threads()
    chunks = max(1, threads)
    parts_ip, parts_nodes, parts_counts, parts_cut = [np.zeros(1, np.int64)], [], [], []
    total_visits = 0
    base = 0
    for lo in range(0, n, block):
        sources = np.arange(lo, min(n, lo + block), dtype=np.int64)
        bounds = _kernels.walk_visit_bounds(sources, r, alpha, seed)
        offsets = np.zeros(sources.size + 1, np.int64)
        np.cumsum(bounds, out=offsets[1:])
        buf_nodes = np.empty(int(offsets[-1]), indices.dtype)
        buf_counts = np.empty(int(offsets[-1]), np.uint32)
        nnz = np.empty(sources.size, np.int64)
        visits = np.empty(sources.size, np.int64)
        _kernels.fingerprint_block(
            indptr, indices, a_prob, a_idx, graph.weighted, sources, r, alpha, seed, mode,
            offsets, buf_nodes, buf_counts, nnz, visits, chunks,
        )  # fmt: skip
        kept = np.minimum(nnz, k) if k else nnz
        out_ip = np.zeros(sources.size + 1, np.int64)
        np.cumsum(kept, out=out_ip[1:])
        out_nodes = np.empty(
            int(out_ip[-1]), np.int32 if n - 1 <= np.iinfo(np.int32).max else np.int64
        )
        out_counts = np.empty(int(out_ip[-1]), np.uint32)
        cut = np.empty(sources.size, np.int64)
        _kernels.compact_fingerprints(
            offsets, buf_nodes, buf_counts, nnz, k, out_ip, out_nodes, out_counts, cut
        )
        del buf_nodes, buf_counts
        parts_ip.append(out_ip[1:] + base)
        base += int(out_ip[-1])
        parts_nodes.append(out_nodes)
        parts_counts.append(out_counts)
        parts_cut.append(cut)
        total_visits += int(visits.sum())
    fp_indptr = np.concatenate(parts_ip)
    nodes = np.concatenate(parts_nodes) if parts_nodes else np.zeros(0, np.int32)
    counts = np.concatenate(parts_counts) if parts_counts else np.zeros(0, np.uint32)
    if counts.size == 0 or counts.max() <= np.iinfo(np.uint16).max:
        counts = counts.astype(np.uint16)
    truncated = None
    if k:
        truncated = (
            (np.concatenate(parts_cut) * (alpha / r)).astype(np.float32)
            if parts_cut
            else np.zeros(0, np.float32)
        )
    seconds = time.perf_counter() - t0
    steps = total_visits - n * r  # transitions: every visit but each walk's first
    store = FingerprintStore(
        indptr=fp_indptr,
        nodes=nodes,
        counts=counts,
        truncated=truncated,
        alpha=alpha,
        walks_per_node=r,
        dangling=rule,
        seed=seed,
        top_k=k or None,
        graph_digest=graph.digest(),
    )
    store.stats.update(
        seconds=seconds,
        walks=n * r,
        visits=total_visits,
        steps=steps,
        steps_per_second=steps / seconds if seconds > 0 else float("nan"),
        threads=threads,
        nbytes=store.nbytes,
        entries_per_node=store.num_entries / max(n, 1),
    )
    return store


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
    room = _kernels.walk_lengths(src, r, alpha, seed)
    offsets = np.zeros(room.size + 1, np.int64)
    np.cumsum(room, out=offsets[1:])
    path = np.empty(int(offsets[-1]), graph.indices.dtype)
    lengths = np.empty(room.size, np.int64)
    _kernels.sample_walk_paths(
        np.ascontiguousarray(graph.indptr), np.ascontiguousarray(graph.indices), a_prob, a_idx,
        graph.weighted, src, r, alpha, seed, _check.DANGLING_MODES[rule], offsets, path, lengths,
    )  # fmt: skip
    return [graph.to_external(path[offsets[i] : offsets[i] + lengths[i]]) for i in range(room.size)]
