"""HNSW (Malkov & Yashunin, 2016) on hnswlib: a layered proximity graph held in memory.

Parameters carry the paper's names: ``m`` (M, links per node, 8-64), ``ef_construction``
(efConstruction, 100-500) and the search-time ``ef`` (>= k, 10-1000: recall rises with it).
Deletes are tombstones: the node stays a waypoint of the graph but is never returned.
"""

from __future__ import annotations

import os
from typing import Any

import hnswlib
import numpy as np
from shardwalk.index.base import IndexMetric, SearchResult, empty_result, read_meta, write_meta
from shardwalk.index.flat import exact_search

from shardwalk._files import atomic_write, atomic_write_with

__all__ = ["HNSWIndex"]


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


class HNSWIndex:
    """Approximate nearest neighbours on one HNSW graph.

    Parameters
    ----------
    dim : int
        Vector dimension.
    metric : {"l2", "ip"}
        Distance; cosine collections pass unit vectors with ``"ip"``.
    m : int, default 16
        M in the paper: bidirectional links per node on upper layers (2*M on layer 0).
        8-64; larger is more accurate and uses more memory.
    ef_construction : int, default 200
        efConstruction in the paper: candidate list size while inserting. 100-500.
    ef : int, default 64
        ef in the paper: candidate list size while searching, raised to k when smaller.
    threads : int, optional
        Threads for batch inserts and batch queries (default: the cores available).
    seed : int, default 0
        Seed of the level generator. Builds are reproducible with ``threads=1`` only: with
        more threads inserts run in parallel and may link in a different order each run.
    """

    kind = "hnsw"

    def __init__(
        self,
        *,
        dim: int,
        metric: IndexMetric,
        m: int = 16,
        ef_construction: int = 200,
        ef: int = 64,
        threads: int | None = None,
        seed: int = 0,
        capacity: int = 1024,
    ) -> None:
        self.dim = dim
        self.metric: IndexMetric = metric
        self.m = m
        self.ef_construction = ef_construction
        self.ef = ef
        self.threads = threads or default_threads()
        self.seed = seed
        self._graph = hnswlib.Index(space=metric, dim=dim)
        self._graph.init_index(
            max_elements=max(capacity, 16), M=m, ef_construction=ef_construction, random_seed=seed
        )
        self._alive = np.zeros(0, dtype=bool)  # by label
        self._live = 0

    def params(self) -> dict[str, Any]:
        return {"m": self.m, "ef_construction": self.ef_construction, "ef": self.ef}

    def add(self, labels: np.ndarray, vectors: np.ndarray, *, threads: int | None = None) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size == 0:
            return
        needed = self._graph.element_count + labels.size
        if needed > self._graph.max_elements:
            self._graph.resize_index(max(needed, 2 * self._graph.max_elements))
        self._graph.add_items(vectors, labels, num_threads=threads or self.threads)
        end = int(labels.max()) + 1
        if end > self._alive.shape[0]:
            self._alive = np.concatenate(
                [self._alive, np.zeros(end - self._alive.shape[0], dtype=bool)]
            )
        self._live += int(np.count_nonzero(~self._alive[labels]))
        self._alive[labels] = True

    def delete(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        labels = labels[(labels >= 0) & (labels < self._alive.shape[0])]
        labels = labels[self._alive[labels]]
        for label in labels.tolist():
            self._graph.mark_deleted(label)
        self._alive[labels] = False
        self._live -= labels.size

    def search(
        self, queries: np.ndarray, k: int, *, ef: int | None = None, threads: int | None = None
    ) -> SearchResult:
        """Approximate top-k. ``ef`` overrides the index's search-time ef for this call."""
        n = queries.shape[0]
        kk = min(k, self._live)
        if n == 0 or kk == 0:
            return empty_result(n, k)
        self._graph.set_ef(max(ef or self.ef, kk))
        threads = 1 if n == 1 else (threads or self.threads)
        try:
            labels, distances = self._graph.knn_query(queries, k=kk, num_threads=threads)
        except RuntimeError:
            # hnswlib found fewer than kk live nodes for some query (tombstones cut the graph):
            # answer query by query, and those it cannot fill exactly, so none comes up short.
            labels, distances = self._one_by_one(queries, kk)
        result = SearchResult(
            ids=labels.astype(np.int64, copy=False),
            distances=distances.astype(np.float32, copy=False),
        )
        if kk < k:
            result = SearchResult(
                ids=np.pad(result.ids, ((0, 0), (0, k - kk)), constant_values=-1),
                distances=np.pad(result.distances, ((0, 0), (0, k - kk)), constant_values=np.inf),
            )
        return result

    def _one_by_one(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.empty((queries.shape[0], k), dtype=np.int64)
        distances = np.empty((queries.shape[0], k), dtype=np.float32)
        live = np.flatnonzero(self._alive)
        for i in range(queries.shape[0]):
            try:
                got_labels, got_distances = self._graph.knn_query(queries[i : i + 1], k=k)
            except RuntimeError:
                exact = exact_search(self.get(live), queries[i : i + 1], k, self.metric)
                got_labels, got_distances = live[exact.ids], exact.distances
            labels[i], distances[i] = got_labels[0], got_distances[0]
        return labels, distances

    def get(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self._graph.get_items(labels, return_type="numpy"), dtype=np.float32)

    def __len__(self) -> int:
        return self._live

    def stats(self) -> dict[str, Any]:
        # hnswlib: per element, the vector, the level-0 links (2*M ids + count) and the label;
        # upper layers hold ~1/(M ln M) of the elements with M links each.
        per_element = self.dim * 4 + (2 * self.m + 1) * 4 + 8
        return {
            "kind": self.kind,
            "live": self._live,
            "slots": int(self._graph.element_count),
            "deleted": int(self._graph.element_count) - self._live,
            **self.params(),
            "memory_bytes": int(self._graph.max_elements) * per_element,
        }

    def save(self, directory: str) -> None:
        atomic_write_with(os.path.join(directory, "graph.bin"), self._graph.save_index)
        with atomic_write(os.path.join(directory, "alive.npy")) as f:
            np.save(f, self._alive)
        meta = {
            "kind": self.kind,
            "dim": self.dim,
            "metric": self.metric,
            "seed": self.seed,
            **self.params(),
        }
        write_meta(directory, meta)

    @classmethod
    def load(cls, directory: str, *, threads: int | None = None) -> HNSWIndex:
        meta = read_meta(directory, cls.kind)
        index = cls(
            dim=meta["dim"],
            metric=meta["metric"],
            m=meta["m"],
            ef_construction=meta["ef_construction"],
            ef=meta["ef"],
            seed=meta["seed"],
            threads=threads,
            capacity=16,
        )
        index._graph = hnswlib.Index(space=index.metric, dim=index.dim)
        index._graph.load_index(os.path.join(directory, "graph.bin"))
        index._alive = np.load(os.path.join(directory, "alive.npy"))
        index._live = int(np.count_nonzero(index._alive))
        return index
