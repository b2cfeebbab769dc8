"""Fingerprint composition (PowerWalk VERD): a few synchronous push rounds, then the remaining
flow composed with the stored fingerprints.

Numba only (see ``walks/kernels/__init__.py`` for the conventions every kernel shares).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from shardwalk.walks.kernels.push import run_chunk
from shardwalk.walks.kernels.query import batch_arg, count_work
from shardwalk.walks.kernels.rng import MODE_SELF_LOOP


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
    for rnd in range(rounds + 1):
        compose_all = rnd == rounds  # after the T rounds: every flow left meets its fingerprint
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
            if compose_all or f < threshold:
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
    count_work(work, pushed, composed, nt)
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
    run_chunk(
        compose_one, c, n_chunks, q_indptr, q_nodes, q_weights, k, score[c], var[c], touched[c],
        out_ids, out_scores, out_stats,
        (indptr, indices, probs, weighted, fp_indptr, fp_nodes, fp_counts, fp_scale, fp_cut,
         hub_pos, hub_indptr, hub_nodes, hub_counts, hub_scale, var_factor),
        (alpha, rounds, threshold, drop_below, mode, flow[c], flow_next[c], score[c], var[c],
         frontier[c], frontier_next[c], touched[c]),
    )  # fmt: skip


_FLOW = batch_arg(compose_chunk, "flow")


@njit(cache=True, parallel=True)
def compose_batch(*args):
    """``compose_chunk(c, C, *args)`` for every scratch row c of the C rows of ``flow`` (C, n)
    in parallel (``args``: ``compose_chunk``'s after those two): one kernel call for a whole
    batch, each thread reusing its own dense arrays (reset sparsely between queries)."""
    n_chunks = args[_FLOW].shape[0]
    for c in prange(n_chunks):
        compose_chunk(c, n_chunks, *args)
