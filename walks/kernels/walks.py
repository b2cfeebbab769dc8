"""Random walks from sources, and the fingerprints (per-source visit counts) built from them.

Numba only (see ``walks/kernels/__init__.py`` for the conventions every kernel shares).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from shardwalk.walks.kernels.rng import (
    MODE_DROP,
    MODE_RESTART,
    alias_coin,
    draw,
    geometric_visits,
    pick_slot,
    walk_key,
)


@njit(cache=True, inline="always")
def next_visit(cur, src, key, step, indptr, indices, alias_prob, alias_idx, weighted, mode):
    """The node after ``cur`` at visit ``step`` (> 0) of the walk with stream ``key`` from
    ``src``: a uniform (or alias-table) out-neighbour; at a dangling node ``cur`` itself
    (self_loop), ``src`` (restart) or -1 (drop: the walk ends)."""
    start = indptr[cur]
    deg = indptr[cur + 1] - start
    if deg == 0:
        if mode == MODE_DROP:
            return -1
        if mode == MODE_RESTART:
            return src
        return cur
    x = draw(key, step)
    j = pick_slot(x, deg)
    if weighted and alias_coin(x) >= alias_prob[start + j]:
        j = alias_idx[start + j]
    return indices[start + j]


@njit(cache=True, inline="always")
def flush_counts(cnt, out_nodes, out_counts, base, m):
    """Write the counts of the ``m`` nodes at ``out_nodes[base:]`` from the dense ``cnt`` into
    ``out_counts[base:]``, resetting ``cnt`` there (sparsely) for the next source."""
    for t in range(m):
        v = out_nodes[base + t]
        out_counts[base + t] = cnt[v]
        cnt[v] = 0


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
                cur = next_visit(
                    cur, src, key, step, indptr, indices, alias_prob, alias_idx, weighted, mode
                )
                if cur < 0:
                    break
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
                        cur = next_visit(
                            cur,
                            src,
                            key,
                            step,
                            indptr,
                            indices,
                            alias_prob,
                            alias_idx,
                            weighted,
                            mode,
                        )
                        if cur < 0:
                            break
                    if cnt[cur] == 0:
                        out_nodes[base + m] = cur
                        m += 1
                    cnt[cur] += 1
                    visits += 1
            flush_counts(cnt, out_nodes, out_counts, base, m)
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
