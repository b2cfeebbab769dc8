"""The SPANN build: hierarchical balanced clustering into lists (:func:`cluster_lists`),
boundary replication (:func:`assign_lists`), the lists written a chunk at a time
(:func:`write_lists`): plain functions, so that a cluster job calls them on its share; and the
index's streamed build over them."""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from typing import TYPE_CHECKING

import numpy as np
from shardwalk.index._kernels import rng_replicas
from shardwalk.index.hnsw_graph import HNSWGraph
from shardwalk.index.kmeans import balanced_kmeans
from shardwalk.index.spann.format import _GEN_SHIFT, _NOWHERE, _Generation, make_records

from shardwalk import _fs
from shardwalk._threads import delegated

if TYPE_CHECKING:
    from shardwalk.index.spann.parts import SpannParts

__all__ = ["assign_lists", "cluster_lists", "write_lists"]

_CHUNK = 65536  # vectors per step of a streamed build
# smaller clustering nodes run on one thread: faiss's OpenMP team costs more than it saves
# there (and waits long for its threads on a busy machine)
_PARALLEL_NODE = 200_000


def cluster_lists(
    vectors: np.ndarray,
    *,
    leaf: int,
    fanout: int = 16,
    seed: int = 0,
) -> np.ndarray:
    """Hierarchical balanced k-means: split ``vectors`` recursively (at most ``fanout`` parts
    per level, as many levels as needed) until every part holds at most ``leaf`` vectors;
    returns the parts' centroids (lists, dim) float32 (unit length for ip)."""
    out: list[np.ndarray] = []
    rng = np.random.default_rng(seed)
    stack = [np.arange(vectors.shape[0])]
    while stack:
        members = stack.pop()
        size = members.size
        if size == 0:
            continue
        sub = vectors[members]
        if size <= leaf + leaf // 8:  # k-means' 5% balance slack must not halve a part
            centroid = sub.mean(axis=0)
            out.append(centroid.astype(np.float32))
            continue
        leaves = math.ceil(size / leaf)
        levels = max(1, math.ceil(math.log(leaves) / math.log(fanout) - 1e-9))
        parts = min(fanout, max(2, math.ceil(leaves ** (1.0 / levels) - 1e-9)))
        with delegated(1) if size < _PARALLEL_NODE else nullcontext():
            _, assignment = balanced_kmeans(
                sub, parts, seed=int(rng.integers(1 << 31)), iterations=10
            )
        if np.unique(assignment).size == 1:  # identical vectors: cut in equal pieces
            assignment = (np.arange(size) % parts).astype(np.int32)
        order = np.argsort(assignment, kind="stable")
        bounds = np.searchsorted(assignment[order], np.arange(parts + 1))
        for p in range(parts):
            stack.append(members[order[bounds[p] : bounds[p + 1]]])
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


def assign_lists(
    vectors: np.ndarray,
    graph: HNSWGraph,
    centroids: np.ndarray,
    *,
    eps_build: float,
    max_replicas: int,
    ef: int = 32,
) -> np.ndarray:
    """Each vector's posting lists, nearest first (n, max_replicas) int32 padded -1: its
    nearest centroid plus the boundary replicas (see :func:`rng_replicas`), candidates from
    the centroid graph."""
    want = min(len(graph), max(2 * max_replicas, 16))
    candidates, _ = graph.search(vectors, want, max(ef, want))
    return rng_replicas(vectors, candidates.astype(np.int64), centroids, eps_build, max_replicas)


def write_lists(
    gen: _Generation,
    labels: np.ndarray,
    versions: np.ndarray,
    vectors: np.ndarray,
    targets: np.ndarray,
    lists: int,
    *,
    max_list_size: int,
    centroids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Write the posting lists of ``targets`` (the lists of each vector, primary first) into
    ``gen``, list after list, a chunk of lists at a time (memory: one chunk of records). A
    list past ``max_list_size`` keeps its primaries and its closest replicas.

    Returns (starts, counts) by list, each vector's primary record number, and the replicas
    dropped by the limit.
    """
    n = targets.shape[0]
    row, flat, rank = _pairs(targets)
    # closest first within each list: primaries (rank 0) before replicas, then by distance
    dist = np.empty(flat.size, dtype=np.float32)
    for a in range(0, flat.size, _CHUNK):
        dist[a : a + _CHUNK] = _sq(vectors[row[a : a + _CHUNK]] - centroids[flat[a : a + _CHUNK]])
    order = np.lexsort((dist, rank > 0, flat))
    row, flat, rank = row[order], flat[order], rank[order]
    counts = np.bincount(flat, minlength=lists).astype(np.int64)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(flat.size) - np.repeat(first, counts)
    # a list past the limit keeps max(limit, its primaries)
    primaries = np.bincount(flat[rank == 0], minlength=lists)
    limit = np.maximum(primaries, max_list_size)
    kept = position < limit[flat]
    dropped = int(flat.size - kept.sum())
    row, flat, rank = row[kept], flat[kept], rank[kept]
    counts = np.bincount(flat, minlength=lists).astype(np.int64)
    start = gen.allocate(int(flat.size))
    starts = start + np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    primary = np.full(n, _NOWHERE, dtype=np.int64)
    at = np.arange(flat.size) + start
    primary[row[rank == 0]] = at[rank == 0]
    for a in range(0, flat.size, _CHUNK):
        rows = row[a : a + _CHUNK]
        gen.write(start + a, make_records(labels[rows], versions[rows], vectors[rows]))
    return starts, counts, primary, dropped


def _pairs(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vector, list, rank) of each of ``targets``' entries (rank 0: the primary list)."""
    n, width = targets.shape
    row = np.repeat(np.arange(n), width)
    flat = targets.reshape(-1).astype(np.int64)
    rank = np.tile(np.arange(width), n)
    keep = flat >= 0
    return row[keep], flat[keep], rank[keep]


def _sq(diff: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", diff, diff)


class _Build:
    """The streamed build of a :class:`SpannIndex` (a part of the class)."""

    def _rebuild(
        self: SpannParts, labels: np.ndarray, vectors: np.ndarray, versions: np.ndarray
    ) -> None:
        """Build everything again from the live vectors and these (small indexes only)."""
        old, old_vectors = self._live_vectors(labels)
        self._build(
            np.concatenate([old, labels]),
            np.concatenate([old_vectors, vectors]),
            np.concatenate([self._version[old], versions]),
            fresh=(labels, versions),
        )

    def _build(
        self: SpannParts,
        labels: np.ndarray,
        vectors: np.ndarray,
        versions: np.ndarray,
        *,
        fresh: tuple[np.ndarray, np.ndarray],
    ) -> None:
        """The streamed build: cluster (a sample), place the centroids in the graph, assign
        and write the lists chunk by chunk into a fresh generation, then publish it all with
        the rows ``fresh`` (labels, versions) at once."""
        n = labels.size
        norm_cap = self._norm_cap
        if self.metric == "ip":
            norm_cap = float(np.sqrt((vectors**2).sum(axis=1).max()))
            vectors = self._augment(vectors, norm_cap)
        rng = np.random.default_rng(self.seed)
        sample = vectors
        if n > self.train_size:
            sample = vectors[np.sort(rng.choice(n, self.train_size, replace=False))]
        leaf = max(1, round(self.max_list_size / 2 * sample.shape[0] / n))
        centroids = cluster_lists(
            np.ascontiguousarray(sample, dtype=np.float32), leaf=leaf, seed=self.seed
        )
        graph = self._new_graph()
        graph.add(centroids)
        targets = np.concatenate(
            [
                assign_lists(
                    vectors[a : a + _CHUNK],
                    graph,
                    centroids,
                    eps_build=self.eps_build,
                    max_replicas=self.max_replicas,
                )
                for a in range(0, n, _CHUNK)
            ]
        )
        old = list(self._gens.values())
        gen = self._new_gen()
        lists = centroids.shape[0]
        starts, counts, primary, dropped = write_lists(
            gen,
            labels,
            versions,
            vectors,
            targets,
            lists,
            max_list_size=self.max_list_size,
            centroids=centroids,
        )
        with self._rw.write():
            self._write_rows(*fresh)
            self._norm_cap = norm_cap
            self._graph, self._lists = graph, lists
            self._open: _Generation | None = gen  # (see parts.py: declared types)
            self._list_gen = np.full(lists, gen.number, dtype=np.int32)
            self._list_start = starts
            self._list_count = counts.astype(np.int32)
            self._list_capacity = self._list_count.copy()
            self._places.array[labels] = (gen.number << _GEN_SHIFT) | primary
            self._counters["dropped_replicas"] += dropped
            self._gens = {gen.number: gen}
            for g in old:
                g.close()
                if os.path.dirname(g.path) == self.workdir:
                    _fs.unlink(g.path)
            self._garbage = 0
        for lst in np.flatnonzero(counts > self.max_list_size).tolist():
            self._queue_split(lst)
