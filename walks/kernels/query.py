"""What the PPR query kernels share: the per-query statistics columns, top-k selection, the
fingerprint row preparations (rows sorted by count, runs of equal count, row maxima).

Speed note: the hot loops of the query kernels index arrays inline instead of calling helpers
that take arrays: a numba call with array arguments updates reference counts (atomic
operations) on every call, measured at ~20 ns per call, ten times the work of one push or walk
step. Helpers they do call are ``inline="always"``.

Numba only (see ``walks/kernels/__init__.py`` for the conventions every kernel shares).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
from numba import njit, prange

# columns of a hybrid / compose / push query's ``out_stats`` row after its estimate's own
# (mass, dropped, lost, noise): the counted work (deterministic for a graph, its fingerprints
# and a query), what calibration compares instead of wall-clock time
WORK_PUSHED = 4  # out-edge updates of pushes (or rounds)
WORK_COMPOSED = 5  # fingerprint entries added (R-walk rows and hub rows)
WORK_TOUCHED = 6  # nodes that got mass (each is ranked for the top-k and reset)
STATS_COLUMNS = 7


@njit(cache=True, inline="always")
def count_work(work, pushed, composed, touched):
    """Add one query's counted work to ``work`` (3,): out-edge updates, fingerprint entries
    added, nodes touched (the ``WORK_*`` columns of its statistics row, in that order)."""
    work[0] += pushed
    work[1] += composed
    work[2] += touched


def batch_arg(chunk: Callable[..., object], name: str) -> int:
    """Where parameter ``name`` of a ``*_chunk(c, n_chunks, ...)`` kernel stands among the
    arguments after ``c`` and ``n_chunks``: those its ``*_batch`` kernel takes as ``args``
    (a constant, read when the module is imported)."""
    names = list(inspect.signature(getattr(chunk, "py_func", chunk)).parameters)
    return names.index(name) - 2


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


@njit(cache=True, inline="always")
def finish_query(touched, nt, score, var, k, error, lost, work, out_ids, out_scores, out_stats):
    """Close one query of a batch: its top-k into ``out_ids``/``out_scores``, its statistics
    row ``out_stats`` = (mass, error, lost, noise, then the counted work: ``WORK_*``), and
    ``score``/``var`` reset at ``touched[:nt]`` for the next query. ``var`` is the MC variance
    proxy of the fingerprint methods, empty for push (noise 0); noise = sqrt(2/pi) sum_x
    sqrt(var[x]), the expected l1 deviation if each composed entry were normal with that
    variance."""
    with_var = var.size > 0
    mass = 0.0
    noise = 0.0
    for i in range(nt):
        mass += score[touched[i]]
        if with_var:
            noise += np.sqrt(var[touched[i]])
    top_k_of(touched, nt, score, k, out_ids, out_scores)
    for i in range(nt):
        score[touched[i]] = 0.0
        if with_var:
            var[touched[i]] = 0.0
    out_stats[0] = mass
    out_stats[1] = error
    out_stats[2] = lost
    out_stats[3] = noise * 0.7978845608028654
    for j in range(3):
        out_stats[WORK_PUSHED + j] = work[j]
