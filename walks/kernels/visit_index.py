"""The walk store's node -> walks index: the distinct nodes each unit of walks visits, as
gap-encoded CSR rows, merged and marked as walks change (walks/walkstore.py).

Numba only (see ``walks/kernels/__init__.py`` for the conventions every kernel shares).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from shardwalk.walks.kernels.repair import coin_key, keeps_move, visit_coin

_DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)
# bit index of a power of two x from the top 6 bits of x * _DEBRUIJN (mod 2**64)
_DEBRUIJN_BIT = np.zeros(64, np.int64)
with np.errstate(over="ignore"):
    for _i in range(64):
        _DEBRUIJN_BIT[int((np.uint64(1 << _i) * _DEBRUIJN) >> np.uint64(58))] = _i


@njit(cache=True, parallel=True)
def unit_visits(num_units, per_unit, walks_per_node, blk_start, walk_len, dropped, steps, steps_hi,
                n, out_ip, out_nodes, n_chunks, out_ip2, out_nodes2):  # fmt: skip
    """The distinct nodes at which the walks of each unit (``per_unit`` consecutive walks of
    one block) take a step: every visit after the source but the last, and the last too where
    the drop rule cut the walk (a move that a new edge can change), as CSR rows over the units;
    and into (``out_ip2``, ``out_nodes2``) those of them it steps from more than once.
    With ``out_nodes`` empty: only the row sizes into ``out_ip[1:]`` and ``out_ip2[1:]``
    (then take the prefix sums and call again to fill)."""
    R = walks_per_node
    fill = out_nodes.size > 0
    for c in prange(n_chunks):
        stamp = np.full(n, -1, np.int64)
        again = np.full(n, -1, np.int64)
        for u in range(c, num_units, n_chunks):
            q0 = u * per_unit
            b = q0 // R
            at = blk_start[b]
            for q in range(b * R, q0):
                at += np.int64(walk_len[q])
            m = 0
            m2 = 0
            base = out_ip[u] if fill else 0
            base2 = out_ip2[u] if fill else 0
            for q in range(q0, q0 + per_unit):
                length = np.int64(walk_len[q])
                end = length if dropped.size and dropped[q] else length - 1
                for k in range(end):
                    v = np.int64(steps[at + k]) | (np.int64(steps_hi[at + k]) << 16)
                    if stamp[v] != u:
                        stamp[v] = u
                        if fill:
                            out_nodes[base + m] = v
                        m += 1
                    elif again[v] != u:
                        again[v] = u
                        if fill:
                            out_nodes2[base2 + m2] = v
                        m2 += 1
                at += length
            if not fill:
                out_ip[u + 1] = m
                out_ip2[u + 1] = m2


@njit(cache=True, inline="always")
def _put_gap(out, at, g, fill):
    """Gap ``g`` as a varint (7 bits a byte, high bit: more bytes follow) at ``out[at]`` (only
    if ``fill``); returns its bytes."""
    size = 0
    while True:
        byte = g & 127
        g >>= 7
        if fill:
            out[at + size] = byte | (128 if g > 0 else 0)
        size += 1
        if g == 0:
            return size


@njit(cache=True, parallel=True)
def gaps_encode(t_ip, t_rows, b_ip, out):
    """Each column's sorted rows ``t_rows[t_ip[c]:t_ip[c + 1]]`` as varint gaps (7 bits a
    byte, high bit: more bytes follow; the first gap from 0) into ``out`` from ``b_ip[c]``.
    With ``out`` empty: only the byte counts into ``b_ip[1:]``."""
    fill = out.size > 0
    for c in prange(t_ip.size - 1):
        prev = np.int64(0)
        at = b_ip[c] if fill else 0
        size = 0
        for e in range(t_ip[c], t_ip[c + 1]):
            size += _put_gap(out, at + size, np.int64(t_rows[e]) - prev, fill)
            prev = np.int64(t_rows[e])
        if not fill:
            b_ip[c + 1] = size


@njit(cache=True, inline="always")
def _gap_at(data, at):
    """(the varint gap coded at ``data[at]``, the position after it)."""
    g = np.int64(0)
    shift = 0
    while True:
        byte = np.int64(data[at])
        at += 1
        g |= (byte & 127) << shift
        shift += 7
        if byte < 128:
            return g, at


@njit(cache=True, inline="always")
def _column(b_ip, data, c):
    """(first row coded for column c or -1, position after it, end of the column's bytes);
    columns past the coded ones hold none."""
    coded = b_ip.size - 1
    at = np.int64(b_ip[c]) if c < coded else np.int64(0)
    end = np.int64(b_ip[c + 1]) if c < coded else np.int64(0)
    if at < end:
        first, at = _gap_at(data, at)
        return first, at, end
    return np.int64(-1), at, end


@njit(cache=True, inline="always")
def _next_row(data, row, at, end):
    """(the next row of a coded column after ``row``, or -1, and the position after it)."""
    if at < end:
        g, at = _gap_at(data, at)
        return row + g, at
    return np.int64(-1), at


@njit(cache=True, parallel=True)
def gaps_merge(b_ip, data, o_ip, o_rows, out_ip, out):
    """``gaps_encode``'s output for the union, per column c, of the rows coded in (``b_ip``,
    ``data``; columns past its end hold none) and ``o_rows[o_ip[c]:o_ip[c + 1]]`` (sorted),
    each row once, into ``out`` from ``out_ip[c]``. With ``out`` empty: only the byte counts
    into ``out_ip[1:]``. Costs the coded bytes and the new rows, not a pass over the walks."""
    fill = out.size > 0
    for c in prange(o_ip.size - 1):
        old, at, end = _column(b_ip, data, c)
        e = o_ip[c]
        base = out_ip[c] if fill else 0
        size = 0
        prev = np.int64(0)
        last = np.int64(-1)
        while old >= 0 or e < o_ip[c + 1]:
            if old >= 0 and (e >= o_ip[c + 1] or old <= o_rows[e]):
                v = old
                old, at = _next_row(data, old, at, end)
            else:
                v = np.int64(o_rows[e])
                e += 1
            if v == last:
                continue
            size += _put_gap(out, base + size, v - prev, fill)
            prev = v
            last = v
        if not fill:
            out_ip[c + 1] = size


@njit(cache=True, parallel=True)
def transpose_rows(indptr, cols, n, n_chunks):
    """The transpose of a CSR pattern: for each column c, the rows that hold it (sorted).
    ``n_chunks`` threads each take a range of rows (a counting sort: per-chunk counts, then
    each chunk scatters its rows after the earlier chunks')."""
    rows_n = indptr.size - 1
    counts = np.zeros((n_chunks, n), np.int64)
    for k in prange(n_chunks):
        lo = rows_n * k // n_chunks
        hi = rows_n * (k + 1) // n_chunks
        for e in range(indptr[lo], indptr[hi]):
            counts[k, cols[e]] += 1
    t_ip = np.zeros(n + 1, np.int64)
    for c in range(n):
        total = np.int64(0)
        for k in range(n_chunks):
            x = counts[k, c]
            counts[k, c] = t_ip[c] + total
            total += x
        t_ip[c + 1] = t_ip[c] + total
    rows = np.empty(cols.size, np.int32)
    for k in prange(n_chunks):
        lo = rows_n * k // n_chunks
        hi = rows_n * (k + 1) // n_chunks
        for r in range(lo, hi):
            for e in range(indptr[r], indptr[r + 1]):
                c = cols[e]
                rows[counts[k, c]] = r
                counts[k, c] += 1
    return t_ip, rows


@njit(cache=True, parallel=True)
def gaps_dups(b_ip, data, o_ip, o_rows, out_ip, out_rows):
    """Per column c, the rows (sorted, each once) that ``o_rows[o_ip[c]:o_ip[c + 1]]``
    (sorted) holds more than once or that (``b_ip``, ``data``: ``gaps_encode``'s output;
    columns past its end hold none) holds too: the (node, unit) pairs whose visits, counted
    over both, come more than once, as CSR rows into ``out_rows`` from ``out_ip[c]``. With
    ``out_rows`` empty: only the counts into ``out_ip[1:]``."""
    fill = out_rows.size > 0
    for c in prange(o_ip.size - 1):
        old, at, end = _column(b_ip, data, c)
        m = 0
        base = out_ip[c] if fill else 0
        last = np.int64(-1)
        for e in range(o_ip[c], o_ip[c + 1]):
            v = np.int64(o_rows[e])
            while old >= 0 and old < v:
                old, at = _next_row(data, old, at, end)
            dup = (e > o_ip[c] and o_rows[e - 1] == v) or old == v
            if dup and v != last:
                if fill:
                    out_rows[base + m] = v
                m += 1
                last = v
        if not fill:
            out_ip[c + 1] = m


@njit(cache=True, inline="always")
def _mark(words, u):
    words[u >> 6] |= np.uint64(1) << np.uint64(u & 63)


@njit(cache=True, inline="always")
def _mark_coded(words, b_ip, data, c, coin, key, old_total, new_total):
    """Mark the units coded for column ``c`` (node c): all, or with ``coin`` those whose
    rank-1 coin (``visit_coin``, ``key`` the node's ``coin_key``) says they do not keep their
    move at c."""
    row, at, end = _column(b_ip, data, c)
    while row >= 0:
        if not coin or not keeps_move(visit_coin(key, row, 1), old_total, new_total):
            _mark(words, row)
        row, at = _next_row(data, row, at, end)


@njit(cache=True, parallel=True)
def units_to_plan(cols, b_ip, data, m_ip, m_data, ov_nodes, ov_units, ov_used, changed_bits,
                  own, block_src, per_block, num_units, changed_slot, kind, o_tot, n_tot, base,
                  n_chunks):  # fmt: skip
    """The units (sorted, unique) a repair must plan: the units coded for the changed nodes
    ``cols``, the overflow's entries of changed nodes (``changed_bits``), the units of the
    blocks ``own`` whose source changed (``per_block`` each), but at a node that only gained edges (``kind`` 1)
    only the walks whose coin (``repair.visit_coin`` with ``base``, one unit a walk) says
    they do not keep their move there, at their first visit to it after the source (rank 1)
    or at the source (rank 0), and every walk coded in (``m_ip``, ``m_data``: the walks that
    step from the node more than once) or in the overflow: the walks a repair could reroute,
    without reading the walks it keeps. ``n_chunks`` threads each mark a bitmap of their own
    (nodes round robin, the overflow and ``own`` in ranges), then their union is taken."""
    n_words = (num_units >> 6) + 1
    words = np.zeros((n_chunks, n_words), np.uint64)
    one = np.uint64(1)
    for t in prange(n_chunks):
        mine = words[t]
        for i in range(t, cols.size, n_chunks):
            c = cols[i]
            slot = changed_slot[c]
            sure = kind[slot] != 1  # every walk at the node may be rerouted
            key = coin_key(base, c)
            _mark_coded(mine, b_ip, data, c, not sure, key, o_tot[slot], n_tot[slot])
            if not sure:
                _mark_coded(mine, m_ip, m_data, c, False, key, 1.0, 1.0)
        for e in range(ov_used * t // n_chunks, ov_used * (t + 1) // n_chunks):
            v = np.int64(ov_nodes[e])
            if (changed_bits[v >> 6] >> np.uint64(v & 63)) & one:
                _mark(mine, np.int64(ov_units[e]))
        for i in range(own.size * t // n_chunks, own.size * (t + 1) // n_chunks):
            c = np.int64(block_src[own[i]])
            slot = changed_slot[c]
            key = coin_key(base, c)
            for k in range(per_block):
                u = np.int64(own[i]) * per_block + k
                if kind[slot] != 1 or not keeps_move(visit_coin(key, u, 0), o_tot[slot],
                                                       n_tot[slot]):  # fmt: skip
                    _mark(mine, u)
    for w in prange(n_words):
        x = words[0, w]
        for t in range(1, n_chunks):
            x |= words[t, w]
        words[0, w] = x
    return _set_bits(words[0])


@njit(cache=True)
def _set_bits(words):
    """The indexes of the set bits of ``words`` (ascending)."""
    one = np.uint64(1)
    total = np.int64(0)
    for w in range(words.size):
        x = words[w]
        while x:
            x &= x - one
            total += 1
    out = np.empty(total, np.int64)
    m = 0
    for w in range(words.size):
        x = words[w]
        while x:
            low = x & (~x + one)  # the lowest set bit, its index by a de Bruijn sequence
            out[m] = (np.int64(w) << 6) + _DEBRUIJN_BIT[(low * _DEBRUIJN) >> np.uint64(58)]
            m += 1
            x ^= low
    return out
