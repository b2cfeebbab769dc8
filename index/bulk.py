"""Bulk builds of a partitioned index: the steps of a batch job, as plain functions on arrays
and files, so that threads or Ray tasks run them alike (``shardwalk.jobs``).

1. :func:`sample_mask`: which rows train the partitioning, a hash of each id and the seed (the
   sample does not depend on how the rows are split into blocks, or on their order);
2. :func:`train_centroids`: balanced k-means on the sample (sorted by id);
3. :func:`assign_block`: each block's (or batch's) rows go to their nearest centroid and are
   written to one spill file per partition (named after their smallest id: a retried block
   writes the same files with the same bytes; renamed into place whole, not synced: it lives
   only as long as the job);
4. :func:`build_partition`: one HNSW graph per partition from its spill files, its rows in id
   order, labels given by ``labels_of`` (the rank of each id), one faiss thread: the same
   partition bytes whichever worker builds it, and whenever;
5. :func:`write_partitioned_meta`: the centroids, ``part_of`` and ``index.json`` that make the
   partition directories a :class:`~shardwalk.index.PartitionedIndex` directory.

:class:`Executor` runs the steps on many items at once: its subclasses run them on threads
(``shardwalk.build.ThreadExecutor``) or as Ray tasks (``shardwalk.index.distributed``).

The files of the index are written atomically and synced.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from shardwalk.index.base import IndexMetric, write_meta
from shardwalk.index.hnsw_graph import HNSWGraph, HNSWParams
from shardwalk.index.kmeans import balanced_kmeans

from shardwalk import _fs
from shardwalk._files import save_npy
from shardwalk._threads import delegated
from shardwalk.errors import CorruptionError

__all__ = [
    "Executor",
    "assign_block",
    "build_partition",
    "partition_dir",
    "sample_mask",
    "spill_dir",
    "train_centroids",
    "write_partitioned_meta",
]

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def sample_mask(ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Rows in the training sample: ``hash(id, seed) < fraction`` of the hash range."""
    if fraction >= 1.0:
        return np.ones(ids.shape[0], dtype=bool)
    with np.errstate(over="ignore"):
        keyed = ids.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    threshold = np.uint64(min(int(fraction * 2.0**64), 2**64 - 1))
    return _mix64(_mix64(keyed) & _MASK64) < threshold


def train_centroids(
    sample_ids: np.ndarray, sample: np.ndarray, parts: int, metric: IndexMetric, seed: int
) -> np.ndarray:
    """Balanced k-means centroids of the sample taken in id order (any block order gives the
    same input, so the same centroids)."""
    order = np.argsort(sample_ids, kind="stable")
    vectors = np.ascontiguousarray(sample[order], dtype=np.float32)
    centroids, _ = balanced_kmeans(vectors, parts, metric=metric, seed=seed)
    if centroids.shape[0] < parts:  # fewer sample rows than partitions: the rest stay empty
        far = np.full((parts - centroids.shape[0], centroids.shape[1]), np.inf, np.float32)
        centroids = np.concatenate([centroids, far])
    return np.ascontiguousarray(centroids, dtype=np.float32)


def _nearest(centroids: np.ndarray, vectors: np.ndarray, metric: IndexMetric) -> np.ndarray:
    dim = centroids.shape[1]
    index = faiss.IndexFlatL2(dim) if metric == "l2" else faiss.IndexFlatIP(dim)
    usable = np.flatnonzero(np.isfinite(centroids).all(axis=1))
    index.add(np.ascontiguousarray(centroids[usable]))
    _, nearest = index.search(vectors, 1)
    return usable[nearest[:, 0]].astype(np.int32)


def spill_dir(staging: str | os.PathLike[str], p: int) -> Path:
    return Path(staging) / f"p-{p:04d}"


def partition_dir(index_dir: str | os.PathLike[str], p: int) -> Path:
    return Path(index_dir) / f"part-{p:04d}"


def assign_block(
    ids: np.ndarray,
    vectors: np.ndarray,
    centroids: np.ndarray,
    metric: IndexMetric,
    staging: str,
) -> tuple[np.ndarray, int]:
    """Each row's partition (nearest centroid), its rows written to ``staging/p-XXXX/`` as
    ``b-<smallest id of the block>.spill`` (ids, vectors). Returns (partitions, bytes written)."""
    if ids.size == 0:
        return np.zeros(0, np.int32), 0
    with delegated(1):
        parts = _nearest(centroids, np.ascontiguousarray(vectors, dtype=np.float32), metric)
    name = f"b-{int(ids.min()):020d}.spill"
    written = 0
    order = np.argsort(parts, kind="stable")
    bounds = np.searchsorted(parts[order], np.arange(centroids.shape[0] + 1))
    for p in range(centroids.shape[0]):
        rows = order[bounds[p] : bounds[p + 1]]
        if rows.size == 0:
            continue
        directory = spill_dir(staging, p)
        directory.mkdir(parents=True, exist_ok=True)
        # written whole then renamed (a retried block never sees half a file), not synced: a
        # spill file lives only as long as the job, and a job that crashed starts again
        tmp = directory / f".{name}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            _write_spill(f, ids[rows], vectors[rows])
        _fs.replace(tmp, directory / name)
        written += int(rows.size * (8 + vectors.shape[1] * 4))
    return parts, written


# A spill file: rows and dim (two little-endian int64), then the ids (int64) and the vectors
# (float32, row-major), raw. Not .npy/.npz: numpy parses their headers with ast.literal_eval,
# which CPython 3.11 can fail when threads parse at once ("SystemError: AST constructor
# recursion depth mismatch", python/cpython#106905), and the partitions' builds read their
# spill files on threads.
def _write_spill(f: Any, ids: np.ndarray, vectors: np.ndarray) -> None:
    f.write(np.array([ids.shape[0], vectors.shape[1]], "<i8").tobytes())
    f.write(np.ascontiguousarray(ids, "<i8").tobytes())
    f.write(np.ascontiguousarray(vectors, "<f4").tobytes())


def _read_spill(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = path.read_bytes()
    rows, dim = (int(x) for x in np.frombuffer(data[:16], "<i8")) if len(data) >= 16 else (-1, 0)
    if rows < 0 or 16 + 8 * rows + 4 * rows * dim != len(data):
        raise CorruptionError(
            f"spill file {path} holds {len(data)} bytes, not the {rows} rows of {dim} its header "
            "says (written whole, then renamed: a file of this job's staging changed under it)"
        )
    ids = np.frombuffer(data, "<i8", rows, offset=16)  # read-only views: concatenated after
    vectors = np.frombuffer(data, "<f4", rows * dim, offset=16 + 8 * rows)
    return ids, vectors.reshape(rows, dim)


def read_spill(staging: str | os.PathLike[str], p: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(ids, vectors, bytes read) of partition ``p``'s spill files, in id order."""
    directory = spill_dir(staging, p)
    files = sorted(directory.glob("b-*.spill")) if directory.is_dir() else []
    ids_parts, vector_parts, read = [], [], 0
    for path in files:
        part_ids, part_vectors = _read_spill(path)
        ids_parts.append(part_ids)
        vector_parts.append(part_vectors)
        read += path.stat().st_size
    if not ids_parts:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32), 0
    ids = np.concatenate(ids_parts)
    vectors = np.concatenate(vector_parts)
    order = np.argsort(ids, kind="stable")
    return ids[order], np.ascontiguousarray(vectors[order]), read


def build_partition(
    p: int,
    *,
    staging: str,
    index_dir: str,
    sorted_ids: np.ndarray,
    dim: int,
    metric: IndexMetric,
    m: int,
    ef_construction: int,
    seed: int,
) -> dict[str, Any]:
    """Build partition ``p``'s HNSW graph from its spill files and save it (atomically) in
    ``index_dir/part-XXXX/``. Labels are the ranks of the ids in ``sorted_ids``; the graph is
    built on one thread, so it is the same bytes on any worker. Returns its report (partition,
    rows, seconds, bytes read, pid)."""
    t0 = time.perf_counter()
    ids, vectors, read = read_spill(staging, p)
    labels = np.searchsorted(sorted_ids, ids).astype(np.int64)
    params = HNSWParams(m=m, ef_construction=ef_construction)
    graph = HNSWGraph(dim=dim, metric=metric, params=params, seed=seed + p, labeled=True)
    if ids.size:
        with delegated(1):  # faiss's inserts on one thread: reproducible links
            graph.add(vectors, labels)
    directory = partition_dir(index_dir, p)
    directory.mkdir(parents=True, exist_ok=True)
    graph.save(str(directory))
    return {
        "partition": p,
        "rows": int(ids.size),
        "seconds": time.perf_counter() - t0,
        "bytes_read": read,
        "pid": os.getpid(),
    }


def write_partitioned_meta(
    index_dir: str | os.PathLike[str],
    *,
    centroids: np.ndarray,
    part_of: np.ndarray,
    dim: int,
    metric: IndexMetric,
    params: dict[str, Any],
) -> None:
    """The files beside the partitions that :meth:`PartitionedIndex.load` reads, in the format
    :meth:`PartitionedIndex.save` writes (``params``: partitions, m, ef_construction, ef,
    seed, train_size)."""
    d = Path(index_dir)
    save_npy(d / "centroids.npy", np.ascontiguousarray(centroids, dtype=np.float32))
    save_npy(d / "part_of.npy", part_of.astype(np.int32))
    write_meta(
        str(d),
        {
            "kind": "partitioned",
            "dim": dim,
            "metric": metric,
            "seed": params["seed"],
            "train_size": params["train_size"],
            "trained": True,
            "engine": "faiss",
            "partitions": params["partitions"],
            "m": params["m"],
            "ef_construction": params["ef_construction"],
            "ef": params["ef"],
        },
    )


class Executor:
    """Runs ``fn(item, **shared)`` for each item, ``workers`` calls at once, the next item
    starting as soon as a call ends (items given largest first end close together).

    A subclass says how its calls start (:meth:`_calls`: a context in which a function starts
    the call of an item and returns its handle), how to wait for the first to end
    (:meth:`_first_done`), what one gave (:meth:`_result`: its value, or its error raised),
    and how to stop those still pending (:meth:`_stop`).
    """

    workers: int = 1

    def map(
        self,
        fn: Callable[..., Any],
        items: Sequence[Any],
        *,
        name: str | None = None,
        on_result: Callable[[Any], None] | None = None,
        **shared: Any,
    ) -> list[Any]:
        """Results in the order of ``items``; the first error is raised. ``on_result(result)``
        runs in the calling thread as each call ends (in the order they end)."""
        results: list[Any] = [None] * len(items)
        for i, value in self._results(fn, items, name, shared, self.workers):
            results[i] = value
            if on_result is not None:
                on_result(value)
        return results

    def stream(
        self, fn: Callable[..., Any], items: Sequence[Any], *, name: str | None = None, **shared
    ) -> Iterator[Any]:
        """The results as the calls end (in any order); twice ``workers`` calls started at
        once, so a worker always has the next item and the caller holds a few results."""
        for _, value in self._results(fn, items, name, shared, 2 * self.workers):
            yield value

    def _results(
        self,
        fn: Callable[..., Any],
        items: Sequence[Any],
        name: str | None,
        shared: dict[str, Any],
        window: int,
    ) -> Iterator[tuple[int, Any]]:
        """(index, result) of each item as its call ends, at most ``window`` pending; those
        pending when this stops early (an error, or the caller closed it) are stopped."""
        with self._calls(fn, name or fn.__name__, shared) as start:
            pending: dict[Any, int] = {}
            next_item = 0
            try:
                while next_item < len(items) or pending:
                    while next_item < len(items) and len(pending) < window:
                        pending[start(items[next_item])] = next_item
                        next_item += 1
                    for handle in self._first_done(list(pending)):
                        yield pending.pop(handle), self._result(handle)
            finally:
                if pending:
                    self._stop(list(pending))

    def _calls(
        self, fn: Callable[..., Any], name: str, shared: dict[str, Any]
    ) -> AbstractContextManager[Callable[[Any], Any]]:
        raise NotImplementedError

    def _first_done(self, pending: list[Any]) -> list[Any]:
        raise NotImplementedError

    def _result(self, handle: Any) -> Any:
        raise NotImplementedError

    def _stop(self, pending: list[Any]) -> None:
        raise NotImplementedError
