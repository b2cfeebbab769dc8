"""The walk store's node -> walks index (``walkstore.WalkStore``): built from the walks, the
overflow folded into it, and the walks a repair must plan found from it.

Per node, the sorted walks (units) that take a step from it, as varint gaps (``t_indptr``,
``t_units``), and apart, the same for the walks that step from it more than once
(``m_indptr``, ``m_units``: a few percent of the entries, most of them walks kept at a dangling
node by the self-loop rule). At a node that only gained edges, a visit keeps its move by a coin
keyed by the walk, the node and the visit's rank among the walk's visits to it
(``kernels.repair.visit_coin``), so the walks a repair may reroute there are the coded walks
whose first-visit coin fails, every walk of the second list, and every walk of the overflow
(``kernels.visit_index.units_to_plan``): a coin per entry instead of a read of every walk. An
upper bound is all it needs: an entry (or a second-list entry) for a walk that no longer visits
the node (or once only) costs a read, never a wrong plan.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from shardwalk.walks.kernels.bitmap import node_bitmap
from shardwalk.walks.kernels.repair import coin_base
from shardwalk.walks.kernels.visit_index import (
    gaps_dups,
    gaps_encode,
    gaps_merge,
    transpose_rows,
    unit_visits,
    units_to_plan,
)

__all__ = ["build_index", "merge_overflow", "plan_units"]

_I32 = np.iinfo(np.int32).max
_U32 = np.iinfo(np.uint32).max


def _coded(t_ip: np.ndarray, t_rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per column, its sorted rows as varint gaps: (byte offsets, bytes)."""
    b_ip = np.zeros(n + 1, np.int64)
    gaps_encode(t_ip, t_rows, b_ip, np.zeros(0, np.uint8))
    np.cumsum(b_ip, out=b_ip)
    data = np.empty(int(b_ip[-1]), np.uint8)
    gaps_encode(t_ip, t_rows, b_ip, data)
    return _narrow(b_ip), data


def _narrow(b_ip: np.ndarray) -> np.ndarray:
    return b_ip.astype(np.uint32) if b_ip[-1] <= _U32 else b_ip


def _union(b_ip: np.ndarray, data: np.ndarray, o_ip: np.ndarray, rows: np.ndarray,
           n: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The coded lists (``b_ip``, ``data``) with the sorted rows of (``o_ip``, ``rows``) added."""
    t_ip = b_ip.astype(np.int64)
    out_ip = np.zeros(n + 1, np.int64)
    gaps_merge(t_ip, data, o_ip, rows, out_ip, np.zeros(0, np.uint8))
    np.cumsum(out_ip, out=out_ip)
    out = np.empty(int(out_ip[-1]), np.uint8)
    gaps_merge(t_ip, data, o_ip, rows, out_ip, out)
    return _narrow(out_ip), out


def build_index(store: Any, num_nodes: int) -> None:
    """Build ``store``'s index from its walks (see the module docstring; the visits at a
    block's source, each walk's first, are found from ``block_src``)."""
    nu = store.num_units
    ips = np.zeros(nu + 1, np.int64), np.zeros(nu + 1, np.int64)
    chunks = max(1, min(numba.get_num_threads(), nu))
    args = (nu, store.per_unit, store.R, store.blk_start, store.walk_len, store.dropped,
            store._lo, store._hi, num_nodes)  # fmt: skip
    unit_visits(*args, ips[0], np.zeros(0, np.int32), chunks, ips[1], np.zeros(0, np.int32))
    for ip in ips:
        np.cumsum(ip, out=ip)
    nodes = np.empty(int(ips[0][-1]), np.int32), np.empty(int(ips[1][-1]), np.int32)
    unit_visits(*args, ips[0], nodes[0], chunks, ips[1], nodes[1])
    for (ip_name, data_name), ip, col in zip(
        (("t_indptr", "t_units"), ("m_indptr", "m_units")), ips, nodes
    ):
        t_ip, t_rows = transpose_rows(ip, col, num_nodes, chunks)
        b_ip, data = _coded(t_ip, t_rows, num_nodes)
        setattr(store, ip_name, b_ip)
        setattr(store, data_name, data)
    store.overflow_nodes = np.zeros(0, np.int32 if num_nodes <= _I32 else np.int64)
    store.overflow_units = np.zeros(0, np.int32)
    store.overflow_used = 0
    store.stale = 0  # visits rerouted away since: entries that may now name walks wrongly


def merge_overflow(store: Any, num_nodes: int) -> None:
    """Fold ``store``'s overflow into its coded index (each node's units merged with its
    overflow entries, and the units it then names more than once into the second list): costs
    the index's bytes and the overflow, not a pass over every walk; the entries of visits
    rerouted away stay (false hits, counted in ``stale``) until the next :func:`build_index`."""
    u = store.overflow_used
    # sorted by (node, unit) as one int64 key each (units < 2**31): a plain sort, several
    # times faster than a lexsort of the two columns
    keys = store.overflow_nodes[:u].astype(np.int64) << 32
    keys |= store.overflow_units[:u]
    keys.sort()
    o_ip = np.zeros(num_nodes + 1, np.int64)
    np.cumsum(np.bincount(keys >> 32, minlength=num_nodes), out=o_ip[1:])
    rows = (keys & 0xFFFFFFFF).astype(np.int32)
    t_ip = store.t_indptr.astype(np.int64)
    d_ip = np.zeros(num_nodes + 1, np.int64)
    gaps_dups(t_ip, store.t_units, o_ip, rows, d_ip, np.zeros(0, np.int32))
    np.cumsum(d_ip, out=d_ip)
    dups = np.empty(int(d_ip[-1]), np.int32)
    gaps_dups(t_ip, store.t_units, o_ip, rows, d_ip, dups)
    store.m_indptr, store.m_units = _union(store.m_indptr, store.m_units, d_ip, dups, num_nodes)
    store.t_indptr, store.t_units = _union(store.t_indptr, store.t_units, o_ip, rows, num_nodes)
    store.overflow_used = 0


def plan_units(store: Any, nodes: np.ndarray, slot: np.ndarray, seq: int, kind: np.ndarray,
               old_total: np.ndarray, new_total: np.ndarray) -> np.ndarray:  # fmt: skip
    """The units (sorted, unique) that update batch ``seq`` may reroute walks of: changed
    ``nodes`` (``slot``: their rows in ``kind``, ``old_total``, ``new_total``; >= 0 exactly at
    them) as ``walks_visiting`` finds them, less the walks whose coins keep every move at
    nodes that only gained edges (possible with a unit a walk: ``per_unit`` 1)."""
    nodes = np.asarray(nodes, np.int64)
    indexed = nodes[nodes < store.t_indptr.shape[0] - 1]
    bits = node_bitmap(nodes, slot.shape[0])
    kinds = kind if store.per_unit == 1 else np.zeros_like(kind)  # (1 only: coins per walk)
    return units_to_plan(
        indexed, store.t_indptr, store.t_units, store.m_indptr, store.m_units,
        store.overflow_nodes, store.overflow_units, store.overflow_used, bits,
        store._source_blocks(nodes), store.block_src, store.R // store.per_unit, store.num_units,
        slot, kinds, old_total, new_total, np.uint64(coin_base(store.seed, store.per_row, seq)),
        max(1, numba.get_num_threads()),
    )  # fmt: skip
