"""Vector indexes, partitioning, tenancy and filters (``shardwalk.index``).

Every index implements :class:`VectorIndex` over caller-chosen integer labels; a collection
passes its row numbers. ``make_index`` builds one by kind name, ``load_index`` reads one back.

Every index takes a ``budget`` (:class:`shardwalk._threads.ThreadBudget`, default the
process's): the thread slots its parallel work shares with the rest of its engine. Reads (search,
get) are safe from many threads at once; writes (add, delete) need the caller to exclude every
other call on the same index.
"""

from __future__ import annotations

from typing import Any, Protocol

from shardwalk.index.base import IndexMetric, SearchResult, VectorIndex, read_meta
from shardwalk.index.flat import FlatIndex, exact_search
from shardwalk.index.hnsw import HNSWIndex
from shardwalk.index.kmeans import balanced_kmeans
from shardwalk.index.partitioned import PartitionedIndex
from shardwalk.index.spann import SpannIndex
from shardwalk.index.tenancy import MultiTenantIndex

from shardwalk._threads import ThreadBudget

__all__ = [
    "INDEX_KINDS",
    "FlatIndex",
    "IndexHost",
    "HNSWIndex",
    "IndexMetric",
    "MultiTenantIndex",
    "PartitionedIndex",
    "SearchResult",
    "SpannIndex",
    "VectorIndex",
    "balanced_kmeans",
    "exact_search",
    "load_index",
    "make_index",
]

INDEX_KINDS: dict[str, type[Any]] = {
    "flat": FlatIndex,
    "hnsw": HNSWIndex,
    "partitioned": PartitionedIndex,
    "multitenant": MultiTenantIndex,
    "spann": SpannIndex,
}


class IndexHost(Protocol):
    """Somewhere else to keep the indexes of some kinds (``shardwalk.index.distributed.RayHost``:
    their partitions in Ray actors); ``make_index`` and ``load_index`` hand those kinds to it."""

    kinds: frozenset[str]

    def make(
        self,
        kind: str,
        *,
        dim: int,
        metric: IndexMetric,
        budget: ThreadBudget | None,
        **params: Any,
    ) -> VectorIndex: ...

    def load(self, directory: str, *, budget: ThreadBudget | None) -> VectorIndex: ...

    def close(self) -> None: ...


def make_index(
    kind: str,
    *,
    dim: int,
    metric: IndexMetric,
    budget: ThreadBudget | None = None,
    host: IndexHost | None = None,
    **params: Any,
) -> VectorIndex:
    """A new empty index of ``kind`` (parameters already validated by the caller), drawing its
    threads from ``budget`` (default: the process's), kept by ``host`` if it keeps that kind."""
    if host is not None and kind in host.kinds:
        return host.make(kind, dim=dim, metric=metric, budget=budget, **params)
    return INDEX_KINDS[kind](dim=dim, metric=metric, budget=budget, **params)


def load_index(
    directory: str, *, budget: ThreadBudget | None = None, host: IndexHost | None = None
) -> VectorIndex:
    """Read back an index written by ``save(directory)``, drawing its threads from ``budget``
    (default: the process's), kept by ``host`` if it keeps that kind."""
    import json
    import os

    with open(os.path.join(directory, "index.json"), "rb") as f:
        kind = json.loads(f.read()).get("kind")
    if kind not in INDEX_KINDS:
        read_meta(directory, "?")  # raises CorruptionError naming what was found
    if host is not None and kind in host.kinds:
        return host.load(directory, budget=budget)
    return INDEX_KINDS[kind].load(directory, budget=budget)
