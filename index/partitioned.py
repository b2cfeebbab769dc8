"""Partitioned index: balanced k-means partitions, one HNSW graph each, built in parallel.

A query fans out to every partition and the per-partition top-k lists are merged exactly, so
the result is at least as good as one HNSW of the same parameters (each graph is smaller and
searched with the same ef). Partitions build independently: threads here, Ray tasks on a
cluster.

Until enough vectors arrived to place the centroids (``train_size``), vectors wait in an exact
staging index and are searched exactly; the first batch that reaches the threshold trains the
partitions on everything staged.

The vectors are stored once: in each partition's faiss storage (under its graph), or in the
staging index before that. :attr:`PartitionedIndex.store` reads them by label from there,
partition by partition, without a copy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
from shardwalk.index.base import (
    SearchResult,
    empty_result,
    merge_topk,
    read_meta,
    relabel,
    save_index,
)
from shardwalk.index.flat import FlatIndex
from shardwalk.index.hnsw import OnHNSW, OnHNSWOptions, is_hnswlib_dir, read_hnswlib
from shardwalk.index.hnsw_graph import HNSWGraph, _grow
from shardwalk.index.kmeans import balanced_kmeans
from shardwalk.index.store import IndexStore, RowStore, Segment

from shardwalk._files import atomic_write
from shardwalk._threads import ThreadBudget, delegated
from shardwalk.errors import FailedPreconditionError

if TYPE_CHECKING:
    from shardwalk.index.base import SearchOptions
    from typing_extensions import Unpack

__all__ = ["PartitionedIndex", "hnswlib_share_error"]

log = logging.getLogger(__name__)


def hnswlib_share_error(directory: str) -> FailedPreconditionError:
    """Why an index in the hnswlib format of earlier versions cannot be served in shares."""
    return FailedPreconditionError(
        f"{directory}: a partitioned index in the hnswlib format of earlier versions; open the "
        "engine once without Ray (the index is rebuilt and rewritten at the next checkpoint), "
        "then serve it from Ray"
    )


class PartitionedIndex(OnHNSW):
    """P balanced partitions, each an HNSW graph; queries fan out and merge exactly.

    Parameters
    ----------
    dim, metric, threads, budget
        As for every index (:class:`~shardwalk.index.base.IndexBase`): ``threads`` caps the
        partitions built at once and the threads of a batch query.
    partitions : int, default 8
        P, the number of partitions (2-1024). More partitions build faster in parallel and
        cost more per query (each query visits every partition).
    m, ef_construction, ef
        HNSW parameters of each partition (:class:`~shardwalk.index.hnsw.HNSWParams`).
    train_size : int, optional
        Vectors to collect before the partitions are placed (default ``max(1000, 64 * P)``).
    seed : int, default 0
        Seed of k-means and of the HNSW level generators. The HNSW graphs are reproducible
        with ``threads=1`` only (parallel inserts may link in a different order each run).

    Thread safety: as :class:`HNSWIndex`: reads from many threads at once, writes alone.
    """

    kind = "partitioned"
    saved_params = ("partitions", "train_size")

    def __init__(
        self,
        *,
        partitions: int = 8,
        train_size: int | None = None,
        **options: Unpack[OnHNSWOptions],
    ) -> None:
        super().__init__(**options)
        self.partitions = partitions
        self.train_size = train_size or max(1000, 64 * partitions)
        dim, metric = self.dim, self.metric
        self._staging: FlatIndex | None = FlatIndex(dim=dim, metric=metric, budget=self.budget)
        self._parts: list[HNSWGraph] = []
        self._set_centroids(np.zeros((0, dim), dtype=np.float32))
        self._part_of = np.zeros(0, dtype=np.int32)  # by label; -1: not here
        self._pos_of = np.zeros(0, dtype=np.int64)  # by label: its position in its partition
        # typed RowStore: RayPartitionedIndex's fetches the vectors from its actors
        self.store: RowStore = IndexStore(dim, self._segments)

    def params(self) -> dict[str, Any]:
        # (train_size: in index.json alone, see _save_meta)
        return {"partitions": self.partitions, **self.hnsw.options()}

    @property
    def trained(self) -> bool:
        return self._staging is None

    # -- writes -----------------------------------------------------------------------------
    def _insert(self, labels: np.ndarray, vectors: np.ndarray, groups: np.ndarray | None) -> None:
        # k-means, the centroid search and the partition builds all run within one grant
        with self.budget.take(self.threads or self.budget.threads):
            self._add(labels, vectors)

    def add_placed(self, labels: np.ndarray, vectors: np.ndarray, partitions: np.ndarray) -> None:
        """Insert vectors into the partitions given (placed by someone else: a Ray actor's
        share of an index, see ``shardwalk.index.distributed``)."""
        with self.budget.take(self.threads or self.budget.threads):
            self._add_to_parts(labels, vectors, partitions)

    def _add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        if self._staging is not None:
            if len(self._staging) + labels.size < self.train_size:
                self._staging.add(labels, vectors)
                return
            staged = np.flatnonzero(self._staging._alive)
            if staged.size:  # train on everything so far; a large first batch is not copied
                labels = np.concatenate([staged, labels])
                vectors = np.concatenate([self._staging.get(staged), vectors])
            self._train(labels, vectors)
            return
        self._add_to_parts(labels, vectors, self._nearest(vectors, 1)[:, 0])

    def _nearest(self, vectors: np.ndarray, count: int) -> np.ndarray:
        """The ``count`` closest partitions of each vector, closest first."""
        _, nearest = self._centroid_index.search(vectors, count)
        return nearest

    def _set_centroids(self, centroids: np.ndarray) -> None:
        self._centroids = centroids
        self._centroid_index = (
            faiss.IndexFlatL2(self.dim) if self.metric == "l2" else faiss.IndexFlatIP(self.dim)
        )
        self._centroid_index.add(centroids)

    def _new_part(self, p: int) -> HNSWGraph:
        return HNSWGraph(
            dim=self.dim, metric=self.metric, params=self.hnsw, seed=self.seed + p, labeled=True
        )

    def _train(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        centroids, assignment = balanced_kmeans(
            vectors, self.partitions, metric=self.metric, seed=self.seed
        )
        self._set_centroids(centroids)
        self._parts = [self._new_part(p) for p in range(self.partitions)]
        self._staging = None
        self._add_to_parts(labels, vectors, assignment)

    def _add_to_parts(
        self, labels: np.ndarray, vectors: np.ndarray, assignment: np.ndarray
    ) -> None:
        self.delete(labels)  # a label added again: its old vector is a tombstone
        end = int(labels.max()) + 1
        self._part_of = _grow(self._part_of, end, -1)
        self._pos_of = _grow(self._pos_of, end, -1)
        order = np.argsort(assignment, kind="stable")
        bounds = np.searchsorted(assignment[order], np.arange(self.partitions + 1))
        jobs = [
            (p, order[bounds[p] : bounds[p + 1]])
            for p in range(self.partitions)
            if bounds[p + 1] > bounds[p]
        ]

        def build(job: tuple[int, np.ndarray]) -> None:
            p, rows = job
            with delegated(1):  # one of the slots the caller holds for its workers
                positions = self._parts[p].add(np.ascontiguousarray(vectors[rows]), labels[rows])
            self._part_of[labels[rows]] = p
            self._pos_of[labels[rows]] = positions

        want = min(len(jobs), self.threads or self.budget.threads)
        with self.budget.take(want) as granted:
            if granted == 1:
                for job in jobs:
                    build(job)
            else:
                # faiss releases the GIL while inserting: partitions build truly in parallel.
                with ThreadPoolExecutor(max_workers=granted) as pool:
                    list(pool.map(build, jobs))

    def delete(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if self._staging is not None:
            self._staging.delete(labels)
            return
        self._delete_placed(labels[(labels >= 0) & (labels < self._part_of.shape[0])])

    def _delete_placed(self, labels: np.ndarray) -> None:
        """Delete ``labels`` (each below the end of ``_part_of``) where they are placed."""
        owners = self._part_of[labels]
        for p in np.unique(owners[owners >= 0]).tolist():
            self._parts[p].delete(self._pos_of[labels[owners == p]])
        self._part_of[labels] = -1

    # -- reads ------------------------------------------------------------------------------
    def _search(self, queries: np.ndarray, k: int, options: SearchOptions) -> SearchResult:
        """Top-k over the partitions, merged exactly.

        ``ef`` applies in every partition. ``nprobe`` visits only the partitions with the
        closest centroids (default: all, the most accurate; fewer is faster).
        """
        n = queries.shape[0]
        want = 1 if n == 1 else min(n, self.threads or self.budget.threads)
        with self.budget.take(want) as granted:  # the staging's or partitions' searches within
            if self._staging is not None:
                return self._staging.search(queries, k)
            if len(self) == 0:
                return empty_result(n, k)
            return self._search_parts(queries, k, options.get("ef"), options.get("nprobe"), granted)

    def _search_parts(
        self, queries: np.ndarray, k: int, ef: int | None, nprobe: int | None, threads: int
    ) -> SearchResult:
        n = queries.shape[0]
        ef = ef or self.ef
        if nprobe is None or nprobe >= self.partitions:
            each = [self._search_part(p, queries, k, ef) for p in range(self.partitions)]
            return merge_topk(
                np.concatenate([ids for ids, _ in each], axis=1),
                np.concatenate([distances for _, distances in each], axis=1),
                k,
            )
        probe = self._nearest(queries, nprobe)
        ids = np.full((n, nprobe * k), -1, dtype=np.int64)
        distances = np.full((n, nprobe * k), np.inf, dtype=np.float32)
        columns = np.arange(k)
        for p in range(self.partitions):
            rows, slot = np.nonzero(probe == p)
            if rows.size == 0:
                continue
            found, found_distances = self._search_part(p, queries[rows], k, ef)
            cols = slot[:, None] * k + columns
            ids[rows[:, None], cols] = found
            distances[rows[:, None], cols] = found_distances
        return merge_topk(ids, distances, k)

    def _search_part(
        self, p: int, queries: np.ndarray, k: int, ef: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """One partition's top-k as labels (faiss's threads: the caller's grant)."""
        part = self._parts[p]
        positions, distances = part.search(queries, k, ef)
        assert part.labels is not None
        return relabel(positions, part.labels), distances

    def _segments(self, rows: np.ndarray) -> list[Segment]:
        """Where the vectors of ``rows`` are: the staging index's storage, or the partitions'."""
        if self._staging is not None:
            return [(self._staging._storage(), rows, None)]
        owners = self._part_of[rows]
        order = np.argsort(owners, kind="stable")
        bounds = np.searchsorted(owners[order], np.arange(self.partitions + 1))
        out: list[Segment] = []
        for p in range(self.partitions):
            which = order[bounds[p] : bounds[p + 1]]
            if which.size:
                out.append((self._parts[p].vectors(), self._pos_of[rows[which]], which))
        return out

    def get(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels, dtype=np.int64)
        if self._staging is not None:
            return self._staging.get(labels)
        return self.store.take(labels)

    def __len__(self) -> int:
        if self._staging is not None:
            return len(self._staging)
        return sum(len(part) for part in self._parts)

    def stats(self) -> dict[str, Any]:
        if self._staging is not None:
            return {
                "kind": self.kind,
                "trained": False,
                **self.params(),
                "staging": self._staging.stats(),
            }
        return {
            "kind": self.kind,
            "trained": True,
            "live": len(self),
            **self.params(),
            "partition_sizes": [len(part) for part in self._parts],
            "memory_bytes": sum(part.memory_bytes() for part in self._parts)
            + self._part_of.nbytes
            + self._pos_of.nbytes,
        }

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        if self._staging is not None:
            staging_dir = os.path.join(directory, "staging")
            os.makedirs(staging_dir, exist_ok=True)
            self._staging.save(staging_dir)
            self._save_meta(directory)
        else:
            self.save_parts(directory, range(self.partitions))
            self.save_layout(directory, self._centroids, self._part_of[: self._labels_end()])

    def _save_meta(self, directory: str) -> None:
        meta = {
            "train_size": self.train_size,
            "trained": self.trained,
            "engine": "faiss",
            **self.params(),
        }
        save_index(directory, self, meta)

    def save_parts(self, directory: str, parts: Iterable[int]) -> None:
        """Write the graphs of ``parts`` (``part-NNNN/``), as :meth:`save` does."""
        for p in parts:
            part_dir = os.path.join(directory, f"part-{p:04d}")
            os.makedirs(part_dir, exist_ok=True)
            self._parts[p].save(part_dir)

    def save_layout(self, directory: str, centroids: np.ndarray, part_of: np.ndarray) -> None:
        """Write what a trained index keeps besides its graphs: the centroids, each label's
        partition, and ``index.json`` (written last)."""
        with atomic_write(os.path.join(directory, "centroids.npy")) as f:
            np.save(f, centroids)
        with atomic_write(os.path.join(directory, "part_of.npy")) as f:
            np.save(f, part_of)
        self._save_meta(directory)

    @classmethod
    def placed(
        cls, centroids: np.ndarray, *, budget: ThreadBudget | None = None, **arguments: Any
    ) -> PartitionedIndex:
        """A trained, empty index with these centroids (``arguments``: as for the
        constructor), as training leaves it before the vectors go in."""
        index = cls(budget=budget, **arguments)
        index._staging = None
        index._set_centroids(np.ascontiguousarray(centroids, dtype=np.float32))
        index._parts = [index._new_part(p) for p in range(index.partitions)]
        return index

    @classmethod
    def load(
        cls,
        directory: str,
        *,
        threads: int | None = None,
        budget: ThreadBudget | None = None,
        only: Iterable[int] | None = None,
    ) -> PartitionedIndex:
        """Read back an index :meth:`save` wrote. ``only``: just these partitions' graphs (a
        Ray actor's share); the others stay empty, and the labels they hold unknown here."""
        meta = read_meta(directory, cls.kind)
        index = cls.from_meta(meta, threads=threads, budget=budget)
        if not meta["trained"]:
            index._staging = FlatIndex.load(os.path.join(directory, "staging"), budget=budget)
            return index
        index._staging = None
        index._set_centroids(np.load(os.path.join(directory, "centroids.npy")))
        part_dirs = [os.path.join(directory, f"part-{p:04d}") for p in range(index.partitions)]
        if any(is_hnswlib_dir(d) for d in part_dirs):
            if only is not None:
                raise hnswlib_share_error(directory)
            index._rebuild_from_hnswlib(directory, part_dirs)
            index.upgraded = True  # tells the collection to write the new format
            return index
        mine = set(range(index.partitions)) if only is None else set(only)
        index._parts = [
            HNSWGraph.load(d, metric=index.metric, seed=index.seed + p)
            if p in mine
            else index._new_part(p)
            for p, d in enumerate(part_dirs)
        ]
        part_of = np.load(os.path.join(directory, "part_of.npy")).astype(np.int32)
        if only is not None:
            part_of[~np.isin(part_of, list(mine))] = -1
        index._part_of = part_of
        index._pos_of = np.full(part_of.shape[0], -1, dtype=np.int64)
        for part in index._parts:
            assert part.labels is not None
            live = np.flatnonzero(part.alive())
            index._pos_of[part.labels[live]] = live
        return index

    def _labels_end(self) -> int:
        """One past the largest label ever placed."""
        placed = np.flatnonzero(self._part_of >= 0)
        return int(placed[-1]) + 1 if placed.size else 0

    def _rebuild_from_hnswlib(self, directory: str, part_dirs: list[str]) -> None:
        """Partitions written in the hnswlib format of earlier versions: rebuild each graph on
        faiss from the vectors hnswlib stored, in the partitions they were in."""
        self._parts = [self._new_part(p) for p in range(self.partitions)]
        found = [read_hnswlib(d, dim=self.dim, metric=self.metric) for d in part_dirs]
        log.warning(
            "%s: a partitioned index in the hnswlib format of earlier versions; rebuilding its "
            "%d graphs on faiss from the %d vectors they stored (the next checkpoint writes the "
            "new format)",
            directory,
            self.partitions,
            sum(labels.size for labels, _ in found),
        )
        labels = np.concatenate([labels for labels, _ in found])
        vectors = np.concatenate([vectors for _, vectors in found])
        assignment = np.repeat(np.arange(self.partitions), [lab.size for lab, _ in found])
        del found
        if labels.size:
            with self.budget.take(self.threads or self.budget.threads):
                self._add_to_parts(labels, vectors, assignment.astype(np.int64))
