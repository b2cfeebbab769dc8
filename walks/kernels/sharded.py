"""Sharded walks (walks/distributed.py): rounds of walkers over shards of the graph and the
merge of their visit counts.

Numba only (see ``walks/kernels/__init__.py`` for the conventions every kernel shares).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from shardwalk.walks.kernels.bitmap import in_bitmap, node_bitmap
from shardwalk.walks.kernels.rng import MODE_DROP, alias_coin, draw, pick_slot, to_unit

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
                        if in_bitmap(hub_bits, nxt):
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
            if in_bitmap(bits, v):
                at[_hub_index(split, v)] = w
        rb = rows_b[r]
        for e in range(ip_b[rb], ip_b[rb + 1]):
            v = nodes_b[e]
            if in_bitmap(bits, v):
                h = _hub_index(split, v)
                if at[h]:
                    out_counts[at[h] - 1] += counts_b[e]
                    continue
            out_nodes[w] = v
            out_counts[w] = counts_b[e]
            w += 1
        for e in range(row0, w):
            v = out_nodes[e]
            if in_bitmap(bits, v):
                at[_hub_index(split, v)] = 0
        ip[r + 1] = w
    return ip
