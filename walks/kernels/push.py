"""Forward push (Andersen, Chung, Lang 2006), and ``run_chunk``, the query loop of every PPR
method's ``*_chunk`` kernel.

Numba only (see ``walks/kernels/__init__.py`` for the conventions every kernel shares).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from shardwalk.walks.kernels.query import batch_arg, count_work, finish_query
from shardwalk.walks.kernels.rng import MODE_SELF_LOOP


@njit(cache=True, inline="always")
def push_phase(
    indptr, indices, probs, weighted, seed_nodes, seed_weights, alpha, r_max, mode, absorb,
    hub_pos, p, r, queue, flags, touched, stop,
):  # fmt: skip
    """FIFO forward push until every residual r(u) < r_max * max(outdeg(u), 1), or until
    ``stop[0]`` is set (polled every 1024 pushes: the residual left still bounds the error).
    With ``absorb``, nodes with ``hub_pos[u] >= 0`` are never queued: their residual
    accumulates (the hybrid method; ``hub_pos`` is read only then).

    Returns (nt, lost, pushed): ``touched[:nt]`` are all nodes that got mass (estimates in
    ``p``, residuals in ``r``; ``flags`` bit 2 marks them, bit 1 is left clear), ``lost`` the
    mass that left at dangling nodes (drop rule), ``pushed`` the out-edge updates.
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
    return nt, lost, pushed


@njit(cache=True, inline="always")
def run_chunk(
    one, c, n_chunks, q_indptr, q_nodes, q_weights, k, score, var, touched, out_ids, out_scores,
    out_stats, before, after,
):  # fmt: skip
    """The loop of every ``*_chunk`` kernel (push, compose, hybrid): queries c, c + n_chunks,
    ... of a batch (query q's seeds: row q of the CSR ``q_indptr``, ``q_nodes``,
    ``q_weights``), each answered by ``one(*before, seeds, seed weights, *after, work)``
    (``work`` (3,) zeroed for its counted work; ``one`` returns (nt, error, lost)) and closed
    by ``finish_query`` on the chunk's scratch row ``score``, ``var``, ``touched`` (the rows
    ``after`` hands to ``one``).

    Inlined, so ``one`` is a constant of the calling kernel and that kernel stays cacheable
    (a compiled kernel that takes a kernel as an argument is not cached)."""
    work = np.zeros(3, np.int64)
    for q in range(c, q_indptr.size - 1, n_chunks):
        a, b = q_indptr[q], q_indptr[q + 1]
        work[:] = 0
        nt, error, lost = one(*before, q_nodes[a:b], q_weights[a:b], *after, work)
        finish_query(
            touched, nt, score, var, k, error, lost, work, out_ids[q], out_scores[q], out_stats[q]
        )


@njit(cache=True)
def push_one(
    indptr, indices, probs, weighted, seed_nodes, seed_weights, alpha, r_max, mode,
    p, r, queue, flags, touched, stop, work,
):  # fmt: skip
    """Forward push of one query (``push_phase``).

    Returns (nt, residual, lost): ``touched[:nt]`` are all nodes that got mass (estimates in
    ``p``), ``residual`` = sum of the residuals left (the certified l1 error for self_loop and
    drop), ``lost`` the mass that left at dangling nodes (drop rule). ``r`` and ``flags``
    (bit 1: queued, bit 2: touched) are left zeroed; ``p`` is left set at ``touched[:nt]``
    (the caller reads and resets it). ``work`` (3,) receives the counted work as in
    ``hybrid_one``.
    """
    nt, lost, pushed = push_phase(
        indptr, indices, probs, weighted, seed_nodes, seed_weights, alpha, r_max, mode, False,
        indptr[:0], p, r, queue, flags, touched, stop,
    )  # fmt: skip
    residual = 0.0
    for i in range(nt):
        v = touched[i]
        residual += r[v]
        r[v] = 0.0
        flags[v] = 0
    count_work(work, pushed, 0, nt)
    return nt, residual, lost


@njit(cache=True, nogil=True)
def push_chunk(
    c, n_chunks,
    indptr, indices, probs, weighted, q_indptr, q_nodes, q_weights, alpha, r_max, mode, k,
    p, r, queue, flags, touched, out_ids, out_scores, out_stats, stop,
):  # fmt: skip
    """``push_one`` for queries c, c + n_chunks, ... with scratch row c. ``out_stats[q]`` =
    (mass, residual, lost, 0), then the counted work (``WORK_*`` columns)."""
    run_chunk(
        push_one, c, n_chunks, q_indptr, q_nodes, q_weights, k, p[c], p[c][:0], touched[c],
        out_ids, out_scores, out_stats, (indptr, indices, probs, weighted),
        (alpha, r_max, mode, p[c], r[c], queue[c], flags[c], touched[c], stop),
    )  # fmt: skip


_SCORES = batch_arg(push_chunk, "p")


@njit(cache=True, parallel=True)
def push_batch(*args):
    """``push_chunk(c, C, *args)`` for every scratch row c of the C rows of ``p`` in parallel
    (``args``: ``push_chunk``'s after those two)."""
    n_chunks = args[_SCORES].shape[0]
    for c in prange(n_chunks):
        push_chunk(c, n_chunks, *args)
