"""numba kernel of faiss's HNSW search over faiss's own arrays (no validation, no I/O).

:func:`hnsw_search` is ``faiss::HNSW::search`` with a bounded queue (faiss's default branch):
the greedy descent through the upper levels from the entry point, then the ef-bounded
best-first search at level 0 (``search_from_candidates``) with faiss's candidate heap
(``MinimaxHeap``: a max-heap of ef entries whose popped ones stay counted by the stopping rule),
neighbours in list order and the same stopping rule, so on a graph at rest it returns faiss's
ids. It reads the graph in place (``hnsw.neighbors``, ``hnsw.offsets``,
``hnsw.cum_nneighbor_per_level``, the flat storage's vectors) beside faiss's inserts: nodes
from ``count`` on (linked while it runs) are never followed, every index is checked against
the arrays' lengths, and only positions below ``limit`` whose bit is set are returned.

Distances are "smaller is better" throughout: squared L2, or ``-<q, x>`` for inner product
(faiss's similarity heaps mirrored); :func:`hnsw_search` returns ``1 - <q, x>`` for the latter.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from shardwalk.index._kernels import merge_pending_serial

# as in _kernels.py: reassociation lets the distance loops vectorise
_FAST = {"reassoc", "contract", "arcp", "nsz", "afn"}
_NEUTRAL = np.float32(np.finfo(np.float32).max)  # faiss's empty result slot (CMax::neutral)

# What a search reads, as tuples (numba passes them as one typed argument each):
# - Graph: (vectors, neighbors, offsets, levels, cum, entry, max_level, count, ip): faiss's flat
#   storage (>= count, d) float32, ``hnsw.neighbors`` (int32), ``hnsw.offsets`` (uint64),
#   ``hnsw.levels`` (int32) and ``hnsw.cum_nneighbor_per_level`` (int32), each at least as long
#   as the nodes below ``count`` need (longer: room reserved past them, never read for those
#   nodes); faiss's entry point and top level as they were once ``count`` nodes were linked
#   (only those are followed: a node linked meanwhile is skipped); inner product (distances
#   ``1 - <q, x>``) rather than squared L2.
# - Admit: (limit, bits, filtered): positions below ``limit`` may be returned (<= count); when
#   ``filtered``, only those whose bit is set (packed little-endian, faiss's
#   ``IDSelectorBitmap``); every node is followed.
# - Visited: (table, mark): a table by position (uint8, >= count long) whose entries equal to
#   ``mark`` are visited; the caller gives each search a mark no entry holds (faiss's
#   ``VisitedTable``).
# - Search: (graph, admit, visited, ef), ef being faiss's efSearch (raised to k).
# - Pending: (delta, alive, labels): the rows from ``limit`` on that the graph does not hold
#   (row ``limit + j``'s vector ``delta[j]``, live where ``alive[j]``, scored exactly) and the
#   label of every row.
Graph = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int, int, bool]
Admit = tuple[int, np.ndarray, bool]
Visited = tuple[np.ndarray, int]
Search = tuple[Graph, Admit, Visited, int]
Pending = tuple[np.ndarray, np.ndarray, np.ndarray]


@njit(cache=True, inline="always", fastmath=_FAST)
def _distance(q: np.ndarray, x: np.ndarray, ip: bool) -> np.float32:
    acc = np.float32(0.0)
    if ip:
        for j in range(q.shape[0]):
            acc += q[j] * x[j]
        return -acc
    for j in range(q.shape[0]):
        diff = q[j] - x[j]
        acc += diff * diff
    return acc


@njit(cache=True, inline="always")
def _above(a: float, b: float, ia: int, ib: int) -> bool:
    """faiss's ``CMax::cmp2``: a ranks above b in a max-heap (ties: the larger id)."""
    return bool(a > b or (a == b and ia > ib))


@njit(cache=True, inline="always")
def _put(dis: np.ndarray, ids: np.ndarray, i: int, val: np.float32, vid: int) -> None:
    """Entry i of a 1-based heap stored 0-based becomes ``(val, vid)``."""
    dis[i - 1] = val
    ids[i - 1] = vid


@njit(cache=True, inline="always")
def _sift_down(k: int, dis: np.ndarray, ids: np.ndarray, val: np.float32, vid: int) -> None:
    """faiss's ``heap_replace_top`` / the loop of ``heap_pop`` on a 1-based max-heap of k
    entries stored 0-based: ``(val, vid)`` replaces the top and sinks to its place."""
    i = 1
    while True:
        child = i << 1
        if child > k:
            break
        if child < k and not _above(dis[child - 1], dis[child], ids[child - 1], ids[child]):
            child += 1  # the right child ranks above the left one
        if _above(val, dis[child - 1], vid, ids[child - 1]):
            break
        _put(dis, ids, i, dis[child - 1], ids[child - 1])
        i = child
    _put(dis, ids, i, val, vid)


@njit(cache=True, inline="always")
def _heap_push(k: int, dis: np.ndarray, ids: np.ndarray, val: np.float32, vid: int) -> None:
    """faiss's ``heap_push``: ``(val, vid)`` into a max-heap now of k entries (the last free)."""
    i = k
    while i > 1:
        father = i >> 1
        if not _above(val, dis[father - 1], vid, ids[father - 1]):
            break
        _put(dis, ids, i, dis[father - 1], ids[father - 1])
        i = father
    _put(dis, ids, i, val, vid)


@njit(cache=True, inline="always")
def _heap_pop(k: int, dis: np.ndarray, ids: np.ndarray) -> None:
    """faiss's ``heap_pop``: the top of a max-heap of k entries out (its last moves up)."""
    # (faiss's loop compares with the last entry still in place: the same as a replace_top
    # of the last entry over the first k)
    _sift_down(k, dis, ids, dis[k - 1], ids[k - 1])


@njit(cache=True, inline="always")
def _admitted(v: int, limit: int, bits: np.ndarray, filtered: bool) -> bool:
    if v >= limit:
        return False
    if not filtered:
        return True
    byte = v >> 3
    return byte < bits.shape[0] and ((bits[byte] >> (v & 7)) & 1) == 1


@njit(cache=True, nogil=True)
def count_admitted(bits: np.ndarray, limit: int, ids: np.ndarray) -> tuple[int, int]:
    """How many positions below ``limit`` have their bit set, then how many of ``ids``
    (padded -1) still do: bits below ``limit`` are only ever cleared (deletes) while a search
    reads them, so if the second count reaches the first, ``ids`` held every position set
    when the first was taken."""
    total = 0
    full = min(limit >> 3, bits.shape[0])
    for byte in range(full):
        b = bits[byte]
        while b:
            b &= b - 1
            total += 1
    for v in range(full << 3, min(limit, bits.shape[0] << 3)):
        if _admitted(v, limit, bits, True):
            total += 1
    held = 0
    for i in range(ids.shape[0]):
        if ids[i] >= 0 and _admitted(ids[i], limit, bits, True):
            held += 1
    return total, held


@njit(cache=True, nogil=True, fastmath=_FAST)
def hnsw_search(query: np.ndarray, search: Search, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The k nearest admitted positions of ``query`` (ids ascending by distance, padded -1;
    distances padded +inf; and how many were found) by faiss's HNSW search.

    Parameters
    ----------
    query : (d,) float32
    search : :data:`Search`, the graph as the search reads it, the positions it may return,
        its visited table and ef (faiss's efSearch, raised to k)
    k : results wanted
    """
    graph, admit, visited, ef = search
    vectors, neighbors, offsets, levels, cum, entry, max_level, count, ip = graph
    limit, bits, filtered = admit
    table, mark = visited
    out_ids = np.full(k, -1, dtype=np.int64)
    out_d = np.full(k, np.inf, dtype=np.float32)
    n_links = neighbors.shape[0]
    count = min(count, vectors.shape[0], offsets.shape[0] - 1, levels.shape[0], table.shape[0])
    if entry < 0 or entry >= count or k <= 0:
        return out_ids, out_d, 0
    top = min(max_level, cum.shape[0] - 2)
    mk = np.uint8(mark)

    # greedy descent through the upper levels (faiss's greedy_update_nearest)
    nearest = np.int64(entry)
    d_nearest = _distance(query, vectors[nearest], ip)
    for level in range(top, 0, -1):
        while True:
            previous = nearest
            if levels[nearest] > level:  # (a node only has the lists of its levels)
                base = np.int64(offsets[nearest])
                begin = base + cum[level]
                end = min(base + cum[level + 1], n_links)
                for j in range(begin, end):
                    v = np.int64(neighbors[j])
                    if v < 0:
                        break
                    if v >= count:  # linked after the search began: not followed
                        continue
                    d = _distance(query, vectors[v], ip)
                    if d < d_nearest:
                        nearest = v
                        d_nearest = d
            if nearest == previous:
                break

    # level 0: best-first within a heap of ef candidates (faiss's search_from_candidates)
    ef = max(ef, k)
    cand_d = np.empty(ef, dtype=np.float32)
    cand_i = np.empty(ef, dtype=np.int32)
    size = 0  # entries in the heap, popped ones included (faiss's k)
    valid = 0  # entries not popped (faiss's nvalid)
    res_d = np.full(k, _NEUTRAL, dtype=np.float32)
    res_i = np.full(k, -1, dtype=np.int64)
    threshold = _NEUTRAL

    size = 1
    valid = 1
    cand_d[0] = d_nearest
    cand_i[0] = np.int32(nearest)
    if _admitted(nearest, limit, bits, filtered) and d_nearest < threshold:
        _sift_down(k, res_d, res_i, d_nearest, nearest)
        threshold = res_d[0]
    table[nearest] = mk

    while valid > 0:
        # pop_min: the closest entry not popped (ties: the last one)
        best = -1
        d0 = np.float32(np.inf)
        for i in range(size):
            if cand_i[i] != -1 and cand_d[i] <= d0:
                d0 = cand_d[i]
                best = i
        if best < 0:
            break
        v0 = np.int64(cand_i[best])
        cand_i[best] = -1
        valid -= 1
        # stop once ef entries (popped ones included) are closer than it
        below = 0
        for i in range(size):
            if cand_d[i] < d0:
                below += 1
        if below >= ef:
            break
        base = np.int64(offsets[v0])
        begin = base
        end = min(base + cum[1], n_links)
        for j in range(begin, end):
            v1 = np.int64(neighbors[j])
            if v1 < 0:
                break
            if v1 >= count or table[v1] == mk:
                continue
            table[v1] = mk
            d = _distance(query, vectors[v1], ip)
            if _admitted(v1, limit, bits, filtered) and d < threshold:
                _sift_down(k, res_d, res_i, d, v1)
                threshold = res_d[0]
            # push into the candidates (a full heap drops its farthest, popped or not)
            if size == ef:
                if d >= cand_d[0]:
                    continue
                if cand_i[0] != -1:
                    valid -= 1
                _heap_pop(size, cand_d, cand_i)
                size -= 1
            size += 1
            _heap_push(size, cand_d, cand_i, d, np.int32(v1))
            valid += 1

    # the results closest first (faiss's heap_reorder: ties by id)
    found = 0
    for i in range(k):
        if res_i[i] >= 0:
            res_d[found] = res_d[i]
            res_i[found] = res_i[i]
            found += 1
    for i in range(1, found):
        d = res_d[i]
        r = res_i[i]
        j = i - 1
        while j >= 0 and (res_d[j] > d or (res_d[j] == d and res_i[j] > r)):
            res_d[j + 1] = res_d[j]
            res_i[j + 1] = res_i[j]
            j -= 1
        res_d[j + 1] = d
        res_i[j + 1] = r
    for i in range(found):
        out_ids[i] = res_i[i]
        out_d[i] = np.float32(1.0) + res_d[i] if ip else res_d[i]
    return out_ids, out_d, found


@njit(cache=True, nogil=True)
def hnsw_search_pending(
    queries: np.ndarray, search: Search, k: int, want: int, pending: Pending
) -> tuple[np.ndarray, np.ndarray, bool]:
    """:func:`hnsw_search` of ``queries[0]`` for ``want`` positions, as (1, k) ids padded -1
    and distances, merged with the ``pending`` rows (``labels[row]``; with no labels, nothing
    is pending and the positions are the ids): one call (one release of the GIL) for a
    plain query. The last value is False (and the rest empty) when the graph's answer came
    back short of ``want`` without holding every position set in ``bits`` below ``limit``
    (see :func:`count_admitted`)."""
    limit, bits, filtered = search[1]
    ip = search[0][8]
    found, raw, got = hnsw_search(queries[0], search, want)
    if got < want:
        # short of want: whole if it holds every live position below limit (counted after
        # the search: a delete meanwhile cannot make a short answer pass)
        complete = False
        if filtered:
            live, held = count_admitted(bits, limit, found)
            complete = held >= live
        if not complete:
            return np.full((1, k), -1, dtype=np.int64), np.full((1, k), np.inf, np.float32), False
    delta, alive, labels = pending
    if labels.shape[0] == 0:  # nothing pending: the graph's answer, padded to k
        ids = np.full((1, k), -1, dtype=np.int64)
        distances = np.full((1, k), np.inf, dtype=np.float32)
        ids[0, :want] = found
        distances[0, :want] = raw
        return ids, distances, True
    ids, distances = merge_pending_serial(
        queries, found.reshape(1, -1), raw.reshape(1, -1), delta, alive, limit, labels, k, ip
    )
    return ids, distances, True
