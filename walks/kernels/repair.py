"""Kept walks and their repair after graph updates (walks/walkstore.py).

Numba only (see ``walks/kernels/__init__.py`` for the conventions every kernel shares).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from shardwalk.walks.kernels.bitmap import in_bitmap
from shardwalk.walks.kernels.rng import (
    GAMMA,
    GAMMA2,
    MODE_DROP,
    alias_coin,
    draw,
    geometric_visits,
    mix64,
    pick_slot,
    to_unit,
    walk_key,
)
from shardwalk.walks.kernels.walks import flush_counts

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
             row_len, d_targets, d_cum, ext_bits):  # fmt: skip
    """The out-neighbour of ``cur`` chosen by draw ``x`` on the dynamic graph, -1 if none.
    Rows without an extension choose exactly as the fingerprint builder does. Nodes outside
    ``ext_bits`` (``DynamicGraph.ext_bits``) have their base row alone: a plain CSR step,
    without reading ``b_live`` and ``row_len`` (two cache misses a step on a large graph)."""
    plain = not in_bitmap(ext_bits, cur)
    bdeg = np.int64(0)
    start = np.int64(0)
    if plain or b_live[cur]:
        start = b_indptr[cur]
        bdeg = b_indptr[cur + 1] - start
    xlen = np.int64(0) if plain else np.int64(row_len[cur])
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
                a_idx, weighted, b_tot, b_live, row_start, row_len, d_targets, d_cum, ext_bits, walk_at,
                steps, walk_len, dropped):  # fmt: skip
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
                           b_tot, b_live, row_start, row_len, d_targets, d_cum, ext_bits)  # fmt: skip
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
    return mix64(mix64(walk_key(seed, src, walk)) + np.uint64(seq + 1) * GAMMA2)


@njit(cache=True)
def coin_base(seed, salt, seq):
    """The key of update batch ``seq``'s coins at the gained-edges-only nodes (``visit_coin``)
    of a walk store (``salt``: one per store of a graph, so two stores draw apart)."""
    return mix64(mix64(np.uint64(seed) * GAMMA2 + np.uint64(salt)) + np.uint64(seq + 1) * GAMMA)


@njit(cache=True, inline="always")
def coin_key(base, node):
    """The key of the coins (``visit_coin``) at ``node`` in the batch of ``base``
    (``coin_base``): hashed once a node, so that a coin costs one more hash round."""
    return mix64(base + np.uint64(node) * GAMMA)


@njit(cache=True, inline="always")
def visit_coin(key, walk, k):
    """The uniform that decides whether walk ``walk`` of a store keeps its move at its ``k``-th
    stepping visit of a node (``key``: ``coin_key`` of the node; k = 0: the walk's first visit,
    at its source; 1, 2, ...: its visits after it) when the node only gained edges: keyed by
    the walk, the node and that count, not the visit's position, so the walks it reroutes are
    found from the node index (which names a walk once per node it visits, and lists apart the
    walks that visit a node more than once) without reading the others
    (``visit_index.units_to_plan``). (The counter-based scheme of the walks' moves: a
    SplitMix64 round over the node's key plus Weyl steps of the walk and the count.)"""
    return to_unit(mix64(key + np.uint64(walk) * GAMMA2 + np.uint64(k) * GAMMA))


@njit(cache=True, inline="always")
def keeps_move(u, old_total, new_total):
    """Whether a visit whose coin is ``u`` keeps its move out of a node that only gained
    edges: with probability old / new total weight (the one comparison planning and finding
    the walks to plan both make)."""
    return u * new_total < old_total


@njit(cache=True, inline="always")
def _visit_rank(at, pos, v, steps, steps_hi):
    """k of the visit at ``pos`` (>= 1) to ``v`` among the walk's visits after its source."""
    k = 1
    for j in range(1, pos):
        if (np.int64(steps[at + j - 1]) | (np.int64(steps_hi[at + j - 1]) << 16)) == v:
            k += 1
    return k


@njit(cache=True, inline="always")
def _plan_walk(q, src, walk_no, at, length, alpha, seed, seq, dropped, steps, steps_hi, changed_slot,
               changed_bits, change_kind, o_ip, o_t, o_w, o_tot, n_ip, n_t, n_w, n_tot,
               base):  # fmt: skip
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
        if not in_bitmap(changed_bits, v):
            continue
        slot = changed_slot[v]
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
        if change_kind[slot] == 1:
            k = 0 if pos == 0 else _visit_rank(at, pos, v, steps, steps_hi)
            if keeps_move(visit_coin(coin_key(base, v), q, k), o_tot[slot], n_tot[slot]):
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
            tail = mix64(key + np.uint64(pos + 1) * GAMMA)
            new_len += geometric_visits(tail, alpha)
        return np.int64(pos), nt, new_len
    return np.int64(-1), np.int64(-1), length


#: units a thread plans at a time (their starts first, then their scans)
_PLAN_CHUNK = 2048
_NEVER = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(cache=True, parallel=True)
def walks_plan(units, per_unit, block_src, per_row, walks_per_node, alpha, seed, seq, blk_start,
               walk_len, dropped, steps, steps_hi, changed_slot, changed_bits, change_kind, o_ip, o_t, o_w, o_tot,
               n_ip, n_t, n_w, n_tot, base, out_pos, out_target, out_len):  # fmt: skip
    """Decide which walks of ``units`` (unit u: walks u * per_unit .. u * per_unit +
    per_unit - 1, all of one block) an update batch reroutes (Bahmani, Chowdhury, Goel).

    At each move out of a changed node the walk keeps its move t with probability
    min(1, q(t) / p(t)) (p, q: the node's old and new move distributions, -1 standing for "the
    walk ends here", the drop rule at a dangling node), else it is rerouted at that visit to a
    target drawn from (q - p)^+: the maximal coupling, so the moves are distributed as q and a
    walk changes only with the total variation distance of its node's change. Per walk j of
    the units, in order: ``out_pos[j]`` the rerouted visit (-1: unchanged), ``out_target[j]``
    its new move, ``out_len[j]`` its steps after the batch (an upper bound when the drop rule
    may cut them). ``changed_bits`` is the bitmap of the changed nodes (``node_bitmap``): most
    visits are of unchanged nodes, and a bit test in a bitmap that stays in cache rejects them
    cheaply. Each coin is drawn from the walk's key for this batch and the visit's position,
    so a walk's plan does not depend on which other walks are planned with it; at nodes of
    ``change_kind`` 1, from ``visit_coin`` (``base``: ``coin_base``) by the walk, the node and
    the visit's rank among the walk's visits to it, so that the walks to plan are found without
    reading those it keeps (``visit_index.units_to_plan``).

    A changed node of ``change_kind`` 1 only gained edges (its old row had some): its rows in the
    tables hold nothing of the old row and only the new edges, ``o_tot`` and ``n_tot`` its old
    and new total weight, so every old move is kept with probability o_tot / n_tot (q / p for
    any old target) and a rerouted one is drawn from the new edges by weight ((q - p)^+): the
    same coins decide as with the whole rows, at the cost of the new edges only."""
    R = walks_per_node
    n_chunks = (units.size + _PLAN_CHUNK - 1) // _PLAN_CHUNK
    for c in prange(n_chunks):
        lo = c * _PLAN_CHUNK
        hi = min(units.size, lo + _PLAN_CHUNK)
        # first each unit's start (its block's entries and its first steps read in a tight
        # loop, so their cache misses overlap), then the scans, which find them in cache
        # in two passes: the loads of each are independent of one another (a unit's steps
        # depend on its start), so the misses of many units overlap
        starts = np.empty(hi - lo, np.int64)
        touched = np.uint64(0)
        for i in range(lo, hi):
            q0 = units[i] * per_unit
            b = q0 // R
            at = blk_start[b]
            for q in range(b * R, q0):
                at += np.int64(walk_len[q])
            starts[i - lo] = at
            touched += np.uint64(block_src[b])
        for i in range(lo, hi):
            at = starts[i - lo]
            if at < steps.size:  # (a walk of no steps may start at the end)
                touched += np.uint64(steps[at]) + np.uint64(steps_hi[at])
        for i in range(lo, hi):
            q0 = units[i] * per_unit
            b = q0 // R
            src = block_src[b]
            at = starts[i - lo]
            for j in range(per_unit):
                q = q0 + j
                length = np.int64(walk_len[q])
                pos, nt, nl = _plan_walk(q, src, (b % per_row) * R + q - b * R, at, length, alpha,
                                         seed, seq, dropped, steps, steps_hi, changed_slot,
                                         changed_bits, change_kind, o_ip, o_t, o_w, o_tot, n_ip,
                                         n_t, n_w, n_tot, base)  # fmt: skip
                out_pos[i * per_unit + j] = pos
                out_target[i * per_unit + j] = nt
                out_len[i * per_unit + j] = nl
                at += length
        if touched == _NEVER:  # (a use of the first loop's loads, so they are kept: the sum
            out_len[lo] = -1  # stays below 2**45, never _NEVER)


@njit(cache=True)
def plan_entries(units, per_unit, walks_per_node, pos, target, new_len, walk_len):
    """The plan of ``walks_plan`` (entries per walk of ``units``, ascending) as its rerouted
    walks alone, grouped by block: (the blocks ascending, each block's first entry (offsets,
    one more), per rerouted walk its number, rerouted visit, new move (-1: it ends there) and
    the visits of its new tail (the target first; 0 without), each block's steps after the
    batch at most, the steps after the rerouted visits before it, the longest walk after
    it). Arrays of the rerouted walks, not of their blocks' walks:
    a rerouted walk's block mates are read by the rewrite only."""
    R = walks_per_node
    count = 0
    k = 0
    last = np.int64(-1)
    for i in range(pos.size):
        if pos[i] >= 0:
            k += 1
            b = (units[i // per_unit] * per_unit + i % per_unit) // R
            if b != last:
                count += 1
                last = b
    sel = np.empty(count, np.int64)
    ptr = np.empty(count + 1, np.int64)
    e_walk = np.empty(k, np.int64)
    e_pos = np.empty(k, np.int64)
    e_target = np.empty(k, np.int64)
    e_visits = np.empty(k, np.int64)
    bound = np.zeros(count, np.int64)
    c = -1
    j = 0
    last = -1
    stale = np.int64(0)
    top = np.int64(0)
    for i in range(pos.size):
        if pos[i] < 0:
            continue
        w = units[i // per_unit] * per_unit + i % per_unit
        b = w // R
        if b != last:
            c += 1
            sel[c] = b
            ptr[c] = j
            last = b
            for q in range(b * R, b * R + R):
                bound[c] += np.int64(walk_len[q])
        e_walk[j] = w
        e_pos[j] = pos[i]
        e_target[j] = target[i]
        e_visits[j] = new_len[i] - pos[i] if target[i] >= 0 else 0
        j += 1
        bound[c] += new_len[i] - np.int64(walk_len[w])
        stale += np.int64(walk_len[w]) - pos[i]
        top = max(top, new_len[i])
    ptr[count] = k
    return sel, ptr, e_walk, e_pos, e_target, e_visits, bound, stale, top


@njit(cache=True)
def rewrite_counts(blk_ptr, e_walk, e_pos, e_target, walk_len, tail_len, tail_drop, out_visits,
                   out_changes):  # fmt: skip
    """Per block of a plan (``plan_entries``: its rerouted walks ``blk_ptr[i]`` ..
    ``blk_ptr[i + 1] - 1``), before ``walks_rewrite`` rewrites it: the stepping visits its
    rerouted walks walk anew (after the rerouted visit, the last too where the drop rule cut
    the walk: as ``visit_index.unit_visits`` counts them) into ``out_visits[i]``, and their
    visit-count changes (each old visit after the rerouted one, each new one) into
    ``out_changes[i]``. Returns the steps the rewrite adds (less those it removes)."""
    delta = np.int64(0)
    for i in range(blk_ptr.size - 1):
        visits = np.int64(0)
        changes = np.int64(0)
        for e in range(blk_ptr[i], blk_ptr[i + 1]):
            length = np.int64(walk_len[e_walk[e]])
            pos = e_pos[e]
            made = np.int64(tail_len[e]) if e_target[e] >= 0 else np.int64(0)
            delta += pos + made - length
            changes += length - pos + made
            if made > 0:
                visits += made - 1 + np.int64(tail_drop[e])
        out_visits[i] = visits
        out_changes[i] = changes
    return delta


#: walks a thread advances in lockstep (``walk_tails``): their moves do not depend on each
#: other, so the cache misses of one walk's step overlap the others' instead of each step
#: waiting for the last (a step on a large graph is two or three misses: its row's offsets,
#: then its target)
LANES = 8


@njit(cache=True, inline="always")
def tail_key(block_src, per_row, walks_per_node, seed, seq, walk, pos):
    """The key of the new tail of walk ``walk`` of a store (its block's source from
    ``block_src``) rerouted at visit ``pos`` in batch ``seq``: its draws 1.. pick the tail's
    moves, its ``geometric_visits`` the tail's visits (the target first)."""
    b = walk // walks_per_node
    key = batch_key(seed, block_src[b], (b % per_row) * walks_per_node + walk % walks_per_node,
                    seq)  # fmt: skip
    return mix64(key + np.uint64(pos + 1) * GAMMA)


@njit(cache=True, parallel=True)
def walk_tails(walk, pos, first, visits, out_at, block_src, per_row, walks_per_node, seed, seq,
               mode, b_indptr, b_indices, a_prob, a_idx, weighted, b_tot, b_live, row_start,
               row_len, d_targets, d_cum, ext_bits, out, out_len, out_drop,
               n_chunks):  # fmt: skip
    """Walk the new tails of the rerouted walks of a plan (``plan_entries``: walk ``walk[e]``
    rerouted at visit ``pos[e]`` to ``first[e]``): tail e from ``first[e]`` for ``visits[e]``
    visits (the draws of its ``tail_key`` pick the moves), written from ``out[out_at[e]]``;
    ``out_len[e]`` the visits written (0 where ``visits[e]`` is 0), ``out_drop[e]`` whether
    the drop rule cut it. Each of ``n_chunks`` threads advances ``LANES`` tails of its share
    (an equal share of the visits) in lockstep, a finished tail's lane taking the next."""
    n = walk.size
    total = out_at[n - 1] + visits[n - 1] if n else 0
    for c in prange(n_chunks):
        # the entries whose visits start in this chunk's share of them: balanced by the work
        lo_v = total * c // n_chunks
        hi_v = total * (c + 1) // n_chunks
        nxt = np.searchsorted(out_at, lo_v) if c else 0
        hi = np.searchsorted(out_at, hi_v) if c + 1 < n_chunks else n
        lane_e = np.full(LANES, -1, np.int64)  # the tail each lane walks (-1: none)
        lane_cur = np.zeros(LANES, np.int64)
        lane_step = np.zeros(LANES, np.int64)
        lane_key = np.zeros(LANES, np.uint64)
        busy = True
        while busy:
            busy = False
            for k in range(LANES):
                e = lane_e[k]
                if e < 0:  # an idle lane takes the next tail
                    while nxt < hi and visits[nxt] == 0:
                        out_len[nxt] = 0
                        out_drop[nxt] = False
                        nxt += 1
                    if nxt >= hi:
                        continue
                    e = nxt
                    nxt += 1
                    lane_e[k] = e
                    lane_cur[k] = first[e]
                    lane_step[k] = 1
                    lane_key[k] = tail_key(block_src, per_row, walks_per_node, seed, seq,
                                           walk[e], pos[e])  # fmt: skip
                    out[out_at[e]] = first[e]
                busy = True
                step = lane_step[k]
                drop = False
                if step < visits[e]:
                    cur = lane_cur[k]
                    to = dyn_next(cur, draw(lane_key[k], step), b_indptr, b_indices, a_prob,
                                  a_idx, weighted, b_tot, b_live, row_start, row_len, d_targets,
                                  d_cum, ext_bits)  # fmt: skip
                    if to < 0 and mode == MODE_DROP:
                        drop = True
                    else:
                        to = cur if to < 0 else to
                        out[out_at[e] + step] = to
                        lane_cur[k] = to
                        lane_step[k] = step + 1
                        continue
                out_len[e] = step
                out_drop[e] = drop
                lane_e[k] = -1


@njit(cache=True, parallel=True)
def walks_rewrite(blocks, blk_ptr, e_walk, e_pos, e_target, walks_per_node, per_row, per_unit,
                  blk_start, walk_len, dropped, steps, steps_hi, new_start, tail_at, tail_len,
                  tail_drop, tails, v_at, v_unit, v_node, log, l_at, l_row, l_node,
                  l_val):  # fmt: skip
    """Write the walks of ``blocks`` (a plan's, ``plan_entries``: block i's rerouted walks are
    entries ``blk_ptr[i]`` .. ``blk_ptr[i + 1] - 1``) after the batch at ``new_start[i]`` of
    ``steps``: unchanged walks copied, rerouted ones copied up to the rerouted visit, then
    their new tails (entry e's: ``tail_len[e]`` visits from ``tails[tail_at[e]]``, as
    ``walk_tails`` walked them on the new graph). Updates ``walk_len``, ``dropped``.

    In the same pass (the tails and old visits at hand): the index entries of the stepping
    visits walked anew, (unit: walk // ``per_unit``, node) from ``v_unit``/``v_node[v_at[i]]``,
    and with ``log`` the visit-count changes of the rows (block // ``per_row``), -1 for each old
    visit after the rerouted one and +1 for each new one, walk after walk, as (row, node,
    value) from ``l_*[l_at[i]]`` (``rewrite_counts`` counts both per block)."""
    R = walks_per_node
    n_chunks = (blocks.size + _PLAN_CHUNK - 1) // _PLAN_CHUNK
    for c in prange(n_chunks):
        lo = c * _PLAN_CHUNK
        hi = min(blocks.size, lo + _PLAN_CHUNK)
        # first the blocks' first steps (as walks_plan: loads independent of one another,
        # their misses overlap), then the copies, which find them in cache
        touched = np.uint64(0)
        for i in range(lo, hi):
            at = blk_start[blocks[i]]
            if at < steps.size:
                touched += np.uint64(steps[at]) + np.uint64(steps_hi[at])
        for i in range(lo, hi):
            _rewrite_block(i, blocks[i], R, per_row, per_unit, blk_ptr, e_walk, e_pos, e_target,
                           blk_start, walk_len, dropped, steps, steps_hi, new_start, tail_at,
                           tail_len, tail_drop, tails, v_at, v_unit, v_node, log, l_at, l_row,
                           l_node, l_val)  # fmt: skip
        if touched == _NEVER:  # (a use of the first loop's loads; see walks_plan)
            new_start[lo] = -1


@njit(cache=True, inline="always")
def _copy_steps(steps, steps_hi, src, dst, n):
    """``n`` steps from ``src`` to ``dst`` (>= src + n: no overlap), the low and the high
    parts apart (each a plain loop)."""
    for j in range(n):
        steps[dst + j] = steps[src + j]
    for j in range(n):
        steps_hi[dst + j] = steps_hi[src + j]


@njit(cache=True, inline="always")
def _rewrite_block(i, b, R, per_row, per_unit, blk_ptr, e_walk, e_pos, e_target, blk_start,
                   walk_len, dropped, steps, steps_hi, new_start, tail_at, tail_len, tail_drop,
                   tails, v_at, v_unit, v_node, log, l_at, l_row, l_node, l_val):  # fmt: skip
    """Block ``b`` (plan row i) of :func:`walks_rewrite`: the steps between rerouted visits
    are copied as one run each (the walks kept lie at the same offsets in the old and the
    new block)."""
    at = np.int64(blk_start[b])
    to = np.int64(new_start[i])
    run_at = at  # the kept steps not yet copied: [run_at, at) to run_to
    run_to = to
    v = v_at[i]
    lg = l_at[i] if log else 0
    row = b // per_row
    e = blk_ptr[i]  # the block's next rerouted walk
    for w in range(R):
        q = b * R + w
        length = np.int64(walk_len[q])
        if e >= blk_ptr[i + 1] or e_walk[e] != q:
            at += length
            to += length
            continue
        pos = e_pos[e]
        _copy_steps(steps, steps_hi, run_at, run_to, at + pos - run_at)
        if log:
            for j in range(pos, length):
                l_row[lg] = row
                l_node[lg] = np.int64(steps[at + j]) | (np.int64(steps_hi[at + j]) << 16)
                l_val[lg] = -1
                lg += 1
        m = pos
        drop = True
        if e_target[e] >= 0:
            made = tail_len[e]
            t0 = tail_at[e]
            stepping = made - 1 + np.int64(tail_drop[e])  # the visits the index names
            unit = q // per_unit
            for j in range(made):
                x = np.int64(tails[t0 + j])
                steps[to + m + j] = x & 0xFFFF
                steps_hi[to + m + j] = x >> 16
                if j < stepping:
                    v_unit[v] = unit
                    v_node[v] = x
                    v += 1
                if log:
                    l_row[lg] = row
                    l_node[lg] = x
                    l_val[lg] = 1
                    lg += 1
            m += made
            drop = tail_drop[e]
        e += 1
        at += length
        to += m
        walk_len[q] = m
        if dropped.size:
            dropped[q] = drop
        run_at = at
        run_to = to
    _copy_steps(steps, steps_hi, run_at, run_to, at - run_at)


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
            flush_counts(cnt, out_nodes, out_counts, base, m)
            out_nnz[i] = m
            out_visits[i] = visits


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
