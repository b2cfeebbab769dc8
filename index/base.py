"""The index protocol every vector index implements, and its result type.

Indexes work on *labels*: non-negative int64 numbers chosen by the caller (a collection passes
its row numbers). Inputs are trusted here: the collection validates once at its boundary
(dimension, dtype, contiguity, finite values), so the hot path does no checks twice.

Distances, smaller is closer, padded with +inf:
- ``l2``: squared Euclidean distance.
- ``ip``: ``1 - <q, x>`` (hnswlib's convention; faiss's inner products are converted). Cosine
  is ``ip`` over unit vectors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from shardwalk import _files as files
from shardwalk._threads import ThreadBudget, default_budget

if TYPE_CHECKING:
    from shardwalk.index.hnsw_marks import Admitted, Marks
    from shardwalk.index.planner import Explain, Scope
    from typing_extensions import Unpack

__all__ = [
    "IndexMetric",
    "KeepsRoom",
    "SearchCounters",
    "SearchOptions",
    "SearchResult",
    "VectorIndex",
]

INDEX_FORMAT = 1  # version of the files an index writes into its directory

IndexMetric = Literal["l2", "ip"]

# What an index counted in one search of its own (spann: the lists probed and bytes read per
# query; a Ray index: the paths its actors took), in SearchResult.explain of its results; the
# planner adds them into its Explain's details.
SearchCounters = Mapping[str, float]


@dataclass(frozen=True)
class SearchResult:
    """Top-k neighbours of a batch of queries.

    Attributes
    ----------
    ids : ndarray of int64, shape (n, k)
        Neighbour ids, closest first, padded with -1 when fewer than k exist.
    distances : ndarray of float32, shape (n, k)
        Distances (smaller is closer), padded with +inf.
    explain : Explain, SearchCounters or None
        What the search did, when asked (``search(..., explain=True)``); an index's own
        search may give its counters (:data:`SearchCounters`) instead.
    """

    ids: NDArray[np.int64]
    distances: NDArray[np.float32]
    # when the search was asked to explain itself; an index's counters of its own search
    explain: Explain | SearchCounters | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __iter__(self):  # unpacking: ids, distances = result
        yield self.ids
        yield self.distances


@runtime_checkable
class VectorIndex(Protocol):
    """What a collection needs from an index."""

    kind: str
    dim: int
    metric: IndexMetric
    # What the index can do, for the planner and the collection (instead of type checks):
    exact: bool  # answers are exact: a scoped search scores the matching rows exactly
    scoped: bool  # search takes rows=/allowed= and visits only rows in scope (tenant-index)
    scoped_how: str  # for explain: how a scoped search finds the rows in scope ("" if unscoped)
    # search takes scope= (a planner Scope) and applies it where the vectors are (Ray actors)
    applies_scope: bool

    def add(
        self, labels: np.ndarray, vectors: np.ndarray, groups: np.ndarray | None = None
    ) -> None:
        """Insert vectors (float32, C-contiguous, (n, dim)) under new labels. ``groups`` (an int
        per label, e.g. the owner tenant) is a layout hint an index may use or ignore."""

    def delete(self, labels: np.ndarray) -> None:
        """Stop returning these labels. Unknown labels are ignored."""

    def search(self, queries: np.ndarray, k: int, **options: Unpack[SearchOptions]) -> SearchResult:
        """Top-k live labels per query; ``ids`` holds labels."""

    def get(self, labels: np.ndarray) -> np.ndarray:
        """The stored vectors of existing labels, (n, dim) float32."""

    def save(self, directory: str) -> None:
        """Write the index into an existing, empty directory."""

    def __len__(self) -> int:
        """Number of live labels."""

    def stats(self) -> dict[str, Any]:
        """Sizes and parameters, JSON-serialisable."""


class SearchOptions(TypedDict, total=False):
    """The keywords of every index kind's :meth:`~IndexBase.search`. Each kind reads those
    named for it and ignores the others: the planner passes one set to whichever kind a
    collection has (a collection checks a caller's against its kind first:
    ``shardwalk.validation.SEARCH_PARAMS``). None, or absent: the index's default."""

    ef: int | None
    """hnsw, partitioned, spann (its centroid graph): ef in the paper, this call only."""
    nprobe: int | None
    """partitioned: partitions visited, closest centroids first; multitenant: leaves probed."""
    eps_search: float | None
    """spann: lists within (1 + eps_search) of the nearest are probed."""
    max_probes: int | None
    """spann: most lists probed (before a short query probes more)."""
    candidates: int | None
    """multitenant: rows scored before the leaves stop."""
    probe_ratio: float | None
    """multitenant: leaves within this ratio of the nearest are visited too."""
    threads: int | None
    """hnsw: most threads of a batch."""
    mask: np.ndarray | None
    """flat: bool per label, restricting the candidates."""
    admitted: tuple[Admitted, np.ndarray] | None
    """hnsw: a filter (``HNSWIndex.admit``) and the live labels it admits, ascending."""
    marks: Marks | None
    """hnsw: the tombstones to read (``HNSWIndex.marks``)."""
    scope: Scope | None
    """partitioned on Ray actors: the planner's scope, applied where the vectors are."""
    rows: np.ndarray | None
    """multitenant: the rows searched (a tenant's), ascending."""
    rows_key: Any
    """multitenant: the key of ``rows`` for its cache of per-leaf lists (None: not cached)."""
    rows_version: int
    """multitenant: the version of ``rows`` under its key."""
    allowed: np.ndarray | None
    """multitenant, spann: bool per label, the labels in scope."""
    allowed_bits: np.ndarray | None
    """multitenant, spann: ``allowed`` packed little-endian (saves packing it)."""


class _IndexRequired(TypedDict):
    dim: int
    metric: IndexMetric


class IndexOptions(_IndexRequired, total=False):
    """The keywords every index kind's constructor takes (:class:`IndexBase` says what each
    means and holds the defaults)."""

    seed: int
    threads: int | None
    budget: ThreadBudget | None


class IndexBase:
    """What every index kind shares: the parameters every constructor takes, and the defaults
    for :class:`VectorIndex`'s capability flags: approximate, searching every row (the planner
    applies scopes here, in this process), and read in the current format; a kind overrides
    what differs.

    Parameters
    ----------
    dim : int
        Vector dimension.
    metric : {"l2", "ip"}
        Distance; cosine collections pass unit vectors with ``"ip"``.
    seed : int, default 0
        Seed of whatever the kind draws at random (its clustering, its graphs' levels).
    threads : int, optional
        Most threads of one call (default: all of the budget's); one query always runs on
        the calling thread alone.
    budget : ThreadBudget, optional
        The thread slots shared with the rest of the engine (default: the process's, as many
        as cores): parallel work takes from it (faiss's OpenMP team follows it).
    """

    exact = False
    scoped = False
    scoped_how = ""
    applies_scope = False  # see VectorIndex
    upgraded = False  # read from an earlier format (rebuilt): the next save rewrites it
    # the kind's own parameters (attribute names), as its index.json and stats record them
    saved_params: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        dim: int,
        metric: IndexMetric,
        seed: int = 0,
        threads: int | None = None,
        budget: ThreadBudget | None = None,
    ) -> None:
        self.dim = dim
        self.metric: IndexMetric = metric
        self.seed = seed
        self.threads = threads
        self.budget = budget or default_budget()

    def add(
        self, labels: np.ndarray, vectors: np.ndarray, groups: np.ndarray | None = None
    ) -> None:
        """Insert ``vectors`` under ``labels`` (see :class:`VectorIndex`): the kind's
        :meth:`_insert`, with the labels as int64, unless there are none."""
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size:
            self._insert(labels, vectors, groups)

    def _insert(self, labels: np.ndarray, vectors: np.ndarray, groups: np.ndarray | None) -> None:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The kind's own parameters by name (:attr:`saved_params`)."""
        return {name: getattr(self, name) for name in self.saved_params}

    def search(self, queries: np.ndarray, k: int, **options: Unpack[SearchOptions]) -> SearchResult:
        """Top-k live labels per query (see :class:`VectorIndex`): ``ids`` (n, k) padded -1,
        ``distances`` padded +inf. ``options``: the keywords of :class:`SearchOptions`, each
        kind reading its own (the others are ignored). An empty batch gives an empty result;
        else the kind's :meth:`_search`."""
        if queries.shape[0] == 0:
            return empty_result(0, k)
        return self._search(queries, k, options)

    def _search(self, queries: np.ndarray, k: int, options: SearchOptions) -> SearchResult:
        raise NotImplementedError


@runtime_checkable
class KeepsRoom(Protocol):
    """An index whose inserts leave its stored vectors in place while it has room for them
    (HNSWIndex: faiss's flat storage, grown ahead), so reads of the vectors alone need not
    wait for an insert."""

    def room(self, n: int) -> bool: ...

    def reserve(self, n: int) -> None: ...


def empty_result(n: int, k: int) -> SearchResult:
    return SearchResult(
        ids=np.full((n, k), -1, dtype=np.int64),
        distances=np.full((n, k), np.inf, dtype=np.float32),
    )


def relabel(local: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Results given as indexes into ``labels`` (padded -1) as labels (padded -1)."""
    if labels.size == 0:
        return np.full(local.shape, -1, dtype=np.int64)
    if local.shape[0] == 1 and local.shape[1] and local[0, -1] >= 0:
        # one query with every slot filled (padding comes last, so its last slot tells): one
        # step instead of four, a few us of a search at rest
        taken: np.ndarray = labels[local]
        return taken
    return np.where(local >= 0, labels[np.maximum(local, 0)], -1)


def merge_topk(ids: np.ndarray, distances: np.ndarray, k: int) -> SearchResult:
    """Exact top-k merge of candidate lists laid side by side: (n, m) -> (n, k).

    Padding (-1, +inf) sorts last; ties keep the earlier column.
    """
    m = ids.shape[1]
    if ids.shape[0] == 1 and m >= k:  # one query (a search merging its delta): 1-D, no partition
        order = np.argsort(distances[0], kind="stable")[:k]
        return SearchResult(
            ids=np.ascontiguousarray(ids[0, order][None, :], dtype=np.int64),
            distances=np.ascontiguousarray(distances[0, order][None, :], dtype=np.float32),
        )
    if m > k:
        part = np.argpartition(distances, k - 1, axis=1)[:, :k]
        ids = np.take_along_axis(ids, part, axis=1)
        distances = np.take_along_axis(distances, part, axis=1)
    order = np.argsort(distances, axis=1, kind="stable")
    ids = np.take_along_axis(ids, order, axis=1)
    distances = np.take_along_axis(distances, order, axis=1)
    if ids.shape[1] < k:
        pad = k - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        distances = np.pad(distances, ((0, 0), (0, pad)), constant_values=np.inf)
    return SearchResult(
        ids=np.ascontiguousarray(ids, dtype=np.int64),
        distances=np.ascontiguousarray(distances, dtype=np.float32),
    )


def write_meta(directory: str, meta: dict[str, Any]) -> None:
    """Write an index's ``index.json`` (its kind, format version and parameters)."""
    files.write_meta(os.path.join(directory, "index.json"), {"format": INDEX_FORMAT, **meta})


class _Saved(Protocol):
    """What every index's ``index.json`` records first."""

    @property
    def kind(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def metric(self) -> str: ...

    @property
    def seed(self) -> int: ...


def save_index(
    directory: str,
    index: _Saved,
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray] | None = None,
) -> None:
    """Write an index's ``arrays`` (name -> array, one ``.npy`` file each), then its
    ``index.json``: its kind, dim, metric and seed, then ``meta``."""
    for name, array in (arrays or {}).items():
        files.save_npy(os.path.join(directory, name), array)
    head = {"kind": index.kind, "dim": index.dim, "metric": index.metric, "seed": index.seed}
    write_meta(directory, {**head, **meta})


def read_meta(directory: str, kind: str) -> dict[str, Any]:
    """Read and check an index's ``index.json``."""
    return files.read_meta(
        os.path.join(directory, "index.json"), {"kind": kind, "format": INDEX_FORMAT}
    )
