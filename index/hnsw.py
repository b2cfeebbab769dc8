"""HNSW (Malkov & Yashunin, 2016) on hnswlib: a layered proximity graph held in memory.

Parameters carry the paper's names: ``m`` (M, links per node, 8-64), ``ef_construction``
(efConstruction, 100-500) and the search-time ``ef`` (>= k, 10-1000: recall rises with it).
Deletes are tombstones: the node stays a waypoint of the graph but is never returned.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import hnswlib
import numpy as np
from shardwalk.index.base import IndexMetric, SearchResult, empty_result, read_meta, write_meta
from shardwalk.index.flat import exact_search

from shardwalk._files import atomic_write, atomic_write_with
from shardwalk._threads import ThreadBudget, default_budget

__all__ = ["HNSWIndex"]


class _One:
    """The grant of a single-query search: one thread, its caller's (no budget involved)."""

    def __enter__(self) -> int:
        return 1

    def __exit__(self, *exc: object) -> None:
        return None


_ONE = _One()


class EfGate:
    """Per-call ef on an hnswlib graph, whose ef is one index-wide setting (``set_ef``; its
    ``knn_query`` takes none).

    Searches run in turns: a turn is any number of searches with one ef, running at once. A
    search with the ef of the running turn joins it, unless searches with another ef are
    waiting: then it waits too, so a steady stream of one ef cannot starve another. When a
    turn's last search ends, the ef waiting longest gets the next turn (its ef is set once)
    and every search waiting for that ef runs in it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._ef = -1  # the ef set on the graph (-1: none of ours yet)
        self._active = 0  # searches running in the current turn
        self._turn = 0  # turns started so far
        # ef -> searches waiting for it; in the order each ef began waiting (dicts keep it)
        self._waiting: dict[int, int] = {}

    def _start(self, graph: hnswlib.Index, ef: int) -> None:
        """Start a new turn for ``ef`` (no search runs)."""
        if self._ef != ef:
            graph.set_ef(ef)
            self._ef = ef
        self._turn += 1

    def hold(self, graph: hnswlib.Index, ef: int) -> _Held:
        """Run the block with ``graph``'s ef set to ``ef`` and kept there."""
        return _Held(self, graph, ef)

    def _enter(self, graph: hnswlib.Index, ef: int) -> None:
        with self._cond:
            if not self._waiting and (self._active == 0 or self._ef == ef):
                if self._active == 0:
                    self._start(graph, ef)
            else:
                ticket = self._turn
                self._waiting[ef] = self._waiting.get(ef, 0) + 1
                try:
                    while True:
                        if self._active == 0 and next(iter(self._waiting)) == ef:
                            self._start(graph, ef)  # the ef waiting longest goes next
                            break
                        if self._active and self._ef == ef and self._turn > ticket:
                            break  # its ef's turn began while it waited: it runs in it
                        self._cond.wait()
                finally:
                    self._waiting[ef] -= 1
                    if not self._waiting[ef]:
                        del self._waiting[ef]
            self._active += 1

    def _exit(self) -> None:
        with self._cond:
            self._active -= 1
            if not self._active and self._waiting:
                self._cond.notify_all()


class _Held:
    """``EfGate.hold``'s context manager (a class, not a generator: it runs on every search)."""

    __slots__ = ("_ef", "_gate", "_graph")

    def __init__(self, gate: EfGate, graph: hnswlib.Index, ef: int) -> None:
        self._gate, self._graph, self._ef = gate, graph, ef

    def __enter__(self) -> None:
        self._gate._enter(self._graph, self._ef)

    def __exit__(self, *exc: object) -> None:
        self._gate._exit()


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
        Most threads for a batch insert or a batch query (default: all of the budget's). One
        query always runs on the calling thread alone.
    seed : int, default 0
        Seed of the level generator. Builds are reproducible with ``threads=1`` only: with
        more threads inserts run in parallel and may link in a different order each run.
    budget : ThreadBudget, optional
        The thread slots shared with the rest of the engine (default: the process's, as many
        as cores). Inserts and batch queries take from it.

    Thread safety: searches (with any ``ef``) and ``get`` may run from many threads at once;
    ``add`` and ``delete`` need the caller to exclude every other call (hnswlib's inserts and
    tombstones are not safe alongside searches).
    """

    kind = "hnsw"
    exact = scoped = False

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
        budget: ThreadBudget | None = None,
    ) -> None:
        self.dim = dim
        self.metric: IndexMetric = metric
        self.m = m
        self.ef_construction = ef_construction
        self.ef = ef
        self.threads = threads
        self.seed = seed
        self.budget = budget or default_budget()
        self._gate = EfGate()
        self._graph = hnswlib.Index(space=metric, dim=dim)
        self._graph.init_index(
            max_elements=max(capacity, 16), M=m, ef_construction=ef_construction, random_seed=seed
        )
        self._alive = np.zeros(0, dtype=bool)  # by label
        self._live = 0

    def params(self) -> dict[str, Any]:
        return {"m": self.m, "ef_construction": self.ef_construction, "ef": self.ef}

    def add(
        self,
        labels: np.ndarray,
        vectors: np.ndarray,
        groups: np.ndarray | None = None,
        *,
        threads: int | None = None,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size == 0:
            return
        needed = self._graph.element_count + labels.size
        if needed > self._graph.max_elements:
            self._graph.resize_index(max(needed, 2 * self._graph.max_elements))
        want = min(labels.size, threads or self.threads or self.budget.threads)
        with self.budget.take(want, kernels=False) as granted:  # hnswlib only: its num_threads
            self._graph.add_items(vectors, labels, num_threads=granted)
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
        """Approximate top-k. ``ef`` overrides the index's search-time ef for this call only
        (concurrent searches with other values wait their turn, see :class:`EfGate`);
        ``threads`` caps the threads of a batch."""
        n = queries.shape[0]
        kk = min(k, self._live)
        if n == 0 or kk == 0:
            return empty_result(n, k)
        # one query: the caller's thread, nothing to take (the budget grants 1 without asking)
        want = 1 if n == 1 else min(n, threads or self.threads or self.budget.threads)
        grant = _ONE if want == 1 else self.budget.take(want, kernels=False)
        with grant as granted, self._gate.hold(self._graph, max(ef or self.ef, kk)):
            try:
                labels, distances = self._graph.knn_query(queries, k=kk, num_threads=granted)
            except RuntimeError:
                # hnswlib found fewer than kk live nodes for some query (tombstones cut the
                # graph): answer query by query, and those it cannot fill exactly, so none
                # comes up short.
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
                got_labels, got_distances = self._graph.knn_query(
                    queries[i : i + 1], k=k, num_threads=1
                )
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
    def load(
        cls, directory: str, *, threads: int | None = None, budget: ThreadBudget | None = None
    ) -> HNSWIndex:
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
            budget=budget,
        )
        index._graph = hnswlib.Index(space=index.metric, dim=index.dim)
        index._graph.load_index(os.path.join(directory, "graph.bin"))
        index._alive = np.load(os.path.join(directory, "alive.npy"))
        index._live = int(np.count_nonzero(index._alive))
        return index
