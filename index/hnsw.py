"""HNSW (Malkov & Yashunin, 2016) on faiss's ``IndexHNSWFlat``: a layered proximity graph over
faiss's flat storage, the only copy of the vectors.

Parameters carry the paper's names: ``m`` (M, links per node, 8-64), ``ef_construction``
(efConstruction, 100-500) and the search-time ``ef`` (>= k, 10-1000: recall rises with it).
Deletes are tombstones: the node stays a waypoint of the graph but is never returned (a
per-call faiss ``IDSelectorBitmap`` of the live positions).

Why faiss and not hnswlib (measured on 100K x 128 clustered, M=16, efConstruction=200): equal
recall (ef=64: 0.9968 against 0.9980; ef=128: 0.9999 against 0.9990) and equal 2-thread QPS,
a slower single query (86 against 65 us) and build (9.4 against 7.1 s), but faiss takes ef
and the tombstone filter per call and exposes its vectors without a copy, so a collection
reads its vectors by row from the graph's storage instead of holding them a second time
(:class:`~shardwalk.index.store.IndexStore`).

A single query may also run beside inserts (:meth:`HNSWIndex.search_beside`): faiss's search
in a numba kernel (``_hnsw_kernels.py``) over faiss's arrays in place, with room reserved ahead
for them (an insert with room moves nothing) and the nodes it may follow published once linked.

Indexes written by earlier versions (hnswlib's ``graph.bin``) still load: the graph is rebuilt
from the vectors hnswlib stored, with a notice in the log, and the next save writes this format.

Here: the index kinds on HNSW graphs (:class:`OnHNSW`, :class:`HNSWIndex`) and the reading of
the hnswlib format; the graph itself is :mod:`~shardwalk.index.hnsw_graph`, its tombstones and
filters :mod:`~shardwalk.index.hnsw_marks`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from shardwalk.index.base import (
    IndexBase,
    IndexMetric,
    IndexOptions,
    SearchResult,
    empty_result,
    read_meta,
    save_index,
)
from shardwalk.index.hnsw_graph import GRAPH_FILE, HNSWGraph, HNSWOptions, HNSWParams, _grow
from shardwalk.index.hnsw_marks import Admitted, Marks
from shardwalk.index.store import IndexStore, Segment

from shardwalk._threads import ThreadBudget
from shardwalk.errors import FailedPreconditionError

if TYPE_CHECKING:
    from shardwalk.index.base import SearchOptions
    from typing_extensions import Self, Unpack

# (the graph, its parameters and its marks live in hnsw_graph.py and hnsw_marks.py; their
# names stay importable from here)
__all__ = ["Admitted", "HNSWGraph", "HNSWIndex", "HNSWOptions", "HNSWParams", "Marks", "OnHNSW"]

log = logging.getLogger(__name__)

HNSWLIB_FILE = "graph.bin"  # the format before faiss (hnswlib's save_index)


class OnHNSWOptions(IndexOptions, HNSWOptions):
    """The keywords of every index kind on HNSW graphs (:class:`OnHNSW`), besides its own:
    those of every index and the graphs' parameters."""


_HNSW_FIELDS = frozenset(HNSWOptions.__optional_keys__)


def read_hnswlib(directory: str, *, dim: int, metric: IndexMetric) -> tuple[np.ndarray, np.ndarray]:
    """The live labels and their vectors from an index directory written in the hnswlib format
    (``graph.bin`` and ``alive.npy`` by label), to rebuild the graph from."""
    try:
        import hnswlib  # only for directories written before faiss: an optional extra
    except ImportError:
        raise FailedPreconditionError(
            f"{directory}: an HNSW index in the hnswlib format of earlier versions (graph.bin); "
            "reading it needs hnswlib, which is not installed: pip install 'shardwalk[hnswlib]' "
            "(in a clone: pip install -e '.[hnswlib]'), then open the data directory again; it "
            "is rewritten in the current format at its next checkpoint"
        ) from None

    alive = np.load(os.path.join(directory, "alive.npy")).astype(bool)
    labels = np.flatnonzero(alive).astype(np.int64)
    old = hnswlib.Index(space=metric, dim=dim)
    old.load_index(os.path.join(directory, HNSWLIB_FILE))
    vectors = np.empty((labels.size, dim), dtype=np.float32)
    for a in range(0, labels.size, 65536):  # bounded temporary lists
        chunk = labels[a : a + 65536]
        vectors[a : a + chunk.size] = old.get_items(chunk, return_type="numpy")
    del old
    return labels, vectors


def is_hnswlib_dir(directory: str) -> bool:
    return not os.path.exists(os.path.join(directory, GRAPH_FILE)) and os.path.exists(
        os.path.join(directory, HNSWLIB_FILE)
    )


class OnHNSW(IndexBase):
    """An index kind on HNSW graphs: their parameters :attr:`hnsw`, which its constructor
    takes as the keywords ``m``, ``ef_construction`` and ``ef`` (:class:`HNSWOptions`), with
    those of every index (:class:`OnHNSWOptions`)."""

    def __init__(self, **options: Unpack[OnHNSWOptions]) -> None:
        common: dict[str, Any] = {k: v for k, v in options.items() if k not in _HNSW_FIELDS}
        graph: dict[str, Any] = {k: v for k, v in options.items() if k in _HNSW_FIELDS}
        super().__init__(**common)
        self.hnsw = HNSWParams(**graph)

    @property
    def ef(self) -> int:
        """The search-time ef, when a search names none."""
        return self.hnsw.ef

    def params(self) -> dict[str, Any]:
        """The kind's own parameters (its constructor takes each, as :meth:`from_meta` does
        from its ``index.json``), then the graphs'."""
        return {**super().params(), **self.hnsw.options()}

    @classmethod
    def from_meta(
        cls,
        meta: Mapping[str, Any],
        *,
        threads: int | None = None,
        budget: ThreadBudget | None = None,
    ) -> Self:
        """An empty index with the parameters of a saved one's ``index.json``."""
        params = {name: meta[name] for name in (*cls.saved_params, *_HNSW_FIELDS)}
        return cls(
            dim=meta["dim"], metric=meta["metric"], seed=meta["seed"], threads=threads,
            budget=budget, **params,
        )  # fmt: skip


class HNSWIndex(OnHNSW):
    """Approximate nearest neighbours on one HNSW graph (faiss ``IndexHNSWFlat``).

    Parameters
    ----------
    dim, metric, threads, budget
        As for every index (:class:`~shardwalk.index.base.IndexBase`): ``threads`` caps a
        batch insert or a batch query.
    m, ef_construction, ef
        The graph's parameters (:class:`HNSWParams`).
    seed : int, default 0
        Seed of the level generator. Builds are reproducible with ``threads=1`` only: with
        more threads inserts run in parallel and may link in a different order each run.
    capacity : int, optional
        Ignored (faiss grows its storage as needed); accepted for compatibility.

    The vectors are stored once, in faiss's storage; :attr:`store` reads them by label without
    a copy (a collection uses it as its vectors by row). Labels the caller gives in order
    0, 1, 2, ... (a collection's rows) are the positions themselves; any others are mapped.

    Thread safety: searches (with any ``ef``) and ``get`` may run from many threads at once;
    ``add`` needs the caller to exclude every other call but ``delete`` and
    :meth:`search_beside` (faiss's inserts are not safe alongside its own searches, and they
    move the storage :attr:`store` reads). ``delete`` may run beside searches and adds
    (:attr:`deletes_beside_searches`): its tombstones are a new :class:`Marks` (a search keeps
    the one it started with; :meth:`marks` gives the current one, which a search may be
    given). :meth:`search_beside` may run beside inserts that fit the room (:meth:`reserve`)
    and beside deletes.
    """

    kind = "hnsw"
    deletes_beside_searches = True

    def __init__(self, *, capacity: int | None = None, **options: Unpack[OnHNSWOptions]) -> None:
        super().__init__(**options)
        self._graph = HNSWGraph(dim=self.dim, metric=self.metric, params=self.hnsw, seed=self.seed)
        # label -> position (-1: none), once some label is not its position; None before
        self._position: np.ndarray | None = None
        self._labelling = threading.Lock()  # _position changes (deletes run beside adds)
        self.store = IndexStore(self.dim, self._segments)

    # -- labels and positions ---------------------------------------------------------------
    def _positions(self, labels: np.ndarray) -> np.ndarray:
        return labels if self._position is None else self._position[labels]

    def _segments(self, rows: np.ndarray) -> list[Segment]:
        return [(self._graph.vectors(), self._positions(rows), None)]

    def _map(self, labels: np.ndarray, positions: np.ndarray) -> None:
        """Record where ``labels`` went, switching to a map when they are not the positions."""
        if self._position is None:
            if (
                labels.tolist() == positions.tolist()  # (~1 us on a few, np's call ~10)
                if labels.size <= 64
                else np.array_equal(labels, positions)
            ):
                return
            start = int(positions[0])  # every earlier label is its position
            self._position = np.full(start, -1, dtype=np.int64)
            self._position[:start] = np.arange(start)
            self._graph.labels = np.arange(start, dtype=np.int64)
        end = int(labels.max()) + 1
        self._position = _grow(self._position, end, -1)
        self._position[labels] = positions
        graph_labels = self._graph.labels
        assert graph_labels is not None  # set with the map (above, or by load)
        self._graph.labels = _grow(graph_labels, int(positions[-1]) + 1, -1)
        self._graph.labels[positions] = labels

    # -- writes -----------------------------------------------------------------------------
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
        self.delete(labels)  # a label added again: its old vector is a tombstone
        want = min(labels.size, threads or self.threads or self.budget.threads)
        with self.budget.take(want):  # faiss's OpenMP team on this thread follows the grant
            positions = self._graph.add(vectors, labels if self._graph.labels is not None else None)
        with self._labelling:
            self._map(labels, positions)

    def room(self, n: int) -> bool:
        """Whether ``n`` more vectors fit the storage where it is: an :meth:`add` of at most
        that many (of new labels) then leaves every stored vector where it was, so reads of
        :attr:`store` (of labels added before it) may run beside it (searches may not: faiss
        links the new nodes into the graph they traverse)."""
        return self._graph.room(n)

    def reserve(self, n: int) -> None:
        """Room for ``n`` more vectors (see :meth:`room`); moves the storage, so the caller
        excludes every read of :attr:`store` meanwhile."""
        self._graph.reserve(n)

    def delete(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        with self._labelling:
            if self._position is None:
                labels = labels[(labels >= 0) & (labels < self._graph.slots)]
                if labels.size:  # (an add's new labels: none)
                    self._graph.delete(labels)
                return
            labels = labels[(labels >= 0) & (labels < self._position.shape[0])]
            positions = self._position[labels]
            self._graph.delete(positions[positions >= 0])
            self._position[labels] = -1

    def marks(self) -> Marks:
        """The current tombstones (for :meth:`search`'s ``marks``; see :class:`Marks`)."""
        return self._graph.marks()

    # -- reads ------------------------------------------------------------------------------
    @property
    def filters(self) -> bool:
        """Whether :meth:`admit` can filter by label: the labels are the positions (a
        collection's rows, given in order), so a bitmap by label is one by position."""
        return self._position is None

    def admit(self, bits: np.ndarray) -> Admitted:
        """A filter admitting the labels set in ``bits`` (packed little-endian by label; it
        may cover labels past the graph, which no search meets) for :meth:`search`'s
        ``admitted`` (needs :attr:`filters`). ``bits`` must stay unchanged while a search
        uses it (faiss reads it in place)."""
        if not self.filters:
            raise ValueError("this graph's labels are not its positions: no filter by label")
        return Admitted(bits)

    def _search(self, queries: np.ndarray, k: int, options: SearchOptions) -> SearchResult:
        """Approximate top-k. ``ef`` overrides the index's search-time ef for this call only
        (faiss takes it per call: concurrent searches with other values run at once);
        ``threads`` caps the threads of a batch. ``admitted``: a filter from :meth:`admit`
        and the live labels it admits that the graph holds (ascending): only those come back
        (searched in the graph with the filter, then deeper, then exactly over those labels:
        exactly min(k, len(labels)) per query). ``marks``: the tombstones to read (from
        :meth:`marks`; default the current ones)."""
        n = queries.shape[0]
        admitted, marks = options.get("admitted"), options.get("marks")
        marks = self._graph.marks() if marks is None else marks
        if marks.live == 0 if admitted is None else len(self._graph) == 0:
            return empty_result(n, k)
        ef = options.get("ef") or self.ef
        if n == 1:  # the caller's thread: faiss starts no team for one query, nothing to take
            positions, distances = self._graph.search(queries, k, ef, admitted, marks)
        else:
            want = min(n, options.get("threads") or self.threads or self.budget.threads)
            with self.budget.take(want):
                positions, distances = self._graph.search(queries, k, ef, admitted, marks)
        labels = self._graph.labels
        if labels is not None:
            positions = np.where(positions >= 0, labels[np.maximum(positions, 0)], -1)
        return SearchResult(ids=positions, distances=distances)

    def search_beside(
        self,
        queries: np.ndarray,
        k: int,
        *,
        limit: int,
        ef: int | None = None,
        pending: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        marks: Marks | None = None,
    ) -> SearchResult | None:
        """One query's approximate top-k among the labels below ``limit``, on the calling
        thread, beside inserts: it may run while :meth:`add` inserts vectors that fit the
        room (:meth:`room`), and while :meth:`delete` tombstones labels (one deleted
        meanwhile may or may not come back); the caller excludes only :meth:`reserve` and
        inserts without room. Gives faiss's answer on a graph at rest (the same graph
        search, in a numba kernel over faiss's arrays). None when it cannot answer alone (a
        batch, labels that are not the positions, a graph the beam comes back short from
        even searched deeper): the caller then searches with :meth:`search` under its
        exclusion of inserts. ``pending``: rows from ``limit`` on that the graph does not
        hold, merged into the answer (see :meth:`HNSWGraph.search_beside`: the ids are then
        ``pending``'s labels). ``marks``: the tombstones to read (default: the current ones;
        a collection passes those of the view it merges with)."""
        if queries.shape[0] != 1 or self._position is not None or self._graph.labels is not None:
            return None
        found = self._graph.search_beside(queries, k, ef or self.ef, limit, pending, marks)
        if found is None:
            return None
        return SearchResult(ids=found[0], distances=found[1])

    def get(self, labels: np.ndarray) -> np.ndarray:
        return self.store.take(np.asarray(labels, dtype=np.int64))

    def label_vectors(self) -> np.ndarray | None:
        """faiss's storage by label (row i: label i's vector, no copy), when the labels are
        the positions (a collection's rows, given in order), else None. Valid while the
        storage stays where it is (see :meth:`room`): an :meth:`add` with room leaves every
        row before it in place."""
        return self._graph.vectors() if self._position is None else None

    def __len__(self) -> int:
        return len(self._graph)

    def stats(self) -> dict[str, Any]:
        slots = self._graph.slots
        extra = 0 if self._position is None else self._position.nbytes
        return {
            "kind": self.kind,
            "live": len(self._graph),
            "slots": slots,
            "deleted": slots - len(self._graph),
            **self.params(),
            "memory_bytes": self._graph.memory_bytes() + extra,
        }

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        self._graph.save(directory)
        save_index(directory, self, {"engine": "faiss", **self.params()})

    @classmethod
    def load(
        cls, directory: str, *, threads: int | None = None, budget: ThreadBudget | None = None
    ) -> HNSWIndex:
        meta = read_meta(directory, cls.kind)
        index = cls.from_meta(meta, threads=threads, budget=budget)
        if is_hnswlib_dir(directory):
            labels, vectors = read_hnswlib(directory, dim=index.dim, metric=index.metric)
            log.warning(
                "%s: an HNSW index in the hnswlib format of earlier versions; rebuilding its "
                "graph on faiss from the %d vectors it stored (the next checkpoint writes the "
                "new format)",
                directory,
                labels.size,
            )
            index.add(labels, vectors)
            index.upgraded = True  # tells the collection to write the new format
            return index
        index._graph = HNSWGraph.load(directory, metric=index.metric, seed=index.seed)
        graph_labels = index._graph.labels
        if graph_labels is not None:
            alive = index._graph.alive()
            live = np.flatnonzero(alive)
            index._position = np.full(int(graph_labels.max(initial=-1)) + 1, -1, dtype=np.int64)
            index._position[graph_labels[live]] = live
        return index
