"""Numba kernels of shardwalk.walks: module-level functions on arrays and scalars.

No classes, no validation, no I/O: every caller checks its inputs once (``_check.py``) before
calling here, because numba does not bounds-check. Seeds are passed in.

Conventions shared by every kernel
----------------------------------
* A graph is CSR: ``indptr`` (n+1,) int64, ``indices`` (nnz,) int32 (int64 for huge graphs).
* ``weighted`` selects the weighted path. Weighted walks use per-row alias tables
  (``alias_prob`` float32, ``alias_idx`` int32 offsets inside the row); pushes use ``probs``
  (float64 transition probabilities w_uv / sum_v w_uv). Unweighted kernels receive empty arrays
  for these, so each kernel compiles once for both cases.
* ``mode`` is the dangling rule: 0 = self_loop (a node without out-edges keeps its mass or walk),
  1 = drop (the walk ends there and the (1 - alpha) share of its mass leaves the system),
  2 = restart (the walk jumps back to where it started; only the walk kernels and the exact
  solver use it, the other solvers compute restart as drop followed by renormalisation).
* Random numbers come from a counter-based generator: draw ``i`` of walk ``w`` from source ``s``
  is ``mix64(key(seed, s, w) + i * GAMMA)`` (SplitMix64's output function over a counter), so a
  walk depends only on (seed, source, walk index), never on the thread that ran it.
* alpha is the stop (teleport) probability; a walk's number of visits L is drawn up front from
  the geometric law P(L = l) = (1 - alpha)^(l-1) alpha, which is equivalent to stopping with
  probability alpha after each visit.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_GAMMA2 = np.uint64(0xD1B54A32D192ED03)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_S11 = np.uint64(11)
_LOW32 = np.uint64(0xFFFFFFFF)
_INV53 = 1.0 / 9007199254740992.0
_INV32 = 1.0 / 4294967296.0

MODE_SELF_LOOP = 0
MODE_DROP = 1
MODE_RESTART = 2


# --------------------------------------------------------------------------------------------
# counter-based random numbers


@njit(cache=True, inline="always")
def mix64(z):
    """SplitMix64 output function (a bijection on uint64 with full avalanche)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def walk_key(seed, source, walk):
    """The counter base of walk ``walk`` from ``source`` (all three are ints >= 0)."""
    k = mix64(np.uint64(seed) * _GAMMA2 + np.uint64(source))
    return mix64(k + np.uint64(walk) * _GAMMA2)


@njit(cache=True, inline="always")
def draw(key, i):
    """Draw ``i`` (uint64) of the stream ``key``."""
    return mix64(key + np.uint64(i) * _GAMMA)


@njit(cache=True, inline="always")
def to_unit(x):
    """uint64 -> float64 uniform in [0, 1)."""
    return float(x >> _S11) * _INV53


@njit(cache=True, inline="always")
def geometric_visits(key, alpha):
    """Number of visits L >= 1 of an alpha-terminated walk, from draw 0 of ``key``."""
    u = 1.0 - to_unit(draw(key, 0))  # in (0, 1]
    return 1 + np.int64(np.floor(np.log(u) / np.log1p(-alpha)))


@njit(cache=True)
def uniform_draws(seed, source, walk, count):
    """``count`` uniforms in [0, 1) of one walk's stream (used by tests of the generator)."""
    out = np.empty(count, np.float64)
    key = walk_key(seed, source, walk)
    for i in range(count):
        out[i] = to_unit(draw(key, i))
    return out


@njit(cache=True, inline="always")
def pick_slot(x, deg):
    """Slot in [0, deg) from the high 32 bits of draw ``x`` (multiply-shift)."""
    return np.int64(((x >> _S32) * np.uint64(deg)) >> _S32)


@njit(cache=True, inline="always")
def alias_coin(x):
    """Uniform in [0, 1) from the low 32 bits of draw ``x`` (the alias coin)."""
    return float(x & _LOW32) * _INV32


# Speed note: the hot loops below index arrays inline instead of calling helpers that take
# arrays: a numba call with array arguments updates reference counts (atomic operations) on
# every call, measured at ~20 ns per call, ten times the work of one push or walk step.


# --------------------------------------------------------------------------------------------
# transition structures


@njit(cache=True, parallel=True)
def row_probabilities(indptr, weights):
    """Transition probabilities w_uv / sum_v w_uv per row, float64 (so the exact solver's
    l1 <= 1e-10 is not spoiled by float32 rounding of P)."""
    n = indptr.size - 1
    out = np.empty(weights.size, np.float64)
    for u in prange(n):
        s = 0.0
        for e in range(indptr[u], indptr[u + 1]):
            s += weights[e]
        for e in range(indptr[u], indptr[u + 1]):
            out[e] = weights[e] / s
    return out


@njit(cache=True, parallel=True)
def alias_tables(indptr, weights, n_chunks):
    """Walker/Vose alias tables per row: slot j keeps itself with probability ``prob[j]``,
    else it goes to slot ``alias[j]`` (an offset inside the row)."""
    n = indptr.size - 1
    prob = np.ones(weights.size, np.float32)
    alias = np.zeros(weights.size, np.int32)
    max_deg = 0
    for u in range(n):
        max_deg = max(max_deg, indptr[u + 1] - indptr[u])
    for c in prange(n_chunks):
        scaled = np.empty(max_deg, np.float64)
        small = np.empty(max_deg, np.int64)
        large = np.empty(max_deg, np.int64)
        for u in range(c, n, n_chunks):
            start = indptr[u]
            deg = indptr[u + 1] - start
            if deg == 0:
                continue
            s = 0.0
            for j in range(deg):
                s += weights[start + j]
            ns = 0
            nl = 0
            for j in range(deg):
                scaled[j] = weights[start + j] * deg / s
                alias[start + j] = j
                if scaled[j] < 1.0:
                    small[ns] = j
                    ns += 1
                else:
                    large[nl] = j
                    nl += 1
            while ns > 0 and nl > 0:
                ns -= 1
                sj = small[ns]
                lj = large[nl - 1]
                prob[start + sj] = scaled[sj]
                alias[start + sj] = lj
                scaled[lj] = (scaled[lj] + scaled[sj]) - 1.0
                if scaled[lj] < 1.0:
                    nl -= 1
                    small[ns] = lj
                    ns += 1
            # leftovers are 1 up to rounding
            for t in range(nl):
                prob[start + large[t]] = 1.0
            for t in range(ns):
                prob[start + small[t]] = 1.0
    return prob, alias


# --------------------------------------------------------------------------------------------
# walks


@njit(cache=True, parallel=True)
def walk_visit_bounds(sources, walks_per_node, alpha, seed):
    """Per source, the total number of visits of its walks before any dangling rule cuts them
    (an upper bound on the visits, exact unless the drop rule ends walks early)."""
    out = np.empty(sources.size, np.int64)
    for b in prange(sources.size):
        src = sources[b]
        t = 0
        for w in range(walks_per_node):
            t += geometric_visits(walk_key(seed, src, w), alpha)
        out[b] = t
    return out


@njit(cache=True, parallel=True)
def walk_lengths(sources, walks_per_node, alpha, seed):
    """Visits of each walk before any dangling rule cuts it, walk b * R + w (source-major)."""
    out = np.empty(sources.size * walks_per_node, np.int64)
    for q in prange(out.size):
        out[q] = geometric_visits(
            walk_key(seed, sources[q // walks_per_node], q % walks_per_node), alpha
        )
    return out


@njit(cache=True, parallel=True)
def sample_walk_paths(
    indptr, indices, alias_prob, alias_idx, weighted, sources, walks_per_node, alpha, seed, mode,
    offsets, out_path, out_len,
):  # fmt: skip
    """The node sequences of ``walks_per_node`` walks per source. Walk ``b * R + w`` is written
    at ``out_path[offsets[b*R+w]:]`` with its length in ``out_len``; offsets are the prefix
    sums of ``walk_lengths``."""
    n_walks = sources.size * walks_per_node
    for q in prange(n_walks):
        b = q // walks_per_node
        w = q % walks_per_node
        src = sources[b]
        key = walk_key(seed, src, w)
        length = geometric_visits(key, alpha)
        base = offsets[q]
        cur = src
        m = 0
        for step in range(length):
            if step > 0:
                start = indptr[cur]
                deg = indptr[cur + 1] - start
                if deg == 0:
                    if mode == MODE_DROP:
                        break
                    if mode == MODE_RESTART:
                        cur = src
                else:
                    x = draw(key, step)
                    j = pick_slot(x, deg)
                    if weighted and alias_coin(x) >= alias_prob[start + j]:
                        j = alias_idx[start + j]
                    cur = indices[start + j]
            out_path[base + m] = cur
            m += 1
        out_len[q] = m


@njit(cache=True, parallel=True)
def fingerprint_block(
    indptr, indices, alias_prob, alias_idx, weighted, sources, walks_per_node, alpha, seed, mode,
    offsets, out_nodes, out_counts, out_nnz, out_visits, n_chunks,
):  # fmt: skip
    """Full-path visit counts (PowerWalk MCFP) of ``walks_per_node`` walks from each source.

    Source ``b`` writes its distinct visited nodes and their visit counts at
    ``out_nodes/out_counts[offsets[b]:offsets[b] + out_nnz[b]]`` in first-visit order, and its
    total number of visits in ``out_visits[b]``. ``offsets`` must leave room for the visit bound
    of ``walk_visit_bounds``. Sources are dealt round-robin to ``n_chunks`` chunks; each chunk
    owns one dense count array of n entries, reset sparsely after every source.
    """
    n = indptr.size - 1
    for c in prange(n_chunks):
        cnt = np.zeros(n, np.uint32)
        for b in range(c, sources.size, n_chunks):
            src = sources[b]
            base = offsets[b]
            m = 0
            visits = 0
            for w in range(walks_per_node):
                key = walk_key(seed, src, w)
                length = geometric_visits(key, alpha)
                cur = src
                for step in range(length):
                    if step > 0:
                        start = indptr[cur]
                        deg = indptr[cur + 1] - start
                        if deg == 0:
                            if mode == MODE_DROP:
                                break
                            if mode == MODE_RESTART:
                                cur = src
                        else:
                            x = draw(key, step)
                            j = pick_slot(x, deg)
                            if weighted and alias_coin(x) >= alias_prob[start + j]:
                                j = alias_idx[start + j]
                            cur = indices[start + j]
                    if cnt[cur] == 0:
                        out_nodes[base + m] = cur
                        m += 1
                    cnt[cur] += 1
                    visits += 1
            for t in range(m):
                v = out_nodes[base + t]
                out_counts[base + t] = cnt[v]
                cnt[v] = 0
            out_nnz[b] = m
            out_visits[b] = visits


@njit(cache=True, parallel=True)
def compact_fingerprints(
    offsets, nodes, counts, nnz, top_k, out_indptr, out_nodes, out_counts, out_cut
):
    """Copy each source's block into a contiguous CSR, keeping its ``top_k`` largest counts
    when ``top_k`` > 0 (ties: the first-visited wins); ``out_cut[b]`` gets the dropped count sum.
    ``out_indptr`` (B+1,) must already hold the kept sizes' prefix sums."""
    for b in prange(nnz.size):
        src_base = offsets[b]
        m = nnz[b]
        dst = out_indptr[b]
        if top_k <= 0 or m <= top_k:
            for t in range(m):
                out_nodes[dst + t] = nodes[src_base + t]
                out_counts[dst + t] = counts[src_base + t]
            out_cut[b] = 0
        else:
            seg = counts[src_base : src_base + m].astype(np.int64)
            order = np.argsort(-seg, kind="mergesort")
            cut = 0
            for t in range(m):
                if t < top_k:
                    out_nodes[dst + t] = nodes[src_base + order[t]]
                    out_counts[dst + t] = counts[src_base + order[t]]
                else:
                    cut += seg[order[t]]
            out_cut[b] = cut


# --------------------------------------------------------------------------------------------
# queries: shared helpers


# columns of a hybrid / compose / push query's ``out_stats`` row after its estimate's own
# (mass, dropped, lost, noise): the counted work (deterministic for a graph, its fingerprints
# and a query), what calibration compares instead of wall-clock time
WORK_PUSHED = 4  # out-edge updates of pushes (or rounds)
WORK_COMPOSED = 5  # fingerprint entries added (R-walk rows and hub rows)
WORK_TOUCHED = 6  # nodes that got mass (each is ranked for the top-k and reset)
STATS_COLUMNS = 7


@njit(cache=True, parallel=True)
def sort_rows_by_count(indptr, nodes, counts):
    """Copies of a fingerprint CSR's (nodes, counts) with each row's entries sorted by count,
    descending (ties by position), and each row's total count (float64)."""
    rows = indptr.size - 1
    out_nodes = np.empty_like(nodes)
    out_counts = np.empty_like(counts)
    total = np.zeros(rows, np.float64)
    for h in prange(rows):
        lo, hi = indptr[h], indptr[h + 1]
        c = counts[lo:hi]
        order = np.argsort(-c.astype(np.int64), kind="mergesort")
        s = 0.0
        for j in range(hi - lo):
            out_nodes[lo + j] = nodes[lo + order[j]]
            out_counts[lo + j] = c[order[j]]
            s += np.float64(c[order[j]])
        total[h] = s
    return out_nodes, out_counts, total


@njit(cache=True, parallel=True)
def count_runs(indptr, counts):
    """The runs of equal count of a fingerprint CSR whose rows are sorted by count
    (descending, ``sort_rows_by_count``): (run_ptr, run_start, run_count, run_cum), the runs
    of row h being run_ptr[h]:run_ptr[h + 1], each with its first entry, its count and the sum
    of the row's counts before it. A hub row of 1000 walks holds thousands of entries but
    only about 20 distinct counts, so a row's tail is sampled by runs (``_sample_runs``)."""
    rows = indptr.size - 1
    per = np.zeros(rows + 1, np.int64)
    for h in prange(rows):
        m = 0
        for e in range(indptr[h], indptr[h + 1]):
            if e == indptr[h] or counts[e] != counts[e - 1]:
                m += 1
        per[h + 1] = m
    run_ptr = np.cumsum(per)
    run_start = np.empty(run_ptr[-1], np.int64)
    run_count = np.empty(run_ptr[-1], np.float64)
    run_cum = np.empty(run_ptr[-1], np.float64)
    for h in prange(rows):
        j = run_ptr[h]
        s = 0.0
        for e in range(indptr[h], indptr[h + 1]):
            if e == indptr[h] or counts[e] != counts[e - 1]:
                run_start[j] = e
                run_count[j] = np.float64(counts[e])
                run_cum[j] = s
                j += 1
            s += np.float64(counts[e])
    return run_ptr, run_start, run_count, run_cum


@njit(cache=True, parallel=True)
def row_max_count(indptr, counts):
    """Per row of a fingerprint CSR, its largest count (0 for an empty row), float64."""
    rows = indptr.size - 1
    out = np.zeros(rows, np.float64)
    for u in prange(rows):
        m = 0.0
        for e in range(indptr[u], indptr[u + 1]):
            if counts[e] > m:
                m = np.float64(counts[e])
        out[u] = m
    return out


@njit(cache=True, inline="always")
def _add(arr, touched, nt, v, x):
    """arr[v] += x for x > 0, appending v to ``touched`` on its first non-zero value; returns
    nt. (Values are never negative, so a zero entry means untouched.)"""
    if x <= 0.0:
        return nt
    if arr[v] == 0.0:
        touched[nt] = v
        nt += 1
    arr[v] += x
    return nt


@njit(cache=True)
def top_k_of(touched, nt, values, k, out_ids, out_scores):
    """Write the ``k`` largest ``values[touched[:nt]]`` (descending; ties by lower node) into
    ``out_ids``/``out_scores``; pads with -1 / 0. Never scans all n nodes."""
    cand = touched[:nt].copy()
    vals = np.empty(nt, np.float64)
    for i in range(nt):
        vals[i] = values[cand[i]]
    if nt > k:
        kth = np.partition(vals, nt - k)[nt - k]
        keep = 0
        for i in range(nt):
            if values[cand[i]] >= kth:
                cand[keep] = cand[i]
                keep += 1
        cand = cand[:keep]
        vals = np.empty(keep, np.float64)
        for i in range(keep):
            vals[i] = values[cand[i]]
    # sort by (-value, node)
    order = np.argsort(cand, kind="mergesort")
    cand = cand[order]
    vals2 = np.empty(cand.size, np.float64)
    for i in range(cand.size):
        vals2[i] = -values[cand[i]]
    order = np.argsort(vals2, kind="mergesort")
    m = min(k, cand.size)
    for i in range(m):
        out_ids[i] = cand[order[i]]
        out_scores[i] = values[cand[order[i]]]
    for i in range(m, k):
        out_ids[i] = -1
        out_scores[i] = 0.0


# --------------------------------------------------------------------------------------------
# fingerprint composition (PowerWalk VERD)


@njit(cache=True, inline="always")
def _add_row(nodes, counts, lo, hi, a, var_factor, score, var, touched, nt):
    """score[x] += a * count, var[x] += a^2 * count * var_factor[x] over entries lo:hi of a
    fingerprint CSR; nodes enter ``touched`` when their score was 0. Returns nt.

    Full-path visit counts are overdispersed: a walk that reaches x returns to it, so the
    variance of the visits of x per walk is E[V](2 G_xx - 1), G_xx the expected visits of x
    from x (Poisson would be E[V]). ``var_factor[x]`` = 2 G_xx - 1, estimated from x's own
    fingerprint row."""
    a2 = a * a
    for e in range(lo, hi):
        x = nodes[e]
        c = np.float64(counts[e])
        if score[x] == 0.0:  # a * c > 0 (counts >= 1) unless a underflows
            touched[nt] = x
            nt += 1
        score[x] += a * c
        var[x] += a2 * c * var_factor[x]
    return nt


@njit(cache=True, inline="always")
def _compose_row(
    u, f, fp_indptr, fp_nodes, fp_counts, fp_scale, hub_pos, hub_indptr, hub_nodes, hub_counts,
    hub_scale, var_factor, score, var, touched, nt,
):  # fmt: skip
    """score += f * (node u's fingerprint), var += its MC variance proxy; a hub with a row of
    its own (``hub_pos[u] >= 0``, built from more walks) uses that row. Returns nt."""
    h = hub_pos[u] if hub_pos.size > 0 else -1
    if h >= 0:
        return _add_row(
            hub_nodes, hub_counts, hub_indptr[h], hub_indptr[h + 1], f * hub_scale, var_factor,
            score, var, touched, nt,
        )  # fmt: skip
    return _add_row(
        fp_nodes, fp_counts, fp_indptr[u], fp_indptr[u + 1], f * fp_scale, var_factor,
        score, var, touched, nt,
    )  # fmt: skip


@njit(cache=True, inline="always")
def _row_len(u, fp_indptr, hub_pos, hub_indptr):
    """Entries of the row ``_compose_row`` composes for node u."""
    h = hub_pos[u] if hub_pos.size > 0 else -1
    if h >= 0:
        return hub_indptr[h + 1] - hub_indptr[h]
    return fp_indptr[u + 1] - fp_indptr[u]


@njit(cache=True, inline="always")
def _add_row_flagged(nodes, counts, lo, hi, a, var_factor, p, var, flags, touched, nt):
    """``_add_row`` with membership in ``touched`` marked by flag bit 2 (for callers whose
    touched nodes may still have a zero estimate)."""
    a2 = a * a
    for e in range(lo, hi):
        x = nodes[e]
        c = np.float64(counts[e])
        if flags[x] & 2 == 0:
            flags[x] |= 2
            touched[nt] = x
            nt += 1
        p[x] += a * c
        var[x] += a2 * c * var_factor[x]
    return nt


@njit(cache=True)
def compose_one(
    indptr, indices, probs, weighted, fp_indptr, fp_nodes, fp_counts, fp_scale, fp_cut,
    hub_pos, hub_indptr, hub_nodes, hub_counts, hub_scale, var_factor,
    seed_nodes, seed_weights, alpha, rounds, threshold, drop_below, mode,
    flow, flow_next, score, var, frontier, frontier_next, touched, work,
):  # fmt: skip
    """One query: push the seed mass for ``rounds`` (T) synchronous rounds (keep alpha * f at a
    node, spread (1 - alpha) * f over its out-edges), then add the remaining flow times the
    stored fingerprints (score += f * alpha / R * counts, var += f^2 (alpha / R)^2 counts).
    Flow f is handled when it would be processed: f < ``drop_below`` is
    dropped; f < ``threshold`` is not pushed but composed with the node's fingerprint at once
    (PowerWalk's pruning is ``drop_below == threshold``). Hubs with rows of their own compose
    with those (see ``_compose_row``).

    Returns (nt, dropped, lost): ``touched[:nt]`` are the nodes with a score (their scores in
    ``score``, an MC variance proxy in ``var``), ``dropped`` the pruned flow plus the
    fingerprint mass lost to top-K truncation (an l1 loss), ``lost`` the mass that left at
    dangling nodes under the drop rule (part of the answer, not an error).
    All scratch arrays are left zeroed except ``score``/``var`` at ``touched[:nt]``.
    ``work`` (3,) receives the counted work as in ``hybrid_one``.
    """
    nf = 0
    for i in range(seed_nodes.size):
        nf = _add(flow, frontier, nf, seed_nodes[i], seed_weights[i])
    nt = 0
    dropped = 0.0
    lost = 0.0
    keep = 1.0 - alpha
    use_cut = fp_cut.size > 0
    pushed = 0
    composed = 0
    for _ in range(rounds):
        nn = 0
        for i in range(nf):
            u = frontier[i]
            f = flow[u]
            flow[u] = 0.0
            if f == 0.0:
                continue
            if f < drop_below:
                dropped += f
                continue
            if f < threshold:
                if use_cut:
                    dropped += f * fp_cut[u]
                composed += _row_len(u, fp_indptr, hub_pos, hub_indptr)
                nt = _compose_row(
                    u, f, fp_indptr, fp_nodes, fp_counts, fp_scale, hub_pos, hub_indptr,
                    hub_nodes, hub_counts, hub_scale, var_factor, score, var, touched, nt,
                )  # fmt: skip
                continue
            start = indptr[u]
            deg = indptr[u + 1] - start
            if deg == 0:
                if mode == MODE_SELF_LOOP:
                    nt = _add(score, touched, nt, u, f)  # the walk never leaves: all of f ends here
                else:
                    nt = _add(score, touched, nt, u, alpha * f)
                    lost += keep * f
                continue
            if score[u] == 0.0:
                touched[nt] = u
                nt += 1
            score[u] += alpha * f
            rest = keep * f
            inv = rest / deg
            pushed += deg
            for e in range(start, start + deg):
                x = rest * probs[e] if weighted else inv
                if x <= 0.0:
                    continue
                v = indices[e]
                if flow_next[v] == 0.0:
                    frontier_next[nn] = v
                    nn += 1
                flow_next[v] += x
        flow, flow_next = flow_next, flow
        frontier, frontier_next = frontier_next, frontier
        nf = nn
    for i in range(nf):
        u = frontier[i]
        f = flow[u]
        flow[u] = 0.0
        if f == 0.0:
            continue
        if f < drop_below:
            dropped += f
            continue
        if use_cut:
            dropped += f * fp_cut[u]
        composed += _row_len(u, fp_indptr, hub_pos, hub_indptr)
        nt = _compose_row(
            u, f, fp_indptr, fp_nodes, fp_counts, fp_scale, hub_pos, hub_indptr, hub_nodes,
            hub_counts, hub_scale, var_factor, score, var, touched, nt,
        )  # fmt: skip
    work[0] += pushed
    work[1] += composed
    work[2] += nt
    return nt, dropped, lost


@njit(cache=True, nogil=True)
def compose_chunk(
    c, n_chunks,
    indptr, indices, probs, weighted, fp_indptr, fp_nodes, fp_counts, fp_scale, fp_cut,
    hub_pos, hub_indptr, hub_nodes, hub_counts, hub_scale, var_factor,
    q_indptr, q_nodes, q_weights, alpha, rounds, threshold, drop_below, mode, k,
    flow, flow_next, score, var, frontier, frontier_next, touched,
    out_ids, out_scores, out_stats,
):  # fmt: skip
    """``compose_one`` for queries c, c + n_chunks, ... with scratch row c; top-k of each.
    ``out_stats[q]`` = (mass, dropped, lost, noise), noise = sqrt(2/pi) sum_x sqrt(var[x])
    (the expected l1 deviation if each composed entry were normal with that variance), then
    the counted work (``WORK_*`` columns)."""
    n_q = q_indptr.size - 1
    sc = score[c]
    vr = var[c]
    tc = touched[c]
    work = np.zeros(3, np.int64)
    for q in range(c, n_q, n_chunks):
        a, b = q_indptr[q], q_indptr[q + 1]
        work[:] = 0
        nt, dropped, lost = compose_one(
            indptr, indices, probs, weighted, fp_indptr, fp_nodes, fp_counts, fp_scale, fp_cut,
            hub_pos, hub_indptr, hub_nodes, hub_counts, hub_scale, var_factor,
            q_nodes[a:b], q_weights[a:b], alpha, rounds, threshold, drop_below, mode,
            flow[c], flow_next[c], sc, vr, frontier[c], frontier_next[c], tc, work,
        )  # fmt: skip
        mass = 0.0
        noise = 0.0
        for i in range(nt):
            mass += sc[tc[i]]
            noise += np.sqrt(vr[tc[i]])
        top_k_of(tc, nt, sc, k, out_ids[q], out_scores[q])
        for i in range(nt):
            sc[tc[i]] = 0.0
            vr[tc[i]] = 0.0
        out_stats[q, 0] = mass
        out_stats[q, 1] = dropped
        out_stats[q, 2] = lost
        out_stats[q, 3] = noise * 0.7978845608028654
        for j in range(3):
            out_stats[q, WORK_PUSHED + j] = work[j]


@njit(cache=True, parallel=True)
def compose_batch(
    indptr, indices, probs, weighted, fp_indptr, fp_nodes, fp_counts, fp_scale, fp_cut,
    hub_pos, hub_indptr, hub_nodes, hub_counts, hub_scale, var_factor,
    q_indptr, q_nodes, q_weights, alpha, rounds, threshold, drop_below, mode, k,
    flow, flow_next, score, var, frontier, frontier_next, touched,
    out_ids, out_scores, out_stats,
):  # fmt: skip
    """``compose_chunk`` for every scratch row (C, n) in parallel: one kernel call for a whole
    batch, each thread reusing its own dense arrays (reset sparsely between queries)."""
    n_chunks = flow.shape[0]
    for c in prange(n_chunks):
        compose_chunk(
            c, n_chunks,
            indptr, indices, probs, weighted, fp_indptr, fp_nodes, fp_counts, fp_scale, fp_cut,
            hub_pos, hub_indptr, hub_nodes, hub_counts, hub_scale, var_factor,
            q_indptr, q_nodes, q_weights, alpha, rounds, threshold, drop_below, mode, k,
            flow, flow_next, score, var, frontier, frontier_next, touched,
            out_ids, out_scores, out_stats,
        )  # fmt: skip


# --------------------------------------------------------------------------------------------
# forward push (Andersen, Chung, Lang 2006)


@njit(cache=True)
def push_one(
    indptr, indices, probs, weighted, seed_nodes, seed_weights, alpha, r_max, mode,
    p, r, queue, flags, touched, stop, work,
):  # fmt: skip
    """FIFO forward push until every residual r(u) < r_max * max(outdeg(u), 1), or until
    ``stop[0]`` is set (polled every 1024 pushes: the residual left still bounds the error).

    Returns (nt, residual, lost): ``touched[:nt]`` are all nodes that got mass (estimates in
    ``p``), ``residual`` = sum of the residuals left (the certified l1 error for self_loop and
    drop), ``lost`` the mass that left at dangling nodes (drop rule). ``r`` and ``flags``
    (bit 1: queued, bit 2: touched) are left zeroed; ``p`` is left set at ``touched[:nt]``
    (the caller reads and resets it). ``work`` (3,) receives the counted work as in
    ``hybrid_one``.
    """
    n = indptr.size - 1
    nt = 0
    head = 0
    size = 0
    for i in range(seed_nodes.size):
        v = seed_nodes[i]
        if flags[v] & 2 == 0:
            flags[v] |= 2
            touched[nt] = v
            nt += 1
        r[v] += seed_weights[i]
        if flags[v] & 1 == 0:
            flags[v] |= 1
            queue[(head + size) % n] = v
            size += 1
    lost = 0.0
    keep = 1.0 - alpha
    pops = 0
    pushed = 0
    while size > 0:
        pops += 1
        if pops & 1023 == 0 and stop[0]:
            break
        u = queue[head]
        head = (head + 1) % n
        size -= 1
        flags[u] &= 2
        ru = r[u]
        start = indptr[u]
        deg = indptr[u + 1] - start
        if ru <= 0.0 or ru < r_max * max(deg, 1):
            continue
        r[u] = 0.0
        if deg == 0:
            if mode == MODE_SELF_LOOP:
                p[u] += ru
            else:
                p[u] += alpha * ru
                lost += keep * ru
            continue
        p[u] += alpha * ru
        rest = keep * ru
        inv = rest / deg
        pushed += deg
        for e in range(start, start + deg):
            v = indices[e]
            x = rest * probs[e] if weighted else inv
            if flags[v] & 2 == 0:
                flags[v] |= 2
                touched[nt] = v
                nt += 1
            r[v] += x
            if flags[v] & 1 == 0 and r[v] >= r_max * max(indptr[v + 1] - indptr[v], 1):
                flags[v] |= 1
                queue[(head + size) % n] = v
                size += 1
    residual = 0.0
    for i in range(nt):
        v = touched[i]
        residual += r[v]
        r[v] = 0.0
        flags[v] = 0
    work[0] += pushed
    work[2] += nt
    return nt, residual, lost


@njit(cache=True, nogil=True)
def push_chunk(
    c, n_chunks,
    indptr, indices, probs, weighted, q_indptr, q_nodes, q_weights, alpha, r_max, mode, k,
    p, r, queue, flags, touched, out_ids, out_scores, out_stats, stop,
):  # fmt: skip
    """``push_one`` for queries c, c + n_chunks, ... with scratch row c. ``out_stats[q]`` =
    (mass, residual, lost, 0), then the counted work (``WORK_*`` columns)."""
    n_q = q_indptr.size - 1
    pc = p[c]
    tc = touched[c]
    work = np.zeros(3, np.int64)
    for q in range(c, n_q, n_chunks):
        a, b = q_indptr[q], q_indptr[q + 1]
        work[:] = 0
        nt, residual, lost = push_one(
            indptr, indices, probs, weighted, q_nodes[a:b], q_weights[a:b], alpha, r_max,
            mode, pc, r[c], queue[c], flags[c], tc, stop, work,
        )  # fmt: skip
        mass = 0.0
        for i in range(nt):
            mass += pc[tc[i]]
        top_k_of(tc, nt, pc, k, out_ids[q], out_scores[q])
        for i in range(nt):
            pc[tc[i]] = 0.0
        out_stats[q, 0] = mass
        out_stats[q, 1] = residual
        out_stats[q, 2] = lost
        out_stats[q, 3] = 0.0
        for j in range(3):
            out_stats[q, WORK_PUSHED + j] = work[j]


@njit(cache=True, parallel=True)
def push_batch(
    indptr, indices, probs, weighted, q_indptr, q_nodes, q_weights, alpha, r_max, mode, k,
    p, r, queue, flags, touched, out_ids, out_scores, out_stats, stop,
):  # fmt: skip
    """``push_chunk`` for every scratch row in parallel."""
    n_chunks = p.shape[0]
    for c in prange(n_chunks):
        push_chunk(
            c, n_chunks,
            indptr, indices, probs, weighted, q_indptr, q_nodes, q_weights, alpha, r_max, mode, k,
            p, r, queue, flags, touched, out_ids, out_scores, out_stats, stop,
        )  # fmt: skip


# --------------------------------------------------------------------------------------------
# hybrid: forward push that stops at hubs, then every residual composed with fingerprints


@njit(cache=True)
def _kth_floor(touched, nt, p, r, alpha, k):
    """A lower bound of the k-th largest score of the whole vector after a push: the k-th
    largest p(u) + alpha r(u) over ``touched[:nt]`` (the estimate keeps at least alpha of a
    residual at its node), 0 when fewer than k nodes were touched."""
    if k <= 0 or nt < k:
        return 0.0
    vals = np.empty(nt, np.float64)
    for i in range(nt):
        u = touched[i]
        vals[i] = p[u] + alpha * r[u]
    return np.partition(vals, nt - k)[nt - k]


@njit(cache=True, inline="always")
def _add_row_deferred(nodes, counts, lo, hi, a, p, var, flags, touched, nt):
    """``_add_row_flagged`` without the variance factor: var[x] += a^2 * count, to be
    multiplied by ``var_factor[x]`` once per touched node at the end (one memory access per
    node instead of one per entry)."""
    a2 = a * a
    for e in range(lo, hi):
        x = nodes[e]
        c = np.float64(counts[e])
        if flags[x] & 2 == 0:
            flags[x] |= 2
            touched[nt] = x
            nt += 1
        p[x] += a * c
        var[x] += a2 * c
    return nt


@njit(cache=True, inline="always")
def _sample_runs(
    nodes, run_start, run_count, run_cum, j, j_end, row_end, a, tau, key, p, var, flags,
    touched, nt,
):  # fmt: skip
    """The tail of a row sorted by count (descending) from run j on (runs j:j_end, each entry
    adding a * count < tau), by systematic sampling over the tail's cumulative count: grid
    points at (u + m) * tau / a, and the entry under each point adds tau. An entry of count c
    spans c < tau / a, so it is hit at most once, with probability a c / tau: its expected
    addition is its own (unbiased). The cost is the points drawn (the tail's mass / tau) plus
    the runs passed, never the tail's length. Returns (nt, points, runs passed); var as in
    ``_add_row_deferred`` (tau^2 / c per hit: the hit's variance is tau^2 q (1 - q) / q^2 per
    unit of the entry's own, q = a c / tau)."""
    if j >= j_end:
        return nt, 0, 0
    stride = tau / a
    base = run_cum[j]
    y = to_unit(key) * stride
    t2 = tau * tau
    points = 0
    passed = 0
    while True:
        # advance to the run holding y (runs' cumulative counts increase)
        while j + 1 < j_end and run_cum[j + 1] - base <= y:
            j += 1
            passed += 1
        end = run_start[j + 1] if j + 1 < j_end else row_end
        c = run_count[j]
        e = run_start[j] + np.int64((y - (run_cum[j] - base)) / c)
        if e >= end:
            if j + 1 >= j_end:
                break  # past the tail
            e = end - 1  # rounding at a run's end
        v = nodes[e]
        if flags[v] & 2 == 0:
            flags[v] |= 2
            touched[nt] = v
            nt += 1
        p[v] += tau
        var[v] += t2 / c
        points += 1
        y += stride
    return nt, points, passed


@njit(cache=True)
def hybrid_one(
    indptr, indices, probs, weighted, fp_indptr, fp_nodes, fp_counts, fp_scale, fp_cut,
    hub_pos, hub_indptr, hub_nodes, hub_counts, hub_scale, var_factor, row_max, run_ptr,
    run_start, run_count, run_cum,
    seed_nodes, seed_weights, alpha, r_max, absorb, drop_below, prune, k, mode,
    p, r, var, queue, flags, touched, stop, work,
):  # fmt: skip
    """FIFO forward push until every residual r(u) < r_max * max(outdeg(u), 1), except that
    with ``absorb`` hubs (``hub_pos[u] >= 0``) are never pushed: their residual accumulates.
    Then each node's residual meets its fingerprint (a hub's own row, from many walks):
    p += r(u) * fp(u), var += the MC variance proxy. Residuals below ``drop_below`` are
    dropped (an l1 loss).

    Pushing is exact and cheap where degrees are small; hubs, where pushing costs most and
    where residual mass concentrates, answer from rows of many walks, and the mass that meets
    the noisy R-walk rows is only what is left below r_max.

    Contribution pruning (``prune`` > 0, top-``k`` queries): after the push, theta = a lower
    bound of the k-th largest score (``_kth_floor``) and tau = prune * theta. A fingerprint
    entry adding less than tau to a node is below what can move a node across the top-k
    boundary on its own, so rows are composed exactly only down to tau: a hub row (its
    entries sorted by count, descending) up to its first entry below tau, the rest sampled
    (``_sample_runs``: unbiased, each kept entry adds tau); an R-walk row whose largest entry (``row_max``) adds less than tau is
    composed with probability q = its largest contribution / tau and weight 1 / q (Russian
    roulette: unbiased, each entry then adds at most tau), its coin a hash of the query's first
    seed and the node, so a query always gets the same answer.

    ``work`` (3,) receives the counted work: out-edge updates, fingerprint entries added, nodes
    touched. Returns (nt, dropped, lost): ``touched[:nt]`` hold the estimates in ``p`` (and
    ``var``); r and flags are left zeroed.
    """
    n = indptr.size - 1
    nt = 0
    head = 0
    size = 0
    for i in range(seed_nodes.size):
        v = seed_nodes[i]
        if flags[v] & 2 == 0:
            flags[v] |= 2
            touched[nt] = v
            nt += 1
        r[v] += seed_weights[i]
        if flags[v] & 1 == 0 and (not absorb or hub_pos[v] < 0):
            flags[v] |= 1
            queue[(head + size) % n] = v
            size += 1
    lost = 0.0
    keep = 1.0 - alpha
    pops = 0
    pushed = 0
    while size > 0:
        pops += 1
        if pops & 1023 == 0 and stop[0]:
            break
        u = queue[head]
        head = (head + 1) % n
        size -= 1
        flags[u] &= 2
        ru = r[u]
        start = indptr[u]
        deg = indptr[u + 1] - start
        if ru <= 0.0 or ru < r_max * max(deg, 1):
            continue
        r[u] = 0.0
        if deg == 0:
            if mode == MODE_SELF_LOOP:
                p[u] += ru
            else:
                p[u] += alpha * ru
                lost += keep * ru
            continue
        p[u] += alpha * ru
        rest = keep * ru
        inv = rest / deg
        pushed += deg
        for e in range(start, start + deg):
            v = indices[e]
            x = rest * probs[e] if weighted else inv
            if flags[v] & 2 == 0:
                flags[v] |= 2
                touched[nt] = v
                nt += 1
            r[v] += x
            if (
                flags[v] & 1 == 0
                and (not absorb or hub_pos[v] < 0)
                and r[v] >= r_max * max(indptr[v + 1] - indptr[v], 1)
            ):
                flags[v] |= 1
                queue[(head + size) % n] = v
                size += 1
    # compose: membership in touched is flag bit 2 (a pushed-through node may still have p 0)
    n_pushed = nt
    dropped = 0.0
    use_cut = fp_cut.size > 0
    tau = prune * _kth_floor(touched, nt, p, r, alpha, k) if prune > 0.0 else 0.0
    key = mix64(np.uint64(seed_nodes[0] if seed_nodes.size else 0) + _GAMMA)
    composed = 0
    for i in range(n_pushed):
        u = touched[i]
        ru = r[u]
        if ru == 0.0:
            continue
        r[u] = 0.0
        if ru < drop_below:
            dropped += ru
            continue
        h = hub_pos[u]
        if h >= 0:
            a = ru * hub_scale
            lo = hub_indptr[h]
            hi = hub_indptr[h + 1]
            if tau > 0.0:  # entries sorted by count, descending: keep those adding >= tau
                c_min = tau / a
                j_lo = run_ptr[h]
                j_end = run_ptr[h + 1]
                top = j_end
                while j_lo < top:  # first run with count < c_min
                    mid = (j_lo + top) >> 1
                    if run_count[mid] >= c_min:
                        j_lo = mid + 1
                    else:
                        top = mid
                bot = run_start[j_lo] if j_lo < j_end else hi
                composed += bot - lo + 1
                nt = _add_row_deferred(
                    hub_nodes, hub_counts, lo, bot, a, p, var, flags, touched, nt,
                )  # fmt: skip
                nt, points, passed = _sample_runs(
                    hub_nodes, run_start, run_count, run_cum, j_lo, j_end, hi, a, tau,
                    mix64(key ^ np.uint64(u)), p, var, flags, touched, nt,
                )  # fmt: skip
                composed += points + passed
                continue
            composed += hi - lo
            nt = _add_row_deferred(hub_nodes, hub_counts, lo, hi, a, p, var, flags, touched, nt)
            continue
        a = ru * fp_scale
        if tau > 0.0 and row_max.size > 0:
            top_add = a * row_max[u]
            if top_add < tau:  # roulette: unbiased, each entry adds at most tau
                composed += 1
                q = top_add / tau
                if to_unit(mix64(key ^ np.uint64(u))) >= q:
                    continue
                a /= q
                ru /= q
        if use_cut:
            dropped += ru * fp_cut[u]
        lo = fp_indptr[u]
        hi = fp_indptr[u + 1]
        composed += hi - lo
        nt = _add_row_deferred(fp_nodes, fp_counts, lo, hi, a, p, var, flags, touched, nt)
    for i in range(nt):
        x = touched[i]
        flags[x] = 0
        var[x] *= var_factor[x]
    work[0] += pushed
    work[1] += composed
    work[2] += nt
    return nt, dropped, lost


@njit(cache=True, nogil=True)
def hybrid_chunk(
    c, n_chunks,
    indptr, indices, probs, weighted, fp_indptr, fp_nodes, fp_counts, fp_scale, fp_cut,
    hub_pos, hub_indptr, hub_nodes, hub_counts, hub_scale, var_factor, row_max, run_ptr,
    run_start, run_count, run_cum,
    q_indptr, q_nodes, q_weights, alpha, r_max, absorb, drop_below, prune, mode, k,
    p, r, var, queue, flags, touched, out_ids, out_scores, out_stats, stop,
):  # fmt: skip
    """``hybrid_one`` for queries c, c + n_chunks, ... with scratch row c; top-k of each.
    ``out_stats[q]`` = (mass, dropped, lost, noise) as in ``compose_chunk``, then the counted
    work (``WORK_*`` columns)."""
    n_q = q_indptr.size - 1
    pc = p[c]
    vc = var[c]
    tc = touched[c]
    work = np.zeros(3, np.int64)
    for q in range(c, n_q, n_chunks):
        a, b = q_indptr[q], q_indptr[q + 1]
        work[:] = 0
        nt, dropped, lost = hybrid_one(
            indptr, indices, probs, weighted, fp_indptr, fp_nodes, fp_counts, fp_scale, fp_cut,
            hub_pos, hub_indptr, hub_nodes, hub_counts, hub_scale, var_factor, row_max,
            run_ptr, run_start, run_count, run_cum, q_nodes[a:b], q_weights[a:b], alpha, r_max, absorb, drop_below, prune,
            k, mode, pc, r[c], vc, queue[c], flags[c], tc, stop, work,
        )  # fmt: skip
        mass = 0.0
        noise = 0.0
        for i in range(nt):
            mass += pc[tc[i]]
            noise += np.sqrt(vc[tc[i]])
        top_k_of(tc, nt, pc, k, out_ids[q], out_scores[q])
        for i in range(nt):
            pc[tc[i]] = 0.0
            vc[tc[i]] = 0.0
        out_stats[q, 0] = mass
        out_stats[q, 1] = dropped
        out_stats[q, 2] = lost
        out_stats[q, 3] = noise * 0.7978845608028654
        for j in range(3):
            out_stats[q, WORK_PUSHED + j] = work[j]


@njit(cache=True, parallel=True)
def hybrid_batch(
    indptr, indices, probs, weighted, fp_indptr, fp_nodes, fp_counts, fp_scale, fp_cut,
    hub_pos, hub_indptr, hub_nodes, hub_counts, hub_scale, var_factor, row_max, run_ptr,
    run_start, run_count, run_cum,
    q_indptr, q_nodes, q_weights, alpha, r_max, absorb, drop_below, prune, mode, k,
    p, r, var, queue, flags, touched, out_ids, out_scores, out_stats, stop,
):  # fmt: skip
    """``hybrid_chunk`` for every scratch row in parallel."""
    n_chunks = p.shape[0]
    for c in prange(n_chunks):
        hybrid_chunk(
            c, n_chunks,
            indptr, indices, probs, weighted, fp_indptr, fp_nodes, fp_counts, fp_scale, fp_cut,
            hub_pos, hub_indptr, hub_nodes, hub_counts, hub_scale, var_factor, row_max,
            run_ptr, run_start, run_count, run_cum, q_indptr, q_nodes, q_weights, alpha, r_max, absorb, drop_below, prune,
            mode, k, p, r, var, queue, flags, touched, out_ids, out_scores, out_stats, stop,
        )  # fmt: skip


# --------------------------------------------------------------------------------------------
# exact: power iteration in Neumann-series form


@njit(cache=True)
def exact_one(
    indptr, indices, probs, weighted, seed_nodes, seed_weights, alpha, tol, max_iter, mode, stop
):
    """pi = sum_j alpha (1 - alpha)^j (P^T)^j s, summed until the mass still in flight (the
    l1 norm of the remaining series terms' source, an upper bound of the l1 error) is <= tol.

    P honours ``mode`` (0 self_loop: a dangling row is e_u; 1 drop: a zero row; 2 restart: a
    dangling row is the seed distribution s). Stops early when ``stop[0]`` is set (checked
    every iteration). Returns (x, tail, iterations).
    """
    n = indptr.size - 1
    x = np.zeros(n, np.float64)
    v = np.zeros(n, np.float64)
    nv = np.zeros(n, np.float64)
    for i in range(seed_nodes.size):
        v[seed_nodes[i]] += seed_weights[i]
    keep = 1.0 - alpha
    it = 0
    tail = 0.0
    for i in range(n):
        tail += v[i]
    while tail > tol and it < max_iter and stop[0] == 0:
        dangling = 0.0
        for u in range(n):
            vu = v[u]
            if vu == 0.0:
                continue
            x[u] += alpha * vu
            start = indptr[u]
            deg = indptr[u + 1] - start
            if deg == 0:
                if mode == MODE_SELF_LOOP:
                    nv[u] += keep * vu
                elif mode == MODE_RESTART:
                    dangling += keep * vu
                continue
            rest = keep * vu
            if weighted:
                for e in range(start, start + deg):
                    nv[indices[e]] += rest * probs[e]
            else:
                inv = rest / deg
                for e in range(start, start + deg):
                    nv[indices[e]] += inv
        if dangling > 0.0:
            for i in range(seed_nodes.size):
                nv[seed_nodes[i]] += dangling * seed_weights[i]
        v, nv = nv, v
        nv[:] = 0.0
        tail = 0.0
        for i in range(n):
            tail += v[i]
        it += 1
    return x, tail, it


@njit(cache=True, nogil=True)
def exact_chunk(
    c,
    n_chunks,
    indptr,
    indices,
    probs,
    weighted,
    q_indptr,
    q_nodes,
    q_weights,
    alpha,
    tol,
    max_iter,
    mode,
    k,
    out_ids,
    out_scores,
    out_stats,
    stop,
):
    """``exact_one`` for queries c, c + n_chunks, ...; top-k of each; ``out_stats[q]`` =
    (mass, tail, iterations)."""
    n_q = q_indptr.size - 1
    for q in range(c, n_q, n_chunks):
        a, b = q_indptr[q], q_indptr[q + 1]
        x, tail, it = exact_one(
            indptr,
            indices,
            probs,
            weighted,
            q_nodes[a:b],
            q_weights[a:b],
            alpha,
            tol,
            max_iter,
            mode,
            stop,
        )
        nz = np.flatnonzero(x)
        top_k_of(nz, nz.size, x, k, out_ids[q], out_scores[q])
        out_stats[q, 0] = x.sum()
        out_stats[q, 1] = tail
        out_stats[q, 2] = it


@njit(cache=True, parallel=True)
def exact_batch(
    indptr,
    indices,
    probs,
    weighted,
    q_indptr,
    q_nodes,
    q_weights,
    alpha,
    tol,
    max_iter,
    mode,
    k,
    out_ids,
    out_scores,
    out_stats,
    stop,
    n_chunks,
):
    """``exact_chunk`` over ``n_chunks`` chunks in parallel."""
    for c in prange(n_chunks):
        exact_chunk(
            c,
            n_chunks,
            indptr,
            indices,
            probs,
            weighted,
            q_indptr,
            q_nodes,
            q_weights,
            alpha,
            tol,
            max_iter,
            mode,
            k,
            out_ids,
            out_scores,
            out_stats,
            stop,
        )


# --------------------------------------------------------------------------------------------
# FastRP


@njit(cache=True, parallel=True)
def sparse_projection_rows(n, dim, density, seed, scale_by_row):
    """Very sparse random projection (Achlioptas; Li, Hastie, Church): entry (j, c) is
    +-sqrt(1/density) with probability density/2 each, else 0, times ``scale_by_row[j]``
    (empty = 1). Returned dense (n, dim) float32, drawn from a counter per (seed, j, c)."""
    out = np.zeros((n, dim), np.float32)
    mag = np.sqrt(1.0 / density)
    use_scale = scale_by_row.size > 0
    for j in prange(n):
        key = walk_key(seed, j, 0)
        s = scale_by_row[j] if use_scale else 1.0
        for c in range(dim):
            u = to_unit(draw(key, c))
            if u < density * 0.5:
                out[j, c] = mag * s
            elif u < density:
                out[j, c] = -mag * s
    return out


@njit(cache=True, parallel=True)
def propagate(indptr, indices, probs, weighted, x, out):
    """out = P x for the row-stochastic transition matrix P (rows without out-edges give 0)."""
    n = indptr.size - 1
    dim = x.shape[1]
    for u in prange(n):
        start = indptr[u]
        deg = indptr[u + 1] - start
        for c in range(dim):
            out[u, c] = 0.0
        if deg == 0:
            continue
        for e in range(start, start + deg):
            v = indices[e]
            w = probs[e] if weighted else 1.0 / deg
            for c in range(dim):
                out[u, c] += w * x[v, c]


@njit(cache=True, parallel=True)
def add_normalized_rows(acc, x, weight):
    """acc += weight * x / ||x||_2 row by row (zero rows add nothing)."""
    n, dim = x.shape
    for u in prange(n):
        s = 0.0
        for c in range(dim):
            s += np.float64(x[u, c]) * x[u, c]
        if s > 0.0:
            f = weight / np.sqrt(s)
            for c in range(dim):
                acc[u, c] += f * x[u, c]


# --------------------------------------------------------------------------------------------
# walk store: kept walks, repaired after graph updates (walks/walkstore.py)
#
# A dynamic graph is the base CSR plus a log-structured extension per node: node u's current
# row is its base row (if ``b_live[u]``) followed by ``d_targets[row_start[u]:row_start[u] +
# row_len[u]]`` (in order of arrival; weights: cumulative from the segment's start in ``d_cum``,
# the base row's total in ``b_tot``). A kept walk of source s is its visits after the first (s
# itself): ``steps[blk_start[b] + ...]`` (3 bytes: ``steps`` the low 16 bits, ``steps_hi`` the
# rest), the R walks of block b one after the other, walk
# ``b * R + w`` with ``walk_len`` steps; ``dropped`` (drop rule only) marks walks that ended at
# a dangling node rather than by stopping.


@njit(cache=True, inline="always")
def dyn_next(cur, x, b_indptr, b_indices, a_prob, a_idx, weighted, b_tot, b_live, row_start,
             row_len, d_targets, d_cum):  # fmt: skip
    """The out-neighbour of ``cur`` chosen by draw ``x`` on the dynamic graph, -1 if none.
    Rows without an extension choose exactly as the fingerprint builder does."""
    bdeg = np.int64(0)
    start = np.int64(0)
    if b_live[cur]:
        start = b_indptr[cur]
        bdeg = b_indptr[cur + 1] - start
    xlen = row_len[cur]
    if xlen == 0:
        if bdeg == 0:
            return np.int64(-1)
        j = pick_slot(x, bdeg)
        if weighted and alias_coin(x) >= a_prob[start + j]:
            j = a_idx[start + j]
        return np.int64(b_indices[start + j])
    rs = row_start[cur]
    if not weighted:
        j = pick_slot(x, bdeg + xlen)
        if j < bdeg:
            return np.int64(b_indices[start + j])
        return np.int64(d_targets[rs + j - bdeg])
    base = b_tot[cur] if bdeg > 0 else 0.0
    target = to_unit(x) * (base + d_cum[rs + xlen - 1])
    if target < base:  # the base row, by its alias table (slot and coin from one uniform)
        s = target / base * bdeg
        j = min(np.int64(s), bdeg - 1)
        if s - j >= a_prob[start + j]:
            j = a_idx[start + j]
        return np.int64(b_indices[start + j])
    target -= base
    lo = 0
    hi = xlen - 1
    while lo < hi:  # first slot whose cumulative weight exceeds the target
        mid = (lo + hi) // 2
        if d_cum[rs + mid] > target:
            hi = mid
        else:
            lo = mid + 1
    return np.int64(d_targets[rs + lo])


@njit(cache=True)
def base_find(b_indptr, b_indices, b_live, src, dst, out):
    """``out[i]``: the position in ``b_indices`` of edge ``src[i] -> dst[i]`` in its source's
    base row (sorted), -1 if absent or the row is no longer current (``b_live``)."""
    for i in range(src.size):
        u = src[i]
        out[i] = -1
        if not b_live[u]:
            continue
        lo = b_indptr[u]
        hi = b_indptr[u + 1]
        while lo < hi:
            mid = (lo + hi) // 2
            if b_indices[mid] < dst[i]:
                lo = mid + 1
            else:
                hi = mid
        if lo < b_indptr[u + 1] and b_indices[lo] == dst[i]:
            out[i] = lo


@njit(cache=True, inline="always")
def _walk_tail(key, first, visits, src, mode, b_indptr, b_indices, a_prob, a_idx, weighted,
               b_tot, b_live, row_start, row_len, d_targets, d_cum, out, out_hi, at):  # fmt: skip
    """Walk ``visits`` visits from ``first`` (written at out[at], low 16 bits, and out_hi[at],
    the rest; draws 1.. of ``key`` pick the moves); returns (steps written, dropped)."""
    cur = first
    m = 0
    if first >= 0:
        out[at] = first & 0xFFFF
        out_hi[at] = first >> 16
        m = 1
    for step in range(1, visits):
        nxt = dyn_next(cur, draw(key, step), b_indptr, b_indices, a_prob, a_idx, weighted,
                       b_tot, b_live, row_start, row_len, d_targets, d_cum)  # fmt: skip
        if nxt < 0:
            if mode == MODE_DROP:
                return m, True
            nxt = cur
        out[at + m] = nxt & 0xFFFF
        out_hi[at + m] = nxt >> 16
        cur = nxt
        m += 1
    return m, False


@njit(cache=True, parallel=True)
def walks_bounds(sources, walk0, walks_per_node, alpha, seed):
    """Steps (visits - 1) of each walk before any dangling rule cuts it, source-major (the
    walks of source b are walk0[b] + 0..R-1)."""
    out = np.empty(sources.size * walks_per_node, np.int64)
    for q in prange(out.size):
        b = q // walks_per_node
        out[q] = (
            geometric_visits(walk_key(seed, sources[b], walk0[b] + q % walks_per_node), alpha) - 1
        )
    return out


@njit(cache=True, parallel=True)
def walks_build(sources, walk0, walks_per_node, alpha, seed, mode, b_indptr, b_indices, a_prob,
                a_idx, weighted, b_tot, b_live, row_start, row_len, d_targets, d_cum, walk_at, steps, walk_len,
                dropped):  # fmt: skip
    """The walks of ``sources`` (the fingerprint builder's walks: same keys, same moves on
    unchanged rows), walk q written at ``steps[walk_at[q]:]``."""
    for q in prange(sources.size * walks_per_node):
        src = sources[q // walks_per_node]
        key = walk_key(seed, src, walk0[q // walks_per_node] + q % walks_per_node)
        visits = geometric_visits(key, alpha)
        cur = np.int64(src)
        m = 0
        drop = False
        for step in range(1, visits):
            nxt = dyn_next(cur, draw(key, step), b_indptr, b_indices, a_prob, a_idx, weighted,
                           b_tot, b_live, row_start, row_len, d_targets, d_cum)  # fmt: skip
            if nxt < 0:
                if mode == MODE_DROP:
                    drop = True
                    break
                nxt = cur
            steps[walk_at[q] + m] = nxt
            cur = nxt
            m += 1
        walk_len[q] = m
        if dropped.size:
            dropped[q] = drop


@njit(cache=True, inline="always")
def _row_prob(ip, tg, wt, tot, slot, t):
    """Probability of moving to ``t`` in row ``slot`` of a changed-row table (targets sorted,
    row weight totals in ``tot``)."""
    lo = ip[slot]
    hi = ip[slot + 1]
    while lo < hi:
        mid = (lo + hi) // 2
        if tg[mid] < t:
            lo = mid + 1
        else:
            hi = mid
    if lo < ip[slot + 1] and tg[lo] == t:
        return wt[lo] / tot[slot]
    return 0.0


@njit(cache=True, inline="always")
def _residual_pick(u01, o_ip, o_t, o_w, o_tot, n_ip, n_t, n_w, n_tot, slot):
    """A target drawn from (q - p)^+ normalised, p and q the old and new rows of ``slot``
    (both sorted by target: one merge pass to total the mass, one to pick)."""
    target = -1.0
    acc = 0.0
    last = np.int64(n_t[n_ip[slot + 1] - 1])
    for rnd in range(2):
        f = o_ip[slot]
        for e in range(n_ip[slot], n_ip[slot + 1]):
            t = n_t[e]
            while f < o_ip[slot + 1] and o_t[f] < t:
                f += 1
            p = o_w[f] / o_tot[slot] if f < o_ip[slot + 1] and o_t[f] == t else 0.0
            q = n_w[e] / n_tot[slot]
            if q > p:
                acc += q - p
                if rnd == 1:
                    last = np.int64(t)
                    if acc > target:
                        return last
        if rnd == 0:
            target = u01 * acc
            acc = 0.0
    return last


@njit(cache=True, inline="always")
def batch_key(seed, src, walk, seq):
    """The random stream of one walk's repair in update batch ``seq``."""
    return mix64(mix64(walk_key(seed, src, walk)) + np.uint64(seq + 1) * _GAMMA2)


@njit(cache=True, inline="always")
def _plan_walk(q, src, walk_no, at, length, alpha, seed, seq, dropped, steps, steps_hi, chg_slot,
               chg_bits, chg_kind, o_ip, o_t, o_w, o_tot, n_ip, n_t, n_w, n_tot):  # fmt: skip
    """(rerouted visit or -1, its new move, steps of the walk after the batch: an upper bound
    when the drop rule may cut it) of walk ``q`` (number ``walk_no`` of source ``src``, its
    ``length`` steps from ``steps[at]``); see :func:`walks_plan`."""
    key = np.uint64(0)
    for pos in range(length + 1):
        v = (
            np.int64(src)
            if pos == 0
            else (np.int64(steps[at + pos - 1]) | (np.int64(steps_hi[at + pos - 1]) << 16))
        )
        if not _in_bitmap(chg_bits, v):
            continue
        slot = chg_slot[v]
        if slot < 0:
            continue
        if pos < length:
            t = np.int64(steps[at + pos]) | (np.int64(steps_hi[at + pos]) << 16)
        elif dropped.size and dropped[q]:
            t = np.int64(-1)
        else:
            continue  # the walk stopped here: no move to change
        if key == 0:
            key = batch_key(seed, src, walk_no, seq)
        if chg_kind[slot] == 1:
            if to_unit(draw(key, 2 * pos)) * n_tot[slot] < o_tot[slot]:
                continue
        else:
            p = _row_prob(o_ip, o_t, o_w, o_tot, slot, t)
            qq = _row_prob(n_ip, n_t, n_w, n_tot, slot, t)
            if p > 0 and to_unit(draw(key, 2 * pos)) * p < qq:
                continue
        nt = _residual_pick(to_unit(draw(key, 2 * pos + 1)), o_ip, o_t, o_w, o_tot,
                            n_ip, n_t, n_w, n_tot, slot)  # fmt: skip
        new_len = np.int64(pos)
        if nt >= 0:
            tail = mix64(key + np.uint64(pos + 1) * _GAMMA)
            new_len += geometric_visits(tail, alpha)
        return np.int64(pos), nt, new_len
    return np.int64(-1), np.int64(-1), length


@njit(cache=True, parallel=True)
def walks_plan(units, per_unit, block_src, block_w0, walks_per_node, alpha, seed, seq, blk_start,
               walk_len, dropped, steps, steps_hi, chg_slot, chg_bits, chg_kind, o_ip, o_t, o_w, o_tot,
               n_ip, n_t, n_w, n_tot, out_pos, out_target, out_len):  # fmt: skip
    """Decide which walks of ``units`` (unit u: walks u * per_unit .. u * per_unit +
    per_unit - 1, all of one block) an update batch reroutes (Bahmani, Chowdhury, Goel).

    At each move out of a changed node the walk keeps its move t with probability
    min(1, q(t) / p(t)) (p, q: the node's old and new move distributions, -1 standing for "the
    walk ends here", the drop rule at a dangling node), else it is rerouted at that visit to a
    target drawn from (q - p)^+: the maximal coupling, so the moves are distributed as q and a
    walk changes only with the total variation distance of its node's change. Per walk j of
    the units, in order: ``out_pos[j]`` the rerouted visit (-1: unchanged), ``out_target[j]``
    its new move, ``out_len[j]`` its steps after the batch (an upper bound when the drop rule
    may cut them). ``chg_bits`` is the bitmap of the changed nodes (``node_bitmap``): most
    visits are of unchanged nodes, and a bit test in a bitmap that stays in cache rejects them
    cheaply. Each coin is drawn from the walk's key for this batch and the visit's position,
    so a walk's plan does not depend on which other walks are planned with it.

    A changed node of ``chg_kind`` 1 only gained edges (its old row had some): its rows in the
    tables hold nothing of the old row and only the new edges, ``o_tot`` and ``n_tot`` its old
    and new total weight, so every old move is kept with probability o_tot / n_tot (q / p for
    any old target) and a rerouted one is drawn from the new edges by weight ((q - p)^+): the
    same coins decide as with the whole rows, at the cost of the new edges only."""
    R = walks_per_node
    for i in prange(units.size):
        q0 = units[i] * per_unit
        b = q0 // R
        src = block_src[b]
        at = blk_start[b]
        for q in range(b * R, q0):
            at += np.int64(walk_len[q])
        for j in range(per_unit):
            q = q0 + j
            length = np.int64(walk_len[q])
            pos, nt, nl = _plan_walk(q, src, block_w0[b] + q - b * R, at, length, alpha, seed,
                                     seq, dropped, steps, steps_hi, chg_slot, chg_bits, chg_kind,
                                     o_ip, o_t, o_w, o_tot, n_ip, n_t, n_w, n_tot)  # fmt: skip
            out_pos[i * per_unit + j] = pos
            out_target[i * per_unit + j] = nt
            out_len[i * per_unit + j] = nl
            at += length


@njit(cache=True, parallel=True)
def walks_rewrite(blocks, block_src, block_w0, walks_per_node, alpha, seed, seq, mode,
                  blk_start, walk_len, dropped, steps, steps_hi, plan_pos, plan_target, new_start, b_indptr,
                  b_indices, a_prob, a_idx, weighted, b_tot, b_live, row_start, row_len, d_targets, d_cum,
                  out_steps, out_walks):  # fmt: skip
    """Write the walks of ``blocks`` (rows of the plan) after the batch at ``new_start[i]`` of
    ``steps``: unchanged walks copied, rerouted ones copied up to the rerouted visit, then
    walked on the new graph. Updates ``walk_len``, ``dropped``; ``out_steps[i]``: steps walked
    anew, ``out_walks[i]``: walks rerouted."""
    R = walks_per_node
    for i in prange(blocks.size):
        b = blocks[i]
        src = block_src[b]
        at = blk_start[b]
        to = new_start[i]
        walked = 0
        rerouted = 0
        for w in range(R):
            q = b * R + w
            length = np.int64(walk_len[q])
            pos = plan_pos[i * R + w]
            if pos < 0:
                for j in range(length):
                    steps[to + j] = steps[at + j]
                    steps_hi[to + j] = steps_hi[at + j]
                at += length
                to += length
                continue
            for j in range(pos):
                steps[to + j] = steps[at + j]
                steps_hi[to + j] = steps_hi[at + j]
            rerouted += 1
            nt = plan_target[i * R + w]
            m = pos
            drop = nt < 0
            if nt >= 0:
                key = batch_key(seed, src, block_w0[b] + w, seq)
                tail = mix64(key + np.uint64(pos + 1) * _GAMMA)
                made, drop = _walk_tail(tail, nt, geometric_visits(tail, alpha), src, mode,
                                        b_indptr, b_indices, a_prob, a_idx, weighted, b_tot,
                                        b_live, row_start, row_len, d_targets, d_cum, steps, steps_hi,
                                        to + pos)  # fmt: skip
                m += made
                walked += made
            at += length
            to += m
            walk_len[q] = m
            if dropped.size:
                dropped[q] = drop
        out_steps[i] = walked
        out_walks[i] = rerouted


@njit(cache=True, parallel=True)
def walks_delta(sel, per_row, walks_per_node, old_start, old_len, new_start, new_len, plan_pos,
                steps, steps_hi, with_old, out_row, out_node, out_val, offsets):  # fmt: skip
    """The visit-count changes of the walks ``walks_rewrite`` rerouted in blocks ``sel`` (plan
    rows): -1 for each old visit after the rerouted one (if ``with_old``), +1 for each new
    one, per row (block // per_row); block i's written from ``out_*[offsets[i]]`` (its
    changes counted by the caller)."""
    R = walks_per_node
    for i in prange(sel.size):
        at = offsets[i]
        row = sel[i] // per_row
        a = old_start[i]
        b = new_start[i]
        for w in range(R):
            lo = np.int64(old_len[i * R + w]) if with_old else np.int64(0)
            ln = np.int64(new_len[i * R + w])
            pos = plan_pos[i * R + w]
            if pos >= 0:
                for j in range(pos, lo):
                    out_row[at] = row
                    out_node[at] = np.int64(steps[a + j]) | (np.int64(steps_hi[a + j]) << 16)
                    out_val[at] = -1
                    at += 1
                for j in range(pos, ln):
                    out_row[at] = row
                    out_node[at] = np.int64(steps[b + j]) | (np.int64(steps_hi[b + j]) << 16)
                    out_val[at] = 1
                    at += 1
            a += np.int64(old_len[i * R + w])
            b += ln


@njit(cache=True)
def pack_blocks(order, starts, lens, steps, steps_hi, out_starts):
    """Move the blocks (``order``: by start, ascending; block b holds ``lens[b]`` steps from
    ``starts[b]``) to the front of ``steps`` one after the other, in place (each moves down,
    so a forward copy is safe); their new starts into ``out_starts``. Returns the steps."""
    to = np.int64(0)
    for i in range(order.size):
        b = order[i]
        s = starts[b]
        for j in range(lens[b]):
            steps[to + j] = steps[s + j]
            steps_hi[to + j] = steps_hi[s + j]
        out_starts[b] = to
        to += lens[b]
    return to


@njit(cache=True, parallel=True)
def apply_row_deltas(rows, old_ip, old_nodes, old_counts, d_ip, d_nodes, d_vals, n, out_off,
                     out_nodes, out_counts, out_nnz, n_chunks):  # fmt: skip
    """Rows ``rows`` of (old_ip, old_nodes, old_counts) with count changes applied (row i's:
    nodes ``d_nodes[d_ip[i]:d_ip[i + 1]]``, adding ``d_vals``; a node may come more than once,
    its changes summed): entries that end at 0 leave, new nodes follow the old entries in
    ``d_nodes`` order. Row i is written at
    ``out_off[i]`` (room for its old entries and changes), ``out_nnz[i]`` entries."""
    for c in prange(n_chunks):
        at = np.full(n, -1, np.int64)
        for i in range(c, rows.size, n_chunks):
            r = rows[i]
            base = out_off[i]
            m = 0
            for e in range(old_ip[r], old_ip[r + 1]):
                v = np.int64(old_nodes[e])
                out_nodes[base + m] = v
                out_counts[base + m] = old_counts[e]
                at[v] = m
                m += 1
            for e in range(d_ip[i], d_ip[i + 1]):
                v = np.int64(d_nodes[e])
                if at[v] >= 0:
                    out_counts[base + at[v]] += d_vals[e]
                else:
                    out_nodes[base + m] = v
                    out_counts[base + m] = d_vals[e]
                    at[v] = m
                    m += 1
            k = 0
            for t in range(m):
                v = np.int64(out_nodes[base + t])
                at[v] = -1
                if out_counts[base + t] != 0:
                    out_nodes[base + k] = v
                    out_counts[base + k] = out_counts[base + t]
                    k += 1
            out_nnz[i] = k


@njit(cache=True, parallel=True)
def walks_count(rows, per_row, block_src, walks_per_node, blk_start, walk_len, steps, steps_hi, n,
                offsets, out_nodes, out_counts, out_nnz, out_visits, n_chunks):  # fmt: skip
    """Fingerprint rows (distinct nodes in first-visit order, visit counts) from the kept
    walks, in ``fingerprint_block``'s output format: row r counts blocks r * per_row ..
    (r + 1) * per_row - 1 (one source's walks, in order)."""
    R = walks_per_node
    for c in prange(n_chunks):
        cnt = np.zeros(n, np.uint32)
        for i in range(c, rows.size, n_chunks):
            base = offsets[i]
            m = 0
            visits = 0
            for b in range(rows[i] * per_row, (rows[i] + 1) * per_row):
                src = block_src[b]
                at = blk_start[b]
                for w in range(R):
                    length = np.int64(walk_len[b * R + w])
                    for pos in range(length + 1):
                        v = (
                            np.int64(src)
                            if pos == 0
                            else (
                                np.int64(steps[at + pos - 1])
                                | (np.int64(steps_hi[at + pos - 1]) << 16)
                            )
                        )
                        if cnt[v] == 0:
                            out_nodes[base + m] = v
                            m += 1
                        cnt[v] += 1
                        visits += 1
                    at += length
            for t in range(m):
                v = out_nodes[base + t]
                out_counts[base + t] = cnt[v]
                cnt[v] = 0
            out_nnz[i] = m
            out_visits[i] = visits


@njit(cache=True, parallel=True)
def unit_visits(num_units, per_unit, walks_per_node, blk_start, walk_len, dropped, steps, steps_hi,
                n, out_ip, out_nodes, n_chunks):  # fmt: skip
    """The distinct nodes at which the walks of each unit (``per_unit`` consecutive walks of
    one block) take a step: every visit after the source but the last, and the last too where
    the drop rule cut the walk (a move that a new edge can change), as CSR rows over the units.
    With ``out_nodes`` empty: only the row sizes into ``out_ip[1:]`` (then take the prefix sums
    and call again to fill)."""
    R = walks_per_node
    fill = out_nodes.size > 0
    for c in prange(n_chunks):
        stamp = np.full(n, -1, np.int64)
        for u in range(c, num_units, n_chunks):
            q0 = u * per_unit
            b = q0 // R
            at = blk_start[b]
            for q in range(b * R, q0):
                at += np.int64(walk_len[q])
            m = 0
            base = out_ip[u] if fill else 0
            for q in range(q0, q0 + per_unit):
                length = np.int64(walk_len[q])
                end = length if dropped.size and dropped[q] else length - 1
                for k in range(end):
                    v = np.int64(steps[at + k]) | (np.int64(steps_hi[at + k]) << 16)
                    if stamp[v] != u:
                        stamp[v] = u
                        if fill:
                            out_nodes[base + m] = v
                        m += 1
                at += length
            if not fill:
                out_ip[u + 1] = m


@njit(cache=True, parallel=True)
def walks_new_visits(sel, walks_per_node, per_unit, new_start, new_len, plan_pos, dropped, steps,
                     steps_hi, out_unit, out_node, offsets):  # fmt: skip
    """(unit, node) of every stepping visit (as ``unit_visits`` counts them) that the walks
    ``walks_rewrite`` rerouted in blocks ``sel`` walked anew (after the rerouted visit); block
    i's written from ``out_*[offsets[i]]`` (counted by the caller)."""
    R = walks_per_node
    for i in prange(sel.size):
        at = offsets[i]
        b = new_start[i]
        for w in range(R):
            ln = np.int64(new_len[i * R + w])
            pos = plan_pos[i * R + w]
            if pos >= 0:
                q = sel[i] * R + w
                end = ln if dropped.size and dropped[q] else ln - 1
                for k in range(pos, end):  # visit k + 1 is steps[b + k]
                    out_unit[at] = q // per_unit
                    out_node[at] = np.int64(steps[b + k]) | (np.int64(steps_hi[b + k]) << 16)
                    at += 1
            b += ln


@njit(cache=True, inline="always")
def _put_gap(out, at, g, fill):
    """Gap ``g`` as a varint (7 bits a byte, high bit: more bytes follow) at ``out[at]`` (only
    if ``fill``); returns its bytes."""
    size = 0
    while True:
        byte = g & 127
        g >>= 7
        if fill:
            out[at + size] = byte | (128 if g > 0 else 0)
        size += 1
        if g == 0:
            return size


@njit(cache=True, parallel=True)
def gaps_encode(t_ip, t_rows, b_ip, out):
    """Each column's sorted rows ``t_rows[t_ip[c]:t_ip[c + 1]]`` as varint gaps (7 bits a
    byte, high bit: more bytes follow; the first gap from 0) into ``out`` from ``b_ip[c]``.
    With ``out`` empty: only the byte counts into ``b_ip[1:]``."""
    fill = out.size > 0
    for c in prange(t_ip.size - 1):
        prev = np.int64(0)
        at = b_ip[c] if fill else 0
        size = 0
        for e in range(t_ip[c], t_ip[c + 1]):
            size += _put_gap(out, at + size, np.int64(t_rows[e]) - prev, fill)
            prev = np.int64(t_rows[e])
        if not fill:
            b_ip[c + 1] = size


@njit(cache=True, inline="always")
def _gap_at(data, at):
    """(the varint gap coded at ``data[at]``, the position after it)."""
    g = np.int64(0)
    shift = 0
    while True:
        byte = np.int64(data[at])
        at += 1
        g |= (byte & 127) << shift
        shift += 7
        if byte < 128:
            return g, at


@njit(cache=True, parallel=True)
def gaps_merge(b_ip, data, o_ip, o_rows, out_ip, out):
    """``gaps_encode``'s output for the union, per column c, of the rows coded in (``b_ip``,
    ``data``; columns past its end hold none) and ``o_rows[o_ip[c]:o_ip[c + 1]]`` (sorted),
    each row once, into ``out`` from ``out_ip[c]``. With ``out`` empty: only the byte counts
    into ``out_ip[1:]``. Costs the coded bytes and the new rows, not a pass over the walks."""
    fill = out.size > 0
    coded = b_ip.size - 1
    for c in prange(o_ip.size - 1):
        at = np.int64(b_ip[c]) if c < coded else np.int64(0)
        end = np.int64(b_ip[c + 1]) if c < coded else np.int64(0)
        old = np.int64(-1)
        if at < end:
            old, at = _gap_at(data, at)
        e = o_ip[c]
        base = out_ip[c] if fill else 0
        size = 0
        prev = np.int64(0)
        last = np.int64(-1)
        while old >= 0 or e < o_ip[c + 1]:
            if old >= 0 and (e >= o_ip[c + 1] or old <= o_rows[e]):
                v = old
                if at < end:
                    g, at = _gap_at(data, at)
                    old += g
                else:
                    old = -1
            else:
                v = np.int64(o_rows[e])
                e += 1
            if v == last:
                continue
            size += _put_gap(out, base + size, v - prev, fill)
            prev = v
            last = v
        if not fill:
            out_ip[c + 1] = size


@njit(cache=True, parallel=True)
def gaps_mark(cols, b_ip, data, mark):
    """``mark[r] = True`` for every row r that ``gaps_encode`` coded for the columns ``cols``
    (columns in parallel: threads that mark the same row write the same value)."""
    for i in prange(cols.size):
        c = cols[i]
        at = np.int64(b_ip[c])
        end = np.int64(b_ip[c + 1])
        cur = np.int64(0)
        while at < end:
            g, at = _gap_at(data, at)
            cur += g
            mark[cur] = True


@njit(cache=True, parallel=True)
def transpose_rows(indptr, cols, n, n_chunks):
    """The transpose of a CSR pattern: for each column c, the rows that hold it (sorted).
    ``n_chunks`` threads each take a range of rows (a counting sort: per-chunk counts, then
    each chunk scatters its rows after the earlier chunks')."""
    rows_n = indptr.size - 1
    counts = np.zeros((n_chunks, n), np.int64)
    for k in prange(n_chunks):
        lo = rows_n * k // n_chunks
        hi = rows_n * (k + 1) // n_chunks
        for e in range(indptr[lo], indptr[hi]):
            counts[k, cols[e]] += 1
    t_ip = np.zeros(n + 1, np.int64)
    for c in range(n):
        total = np.int64(0)
        for k in range(n_chunks):
            x = counts[k, c]
            counts[k, c] = t_ip[c] + total
            total += x
        t_ip[c + 1] = t_ip[c] + total
    rows = np.empty(cols.size, np.int32)
    for k in prange(n_chunks):
        lo = rows_n * k // n_chunks
        hi = rows_n * (k + 1) // n_chunks
        for r in range(lo, hi):
            for e in range(indptr[r], indptr[r + 1]):
                c = cols[e]
                rows[counts[k, c]] = r
                counts[k, c] += 1
    return t_ip, rows


@njit(cache=True, parallel=True)
def splice_rows(old_ip, old_a, old_b, slot, new_start, new_len, new_a, new_b, out_ip, out_a,
                out_b):  # fmt: skip
    """Rows of (old_ip, old_a, old_b), with row r replaced by new row ``slot[r]`` (its entries
    at ``new_start[s]``, ``new_len[s]`` of them) when ``slot[r] >= 0``, into ``out_*``
    (``out_ip`` already holds the prefix sums; values cast to ``out_b``'s type)."""
    for r in prange(out_ip.size - 1):
        to = out_ip[r]
        s = slot[r]
        if s >= 0:
            for e in range(new_start[s], new_start[s] + new_len[s]):
                out_a[to] = new_a[e]
                out_b[to] = new_b[e]
                to += 1
        else:
            for e in range(old_ip[r], old_ip[r + 1]):
                out_a[to] = old_a[e]
                out_b[to] = old_b[e]
                to += 1


# --------------------------------------------------------------------------------------------
# sharded walks (walks/distributed.py): a shard owns the out-edges of nodes [lo, hi) plus a copy
# of the out-edges of a few split nodes ("hubs", sorted). Its nodes have local ids: node
# lo + i is i, hub h is (hi - lo) + h. Walkers travel between shards as (source, node, count)
# entries, sorted by source within each batch.


@njit(cache=True)
def _grown(a, need):
    """``a`` copied into a buffer at least twice as long (and >= ``need``)."""
    out = np.empty(max(need, 2 * a.shape[0]), a.dtype)
    out[: a.shape[0]] = a
    return out


@njit(cache=True)
def _grown_rows(a, need):
    """``_grown`` for a 2-D buffer of rows."""
    out = np.empty((max(need, 2 * a.shape[0]), a.shape[1]), a.dtype)
    out[: a.shape[0]] = a
    return out


@njit(cache=True)
def node_bitmap(nodes, n):
    """A bitmap of ``nodes`` among n: bit v & 63 of word v >> 6."""
    bits = np.zeros((n >> 6) + 1, np.uint64)
    for v in nodes:
        bits[v >> 6] |= np.uint64(1) << np.uint64(v & 63)
    return bits


@njit(cache=True, inline="always")
def _in_bitmap(bits, v):
    return (bits[v >> 6] >> np.uint64(v & 63)) & np.uint64(1)


@njit(cache=True, inline="always")
def _hub_index(hubs, v):
    """Position of ``v`` in the sorted ``hubs``, or -1."""
    a = 0
    b = hubs.size
    while a < b:
        m = (a + b) >> 1
        if hubs[m] < v:
            a = m + 1
        else:
            b = m
    if a < hubs.size and hubs[a] == v:
        return a
    return -1


@njit(cache=True)
def shard_round(
    entries, runs, lo, hi, indptr, indices, a_prob, a_idx, hubs, hub_bits, h_indptr, h_indices,
    h_prob, h_idx, weighted, bounds, alpha, mode, key, cnt,
):  # fmt: skip
    """One shard's round: every walker of ``entries`` walks inside the shard until it stops or
    steps onto a node another shard owns.

    ``entries`` (E, 3) int64 rows (source, node, count) are ``runs`` (offsets, k + 1) of rows
    sorted by source; ``node`` is one of the shard's nodes or hubs (``hub_bits``: their
    ``node_bitmap``). After each visit a walker stops with probability alpha (one draw: the
    same law as the embedded walk's geometric length drawn up front), else moves as the
    embedded kernel does (slot from the high 32 bits of a draw, alias coin from the low 32
    bits). At a dangling node, ``mode`` 1 ends the walk and 0 keeps it there: its further
    visits, geometric (>= 1), are drawn at once. A step onto a node outside [lo, hi) that is
    not a hub ends the walker's part here: it is sent.

    Sources are processed in increasing order (a merge of the runs), so visits and departures
    are aggregated per source: per (source, local node) visit counts, and per (source, target)
    walker counts. The draws are draw(key, 0), draw(key, 1), ... in that order, so the round
    depends on (key, entries) only.

    ``cnt`` (uint32, one per local node) is scratch: zeros on entry, zeros again on return.

    Returns (group_src, group_ptr, log_loc, log_count, out, dest, visits): the visit counts
    grouped by source (group g is source ``group_src[g]``, its local nodes and counts at
    ``group_ptr[g]:group_ptr[g+1]``), the departures (rows (source, target, count), in source
    order) with each target's owner shard (``bounds``), and the number of visits.
    """
    k = runs.size - 1
    pos = runs[:-1].copy()
    nloc = hi - lo
    touched = np.empty(256, np.int64)
    tgt = np.empty(256, np.int64)
    group_src = np.empty(1024, np.int64)
    group_ptr = np.zeros(1025, np.int64)
    log_loc = np.empty(4096, np.int32)
    log_count = np.empty(4096, np.uint32)
    out = np.empty((1024, 3), np.int64)
    dest = np.empty(1024, np.int32)
    inv_log = 1.0 / np.log1p(-alpha)
    n_groups = 0
    n_log = 0
    n_out = 0
    ctr = 0
    visits = 0
    while True:
        s = -1
        for r in range(k):  # the smallest source at the head of a run
            if pos[r] < runs[r + 1]:
                v = entries[pos[r], 0]
                if s < 0 or v < s:
                    s = v
        if s < 0:
            break
        nt = 0
        nout = 0
        for r in range(k):
            while pos[r] < runs[r + 1] and entries[pos[r], 0] == s:
                e = pos[r]
                pos[r] += 1
                v = entries[e, 1]
                if lo <= v < hi:
                    v_loc = v - lo
                    v_start = indptr[v_loc]
                    v_deg = indptr[v_loc + 1] - v_start
                else:
                    h = _hub_index(hubs, v)
                    v_loc = nloc + h
                    v_start = h_indptr[h]
                    v_deg = h_indptr[h + 1] - v_start
                for _ in range(entries[e, 2]):
                    loc = v_loc
                    start = v_start
                    deg = v_deg
                    while True:
                        if cnt[loc] == 0:
                            if nt == touched.size:
                                touched = _grown(touched, nt + 1)
                            touched[nt] = loc
                            nt += 1
                        cnt[loc] += 1
                        visits += 1
                        if to_unit(draw(key, ctr)) < alpha:  # stops after this visit
                            ctr += 1
                            break
                        ctr += 1
                        if deg == 0:
                            if mode != MODE_DROP:  # self_loop: its remaining visits, here
                                u = 1.0 - to_unit(draw(key, ctr))  # in (0, 1]
                                ctr += 1
                                more = 1 + np.int64(np.floor(np.log(u) * inv_log))
                                cnt[loc] += more
                                visits += more
                            break
                        x = draw(key, ctr)
                        ctr += 1
                        j = pick_slot(x, deg)
                        if loc < nloc:
                            if weighted and alias_coin(x) >= a_prob[start + j]:
                                j = a_idx[start + j]
                            nxt = np.int64(indices[start + j])
                        else:
                            if weighted and alias_coin(x) >= h_prob[start + j]:
                                j = h_idx[start + j]
                            nxt = np.int64(h_indices[start + j])
                        if lo <= nxt < hi:
                            loc = nxt - lo
                            start = indptr[loc]
                            deg = indptr[loc + 1] - start
                            continue
                        if _in_bitmap(hub_bits, nxt):
                            h = _hub_index(hubs, nxt)
                            loc = nloc + h
                            start = h_indptr[h]
                            deg = h_indptr[h + 1] - start
                            continue
                        if nout == tgt.size:
                            tgt = _grown(tgt, nout + 1)
                        tgt[nout] = nxt
                        nout += 1
                        break
        # the source's visits, one log entry per local node
        if nt:
            if n_groups == group_src.size:
                group_src = _grown(group_src, n_groups + 1)
                group_ptr = _grown(group_ptr, n_groups + 2)
            if n_log + nt > log_loc.size:
                log_loc = _grown(log_loc, n_log + nt)
                log_count = _grown(log_count, n_log + nt)
            for t in range(nt):
                loc = touched[t]
                log_loc[n_log] = loc
                log_count[n_log] = cnt[loc]
                cnt[loc] = 0
                n_log += 1
            group_src[n_groups] = s
            group_ptr[n_groups + 1] = n_log
            n_groups += 1
        # its departures, one entry per target (sorted: insertion sort, a handful each)
        if nout:
            if nout > 32:
                tgt[:nout] = np.sort(tgt[:nout])
            else:
                for a in range(1, nout):
                    x2 = tgt[a]
                    b = a - 1
                    while b >= 0 and tgt[b] > x2:
                        tgt[b + 1] = tgt[b]
                        b -= 1
                    tgt[b + 1] = x2
            if n_out + nout > dest.size:
                out = _grown_rows(out, n_out + nout)
                dest = _grown(dest, n_out + nout)
            a = 0
            while a < nout:
                b = a + 1
                while b < nout and tgt[b] == tgt[a]:
                    b += 1
                t_node = tgt[a]
                owner = 0
                while bounds[owner + 1] <= t_node:
                    owner += 1
                out[n_out, 0] = s
                out[n_out, 1] = t_node
                out[n_out, 2] = b - a
                dest[n_out] = owner
                n_out += 1
                a = b
    return (
        group_src[:n_groups].copy(), group_ptr[: n_groups + 1].copy(), log_loc[:n_log].copy(),
        log_count[:n_log].copy(), out[:n_out].copy(), dest[:n_out].copy(), visits,
    )  # fmt: skip


@njit(cache=True)
def count_group_rows(group_src, group_ptr, sizes):
    """``sizes[s + 1] += `` the entries of source ``s``'s groups (a counting sort's first pass)."""
    for g in range(group_src.size):
        sizes[group_src[g] + 1] += group_ptr[g + 1] - group_ptr[g]


@njit(cache=True)
def scatter_group_rows(group_src, group_ptr, log_loc, log_count, fill, out_loc, out_count):
    """Second pass: each group's entries at ``fill[source]`` (advanced), in group order."""
    for g in range(group_src.size):
        s = group_src[g]
        at = fill[s]
        for e in range(group_ptr[g], group_ptr[g + 1]):
            out_loc[at] = log_loc[e]
            out_count[at] = log_count[e]
            at += 1
        fill[s] = at


@njit(cache=True)
def shard_rows(indptr, locs, counts, lo, nloc, hubs, out_nodes, out_counts):
    """Each row's distinct local nodes (first-seen order) with their summed counts, as global
    node ids, compacted into ``out_nodes``/``out_counts`` (which may be ``locs``/``counts``
    themselves: a row is read whole before it is written, never past its own start). Returns
    the new indptr."""
    n_rows = indptr.size - 1
    acc = np.zeros(nloc + hubs.size, np.uint32)
    touched = np.empty(256, np.int64)
    new_ip = np.zeros(n_rows + 1, np.int64)
    w = 0
    for r in range(n_rows):
        nt = 0
        for e in range(indptr[r], indptr[r + 1]):
            loc = locs[e]
            if acc[loc] == 0:
                if nt == touched.size:
                    touched = _grown(touched, nt + 1)
                touched[nt] = loc
                nt += 1
            acc[loc] += counts[e]
        for t in range(nt):
            loc = touched[t]
            out_nodes[w] = lo + loc if loc < nloc else hubs[loc - nloc]
            out_counts[w] = acc[loc]
            acc[loc] = 0
            w += 1
        new_ip[r + 1] = w
    return new_ip


@njit(cache=True)
def merge_rows(rows_a, ip_a, nodes_a, counts_a, rows_b, ip_b, nodes_b, counts_b, split, n,
               out_nodes, out_counts):  # fmt: skip
    """Row r: row ``rows_a[r]`` of A, then row ``rows_b[r]`` of B, the counts of a node in
    both summed. Rows hold distinct nodes and only nodes of ``split`` (sorted) may be in both
    (the shards' rows share only the split nodes), so only those are looked up (a bitmap, then
    a binary search). ``out_*`` hold at least both sizes. Returns the indptr."""
    bits = node_bitmap(split, n)
    at = np.zeros(split.size, np.int64)  # 1 + the row position of split node h
    ip = np.zeros(rows_a.size + 1, np.int64)
    w = 0
    for r in range(rows_a.size):
        row0 = w
        ra = rows_a[r]
        for e in range(ip_a[ra], ip_a[ra + 1]):
            v = nodes_a[e]
            out_nodes[w] = v
            out_counts[w] = counts_a[e]
            w += 1
            if _in_bitmap(bits, v):
                at[_hub_index(split, v)] = w
        rb = rows_b[r]
        for e in range(ip_b[rb], ip_b[rb + 1]):
            v = nodes_b[e]
            if _in_bitmap(bits, v):
                h = _hub_index(split, v)
                if at[h]:
                    out_counts[at[h] - 1] += counts_b[e]
                    continue
            out_nodes[w] = v
            out_counts[w] = counts_b[e]
            w += 1
        for e in range(row0, w):
            v = out_nodes[e]
            if _in_bitmap(bits, v):
                at[_hub_index(split, v)] = 0
        ip[r + 1] = w
    return ip
