"""Exact search: faiss's flat kernels (BLAS for batches, SIMD scans for single queries).

Labels index the storage directly (label = position), which is what a collection's row numbers
are: dense and append-only. Deleted labels stay in storage and are masked out of every search
with a bitmap selector, so a search never returns them and never returns fewer than the live
matches.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
from shardwalk.index.base import (
    IndexBase,
    IndexMetric,
    SearchResult,
    empty_result,
    read_meta,
    write_meta,
)
from shardwalk.index.store import IndexStore, Segment

from shardwalk._files import atomic_write
from shardwalk._threads import ThreadBudget
from shardwalk.errors import CorruptionError

if TYPE_CHECKING:
    from shardwalk.index.base import SearchOptions

__all__ = ["FlatIndex", "exact_search"]


def _to_distances(metric: IndexMetric, labels: np.ndarray, raw: np.ndarray) -> SearchResult:
    """faiss output -> our convention (l2: squared; ip: 1 - <q,x>; padding -1/+inf)."""
    distances = raw.astype(np.float32, copy=False)
    if metric == "ip":
        distances = (1.0 - distances).astype(np.float32, copy=False)
    distances[labels < 0] = np.inf
    return SearchResult(ids=labels.astype(np.int64, copy=False), distances=distances)


def _bitmap_params(mask: np.ndarray) -> tuple[faiss.SearchParameters, np.ndarray]:
    """Search parameters that admit only positions where ``mask`` is True.

    The packed bitmap is returned too: faiss keeps a raw pointer, so the caller holds it alive.
    """
    bits = np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(mask.shape[0], faiss.swig_ptr(bits))
    params = faiss.SearchParameters()  # (faiss's stubs do not declare its keyword arguments)
    params.sel = selector
    return params, bits


def exact_search(
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: IndexMetric,
    mask: np.ndarray | None = None,
) -> SearchResult:
    """Exact top-k of ``queries`` over the rows of ``vectors`` (optionally only rows in ``mask``).

    Returns positions into ``vectors`` as ids. Used as ground truth and by the flat index.
    """
    dim = vectors.shape[1]
    index = faiss.IndexFlatL2(dim) if metric == "l2" else faiss.IndexFlatIP(dim)
    index.add(vectors)
    return _search_faiss(index, metric, queries, k, mask)


def _search_faiss(
    index: faiss.IndexFlat,
    metric: IndexMetric,
    queries: np.ndarray,
    k: int,
    mask: np.ndarray | None,
) -> SearchResult:
    if queries.shape[0] == 0 or index.ntotal == 0:
        return empty_result(queries.shape[0], k)
    kk = min(k, index.ntotal)
    if mask is None or mask.all():
        raw, labels = index.search(queries, kk)
    else:
        params, _bits = _bitmap_params(mask)
        raw, labels = index.search(queries, kk, params=params)
    result = _to_distances(metric, labels, raw)
    if kk < k:
        result = SearchResult(
            ids=np.pad(result.ids, ((0, 0), (0, k - kk)), constant_values=-1),
            distances=np.pad(result.distances, ((0, 0), (0, k - kk)), constant_values=np.inf),
        )
    return result


class FlatIndex(IndexBase):
    """Exact nearest-neighbour search over every live vector.

    Parameters
    ----------
    dim, metric, budget
        As for every index (:class:`~shardwalk.index.base.IndexBase`): a batch search takes
        up to one thread per query.

    The vectors are stored once, in faiss's storage; :attr:`store` reads them by label without
    a copy (a collection uses it as its vectors by row).

    Thread safety: searches and ``get`` may run from many threads at once (faiss's searches
    are read-only); ``add`` and ``delete`` need the caller to exclude every other call.
    """

    kind = "flat"
    exact = True

    def __init__(
        self, *, dim: int, metric: IndexMetric, budget: ThreadBudget | None = None
    ) -> None:
        super().__init__(dim=dim, metric=metric, budget=budget)
        self._index = faiss.IndexFlatL2(dim) if metric == "l2" else faiss.IndexFlatIP(dim)
        self._alive = np.zeros(0, dtype=bool)
        self._live = 0
        self.store = IndexStore(dim, self._segments)

    def _segments(self, rows: np.ndarray) -> list[Segment]:
        return [(self._storage(), rows, None)]

    # -- storage by position -------------------------------------------------------------
    def _storage(self) -> np.ndarray:
        n = self._index.ntotal
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        flat = faiss.rev_swig_ptr(self._index.get_xb(), n * self.dim)
        return np.asarray(flat).reshape(n, self.dim)

    def _insert(self, labels: np.ndarray, vectors: np.ndarray, groups: np.ndarray | None) -> None:
        start = self._index.ntotal
        # Labels are positions: they must continue the storage without gaps. Gaps are filled
        # with dead zero rows so a caller with sparse labels still gets a correct index.
        end = int(labels.max()) + 1
        if end > start:
            self._index.add(np.zeros((end - start, self.dim), dtype=np.float32))
            self._alive = np.concatenate([self._alive, np.zeros(end - start, dtype=bool)])
        storage = self._storage()
        storage[labels] = vectors
        self._live += int(np.count_nonzero(~self._alive[labels]))
        self._alive[labels] = True

    def delete(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        labels = labels[(labels >= 0) & (labels < self._alive.shape[0])]
        self._live -= int(np.count_nonzero(self._alive[labels]))
        self._alive[labels] = False

    def _search(self, queries: np.ndarray, k: int, options: SearchOptions) -> SearchResult:
        """Exact top-k; ``mask`` (bool per label) further restricts the candidates."""
        mask = options.get("mask")
        allowed = self._alive if mask is None else (self._alive & mask[: self._alive.shape[0]])
        with self.budget.take(queries.shape[0]):  # faiss's OpenMP team (and BLAS) follow it
            return _search_faiss(self._index, self.metric, queries, k, allowed)

    def get(self, labels: np.ndarray) -> np.ndarray:
        return self._storage()[np.asarray(labels, dtype=np.int64)].copy()

    def __len__(self) -> int:
        return self._live

    def stats(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "live": self._live,
            "slots": int(self._index.ntotal),
            "memory_bytes": int(self._index.ntotal) * self.dim * 4 + self._alive.nbytes,
        }

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        with atomic_write(os.path.join(directory, "vectors.npy")) as f:
            np.save(f, self._storage())
        with atomic_write(os.path.join(directory, "alive.npy")) as f:
            np.save(f, self._alive)
        write_meta(directory, {"kind": self.kind, "dim": self.dim, "metric": self.metric})

    @classmethod
    def load(cls, directory: str, *, budget: ThreadBudget | None = None) -> FlatIndex:
        meta = read_meta(directory, cls.kind)
        index = cls(dim=meta["dim"], metric=meta["metric"], budget=budget)
        vectors = np.load(os.path.join(directory, "vectors.npy"))
        alive = np.load(os.path.join(directory, "alive.npy"))
        if vectors.shape != (alive.shape[0], index.dim):
            raise CorruptionError(
                f"flat index in {directory!r}: vectors {vectors.shape} do not match "
                f"{alive.shape[0]} slots of dimension {index.dim}"
            )
        if vectors.shape[0]:
            index._index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        index._alive = alive.astype(bool)
        index._live = int(np.count_nonzero(alive))
        return index
