"""The filtered-search planner: per call, from the number of rows that match, pick the path.

- ``exact``: few rows match (at most ``exact_max_rows``), or, for a graph index and a scope
  without a tenant, scoring the matches costs less than the graph search that would find k of
  them (the estimated cost: rows scored against ``EXACT_ROWS_PER_EF`` x the beam that
  selectivity needs): score every one of them exactly.
- ``tenant-index``: a multi-tenant index visits only the leaves holding rows in scope, closest
  first, scoring only rows that match.
- ``graph-filter``: an HNSW graph whose positions are the rows searches with the scope as its
  filter: it traverses every node but admits only the matches to its results, with a beam of
  k / selectivity (with a margin); a query it leaves short is searched deeper, then exactly
  over the matches. Never a silent shortfall.
- ``graph-postfilter``: another graph index is asked for enough neighbours that k of them
  match at the observed selectivity (k / selectivity, with a margin); if fewer than k match,
  it asks again for more, and falls back to ``exact``. Never a silent shortfall.
- ``index``: no tenant and no predicate: the plain index.
- ``partition-actors``: the index's vectors live elsewhere (partitions in Ray actors): the scope
  goes to them, and each plans its own partitions' search with these same rules.

A search in scope returns exactly min(k, matches) results.

For a tenant's scope the choice of path and its explanation depend only on the scope (how many
of the tenant's rows match), never on the size of the whole index, which counts other tenants'
rows: the 5% rule above applies to scopes without a tenant. What the approximate paths return
(and their details: over-fetch rounds, leaves probed) still depends on the shared index.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from shardwalk.index._kernels import scan_rows
from shardwalk.index.base import SearchResult, VectorIndex, empty_result, merge_topk, relabel
from shardwalk.index.flat import exact_search
from shardwalk.index.store import RowStore

from shardwalk._threads import default_budget

__all__ = [
    "EXACT_MAX_ROWS",
    "EXACT_ROWS_PER_EF",
    "Explain",
    "Pending",
    "Scope",
    "below",
    "exact_path",
    "filter_ef",
    "plan_search",
    "plan_store_search",
]

EXACT_MAX_ROWS = 2048
# A filtered graph search costs about its beam (k / selectivity with a margin) times what one
# step of the beam costs: a node visited, its neighbours scored at random places in memory.
# Scoring one row of an exact scan costs about 1 / EXACT_ROWS_PER_EF of that step (measured:
# bench/README.md, issue 26), so at a scope without a tenant the planner scores the matches
# exactly while they are fewer than EXACT_ROWS_PER_EF x the beam. (Qdrant switches to its
# payload index and a plain scan below 10 MB of matching vectors, whatever the collection.)
EXACT_ROWS_PER_EF = 40


@dataclass
class Scope:
    """The rows a search may return: a tenant's rows (or all), narrowed by a predicate."""

    matches: np.ndarray  # the live rows in scope that satisfy the predicate, sorted
    allowed: np.ndarray  # bool per row: the same set as a mask
    tenant_rows: np.ndarray | None  # the tenant's rows (live or not), when a tenant is given
    allowed_bits: np.ndarray | None = None  # ``allowed`` packed little-endian, when at hand
    tenant_key: Any = None
    tenant_version: int = 0
    visible: int = 0  # live rows the caller may see, before the predicate
    estimated: int = 0  # matches estimated from a sample of the visible rows
    # what searches derive from this scope's bitmap (a graph filter), kept with it: built,
    # then inserted (a collection keeps one per cached scope mask)
    memo: dict[Any, Any] | None = None


@dataclass
class Explain:
    """What a search did and why."""

    path: str
    reason: str
    visible: int
    estimated_matches: int
    matches: int
    k: int
    returned: int = 0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _exact(
    store: RowStore, queries: np.ndarray, rows: np.ndarray, k: int, ip: bool
) -> SearchResult:
    """Exact top-k among ``rows``, wherever the store keeps them (one array, or one per
    partition: each scanned in place, the top-k lists merged exactly)."""
    parts = store.segments(rows)
    if len(parts) == 1 and parts[0][2] is None:
        vectors, positions, _ = parts[0]
        local = _scan(vectors, positions, queries, k, ip)
        return SearchResult(ids=relabel(local.ids, rows), distances=local.distances)
    found = []
    for vectors, positions, which in parts:
        local = _scan(vectors, positions, queries, k, ip)
        found.append((relabel(local.ids, rows if which is None else rows[which]), local.distances))
    if not found:
        return empty_result(queries.shape[0], k)
    return merge_topk(
        np.concatenate([ids for ids, _ in found], axis=1),
        np.concatenate([distances for _, distances in found], axis=1),
        k,
    )


def _scan(
    vectors: np.ndarray, positions: np.ndarray, queries: np.ndarray, k: int, ip: bool
) -> SearchResult:
    """Exact top-k among ``vectors[positions]`` (indexes into ``positions``). A batch gathers
    the rows once and uses BLAS; a few queries scan the rows in place (no copy). numba's and
    faiss's threads are the call's grant."""
    n = queries.shape[0]
    if n == 1:  # on the calling thread: no thread team to wake for one query
        found, distances = scan_rows(queries, vectors, positions, k, ip)
        return SearchResult(ids=found, distances=distances)
    with default_budget().take(n):  # within the caller's grant, if it holds one
        if n >= 16:
            return exact_search(vectors[positions], queries, k, "ip" if ip else "l2")
        found, distances = scan_rows(queries, vectors, positions, k, ip)
        return SearchResult(ids=found, distances=distances)


@dataclass(frozen=True)
class Pending:
    """Rows written but not yet in the index (a collection's delta): rows ``start`` on, their
    vectors (row ``start`` first) and which of them are live. A search scores them exactly
    and merges them with the index's answer (a growing segment's brute force, as Qdrant and
    Milvus search theirs)."""

    start: int
    vectors: np.ndarray
    alive: np.ndarray

    def rows(self, scope: Scope | None) -> np.ndarray:
        """Positions (in ``vectors``) of the pending rows in scope."""
        live = self.alive
        if scope is not None:
            live = live & scope.allowed[self.start : self.start + live.size]
        return np.flatnonzero(live)


def below(scope: Scope, boundary: int) -> Scope:
    """``scope`` narrowed to the rows before ``boundary`` (the rows an index holds while newer
    rows wait in a delta). A tenant's row set is cut too, and its version tells the boundary
    apart (an index caches its view of a row set by key and version)."""
    matches = scope.matches[: np.searchsorted(scope.matches, boundary)]
    tenant_rows = scope.tenant_rows
    if tenant_rows is not None:
        tenant_rows = tenant_rows[: np.searchsorted(tenant_rows, boundary)]
    return Scope(
        matches=matches,
        allowed=scope.allowed,
        allowed_bits=scope.allowed_bits,
        tenant_rows=tenant_rows,
        tenant_key=scope.tenant_key,
        tenant_version=(boundary << 32) | scope.tenant_version,
        visible=scope.visible,
        estimated=scope.estimated,
        memo=scope.memo,
    )


def _merge_pending(
    found: SearchResult,
    pending: Pending,
    scope: Scope | None,
    queries: np.ndarray,
    k: int,
    ip: bool,
    details: dict[str, Any],
) -> SearchResult:
    """The index's answer merged exactly with the pending rows in scope."""
    at = pending.rows(scope)
    details["delta_rows"] = int(at.size)
    if not at.size:
        return found
    near = _scan(pending.vectors, at, queries, k, ip)
    return merge_topk(
        np.concatenate([found.ids, relabel(near.ids, at + pending.start)], axis=1),
        np.concatenate([found.distances, near.distances], axis=1),
        k,
    )


def plan_search(
    index: VectorIndex,
    store: RowStore,
    queries: np.ndarray,
    k: int,
    scope: Scope | None,
    params: dict[str, Any],
    *,
    exact_max_rows: int = EXACT_MAX_ROWS,
    pending: Pending | None = None,
) -> tuple[SearchResult, Explain]:
    """Run one (batch) search over rows; returns row labels and the explanation.

    ``pending``: rows not yet in the index (``store`` must read them too). The path is chosen
    on the whole scope, whatever the index holds yet; an exact path scores the pending rows
    with the others, an index path asks the index about the rows it holds and merges the
    pending ones exactly."""
    out = _plan(index, store, queries, k, scope, params, exact_max_rows, pending, False)
    assert out is not None
    return out


def plan_store_search(
    index: VectorIndex,
    store: RowStore,
    queries: np.ndarray,
    k: int,
    scope: Scope,
    params: dict[str, Any],
    *,
    exact_max_rows: int = EXACT_MAX_ROWS,
    pending: Pending | None = None,
) -> tuple[SearchResult, Explain] | None:
    """:func:`plan_search` for a caller that may read ``store`` but not use the index itself
    (an insert into it may be under way: see ``HNSWIndex.room``): the search when the path
    it chooses reads only the store (exact, or empty), else None (the caller then waits for
    the index and calls :func:`plan_search`). One decision, on one reading of the sizes."""
    return _plan(index, store, queries, k, scope, params, exact_max_rows, pending, True)


def _plan(
    index: VectorIndex,
    store: RowStore,
    queries: np.ndarray,
    k: int,
    scope: Scope | None,
    params: dict[str, Any],
    exact_max_rows: int,
    pending: Pending | None,
    store_only: bool,
) -> tuple[SearchResult, Explain] | None:
    t0 = time.perf_counter()
    ip = index.metric == "ip"
    size = len(index) + (0 if pending is None else int(np.count_nonzero(pending.alive)))
    if store_only and (
        scope is None or not _store_only(index, scope, size, k, params, exact_max_rows)
    ):
        return None
    if scope is None:
        result = index.search(queries, k, **params)
        explain = Explain("index", "no tenant and no filter", size, size, size, k)
        _index_details(explain.details, result)
        if pending is not None:
            result = _merge_pending(result, pending, None, queries, k, ip, explain.details)
    else:
        count = int(scope.matches.size)
        tenant = scope.tenant_rows is not None  # the decision may not look past the scope
        explain = Explain("", "", scope.visible, scope.estimated, count, k)
        held = scope if pending is None else below(scope, pending.start)  # what the index holds
        if count == 0:
            result = empty_result(queries.shape[0], k)
            explain.path, explain.reason = "empty", "no row in scope matches"
        elif index.applies_scope:
            result = index.search(queries, k, scope=scope, **params)
            explain.path = "partition-actors"
            explain.reason = (
                f"{count} matches: the vectors live in Ray actors; each applies the scope to "
                "its own partitions and plans its own path (exact or over-fetch)"
            )
        elif _exact_first(index, count, exact_max_rows):
            result = _exact(store, queries, scope.matches, k, ip)
            explain.path = "exact"
            explain.reason = (
                "exact index: always exact"
                if index.exact and count > exact_max_rows
                else f"{count} matches <= {exact_max_rows}: scoring them all is cheapest"
            )
        elif _cheaper(index, count, size, tenant, k, params):
            beam = filter_ef(index, params, k, count / max(size, 1))
            result = _exact(store, queries, scope.matches, k, ip)
            explain.path = "exact"
            explain.reason = (
                f"{count} matches are {count / max(size, 1):.1%} of the index: scoring them "
                f"all costs less than a graph search for {k} of them (ef {beam})"
            )
        else:
            beam = filter_ef(index, params, k, count / max(size, 1))
            filters = not index.scoped and bool(getattr(index, "filters", False))
            if not held.matches.size:  # every row in scope is pending
                result = empty_result(queries.shape[0], k)
            elif index.scoped:
                result = index.search(
                    queries,
                    k,
                    rows=held.tenant_rows,
                    rows_key=held.tenant_key,
                    rows_version=held.tenant_version,
                    allowed=held.allowed,
                    allowed_bits=held.allowed_bits,
                    **params,
                )
            elif filters:
                result = _graph_filter(index, queries, k, held, params, beam)
                if not tenant:  # it follows the index's size
                    explain.details["ef"] = beam
            else:
                result, rounds = _postfilter(
                    index, store, queries, k, held, params, ip, explain.details
                )
                if not tenant:  # their sizes follow the index's size
                    explain.details["rounds"] = rounds
            if index.scoped:
                explain.path = "tenant-index"
                explain.reason = f"{count} matches > {exact_max_rows}: {index.scoped_how}"
            elif filters:
                explain.path = "graph-filter"
                share = "" if tenant else f" ({count / max(size, 1):.1%} of the index)"
                explain.reason = (
                    f"{count} matches > {exact_max_rows}{share}: the graph search admits only "
                    "the matches to its results"
                )
            else:
                explain.path = "graph-postfilter"
                share = "" if tenant else f" ({count / max(size, 1):.1%} of the index)"
                explain.reason = (
                    f"{count} matches > {exact_max_rows}{share}: over-fetch from the graph and "
                    "keep the matches"
                )
            if pending is not None:
                result = _merge_pending(result, pending, scope, queries, k, ip, explain.details)
        if explain.path in ("tenant-index", "partition-actors"):
            _index_details(explain.details, result)
    ids = result.ids
    if ids.shape[0] == 1 and ids.shape[1] and ids[0, -1] >= 0:  # padding comes last
        explain.returned = ids.shape[1]
    else:
        explain.returned = int(np.count_nonzero(ids >= 0)) // max(queries.shape[0], 1)
    explain.seconds = time.perf_counter() - t0
    return result, explain


def _exact_first(index: VectorIndex, count: int, exact_max_rows: int) -> bool:
    """Few matches (or an exact index): score them all."""
    return count <= exact_max_rows or index.exact


def _cheaper(
    index: VectorIndex, count: int, size: int, tenant: bool, k: int, params: dict[str, Any]
) -> bool:
    """A graph index, a scope without a tenant, and its ``count`` matches cost less to score
    than the graph search that would find k of them (see EXACT_ROWS_PER_EF)."""
    if index.scoped or tenant:
        return False
    return count <= EXACT_ROWS_PER_EF * filter_ef(index, params, k, count / max(size, 1))


def exact_path(
    index: VectorIndex,
    count: int,
    size: int,
    tenant: bool,
    k: int,
    params: dict[str, Any],
    exact_max_rows: int = EXACT_MAX_ROWS,
) -> bool:
    """Whether :func:`plan_search` scores a scope exactly: ``count`` matches (> 0) among
    ``size`` live rows (the index's and the pending ones), ``tenant``: a tenant's scope, on
    an index that does not apply scopes itself. The same decision, from the counts alone
    (a caller that keeps them without the scope's masks: a collection's published view)."""
    return _exact_first(index, count, exact_max_rows) or _cheaper(
        index, count, size, tenant, k, params
    )


def _store_only(
    index: VectorIndex,
    scope: Scope,
    size: int,
    k: int,
    params: dict[str, Any],
    exact_max_rows: int,
) -> bool:
    """Whether :func:`plan_search` reads only the store for this scope (exact or empty)."""
    count = int(scope.matches.size)
    if count == 0:
        return True
    if index.applies_scope:
        return False
    return exact_path(index, count, size, scope.tenant_rows is not None, k, params, exact_max_rows)


def _index_details(details: dict[str, Any], result: SearchResult) -> None:
    """What the index reported about its search (a dict, e.g. spann's lists probed and bytes
    read per query), into the explanation's details; added up over post-filter rounds."""
    if isinstance(result.explain, dict):
        for key, value in result.explain.items():
            details[key] = details.get(key, 0) + value


def filter_ef(index: Any, params: dict[str, Any], k: int, selectivity: float) -> int:
    """The beam a graph search needs to meet k matches at this selectivity: k / selectivity
    with a margin, never below the ef this search would use unfiltered (a scope that
    matches every row must not lose recall)."""
    base = int(params.get("ef") or getattr(index, "ef", 0) or 0)
    return max(base, k, math.ceil(k / max(selectivity, 1e-9) * 1.5) + k)


def _graph_filter(
    index: Any,
    queries: np.ndarray,
    k: int,
    held: Scope,
    params: dict[str, Any],
    ef: int,
) -> SearchResult:
    """The graph searched with the scope's rows it holds as its filter (``held``: the scope
    below the rows pending in a delta; the index's positions are rows). The filter (faiss's
    selector over the scope's bitmap, which its owner changes only while no search runs) is
    built once per bitmap and kept in the scope's memo."""
    bits = held.allowed_bits
    assert bits is not None
    memo = held.memo
    admitted = memo.get("graph-filter") if memo is not None else None
    if admitted is None or admitted.bits is not bits:  # (a grown mask has a new bitmap)
        admitted = index.admit(bits)
        if memo is not None:
            memo["graph-filter"] = admitted
    return index.search(queries, k, **{**params, "ef": ef}, admitted=(admitted, held.matches))


def _postfilter(
    index: VectorIndex,
    store: RowStore,
    queries: np.ndarray,
    k: int,
    scope: Scope,
    params: dict[str, Any],
    ip: bool,
    details: dict[str, Any],
) -> tuple[SearchResult, list[int]]:
    count = int(scope.matches.size)
    want = min(k, count)
    selectivity = count / max(len(index), 1)
    fetch = min(len(index), math.ceil(k / selectivity * 1.5) + k)
    ids = np.full((queries.shape[0], k), -1, dtype=np.int64)
    distances = np.full((queries.shape[0], k), np.inf, dtype=np.float32)
    todo = np.arange(queries.shape[0])
    rounds = []
    base_ef = int(getattr(index, "ef", 0) or 0)
    while todo.size and fetch <= 8 * exact_budget(k, selectivity):
        rounds.append(fetch)
        # Widen the beam to the over-fetch, never below the ef this search would use
        # unfiltered: a scope that matches every row must not lose recall.
        extra = {**params, "ef": max(params.get("ef") or base_ef, fetch)}
        found = index.search(queries[todo], fetch, **extra)
        _index_details(details, found)
        keep = (found.ids >= 0) & scope.allowed[np.maximum(found.ids, 0)]
        complete = keep.sum(axis=1) >= want
        for row in np.flatnonzero(complete):
            hits = np.flatnonzero(keep[row])[:k]
            ids[todo[row], : hits.size] = found.ids[row, hits]
            distances[todo[row], : hits.size] = found.distances[row, hits]
        todo = todo[~complete]
        fetch *= 4
        if fetch >= len(index):
            break
    if todo.size:  # the graph could not produce k matches: score the matches exactly
        rounds.append(-1)
        exact = _exact(store, queries[todo], scope.matches, k, ip)
        ids[todo], distances[todo] = exact.ids, exact.distances
    return SearchResult(ids=ids, distances=distances), rounds


def exact_budget(k: int, selectivity: float) -> int:
    """Largest over-fetch worth trying before an exact scan of the matches."""
    return max(16 * k, int(k / max(selectivity, 1e-9)))
