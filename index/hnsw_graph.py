"""One HNSW graph (Malkov & Yashunin, 2016) on faiss's ``IndexHNSWFlat``, addressed by position:
its parameters in the paper's names (:class:`HNSWParams`), its tombstones (:class:`Marks`), its
searches (faiss's, and :meth:`HNSWGraph.search_beside`: faiss's search in a numba kernel,
``_hnsw_kernels.py``, over faiss's arrays in place, beside inserts), the room reserved ahead
for inserts and its files. The index kinds on such graphs are in :mod:`~shardwalk.index.hnsw`.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, TypedDict

import faiss
import numpy as np
from shardwalk.index._hnsw_kernels import hnsw_search_pending
from shardwalk.index._kernels import scan_rows
from shardwalk.index.base import IndexMetric
from shardwalk.index.hnsw_marks import _BIT, Admitted, Marks

from shardwalk._files import atomic_write, atomic_write_with

__all__ = ["HNSWGraph", "HNSWOptions", "HNSWParams"]

GRAPH_FILE = "graph.faiss"

_visited = threading.local()  # each thread's visited table for search_beside (see _visit)
_ESCALATIONS = 2  # deeper searches (ef x4 each) before search_beside leaves a query short
_NO_BITS = np.zeros(0, dtype=np.uint8)
# search_beside's pending rows when none are (no labels: the positions are the ids)
_NO_PENDING = (np.zeros((0, 0), np.float32), np.zeros(0, bool), np.zeros(0, np.int64))


def _visit(count: int) -> tuple[np.ndarray, int]:
    """This thread's visited table (at least ``count`` long) and a mark none of its entries
    holds (faiss's ``VisitedTable``: cleared once every 254 searches, not every search)."""
    table = getattr(_visited, "table", None)
    mark = getattr(_visited, "mark", 0) + 1
    if table is None or table.size < count:
        table = np.zeros(max(count, 1024) + max(count, 1024) // 4, dtype=np.uint8)
        mark = 1
    elif mark == 255:
        table[:] = 0
        mark = 1
    _visited.table, _visited.mark = table, mark
    return table, mark


def _grow(array: np.ndarray, size: int, fill: Any) -> np.ndarray:
    """``array`` with room for ``size`` entries (doubling: amortised O(1) appends)."""
    if size <= array.shape[0]:
        return array
    grown = np.full(max(size, 2 * array.shape[0], 64), fill, dtype=array.dtype)
    grown[: array.shape[0]] = array
    return grown


@dataclass(frozen=True, kw_only=True)
class HNSWParams:
    """An HNSW graph's parameters, in the paper's names: those of an
    :class:`~shardwalk.index.HNSWIndex`, of each partition of a
    :class:`~shardwalk.index.PartitionedIndex`, and of a :class:`~shardwalk.index.SpannIndex`'s
    centroid graph (whose constructors take them as the keywords of :class:`HNSWOptions`).

    Attributes
    ----------
    m : int, default 16
        M in the paper: bidirectional links per node on upper layers (2*M on layer 0).
        8-64; larger is more accurate and uses more memory.
    ef_construction : int, default 200
        efConstruction in the paper: candidate list size while inserting. 100-500.
    ef : int, default 64
        ef in the paper: candidate list size while searching, raised to k when smaller.
    """

    m: int = 16
    ef_construction: int = 200
    ef: int = 64

    def options(self) -> HNSWOptions:
        """The parameters as keywords (in this order in every ``index.json`` and ``stats``)."""
        return HNSWOptions(m=self.m, ef_construction=self.ef_construction, ef=self.ef)


class HNSWOptions(TypedDict, total=False):
    """:class:`HNSWParams` as keyword arguments, each optional."""

    m: int
    ef_construction: int
    ef: int


class HNSWGraph:
    """One faiss ``IndexHNSWFlat`` addressed by position (0, 1, 2, ... in insertion order),
    with tombstones, and optionally the label of each position.

    :meth:`vectors` is faiss's storage itself, viewed without a copy: valid until the next
    :meth:`add` (faiss reallocates as it grows), so callers look it up again after every write
    and never keep it across one.
    """

    def __init__(
        self,
        *,
        dim: int,
        metric: IndexMetric,
        params: HNSWParams | None = None,
        seed: int = 0,
        labeled: bool = False,
        index: Any = None,
    ) -> None:
        self.dim = dim
        self.metric: IndexMetric = metric
        if index is None:
            params = params or HNSWParams()
            kind = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
            index = faiss.IndexHNSWFlat(dim, params.m, kind)
            index.hnsw.efConstruction = params.ef_construction
        # the level generator (faiss seeds it with 12345 whatever the index): ours (faiss's
        # generated stubs lack RandomGenerator, SearchParametersHNSW, and IndexFlat's get_xb
        # and codes)
        index.hnsw.rng = faiss.RandomGenerator(seed)  # type: ignore[attr-defined]
        self._index = index
        self._storage: Any = faiss.downcast_index(index.storage)
        # vectors the storage holds without moving (faiss grows a std::vector; see reserve),
        # and nodes hnsw.offsets and hnsw.levels hold
        self._capacity = int(index.ntotal)
        hnsw = index.hnsw
        self._cum = faiss.vector_to_array(hnsw.cum_nneighbor_per_level).astype(np.int32)
        # neighbour slots hnsw.neighbors holds without moving
        self._link_capacity = int(hnsw.neighbors.size())
        # what search_beside may follow: (entry point, top level, nodes linked), replaced
        # once an insert has linked its nodes
        self._state = (int(hnsw.entry_point), int(hnsw.max_level), int(index.ntotal))
        # search_beside's views of faiss's arrays as long as their room (None: to be made)
        self._arrays: tuple[np.ndarray, ...] | None = None
        self._alive = np.zeros(0, dtype=bool)  # by position (room to grow past ntotal)
        self._live = 0
        self.labels: np.ndarray | None = np.zeros(0, dtype=np.int64) if labeled else None
        self._marks = Marks(None, 0)  # the tombstones searches read (see Marks)
        # held while the bookkeeping above changes (liveness, labels, marks): deletes run
        # beside searches and beside faiss's part of an insert, not beside its bookkeeping
        self._marking = threading.Lock()

    def __len__(self) -> int:
        return self._live

    @property
    def slots(self) -> int:
        """Positions used, live or tombstones."""
        return int(self._index.ntotal)

    # vectors()'s view, kept until an add or a reserve changes the storage (looking it up
    # through faiss costs ~3 us, a tenth of a scoped search at rest)
    _view: np.ndarray | None = None

    def vectors(self) -> np.ndarray:
        """Every position's vector: faiss's storage, no copy (valid until the next add)."""
        view = self._view
        if view is None:
            n = self._index.ntotal
            if n == 0:
                return np.zeros((0, self.dim), dtype=np.float32)
            view = faiss.rev_swig_ptr(self._storage.get_xb(), n * self.dim).reshape(n, self.dim)
            self._view = view
        return view

    def alive(self) -> np.ndarray:
        """Liveness by position (a view)."""
        return self._alive[: self.slots]

    def _links(self, n: int) -> int:
        """Neighbour slots ``n`` more nodes take, at most (but for odds below 1e-12 an
        insert, for M >= 4): faiss draws each node's level as it inserts it (level l with
        odds ~M^-l), and one of level l takes ``cum[l + 1]`` = 2M + l*M slots (the mean:
        2M + M/(M-1)). Room for two levels a node (4M) and for one node at the top level
        exceeds that only if the n levels drawn add up to more than 2n + 2 + the top level."""
        cum = self._cum
        per_node = int(cum[1] + 2 * (cum[2] - cum[1])) if cum.size > 2 else int(cum[-1])
        return n * per_node + int(cum[-1])

    def room(self, n: int) -> bool:
        """Whether ``n`` more vectors fit where the graph is: an :meth:`add` of at most that
        many then moves no stored vector and none of faiss's graph arrays, so :meth:`vectors`
        taken before it (its positions held before it) stays valid and unchanged while it
        runs, and :meth:`search_beside` may run beside it."""
        return (
            self.slots + n <= self._capacity
            and int(self._index.hnsw.neighbors.size()) + self._links(n) <= self._link_capacity
        )

    def reserve(self, n: int) -> None:
        """Room for ``n`` more vectors, and a quarter more than the graph holds (amortised
        O(1) copies a vector; the room is zero-filled, so resident: at most a quarter of the
        vectors' bytes more), in the storage and in faiss's graph arrays (neighbour lists:
        as many as :meth:`room` asks for the nodes to come, about twice their mean). Moves
        them: no reader of :meth:`vectors` nor :meth:`search_beside` may run meanwhile."""
        if self.room(n):
            return
        hnsw = self._index.hnsw
        capacity = max(self.slots + n, self.slots + self.slots // 4, 1024)
        link_capacity = int(hnsw.neighbors.size()) + self._links(capacity - self.slots)
        self._view = None
        self._arrays = None
        # std::vectors (faiss's MaybeOwnedVector for the codes and links): resizing one down
        # keeps its capacity
        codes = self._storage.codes
        size = self.slots * self.dim * 4
        codes.resize(capacity * self.dim * 4)
        codes.resize(size)
        for vector, room in (
            (hnsw.neighbors, link_capacity),
            (hnsw.offsets, capacity + 1),
            (hnsw.levels, capacity),
        ):
            used = int(vector.size())
            vector.resize(room)
            vector.resize(used)
        self._capacity = capacity
        self._link_capacity = link_capacity

    def add(self, vectors: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Append and link ``vectors`` (float32, C-contiguous) with faiss's OpenMP threads of
        the calling thread (the caller's grant); returns their positions. The caller excludes
        every search but :meth:`search_beside` (faiss links the new nodes into the graph its
        own search traverses); deletes may run beside it."""
        start, n = self.slots, vectors.shape[0]
        self._view = None  # (readers beside an add with room keep reading the old view)
        moves = not self.room(n)
        if moves:  # faiss grows its arrays by itself: search_beside's views go stale
            self._arrays = None
        self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self._view = None
        hnsw = self._index.hnsw
        # the new nodes are linked: search_beside may follow them from now on
        self._state = (int(hnsw.entry_point), int(hnsw.max_level), int(self._index.ntotal))
        if moves:  # (it grew by itself: room as it is now)
            self._arrays = None
            self._capacity = max(self._capacity, start + n)
            self._link_capacity = max(self._link_capacity, int(hnsw.neighbors.size()))
        with self._marking:
            self._alive = _grow(self._alive, start + n, False)
            self._alive[start : start + n] = True
            self._live += n
            if self.labels is not None:
                assert labels is not None
                self.labels = _grow(self.labels, start + n, -1)
                self.labels[start : start + n] = labels
            marks = self._marks
            if marks.bits is None:
                self._marks = Marks(None, self._live)
            elif marks.bits.size * 8 >= start + n:  # room: their bits set in place (no
                positions = np.arange(start, start + n, dtype=np.int64)  # search runs now)
                np.bitwise_or.at(marks.bits, positions >> 3, _BIT[positions & 7])
                marks.live = self._live
            else:
                self._marks = Marks(np.packbits(self._alive, bitorder="little"), self._live)
        return np.arange(start, start + n, dtype=np.int64)

    def delete(self, positions: np.ndarray) -> int:
        """Tombstone live ``positions``; returns how many were live. Safe beside searches
        (which keep the marks they started with) and beside faiss's part of an :meth:`add`:
        the new marks are a copy (see :class:`Marks`)."""
        with self._marking:
            # (a position an add beside this one is still linking is not live yet)
            positions = positions[positions < self._alive.size]
            positions = positions[self._alive[positions]]
            if not positions.size:
                return 0
            self._alive[positions] = False
            self._live -= positions.size
            bits = self._marks.bits
            if bits is None:  # as long as the room for positions: adds set bits in place
                bits = np.packbits(self._alive, bitorder="little")
            else:
                bits = bits.copy()
                np.bitwise_and.at(bits, positions >> 3, ~_BIT[positions & 7])
            self._marks = Marks(bits, self._live)
        return int(positions.size)

    def marks(self) -> Marks:
        """The tombstones a search started now reads (see :class:`Marks`)."""
        return self._marks

    def search(
        self,
        queries: np.ndarray,
        k: int,
        ef: int,
        admitted: tuple[Admitted, np.ndarray] | None = None,
        marks: Marks | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k live positions per query (n, k) padded -1, and distances padded +inf, with
        faiss's OpenMP threads of the calling thread (one query: the calling thread only).

        ``admitted``: only these positions (a filter and the live positions it admits,
        ascending; every one live): faiss traverses every node and admits only these to its
        results. ``ef`` is this call's (raised to k). A query the graph does not fill
        (tombstones or a narrow filter can crowd the beam) is searched again deeper (ef x4
        each time, up to the graph's size; deleted nodes stay in the graph as waypoints, so
        it stays connected); only a query still short after that is scored exactly, over the
        live (admitted) positions in place (no copy of the vectors). Never fewer than
        min(k, live (admitted)). ``marks``: the tombstones to read (default: the current).
        """
        n = queries.shape[0]
        marks = self._marks if marks is None else marks
        kk = min(k, marks.live if admitted is None else int(admitted[1].size))
        if n == 0 or kk == 0:
            return np.full((n, k), -1, dtype=np.int64), np.full((n, k), np.inf, dtype=np.float32)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        params = marks.search_params if admitted is None else admitted[0].search_params
        ef = max(ef, kk)
        found, raw = self._search(queries, kk, params(ef))
        short = np.flatnonzero(found[:, kk - 1] < 0)
        while short.size and ef < self.slots:
            ef = min(4 * ef, self.slots)
            found[short], raw[short] = self._search(queries[short], kk, params(ef))
            short = short[found[short, kk - 1] < 0]
        if short.size:
            live = marks.live_positions(self.slots) if admitted is None else admitted[1]
            local, distances = scan_rows(
                queries[short], self.vectors(), live, kk, self.metric == "ip"
            )
            found[short] = np.where(local >= 0, live[np.maximum(local, 0)], -1)
            raw[short] = distances
        if kk == k:
            return found, raw
        positions = np.full((n, k), -1, dtype=np.int64)
        distances = np.full((n, k), np.inf, dtype=np.float32)
        positions[:, :kk], distances[:, :kk] = found, raw
        return positions, distances

    def _graph_arrays(self) -> tuple[np.ndarray, ...]:
        """Views (no copy) of faiss's storage and graph arrays as long as their room, so they
        cover the nodes inserts add in it: valid until the room is made again."""
        arrays = self._arrays
        if arrays is None:
            hnsw = self._index.hnsw
            capacity, dim = self._capacity, self.dim
            if capacity == 0:
                vectors = np.zeros((0, dim), dtype=np.float32)
            else:
                vectors = faiss.rev_swig_ptr(self._storage.get_xb(), capacity * dim)
                vectors = vectors.reshape(capacity, dim)
            neighbors = faiss.rev_swig_ptr(hnsw.neighbors.data(), max(self._link_capacity, 1))
            offsets = faiss.rev_swig_ptr(hnsw.offsets.data(), capacity + 1)
            if capacity == 0:
                levels = np.zeros(0, dtype=np.int32)
            else:
                levels = faiss.rev_swig_ptr(hnsw.levels.data(), capacity)
            arrays = self._arrays = (vectors, neighbors[: self._link_capacity], offsets, levels)
        return arrays

    def search_beside(
        self,
        queries: np.ndarray,
        k: int,
        ef: int,
        limit: int,
        pending: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        marks: Marks | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """One query's top-k live positions below ``limit`` (ids (1, k) padded -1, distances
        padded +inf) by faiss's HNSW search in a numba kernel over faiss's arrays in place
        (:mod:`~shardwalk.index._hnsw_kernels`), which may run beside an :meth:`add` with
        :meth:`room` (the caller excludes only :meth:`reserve` and adds without room, which
        move the arrays). It follows the nodes linked when it starts (an add publishes its
        nodes once they are linked), returns only positions below ``limit`` live when it
        reads them (a delete meanwhile may or may not be seen), and gives the ids faiss's
        search gives on a graph at rest. Searched deeper (ef x4, twice) when the graph leaves
        it short (tombstones or positions past ``limit`` crowding the beam); None if still
        short (the caller then searches under its locks).

        ``pending``: ``(delta, alive, labels)``, the vectors of rows ``limit``, ``limit + 1``,
        ... not in the graph, which of them are live, and the label of every row: the answer
        is then the graph's merged with those rows (scored exactly) as labels, in the same
        kernel call."""
        entry, max_level, count = self._state
        query = queries if queries.dtype == np.float32 else queries.astype(np.float32)
        query = np.ascontiguousarray(query.reshape(1, -1))
        if count < limit:  # (a caller's rows past the graph: not its to answer)
            return None
        if limit <= 0 or entry < 0:
            limit = 0
        # (None: no tombstone, every position below limit is live; else the bitmap of the
        # marks given or taken now: a delete meanwhile swaps in a copy, see Marks)
        bits = (self._marks if marks is None else marks).bits
        want = k if bits is not None else min(k, limit)
        graph = (*self._graph_arrays(), self._cum, entry, max_level, count, self.metric == "ip")
        admit = (limit, _NO_BITS if bits is None else bits, bits is not None)
        ef = max(ef, want)
        for _ in range(_ESCALATIONS + 1):
            ids, distances, whole = hnsw_search_pending(
                query, (graph, admit, _visit(count), ef), k, want, pending or _NO_PENDING
            )
            if whole:
                return ids, distances
            if ef >= count:
                break
            ef = min(4 * ef, count)
        return None

    def _search(self, queries: np.ndarray, k: int, params: Any) -> tuple[np.ndarray, np.ndarray]:
        """faiss's top-k positions and our distances (``k`` <= those admitted, ``params``:
        ef and the filter)."""
        n = queries.shape[0]
        found = np.empty((n, k), dtype=np.int64)
        raw = np.empty((n, k), dtype=np.float32)
        self._index.search_c(
            n, faiss.swig_ptr(queries), k, faiss.swig_ptr(raw), faiss.swig_ptr(found), params
        )
        if self.metric == "ip":  # faiss gives <q, x>; ours is 1 - <q, x>
            np.subtract(1.0, raw, out=raw)
        return found, raw

    def memory_bytes(self) -> int:
        """faiss's vectors and graph (links, offsets, levels), plus our bookkeeping."""
        hnsw = self._index.hnsw
        graph = hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8 + hnsw.levels.size() * 4
        extra = self._alive.nbytes + (0 if self.labels is None else self.labels.nbytes)
        return int(self.slots * self.dim * 4 + graph + extra)

    def save(self, directory: str) -> None:
        atomic_write_with(
            os.path.join(directory, GRAPH_FILE), lambda path: faiss.write_index(self._index, path)
        )
        with atomic_write(os.path.join(directory, "alive.npy")) as f:
            np.save(f, self.alive())
        if self.labels is not None:
            with atomic_write(os.path.join(directory, "labels.npy")) as f:
                np.save(f, self.labels[: self.slots])

    @classmethod
    def load(cls, directory: str, *, metric: IndexMetric, seed: int) -> HNSWGraph:
        index = faiss.read_index(os.path.join(directory, GRAPH_FILE))
        labels_path = os.path.join(directory, "labels.npy")
        labeled = os.path.exists(labels_path)
        graph = cls(dim=index.d, metric=metric, seed=seed, labeled=labeled, index=index)
        graph._alive = np.load(os.path.join(directory, "alive.npy")).astype(bool)
        graph._live = int(np.count_nonzero(graph._alive))
        if labeled:
            graph.labels = np.load(labels_path).astype(np.int64)
        bits = None
        if graph._live < graph.slots:
            bits = np.packbits(graph._alive, bitorder="little")
        graph._marks = Marks(bits, graph._live)
        return graph
