"""Partitioned index: balanced k-means partitions, one HNSW graph each, built in parallel.

A query fans out to every partition and the per-partition top-k lists are merged exactly, so
the result is at least as good as one HNSW of the same parameters (each graph is smaller and
searched with the same ef). Partitions build independently: threads here, Ray tasks on a
cluster.

Until enough vectors arrived to place the centroids (``train_size``), vectors wait in an exact
staging index and are searched exactly; the first batch that reaches the threshold trains the
partitions on everything staged.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faiss
import numpy as np
from shardwalk.index.base import (
    IndexMetric,
    SearchResult,
    empty_result,
    merge_topk,
    read_meta,
    write_meta,
)
from shardwalk.index.flat import FlatIndex
from shardwalk.index.hnsw import HNSWIndex
from shardwalk.index.kmeans import balanced_kmeans

from shardwalk._files import atomic_write
from shardwalk._threads import ThreadBudget, default_budget, delegated

__all__ = ["PartitionedIndex"]


class PartitionedIndex:
    """P balanced partitions, each an HNSW graph; queries fan out and merge exactly.

    Parameters
    ----------
    dim, metric
        As for every index.
    partitions : int, default 8
        P, the number of partitions (2-1024). More partitions build faster in parallel and
        cost more per query (each query visits every partition).
    m, ef_construction, ef
        HNSW parameters of each partition (see :class:`HNSWIndex`).
    threads : int, optional
        Most partitions built at once, and most threads for a batch query (default: all of
        the budget's).
    train_size : int, optional
        Vectors to collect before the partitions are placed (default ``max(1000, 64 * P)``).
    seed : int, default 0
        Seed of k-means and of the HNSW level generators. The HNSW graphs are reproducible
        with ``threads=1`` only (parallel inserts may link in a different order each run).
    budget : ThreadBudget, optional
        The thread slots shared with the rest of the engine (default: the process's).

    Thread safety: as :class:`HNSWIndex`: reads from many threads at once, writes alone.
    """

    kind = "partitioned"
    exact = scoped = False

    def __init__(
        self,
        *,
        dim: int,
        metric: IndexMetric,
        partitions: int = 8,
        m: int = 16,
        ef_construction: int = 200,
        ef: int = 64,
        threads: int | None = None,
        train_size: int | None = None,
        seed: int = 0,
        budget: ThreadBudget | None = None,
    ) -> None:
        self.dim = dim
        self.metric: IndexMetric = metric
        self.partitions = partitions
        self.m = m
        self.ef_construction = ef_construction
        self.ef = ef
        self.threads = threads
        self.budget = budget or default_budget()
        self.train_size = train_size or max(1000, 64 * partitions)
        self.seed = seed
        self._staging: FlatIndex | None = FlatIndex(dim=dim, metric=metric, budget=self.budget)
        self._parts: list[HNSWIndex] = []
        self._set_centroids(np.zeros((0, dim), dtype=np.float32))
        self._part_of = np.zeros(0, dtype=np.int32)  # by label; -1: not here

    def params(self) -> dict[str, Any]:
        return {
            "partitions": self.partitions,
            "m": self.m,
            "ef_construction": self.ef_construction,
            "ef": self.ef,
        }

    @property
    def trained(self) -> bool:
        return self._staging is None

    # -- writes -----------------------------------------------------------------------------
    def add(
        self, labels: np.ndarray, vectors: np.ndarray, groups: np.ndarray | None = None
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size == 0:
            return
        # k-means, the centroid search and the partition builds all run within one grant
        with self.budget.take(self.threads or self.budget.threads):
            self._add(labels, vectors)

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

    def _train(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        centroids, assignment = balanced_kmeans(
            vectors, self.partitions, metric=self.metric, seed=self.seed
        )
        self._set_centroids(centroids)
        sizes = np.bincount(assignment, minlength=self.partitions)
        self._parts = [
            HNSWIndex(
                dim=self.dim,
                metric=self.metric,
                m=self.m,
                ef_construction=self.ef_construction,
                ef=self.ef,
                threads=1,
                seed=self.seed + p,
                capacity=int(sizes[p] * 1.1) + 16,
                budget=self.budget,
            )
            for p in range(self.partitions)
        ]
        self._staging = None
        self._add_to_parts(labels, vectors, assignment)

    def _add_to_parts(
        self, labels: np.ndarray, vectors: np.ndarray, assignment: np.ndarray
    ) -> None:
        end = int(labels.max()) + 1
        if end > self._part_of.shape[0]:
            grown = np.full(max(end, 2 * self._part_of.shape[0]), -1, dtype=np.int32)
            grown[: self._part_of.shape[0]] = self._part_of
            self._part_of = grown
        self._part_of[labels] = assignment
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
                self._parts[p].add(labels[rows], np.ascontiguousarray(vectors[rows]), threads=1)

        want = min(len(jobs), self.threads or self.budget.threads)
        with self.budget.take(want) as granted:
            if granted == 1:
                for job in jobs:
                    build(job)
            else:
                # hnswlib releases the GIL while inserting: partitions build truly in parallel.
                with ThreadPoolExecutor(max_workers=granted) as pool:
                    list(pool.map(build, jobs))

    def delete(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if self._staging is not None:
            self._staging.delete(labels)
            return
        labels = labels[(labels >= 0) & (labels < self._part_of.shape[0])]
        owners = self._part_of[labels]
        for p in np.unique(owners[owners >= 0]).tolist():
            self._parts[p].delete(labels[owners == p])
        self._part_of[labels] = -1

    # -- reads ------------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        ef: int | None = None,
        nprobe: int | None = None,
        **_: Any,
    ) -> SearchResult:
        """Top-k over the partitions, merged exactly.

        ``ef`` applies in every partition. ``nprobe`` visits only the partitions with the
        closest centroids (default: all, the most accurate; fewer is faster).
        """
        n = queries.shape[0]
        want = 1 if n == 1 else min(n, self.threads or self.budget.threads)
        with self.budget.take(want) as granted:  # the staging's or partitions' searches within
            if self._staging is not None:
                return self._staging.search(queries, k)
            if n == 0 or len(self) == 0:
                return empty_result(n, k)
            return self._search(queries, k, ef, nprobe, granted)

    def _search(
        self, queries: np.ndarray, k: int, ef: int | None, nprobe: int | None, threads: int
    ) -> SearchResult:
        n = queries.shape[0]
        if nprobe is None or nprobe >= self.partitions:
            found = [part.search(queries, k, ef=ef, threads=threads) for part in self._parts]
            return merge_topk(
                np.concatenate([r.ids for r in found], axis=1),
                np.concatenate([r.distances for r in found], axis=1),
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
            found = self._parts[p].search(queries[rows], k, ef=ef, threads=threads)
            cols = slot[:, None] * k + columns
            ids[rows[:, None], cols] = found.ids
            distances[rows[:, None], cols] = found.distances
        return merge_topk(ids, distances, k)

    def get(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels, dtype=np.int64)
        if self._staging is not None:
            return self._staging.get(labels)
        out = np.empty((labels.size, self.dim), dtype=np.float32)
        owners = self._part_of[labels]
        for p in np.unique(owners).tolist():
            rows = owners == p
            out[rows] = self._parts[p].get(labels[rows])
        return out

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
        parts = [part.stats() for part in self._parts]
        return {
            "kind": self.kind,
            "trained": True,
            "live": len(self),
            **self.params(),
            "partition_sizes": [s["live"] for s in parts],
            "memory_bytes": sum(s["memory_bytes"] for s in parts) + self._part_of.nbytes,
        }

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        meta = {
            "kind": self.kind,
            "dim": self.dim,
            "metric": self.metric,
            "seed": self.seed,
            "train_size": self.train_size,
            "trained": self.trained,
            **self.params(),
        }
        if self._staging is not None:
            staging_dir = os.path.join(directory, "staging")
            os.makedirs(staging_dir, exist_ok=True)
            self._staging.save(staging_dir)
        else:
            for p, part in enumerate(self._parts):
                part_dir = os.path.join(directory, f"part-{p:04d}")
                os.makedirs(part_dir, exist_ok=True)
                part.save(part_dir)
            with atomic_write(os.path.join(directory, "centroids.npy")) as f:
                np.save(f, self._centroids)
            with atomic_write(os.path.join(directory, "part_of.npy")) as f:
                np.save(f, self._part_of)
        write_meta(directory, meta)

    @classmethod
    def load(
        cls, directory: str, *, threads: int | None = None, budget: ThreadBudget | None = None
    ) -> PartitionedIndex:
        meta = read_meta(directory, cls.kind)
        index = cls(
            dim=meta["dim"],
            metric=meta["metric"],
            partitions=meta["partitions"],
            m=meta["m"],
            ef_construction=meta["ef_construction"],
            ef=meta["ef"],
            threads=threads,
            train_size=meta["train_size"],
            seed=meta["seed"],
            budget=budget,
        )
        if not meta["trained"]:
            index._staging = FlatIndex.load(os.path.join(directory, "staging"), budget=budget)
            return index
        index._staging = None
        index._parts = [
            HNSWIndex.load(os.path.join(directory, f"part-{p:04d}"), threads=1, budget=index.budget)
            for p in range(index.partitions)
        ]
        index._set_centroids(np.load(os.path.join(directory, "centroids.npy")))
        index._part_of = np.load(os.path.join(directory, "part_of.npy"))
        return index
