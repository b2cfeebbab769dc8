"""Exact PPR: power iteration in Neumann-series form.

Numba only (see ``walks/kernels/__init__.py`` for the conventions every kernel shares).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from shardwalk.walks.kernels.query import top_k_of
from shardwalk.walks.kernels.rng import MODE_RESTART, MODE_SELF_LOOP


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
    c, n_chunks, indptr, indices, probs, weighted, q_indptr, q_nodes, q_weights, alpha, tol,
    max_iter, mode, k, out_ids, out_scores, out_stats, stop,
):  # fmt: skip
    """``exact_one`` for queries c, c + n_chunks, ...; top-k of each; ``out_stats[q]`` =
    (mass, tail, iterations)."""
    n_q = q_indptr.size - 1
    for q in range(c, n_q, n_chunks):
        a, b = q_indptr[q], q_indptr[q + 1]
        x, tail, it = exact_one(
            indptr, indices, probs, weighted, q_nodes[a:b], q_weights[a:b], alpha, tol,
            max_iter, mode, stop,
        )  # fmt: skip
        nz = np.flatnonzero(x)
        top_k_of(nz, nz.size, x, k, out_ids[q], out_scores[q])
        out_stats[q, 0] = x.sum()
        out_stats[q, 1] = tail
        out_stats[q, 2] = it


@njit(cache=True, parallel=True)
def exact_batch(
    indptr, indices, probs, weighted, q_indptr, q_nodes, q_weights, alpha, tol, max_iter, mode,
    k, out_ids, out_scores, out_stats, stop, n_chunks,
):  # fmt: skip
    """``exact_chunk`` over ``n_chunks`` chunks in parallel."""
    for c in prange(n_chunks):
        exact_chunk(
            c, n_chunks, indptr, indices, probs, weighted, q_indptr, q_nodes, q_weights, alpha,
            tol, max_iter, mode, k, out_ids, out_scores, out_stats, stop,
        )  # fmt: skip
