"""FastRP: very sparse random projections, propagated over the graph.

Numba only (see ``walks/kernels/__init__.py`` for the conventions every kernel shares).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from shardwalk.walks.kernels.rng import draw, to_unit, walk_key

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
