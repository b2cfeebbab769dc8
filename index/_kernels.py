"""numba kernels of the index package: plain functions on arrays, no validation, no I/O."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Reassociation lets reductions vectorise; no "nnan"/"ninf": the top-k code compares with +inf.
_FAST = {"reassoc", "contract", "arcp", "nsz", "afn"}


@njit(cache=True)
def capacity_assign(
    order: np.ndarray, nearest: np.ndarray, n_parts: int, capacity: int
) -> np.ndarray:
    """Greedy capacity-constrained assignment.

    ``nearest`` is (n, P): each point's partitions, closest first; ``order`` lists the (point,
    rank) pairs as flat indexes ``point * P + rank`` sorted by distance. Walking the pairs from
    the closest, a point joins its partition unless that one already holds ``capacity`` points.
    Every point ends up assigned as long as ``capacity * P >= n``.
    """
    n = nearest.shape[0]
    assign = np.full(n, -1, dtype=np.int32)
    sizes = np.zeros(n_parts, dtype=np.int64)
    remaining = n
    for flat in order:
        point = flat // n_parts
        if assign[point] >= 0:
            continue
        part = nearest[point, flat % n_parts]
        if sizes[part] < capacity:
            assign[point] = part
            sizes[part] += 1
            remaining -= 1
            if remaining == 0:
                break
    return assign


@njit(cache=True, inline="always")
def _is_set(bits: np.ndarray, r: int) -> bool:
    """Bit r of a little-endian packed bitmap (np.packbits(mask, bitorder="little")): an eighth
    of a bool array's bytes, so a 1M-row mask stays in cache."""
    return (bits[r >> 3] >> (r & 7)) & 1 == 1


@njit(cache=True, inline="always", fastmath=_FAST)
def _distance(q: np.ndarray, x: np.ndarray, ip: bool) -> np.float32:
    acc = np.float32(0.0)  # float32 lanes: twice as many per SIMD instruction as float64
    if ip:
        for j in range(q.shape[0]):
            acc += q[j] * x[j]
        return np.float32(1.0) - acc
    for j in range(q.shape[0]):
        diff = q[j] - x[j]
        acc += diff * diff
    return acc


@njit(cache=True, inline="always", fastmath=_FAST)
def _offer(best_d: np.ndarray, best_r: np.ndarray, worst: int, d: float, r: int) -> int:
    """Keep the k smallest (d, r) in unsorted arrays; returns the slot of the current worst."""
    if d >= best_d[worst]:
        return worst
    best_d[worst] = d
    best_r[worst] = r
    worst = 0
    for i in range(1, best_d.shape[0]):
        if best_d[i] > best_d[worst]:
            worst = i
    return worst


@njit(cache=True, inline="always")
def _no_results(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-k of ``n`` queries before anything is found: rows -1, distances +inf."""
    return np.full((n, k), -1, dtype=np.int64), np.full((n, k), np.inf, dtype=np.float32)


@njit(cache=True, inline="always")
def _candidates(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Empty (distances, rows) for :func:`_offer` to fill (its first worst slot: 0)."""
    return np.full(k, np.inf, dtype=np.float32), np.full(k, -1, dtype=np.int64)


@njit(cache=True, inline="always")
def _relabel(found: np.ndarray, qi: int, labels: np.ndarray) -> None:
    """Query ``qi``'s ``found`` (rows, padded -1) as ``labels[row]``, in place."""
    for i in range(found.shape[1]):
        if found[qi, i] >= 0:
            found[qi, i] = labels[found[qi, i]]


@njit(cache=True, inline="always", fastmath=_FAST)
def _leaf_distance(q: np.ndarray, centroid: np.ndarray, norm: float) -> np.float32:
    """Squared l2 distance from q to a leaf's centroid (``norm`` its squared norm)."""
    acc = np.float32(0.0)
    qq = np.float32(0.0)
    for t in range(q.shape[0]):
        acc += q[t] * centroid[t]
        qq += q[t] * q[t]
    return qq + norm - np.float32(2.0) * acc


@njit(cache=True, inline="always")
def _keep_probing(
    q: np.ndarray,
    centroids: np.ndarray,
    norms: np.ndarray,
    order: np.ndarray,
    p: int,
    limit: int,
    nearest: float,
    ratio: float,
) -> bool:
    """Past the minimum, whether leaf ``order[p]`` is still worth visiting: its centroid is
    within ``ratio`` x the closest leaf's squared distance ``nearest`` (SPANN's query-aware
    rule, used to extend rather than prune). Where neighbourhoods are wide (mnist: recall@10
    0.981 at nprobe=8) the next centroids are about as close as the first and a few more
    leaves are visited; on well-clustered data they are far and nothing changes. Independent
    of any filter. ``nearest`` < 0 (ip: no geometry to compare) or ``ratio`` 0 turns it off."""
    if nearest < 0.0 or ratio <= 0.0 or p >= limit:
        return False
    j = order[p]
    return _leaf_distance(q, centroids[j], norms[j]) <= ratio * nearest


@njit(cache=True)
def _finish(best_d: np.ndarray, best_r: np.ndarray, out_d: np.ndarray, out_r: np.ndarray) -> None:
    order = np.argsort(best_d, kind="mergesort")
    for i in range(order.shape[0]):
        out_d[i] = best_d[order[i]]
        out_r[i] = best_r[order[i]] if best_d[order[i]] < np.inf else -1


@njit(cache=True)
def permute_rows(data: np.ndarray, source: np.ndarray) -> None:
    """In place: row i of ``data`` becomes the row now at ``source[i]`` (a permutation of
    ``range(len(source))``), following its cycles with one spare row, so a new layout never
    needs a second copy of the vectors."""
    n = source.shape[0]
    done = np.zeros(n, dtype=np.bool_)
    spare = np.empty(data.shape[1], dtype=data.dtype)
    for start in range(n):
        if done[start]:
            continue
        done[start] = True
        if source[start] == start:
            continue
        spare[:] = data[start]
        j = start
        while source[j] != start:
            data[j] = data[source[j]]
            j = source[j]
            done[j] = True
        data[j] = spare


@njit(cache=True, inline="always", fastmath=_FAST)
def _scan_one(
    q: np.ndarray,
    vectors: np.ndarray,
    at: np.ndarray,
    k: int,
    ip: bool,
    out_r: np.ndarray,
    out_d: np.ndarray,
) -> None:
    best_d, best_r = _candidates(k)
    worst = 0
    # Distances a block at a time, then only those below the current k-th best offered, that
    # bound kept in a register: half the time of offering every row (64-d rows: 10 against 22
    # ns a row, measured; the same results).
    block = np.empty(64, dtype=np.float32)
    bound = np.float32(np.inf)
    m = at.shape[0]
    for start in range(0, m, 64):
        end = min(start + 64, m)
        for t in range(start, end):
            block[t - start] = _distance(q, vectors[at[t]], ip)
        for t in range(start, end):
            if block[t - start] < bound:
                worst = _offer(best_d, best_r, worst, block[t - start], t)
                bound = best_d[worst]
    _finish(best_d, best_r, out_d, out_r)


@njit(cache=True, parallel=True, nogil=True, fastmath=_FAST)
def scan_rows(
    queries: np.ndarray, vectors: np.ndarray, at: np.ndarray, k: int, ip: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of each query among ``vectors[at]``: indexes into ``at`` (n, k) padded -1,
    and distances. Queries in parallel; a single query on the calling thread alone (no thread
    team to wake)."""
    n = queries.shape[0]
    out_r, out_d = _no_results(n, k)
    if n == 1:
        _scan_one(queries[0], vectors, at, k, ip, out_r[0], out_d[0])
        return out_r, out_d
    for qi in prange(n):
        _scan_one(queries[qi], vectors, at, k, ip, out_r[qi], out_d[qi])
    return out_r, out_d


@njit(cache=True, nogil=True, fastmath=_FAST)
def scan_split_serial(
    queries: np.ndarray,
    base: np.ndarray,
    delta: np.ndarray,
    start: int,
    rows: np.ndarray,
    labels: np.ndarray,
    k: int,
    ip: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of each query among ``rows`` (ascending), the vector of row r being
    ``base[r]`` below ``start`` and ``delta[r - start]`` from it on (an index's storage and
    the rows written since, not yet in it): ``labels[row]`` (n, k) padded -1, and distances.
    On the calling thread; one call (one release of the GIL) for what would otherwise be a
    split of the rows, two scans, a merge and a relabelling."""
    n = queries.shape[0]
    out_r, out_d = _no_results(n, k)
    split = np.searchsorted(rows, start)
    block = np.empty(64, dtype=np.float32)
    for qi in range(n):
        q = queries[qi]
        best_d, best_r = _candidates(k)
        worst = 0
        bound = np.float32(np.inf)
        m = rows.shape[0]
        for first in range(0, m, 64):  # as _scan_one: a block of distances, then the offers
            end = min(first + 64, m)
            for t in range(first, end):
                r = rows[t]
                x = base[r] if t < split else delta[r - start]
                block[t - first] = _distance(q, x, ip)
            for t in range(first, end):
                if block[t - first] < bound:
                    worst = _offer(best_d, best_r, worst, block[t - first], rows[t])
                    bound = best_d[worst]
        _finish(best_d, best_r, out_d[qi], out_r[qi])
        _relabel(out_r, qi, labels)
    return out_r, out_d


@njit(cache=True, nogil=True, fastmath=_FAST)
def merge_pending_serial(
    queries: np.ndarray,
    found: np.ndarray,
    found_d: np.ndarray,
    delta: np.ndarray,
    alive: np.ndarray,
    start: int,
    labels: np.ndarray,
    k: int,
    ip: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """An index's top-k rows per query (``found``, padded -1, and ``found_d``) merged with the
    live rows written since, not yet in it (row ``start + j``'s vector ``delta[j]``, live where
    ``alive[j]``), scored exactly: ``labels[row]`` (n, k) padded -1, and distances. On the
    calling thread; one call for a scan, a merge and a relabelling."""
    n = queries.shape[0]
    out_r, out_d = _no_results(n, k)
    for qi in range(n):
        q = queries[qi]
        best_d, best_r = _candidates(k)
        worst = 0
        for i in range(found.shape[1]):
            if found[qi, i] >= 0:
                worst = _offer(best_d, best_r, worst, found_d[qi, i], found[qi, i])
        bound = best_d[worst]
        for j in range(delta.shape[0]):
            if alive[j]:
                d = _distance(q, delta[j], ip)
                if d < bound:
                    worst = _offer(best_d, best_r, worst, d, start + j)
                    bound = best_d[worst]
        _finish(best_d, best_r, out_d[qi], out_r[qi])
        _relabel(out_r, qi, labels)
    return out_r, out_d


@njit(cache=True, inline="always", fastmath=_FAST)
def _leaf_ranks(
    q: np.ndarray, centroids: np.ndarray, norms: np.ndarray, at: np.ndarray, ip: bool
) -> np.ndarray:
    """How close leaves ``at`` are to q: -<q, c> for ip, |c|^2 - 2 <q, c> for l2 (|q - c|^2
    less the per-query constant |q|^2, which does not change the order). Computed here rather
    than in one BLAS call for the batch: BLAS worker threads keep spinning after a call and
    would take the cores from this kernel's threads."""
    out = np.empty(at.shape[0], dtype=np.float32)
    for i in range(at.shape[0]):
        acc = np.float32(0.0)
        c = centroids[at[i]]
        for t in range(q.shape[0]):
            acc += q[t] * c[t]
        out[i] = -acc if ip else norms[at[i]] - np.float32(2.0) * acc
    return out


@njit(cache=True)
def _closest_first(ranks: np.ndarray, first: int) -> np.ndarray:
    """Indexes of the ``first`` smallest ranks (and ties), in increasing order: most searches
    stop within the closest few dozen leaves, and a partial selection is ~5x cheaper than
    sorting every leaf."""
    if first < ranks.shape[0]:
        threshold = np.partition(ranks.copy(), first - 1)[first - 1]
        head = np.nonzero(ranks <= threshold)[0]
        return head[np.argsort(ranks[head])]
    return np.argsort(ranks)


@njit(cache=True)
def _leaf_order(
    q: np.ndarray,
    centroids: np.ndarray,
    norms: np.ndarray,
    top_centroids: np.ndarray,
    top_norms: np.ndarray,
    top_offsets: np.ndarray,
    ip: bool,
    first: int,
) -> np.ndarray:
    """The leaves a search visits first, closest first: at least ``first`` of them.

    Flat (``top_offsets`` empty): the ``first`` closest of all leaves. With a tree (leaves
    ``top_offsets[t]:top_offsets[t + 1]`` under top node t): the top nodes are ranked, and the
    leaves of the closest ones, until at least ``4 * first`` are gathered, are ranked and
    sorted: about a quarter of the distances on 1,000 leaves. The wide beam keeps recall: the
    same as ranking every leaf on 1M x 128 vectors, 0.983 against 0.991 at 2,000 leaves of
    16-dimensional data (a beam of only ``first`` leaves lost 0.06 on 400 such leaves).
    """
    if top_offsets.shape[0] == 0:
        everything = np.arange(centroids.shape[0])
        return _closest_first(_leaf_ranks(q, centroids, norms, everything, ip), first)
    tops = np.argsort(_leaf_ranks(q, top_centroids, top_norms, np.arange(top_norms.shape[0]), ip))
    count = 0
    taken = 0
    while taken < tops.shape[0] and count < 4 * first:
        count += top_offsets[tops[taken] + 1] - top_offsets[tops[taken]]
        taken += 1
    leaves = np.empty(count, dtype=np.int64)
    c = 0
    for i in range(taken):
        for j in range(top_offsets[tops[i]], top_offsets[tops[i] + 1]):
            leaves[c] = j
            c += 1
    return leaves[np.argsort(_leaf_ranks(q, centroids, norms, leaves, ip))]


@njit(cache=True)
def _all_leaves(
    order: np.ndarray, q: np.ndarray, centroids: np.ndarray, norms: np.ndarray, ip: bool
) -> np.ndarray:
    """``order`` followed by every other leaf, closest first (for a search that ran past the
    first leaves)."""
    seen = np.zeros(centroids.shape[0], dtype=np.bool_)
    seen[order] = True
    rest = np.nonzero(~seen)[0]
    ranks = _leaf_ranks(q, centroids, norms, rest, ip)
    return np.concatenate((order, rest[np.argsort(ranks)]))


@njit(cache=True, inline="always", fastmath=_FAST)
def _code_distance(
    qc: np.ndarray, weights: np.ndarray, code: np.ndarray, ip: bool, base: float
) -> np.float32:
    """SQ8 distance: l2 as sum w_j (qc_j - c_j)^2 with qc the query in code units and w the
    squared step; ip as 1 - (base + sum qc_j c_j) with qc = q * step and base = <q, min>."""
    acc = np.float32(0.0)
    if ip:
        for j in range(qc.shape[0]):
            acc += qc[j] * np.float32(code[j])
        return np.float32(1.0) - (np.float32(base) + acc)
    for j in range(qc.shape[0]):
        diff = qc[j] - np.float32(code[j])
        acc += weights[j] * diff * diff
    return acc


@njit(cache=True, parallel=True, nogil=True, fastmath=_FAST)
def probe_leaves(
    queries: np.ndarray,
    vectors: np.ndarray,
    sq8: bool,
    codes: np.ndarray,
    low: np.ndarray,
    step: np.ndarray,
    centroids: np.ndarray,
    norms: np.ndarray,
    top_centroids: np.ndarray,
    top_norms: np.ndarray,
    top_offsets: np.ndarray,
    offsets: np.ndarray,
    rows: np.ndarray,
    positions: np.ndarray,
    allowed: np.ndarray,
    k: int,
    rerank: int,
    min_probe: int,
    min_candidates: int,
    probe_ratio: float,
    ip: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Search a set of rows grouped by leaf: leaf j (``centroids[j]``, squared norm
    ``norms[j]``) holds ``rows[offsets[j]:offsets[j + 1]]``, whose vectors are
    ``vectors[positions[...]]``. Leaves are visited closest first (found through the top
    nodes when ``top_offsets`` is not empty, see ``_leaf_order``); a row counts only where its
    bit is set in ``allowed`` (packed); the search stops once it has visited ``min_probe``
    leaves and scored ``min_candidates`` allowed rows (or visited every leaf), unless the next
    leaf's centroid is within ``probe_ratio`` x the closest one's squared distance (l2; see
    ``_keep_probing``), up to the ``max(64, 4 min_probe)`` closest leaves.

    ``sq8``: rows are scored on 8-bit scalar-quantised codes instead (SQUASH-style first pass:
    ``codes[positions[t]]``, the codes sharing the vectors' physical layout, ``low`` and
    ``step`` their scale), and the best ``rerank`` by that score are re-ranked exactly on
    ``vectors``; without it ``codes``, ``low``, ``step`` and ``rerank`` are not read.

    Returns rows (n, k) padded with -1, distances (n, k) padded with +inf, and the number of
    rows scored per query.
    """
    n = queries.shape[0]
    dim = queries.shape[1]
    n_leaves = centroids.shape[0]
    out_r, out_d = _no_results(n, k)
    scored = np.zeros(n, dtype=np.int64)
    weights = np.empty(step.shape[0], dtype=np.float32)  # sq8's l2: the squared step
    for j in range(step.shape[0]):  # a loop, not step * step: that would be a parfor of its own
        weights[j] = step[j] * step[j]
    width = rerank if sq8 else k  # candidates kept while probing
    first = min(n_leaves, max(64, 4 * min_probe))
    for qi in prange(n):
        q = queries[qi]
        qc = np.empty(dim if sq8 else 0, dtype=np.float32)  # the query in code units
        base = 0.0
        if sq8 and ip:
            for j in range(dim):
                qc[j] = q[j] * step[j]
                base += q[j] * low[j]
        elif sq8:
            for j in range(dim):
                qc[j] = (q[j] - low[j]) / step[j]
        order = _leaf_order(q, centroids, norms, top_centroids, top_norms, top_offsets, ip, first)
        nearest = -1.0 if ip else _leaf_distance(q, centroids[order[0]], norms[order[0]])
        cand_d, cand_t = _candidates(width)  # cand_t: indexes into rows
        worst = 0
        seen = 0
        p = 0
        while p < n_leaves:
            if p == order.shape[0]:  # the first leaves were not enough: order them all
                order = _all_leaves(order, q, centroids, norms, ip)
            j = order[p]
            for t in range(offsets[j], offsets[j + 1]):
                if _is_set(allowed, rows[t]):
                    seen += 1
                    if sq8:
                        d = _code_distance(qc, weights, codes[positions[t]], ip, base)
                    else:
                        d = _distance(q, vectors[positions[t]], ip)
                    worst = _offer(cand_d, cand_t, worst, d, t)
            p += 1
            if (
                p >= min_probe
                and seen >= min_candidates
                and not _keep_probing(q, centroids, norms, order, p, first, nearest, probe_ratio)
            ):
                break
        scored[qi] = seen
        best_d, best_r = _candidates(k)
        worst = 0
        for i in range(width):
            t = cand_t[i]
            if t >= 0:
                d = _distance(q, vectors[positions[t]], ip) if sq8 else cand_d[i]
                worst = _offer(best_d, best_r, worst, d, rows[t])
        _finish(best_d, best_r, out_d[qi], out_r[qi])
    return out_r, out_d, scored


# -- SPANN posting lists ---------------------------------------------------------------------
# A record is ``words`` float32 slots: an int64 key (label | version << 48) in the first two,
# then the vector (padded to an even count so keys stay 8-byte aligned). ``f32`` and ``i64``
# view the same bytes, (records, words) and (records, words // 2).
SPANN_LABEL_BITS = 48


@njit(cache=True, inline="always", fastmath=_FAST)
def _scan_lists_one(
    q: np.ndarray,
    records: tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray, bool],
    starts: np.ndarray,
    counts: np.ndarray,
    out_r: np.ndarray,
    out_d: np.ndarray,
) -> int:
    """Merge the current records of some lists into a sorted top-k (``out_r``/``out_d``, kept
    sorted, padded -1/+inf); a label already there (a replica) is skipped, and so is one not
    set in ``bits`` (a packed scope bitmap; empty: no scope). Returns the records scanned.
    ``records``: what every query reads, (f32, i64, dim, version, bits, ip) of
    :func:`scan_lists`."""
    f32, i64, dim, version, bits, ip = records
    k = out_r.shape[0]
    mask = (np.int64(1) << SPANN_LABEL_BITS) - 1
    scanned = 0
    for li in range(starts.shape[0]):
        s = starts[li]
        for r in range(s, s + counts[li]):
            key = i64[r, 0]
            label = key & mask
            if label >= version.shape[0] or version[label] != (key >> SPANN_LABEL_BITS):
                continue  # deleted (flagged), or a stale copy: moved or replaced since
            if bits.shape[0] and (label >> 3 >= bits.shape[0] or not _is_set(bits, label)):
                continue  # outside the search's scope
            scanned += 1
            d = _distance(q, f32[r, 2 : 2 + dim], ip)
            if d >= out_d[k - 1]:
                continue
            dup = False
            for j in range(k):
                if out_r[j] == label:
                    dup = True
                    break
            if dup:
                continue
            j = k - 1
            while j > 0 and out_d[j - 1] > d:
                out_d[j] = out_d[j - 1]
                out_r[j] = out_r[j - 1]
                j -= 1
            out_d[j] = d
            out_r[j] = label
    return scanned


@njit(cache=True, parallel=True, nogil=True, fastmath=_FAST)
def scan_lists(
    queries: np.ndarray,
    f32: np.ndarray,
    i64: np.ndarray,
    ptr: np.ndarray,
    starts: np.ndarray,
    counts: np.ndarray,
    dim: int,
    version: np.ndarray,
    bits: np.ndarray,
    ip: bool,
    out_r: np.ndarray,
    out_d: np.ndarray,
) -> int:
    """Query i merges the lists ``starts/counts[ptr[i]:ptr[i+1]]`` into ``out_r[i]``/
    ``out_d[i]`` (see ``_scan_lists_one``); returns the records scanned. Queries in parallel;
    a single query on the calling thread alone (no thread team to wake)."""
    records = (f32, i64, dim, version, bits, ip)
    if queries.shape[0] == 1:
        a, b = ptr[0], ptr[1]
        return _scan_lists_one(queries[0], records, starts[a:b], counts[a:b], out_r[0], out_d[0])
    scanned = np.empty(queries.shape[0], dtype=np.int64)
    for qi in prange(queries.shape[0]):
        a, b = ptr[qi], ptr[qi + 1]
        q = queries[qi]
        scanned[qi] = _scan_lists_one(q, records, starts[a:b], counts[a:b], out_r[qi], out_d[qi])
    return scanned.sum()


@njit(cache=True, fastmath=_FAST)
def rng_replicas(
    vectors: np.ndarray,
    candidates: np.ndarray,
    centroids: np.ndarray,
    eps: float,
    most: int,
) -> np.ndarray:
    """SPANN's boundary replication: each vector's lists among its ``candidates`` (n, c)
    centroid ids (-1 padded): its nearest, then, closest first, every centroid within
    (1 + eps) x the nearest one's Euclidean distance, skipping one closer to an already chosen
    centroid than to the vector (the RNG rule), at most ``most``. Returns (n, most) int32, -1
    padded."""
    n, c = candidates.shape
    out = np.full((n, most), -1, dtype=np.int32)
    dist = np.empty(c, dtype=np.float32)
    for i in range(n):
        x = vectors[i]
        for j in range(c):
            cj = candidates[i, j]
            if cj < 0:
                dist[j] = np.inf
                continue
            acc = np.float32(0.0)
            for t in range(x.shape[0]):
                diff = x[t] - centroids[cj, t]
                acc += diff * diff
            dist[j] = np.sqrt(max(acc, np.float32(0.0)))
        order = np.argsort(dist)
        first = dist[order[0]]
        if first == np.inf:
            continue
        out[i, 0] = candidates[i, order[0]]
        chosen = 1
        for jj in range(1, c):
            if chosen >= most:
                break
            j = order[jj]
            if dist[j] == np.inf or dist[j] > (1.0 + eps) * first + 1e-12:
                break
            cj = candidates[i, j]
            blocked = False
            for s in range(chosen):
                cs = out[i, s]
                acc = np.float32(0.0)
                for t in range(x.shape[0]):
                    diff = centroids[cj, t] - centroids[cs, t]
                    acc += diff * diff
                if np.sqrt(acc) < dist[j]:
                    blocked = True
                    break
            if not blocked:
                out[i, chosen] = cj
                chosen += 1
    return out
