"""Transition structures of a CSR graph: per-edge probabilities (pushes) and per-row alias
tables (weighted walks).

Numba only (see ``walks/kernels/__init__.py`` for the conventions every kernel shares).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


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
