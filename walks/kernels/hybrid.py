"""Hybrid PPR: forward push that stops at hubs, then every residual composed with
fingerprints.

Numba only (see ``walks/kernels/__init__.py`` for the conventions every kernel shares).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from shardwalk.walks.kernels.push import push_phase, run_chunk
from shardwalk.walks.kernels.query import batch_arg, count_work
from shardwalk.walks.kernels.rng import GAMMA, mix64, to_unit

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
    """score p[x] += a * count and var[x] += a^2 * count over entries lo:hi of a fingerprint
    CSR, membership in ``touched`` marked by flag bit 2 (a pushed-through node may still have
    p 0); var to be multiplied by ``var_factor[x]`` once per touched node at the end (one memory access per
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
    nt, lost, pushed = push_phase(
        indptr, indices, probs, weighted, seed_nodes, seed_weights, alpha, r_max, mode, absorb,
        hub_pos, p, r, queue, flags, touched, stop,
    )  # fmt: skip
    # compose: membership in touched is flag bit 2 (a pushed-through node may still have p 0)
    n_pushed = nt
    dropped = 0.0
    use_cut = fp_cut.size > 0
    tau = prune * _kth_floor(touched, nt, p, r, alpha, k) if prune > 0.0 else 0.0
    key = mix64(np.uint64(seed_nodes[0] if seed_nodes.size else 0) + GAMMA)
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
    count_work(work, pushed, composed, nt)
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
    run_chunk(
        hybrid_one, c, n_chunks, q_indptr, q_nodes, q_weights, k, p[c], var[c], touched[c],
        out_ids, out_scores, out_stats,
        (indptr, indices, probs, weighted, fp_indptr, fp_nodes, fp_counts, fp_scale, fp_cut,
         hub_pos, hub_indptr, hub_nodes, hub_counts, hub_scale, var_factor, row_max, run_ptr,
         run_start, run_count, run_cum),
        (alpha, r_max, absorb, drop_below, prune, k, mode, p[c], r[c], var[c], queue[c],
         flags[c], touched[c], stop),
    )  # fmt: skip


_SCORES = batch_arg(hybrid_chunk, "p")


@njit(cache=True, parallel=True)
def hybrid_batch(*args):
    """``hybrid_chunk(c, C, *args)`` for every scratch row c of the C rows of ``p`` in
    parallel (``args``: ``hybrid_chunk``'s after those two)."""
    n_chunks = args[_SCORES].shape[0]
    for c in prange(n_chunks):
        hybrid_chunk(c, n_chunks, *args)
