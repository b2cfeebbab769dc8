"""``WalkStore``: the fingerprint walks kept, so graph updates repair them incrementally.

Bahmani, Chowdhury and Goel (VLDB 2010, "Fast incremental and personalized PageRank") keep
the Monte Carlo walks and, when the out-edges of u change, re-simulate only the walks that pass
through u, each from its visit to u, with the probability that the change moves it (for an
added edge of an unweighted node, 1 / new out-degree per visit). Here every visit's move out
of a changed node is kept with probability min(1, q(t) / p(t)) and otherwise redrawn from
(q - p)^+ (``kernels.repair.walks_plan``): the maximal coupling of the old and new move
distributions, which is exactly that rule for an added edge, reroutes exactly the walks that
took a deleted edge, and covers weight changes, dangling nodes and deletions the same way. The
rerouted walk continues on the new graph with a fresh geometric length (the walk is
memoryless). Every coin comes from the counter-based generator keyed by (seed, source, walk,
batch number), and at a node that only gained edges by (seed, store, batch number, walk, node,
the visit's rank among the walk's visits to the node) instead, so that the index finds the
walks to reroute there without reading the others (``walk_index``); so the store stays a
sample of the walks of the new graph, and replaying the same batches gives the same store.

Layout (compact numpy arrays): a block per source (``block_src``), its R walks one after the
other in ``steps`` (the visits after the source: 3 bytes a step, the low 16 bits of each node
id in ``_lo``, the rest in ``_hi``, one byte below 16.7M nodes), ``blk_start`` per block, ``walk_len``
(steps) per walk, ``dropped`` per walk under the drop rule (the walk ended at a dangling node
rather than by stopping). A repaired block is rewritten at the end of ``steps``; the space it
left is reclaimed once it exceeds a quarter of the walks (the memory target: the store within
2x the fingerprints). The node index is per walk (Bahmani et al. keep the visits of every
node): for each node, the sorted walks that take a step from it (a visit after the source that
is not the walk's last, or the last where the drop rule cut the walk: the moves a change of its
out-edges can reroute) as varint gaps (``t_indptr``: byte offsets, ``t_units``: bytes), plus
an append-only overflow of (node, walk) pairs for the visits walked since, merged into the
coded lists once it holds a sixteenth of the steps (a pass over the index's bytes), the index
rebuilt from the walks instead (a pass over every walk) once an eighth of the visits were
rerouted away since it was built (``stale_share``; their entries false hits, and bytes); the walks' first visits, at
their sources, are found from ``block_src``. False hits (a walk rerouted since) only cost a
scan of that walk. Finding the walks a batch affects costs the changed nodes' entries (a coin
each at nodes that only gained edges) and a scan of the walks they name (a bit test per visit
against a bitmap of the changed nodes, ``kernels.repair.walks_plan``), not a scan of whole
blocks; the blocks of the walks rerouted are rewritten. (``walks_per_unit`` > 1 indexes groups of walks instead: fewer, denser entries,
more walks scanned.)

Rows of many blocks (hub rows: 1000 walks each) are not recounted after a repair: the visits
it removed and added are logged as (row, node, +-1) and applied to the published rows by
``kept_fingerprints.refresh_fingerprints`` (new nodes after the old ones, in log order), so a
refresh costs the rows it touches and the visits that changed, not the hub rows' walks.

A repair is all or nothing: one that raises leaves the store as it was (the arrays it swapped
are put back and the entries it rewrote in place restored; what it wrote past the ends in use
is unseen), and its scratch array is reset whatever happens. The blocks it rewrote are marked
dirty; ``kept_fingerprints.refresh_fingerprints`` clears the marks of the rows it recounted
only once the new fingerprint store is built and published, so a refresh that fails leaves them
for the next.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
from shardwalk.walks.dynamic import Change, DynamicGraph, _effective, _gather
from shardwalk.walks.kernels.bitmap import node_bitmap
from shardwalk.walks.kernels.repair import (
    apply_row_deltas,
    coin_base,
    pack_blocks,
    plan_entries,
    rewrite_counts,
    walk_tails,
    walks_bounds,
    walks_build,
    walks_count,
    walks_plan,
    walks_rewrite,
)
from shardwalk.walks.kernels.rng import MODE_DROP
from shardwalk.walks.kernels.walks import compact_fingerprints
from shardwalk.walks.walk_index import build_index, merge_overflow, plan_units

from shardwalk._files import load_npy, read_meta, save_npy, write_meta
from shardwalk.errors import CorruptionError

__all__ = ["WALKS_SCHEMA", "WalkStore"]

WALKS_SCHEMA = "shardwalk.walks"
WALKS_SCHEMA_VERSION = 1
#: the parts of a repair its report times (``stages``, seconds)
_STAGES = ("find", "plan", "rewrite", "new_sources", "index", "compact")
_U16 = np.iinfo(np.uint16).max
_I32 = np.iinfo(np.int32).max
_U32 = np.iinfo(np.uint32).max
_HI8 = 1 << 24  # nodes whose ids fit 3 bytes a step
_CHUNK_WALKS = 1 << 20  # walks per kernel call of a build that reports its progress
# what a repair may replace or advance: put back if it fails (the per-block arrays are the
# buffers behind the properties; entries past _nb, used and overflow_used are unseen)
_STATE = ("_nb", "used", "live", "overflow_used", "_src", "_start", "_len", "_drop", "_dirty",
          "_lo", "_hi", "overflow_nodes", "overflow_units", "t_indptr", "t_units", "dl_used", "_recount",
          "_dl_row", "_dl_node", "_dl_val", "_by_src", "stale", "m_indptr", "m_units")  # fmt: skip


def _split(steps: np.ndarray, num_nodes: int, room: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Node ids as (low 16 bits uint16, the rest: uint8 below 2**24 nodes, else uint16), in
    buffers with ``room`` entries more, not written (their pages are not resident until
    used)."""
    steps = np.asarray(steps)
    n = steps.shape[0]
    lo = np.empty(n + room, np.uint16)
    hi = np.empty(n + room, np.uint8 if num_nodes <= _HI8 else np.uint16)
    lo[:n] = steps & 0xFFFF
    hi[:n] = steps >> 16
    return lo, hi


def _start_type(top: int) -> type:
    """The type of the blocks' starts while the steps in use stay within ``top``."""
    return np.uint32 if top <= _U32 else np.int64


def _grow(arr: np.ndarray, need: int, used: int | None = None) -> np.ndarray:
    """``arr`` with room for ``need`` entries (by half at least), its first ``used`` (default
    all) kept."""
    if need <= arr.shape[0]:
        return arr
    out = np.empty(max(need, arr.shape[0] + arr.shape[0] // 2, 1024), arr.dtype)
    keep = arr.shape[0] if used is None else used
    out[:keep] = arr[:keep]
    return out


class WalkStore:
    """R kept walks per source block (see the module docstring)."""

    # the buffers behind the per-block properties below (block_src ... dirty), with room to
    # grow past the blocks in use (``_nb``)
    _src: np.ndarray
    _start: np.ndarray
    _len: np.ndarray
    _drop: np.ndarray
    _dirty: np.ndarray
    # the node index (``walk_index.build_index``, ``merge_overflow``)
    t_indptr: np.ndarray
    t_units: np.ndarray
    m_indptr: np.ndarray
    m_units: np.ndarray
    overflow_nodes: np.ndarray
    overflow_units: np.ndarray
    overflow_used: int
    stale: int

    #: visit changes logged before the log may give way to recounting (see ``logged``)
    log_min = 1 << 16
    log_share = 4  # ... and until it outgrows this share of the steps
    #: steps in use before space left behind is reclaimed (below it, never)
    compact_min = 1 << 16
    #: the index is rebuilt from the walks once the visits rerouted away since it was built
    #: (false hits, kept by the merges in between) pass this share of the steps
    stale_share = 8
    #: the overflow is folded into the index once it holds this share of the steps, by
    #: :meth:`fold` where the store's owner calls it off the update's path (``fold_due``:
    #: ``shardwalk.graph`` at the first read after an update), by a repair only past
    #: ``repair_fold_share`` (for updates with no read between them)
    fold_share = 16
    repair_fold_share = 4
    #: walks per unit of the node index (a divisor of the walks per block; 1: each walk)
    walks_per_unit = 1

    def __init__(
        self,
        *,
        block_src: np.ndarray,
        walks_per_node: int,
        alpha: float,
        seed: int,
        mode: int,
        blk_start: np.ndarray,
        walk_len: np.ndarray,
        dropped: np.ndarray,
        steps: np.ndarray,
        used: int,
        num_nodes: int,
        block_w0: np.ndarray | None = None,
        per_row: int = 1,
    ) -> None:
        self._nb = int(block_src.shape[0])  # blocks; the per-block arrays have room to grow
        # sources and first walks as int32 (walk numbers stay below 2**31: hub_walks <= 2**20)
        self.block_src = block_src.astype(np.int32 if num_nodes <= _I32 else np.int64)
        # a source may own several blocks (hub rows of 1000 walks are 100 blocks of 10, so a
        # repair scans only the blocks that matter): block b holds walks (b % per_row) * R ..
        # of its source (``block_w0``, not kept)
        self.per_row = int(per_row)  # blocks per fingerprint row
        self.R = int(walks_per_node)
        if block_w0 is not None and not np.array_equal(block_w0, self.block_w0):
            raise CorruptionError(
                "walk store: the blocks' first walks are not (block % per_row) * walks_per_node"
            )
        self.R = int(walks_per_node)
        self.per_unit = max(d for d in range(1, self.R + 1)
                            if self.R % d == 0 and d <= self.walks_per_unit)  # fmt: skip
        src = self.block_src
        self._by_src = (
            None if (np.diff(src) >= 0).all() else np.argsort(src, kind="stable")
        )  # blocks by source, unless they are in order
        self.alpha = float(alpha)
        self.seed = int(seed)
        self.mode = int(mode)
        self.blk_start = blk_start.astype(_start_type(used))  # (4 bytes below 2**32 steps)
        self.walk_len = walk_len
        self.dropped = dropped
        # a quarter more room (the space repairs may leave behind before a compaction reclaims
        # it): the first repairs write there instead of copying the steps into larger buffers
        self._lo, self._hi = _split(steps, num_nodes, steps.shape[0] // 4)
        self.used = int(used)
        self.live = int(used)  # steps of the current walks (``used`` less the space left behind)
        self.dirty = np.zeros(block_src.shape[0], bool)  # blocks whose fingerprint row changed
        # rows of many blocks (hub rows: 1000 walks) are not recounted after a repair but
        # changed by the visits it moved: (row, node, +-1) logged since the last refresh, until
        # the log outgrows a quarter of the steps (then the dirty rows are recounted)
        self.logged = self.per_row > 1
        self._dl_row = np.zeros(0, np.int32)
        self._dl_node = np.zeros(0, np.int32)
        self._dl_val = np.zeros(0, np.int8)
        self.dl_used = 0
        self._recount = False
        self._slot = np.full(num_nodes, -1, np.int64)  # scratch: changed node -> its row
        self.stages = dict.fromkeys(_STAGES, 0.0)  # the last repair's parts, seconds
        self._index(num_nodes)

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        graph: DynamicGraph,
        sources: np.ndarray,
        *,
        walks_per_node: int,
        alpha: float,
        seed: int,
        mode: int,
        per_row: int = 1,
        done: Callable[[int], None] | None = None,
    ) -> WalkStore:
        """The fingerprint builder's walks from ``sources`` on ``graph``, kept: ``per_row``
        blocks of ``walks_per_node`` walks per source; ``done(walks)`` as they are walked."""
        sources = np.repeat(np.ascontiguousarray(sources, np.int64), per_row)
        r = walks_per_node
        w0 = np.tile(np.arange(per_row, dtype=np.int64) * r, sources.size // max(per_row, 1))
        at, steps, walk_len, dropped = _walk_new(graph, sources, w0, r, alpha, seed, mode, 0, done)
        blk_start = at[::r].copy() if sources.size else np.zeros(0, np.int64)
        return cls(
            block_src=sources, walks_per_node=r, alpha=alpha, seed=seed, mode=mode,
            blk_start=blk_start, walk_len=walk_len, dropped=dropped, steps=steps,
            used=steps.shape[0], num_nodes=graph.num_nodes, block_w0=w0, per_row=per_row,
        )  # fmt: skip

    # per-block arrays: views of the first blocks of buffers with room to grow
    block_src = property(lambda self: self._src[: self._nb],
                         lambda self, a: setattr(self, "_src", a))  # fmt: skip

    @property
    def block_w0(self) -> np.ndarray:
        """The first walk number of each block: (block % per_row) * R (computed)."""
        return (np.arange(self._nb, dtype=np.int64) % self.per_row * self.R).astype(np.int32)

    blk_start = property(lambda self: self._start[: self._nb],
                         lambda self, a: setattr(self, "_start", a))  # fmt: skip
    walk_len = property(lambda self: self._len[: self._nb * self.R],
                        lambda self, a: setattr(self, "_len", a))  # fmt: skip
    dropped = property(lambda self: self._drop[: self._nb * self.R] if self._drop.size else self._drop,
                       lambda self, a: setattr(self, "_drop", a))  # fmt: skip
    dirty = property(lambda self: self._dirty[: self._nb],
                     lambda self, a: setattr(self, "_dirty", a))  # fmt: skip

    @property
    def num_blocks(self) -> int:
        return self._nb

    @property
    def nbytes(self) -> int:
        """Bytes in use: the walks (steps in use, starts, lengths, drop marks) and the index."""
        arrays = (self.block_src, self.blk_start, self.walk_len, self.dropped,
                  self.t_indptr, self.t_units, self.m_indptr, self.m_units)  # fmt: skip
        walks = self.used * (self._lo.itemsize + self._hi.itemsize)
        overflow = self.overflow_used * (
            self.overflow_nodes.itemsize + self.overflow_units.itemsize
        )
        if self._by_src is not None:
            overflow += self._by_src.nbytes
        return int(sum(a.nbytes for a in arrays) + walks + overflow + self.log_bytes)

    @property
    def log_bytes(self) -> int:
        """The bytes of the visit changes logged (``logged``) until the next refresh."""
        return self.dl_used * (self._dl_row.itemsize + self._dl_node.itemsize + 1)

    @property
    def total_steps(self) -> int:
        return self.live

    @property
    def steps(self) -> np.ndarray:
        """The steps in use as node ids (a decoded copy: int32, or int64 past 2**31 nodes)."""
        lo, hi = self._lo[: self.used], self._hi[: self.used]
        dtype = np.int32 if hi.dtype == np.uint8 else np.int64
        return lo.astype(dtype) | (hi.astype(dtype) << 16)

    def _fit(self, num_nodes: int) -> None:
        """Widen the high parts of the steps once node ids outgrow them."""
        if num_nodes > _HI8 and self._hi.dtype == np.uint8:
            self._hi = self._hi.astype(np.uint16)

    # -- index ------------------------------------------------------------------------------
    @property
    def num_units(self) -> int:
        """Index units: ``per_unit`` consecutive walks of one block each."""
        return self._nb * self.R // self.per_unit

    def _index(self, num_nodes: int) -> None:
        """Rebuild the node -> units index from the walks (``walk_index.build_index``)."""
        build_index(self, num_nodes)

    def _merge_overflow(self, num_nodes: int) -> None:
        """Fold the overflow into the coded index (``walk_index.merge_overflow``)."""
        merge_overflow(self, num_nodes)

    def _add_overflow(self, nodes: np.ndarray, units: np.ndarray) -> None:
        need = self.overflow_used + nodes.shape[0]
        self.overflow_nodes = _grow(self.overflow_nodes, need)
        self.overflow_units = _grow(self.overflow_units, need)
        self.overflow_nodes[self.overflow_used : need] = nodes
        self.overflow_units[self.overflow_used : need] = units
        self.overflow_used = need

    def _source_blocks(self, nodes: np.ndarray) -> np.ndarray:
        """The blocks whose source is one of ``nodes`` (sorted)."""
        src = self.block_src
        if self._by_src is None:  # sources in order (the builder's, and new nodes after)
            lo = np.searchsorted(src, nodes, "left")
            hi = np.searchsorted(src, nodes, "right")
            return _gather(lo, hi - lo)
        order = self._by_src
        lo = np.searchsorted(src[order], nodes, "left")
        hi = np.searchsorted(src[order], nodes, "right")
        return np.sort(order[_gather(lo, hi - lo)])

    def walks_visiting(self, nodes: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """The units (see ``per_unit``) whose walks may take a step from any of ``nodes``
        (their visits at the nodes, their sources among them), sorted, unique; may hold false
        hits (walks rerouted since the index was built). ``slot`` is >= 0 exactly at
        ``nodes`` (and maybe other changed nodes)."""
        rows = int(slot.max(initial=-1)) + 1  # (kind 0 everywhere: no coin spares a walk)
        return plan_units(self, nodes, slot, 0, np.zeros(rows, np.uint8), np.ones(rows),
                          np.ones(rows))  # fmt: skip

    def units_to_plan(self, nodes: np.ndarray, slot: np.ndarray, seq: int, kind: np.ndarray,
                      old_total: np.ndarray, new_total: np.ndarray) -> np.ndarray:  # fmt: skip
        """The units batch ``seq`` may reroute walks of (``walk_index.plan_units``): those of
        :meth:`walks_visiting`, less the walks whose coins keep their moves."""
        return plan_units(self, nodes, slot, seq, kind, old_total, new_total)

    # -- rows -------------------------------------------------------------------------------
    def rows(
        self, rows: np.ndarray, num_nodes: int, top_k: int = 0, per_row: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Fingerprint rows (each ``per_row`` blocks, default the store's): (indptr, nodes
        int32, counts uint32, count cut by top_k per row), in the builder's order (first visit
        first)."""
        r = self.R
        s = self.per_row if per_row is None else per_row
        blocks = rows
        lens = self.walk_len.reshape(-1, r * s)[rows].sum(axis=1, dtype=np.int64) + r * s
        offsets = np.zeros(blocks.shape[0] + 1, np.int64)
        np.cumsum(lens, out=offsets[1:])
        buf_nodes = np.empty(int(offsets[-1]), np.int32)
        buf_counts = np.empty(int(offsets[-1]), np.uint32)
        nnz = np.empty(blocks.shape[0], np.int64)
        visits = np.empty(blocks.shape[0], np.int64)
        walks_count(
            blocks, s, self.block_src, r, self.blk_start, self.walk_len, self._lo, self._hi,
            num_nodes,
            offsets, buf_nodes, buf_counts, nnz, visits, max(1, numba.get_num_threads()),
        )  # fmt: skip
        kept = np.minimum(nnz, top_k) if top_k else nnz
        ip = np.zeros(blocks.shape[0] + 1, np.int64)
        np.cumsum(kept, out=ip[1:])
        nodes = np.empty(int(ip[-1]), np.int32)
        counts = np.empty(int(ip[-1]), np.uint32)
        cut = np.empty(blocks.shape[0], np.int64)
        compact_fingerprints(offsets, buf_nodes, buf_counts, nnz, top_k, ip, nodes, counts, cut)
        return ip, nodes, counts, cut

    # -- repair -----------------------------------------------------------------------------
    def repair(
        self, graph: DynamicGraph, change: Change, seq: int, *, new_sources: bool
    ) -> dict[str, Any]:
        """Re-simulate the walks ``change`` (applied to ``graph``, batch number ``seq``)
        affects; with ``new_sources`` the nodes it added get blocks of fresh walks.

        Returns
        -------
        dict
            ``walks`` rerouted, ``steps`` walked anew, ``walks_scanned`` (the walks the
            index named, planned), ``blocks_scanned`` (their blocks), ``seconds``.

        A repair that raises leaves the store as it was (see the module docstring).
        """
        t0 = time.perf_counter()
        n = change.num_nodes_after
        if self._slot.shape[0] < n:
            self._slot = np.full(max(n, self._slot.shape[0] * 3 // 2), -1, np.int64)
        changed_slot = self._slot[:n]
        state = {name: getattr(self, name) for name in _STATE}
        undo: list[tuple[np.ndarray, ...]] = []  # entries rewritten in place, as they were
        try:
            changed_slot[change.nodes] = np.arange(change.nodes.shape[0])
            return self._repair(graph, change, seq, new_sources, changed_slot, undo, t0)
        except BaseException:
            for name, value in state.items():
                setattr(self, name, value)
            for blocks, start, dirty, walks, lens, dropped in reversed(undo):
                self._start[blocks], self._dirty[blocks], self._len[walks] = start, dirty, lens
                if self._drop.size:
                    self._drop[walks] = dropped
            raise
        finally:
            changed_slot[change.nodes] = -1

    def _repair(self, graph: DynamicGraph, change: Change, seq: int, new_sources: bool,
                changed_slot: np.ndarray, undo: list, t0: float) -> dict[str, Any]:  # fmt: skip
        n = change.num_nodes_after
        rule_dangling = self.mode == MODE_DROP
        kind = change.kinds
        old = _effective(change.nodes, change.old_indptr, change.old_targets, change.old_weights,
                         rule_dangling, kind, change.old_total)  # fmt: skip
        new = _effective(change.nodes, change.new_indptr, change.new_targets, change.new_weights,
                         rule_dangling, kind, change.new_total)  # fmt: skip
        self.stages = stages = dict.fromkeys(_STAGES, 0.0)  # seconds of each part
        clock = time.perf_counter()
        units = self.units_to_plan(change.nodes[change.nodes < change.num_nodes_before],
                                   changed_slot, seq, kind, old[3], new[3])  # fmt: skip
        added = n - self.num_blocks if new_sources else 0
        stages["find"], clock = time.perf_counter() - clock, time.perf_counter()
        with _threads_for(units.shape[0] * self.per_unit + added * self.R):
            walks, steps, rewritten = self._reroute(
                graph, seq, units, change.nodes, changed_slot, kind, old, new, undo
            )
            clock = time.perf_counter()
            if added > 0:
                self._add_sources(graph, np.arange(self.num_blocks, n, dtype=np.int64))
        stages["new_sources"], clock = time.perf_counter() - clock, time.perf_counter()
        if self.overflow_used > max(1 << 16, self.total_steps // self.repair_fold_share):
            self.fold(n)  # (no read came to fold it at fold_share: see fold_due)
        stages["index"], clock = time.perf_counter() - clock, time.perf_counter()
        if self.used > max(self.compact_min, self.total_steps + self.total_steps // 4):
            self.compact()  # a quarter of space left behind at most (the memory target)
        stages["compact"] = time.perf_counter() - clock
        return {
            "walks": walks,
            "steps": steps,
            "walks_scanned": int(units.shape[0]) * self.per_unit,
            "blocks_scanned": _distinct(units * self.per_unit // self.R),
            "blocks_rewritten": rewritten,
            "seconds": time.perf_counter() - t0,
            "stages": stages,
        }

    def _reroute(self, graph: DynamicGraph, seq: int, units: np.ndarray, change_nodes: np.ndarray,
                 changed_slot: np.ndarray, kind: np.ndarray, old: tuple, new: tuple,
                 undo: list) -> tuple[int, int, int]:  # fmt: skip
        """Plan the walks of ``units`` and rewrite the blocks of those rerouted (see
        :meth:`repair`); (walks, steps, blocks rewritten). The entries it changes in place are
        saved in ``undo`` first."""
        r, g = self.R, self.per_unit
        clock = time.perf_counter()
        bits = node_bitmap(change_nodes, changed_slot.shape[0])
        pos = np.empty(units.shape[0] * g, np.int64)
        target = np.empty(units.shape[0] * g, np.int64)
        new_len = np.empty(units.shape[0] * g, np.int64)
        walks_plan(
            units, g, self.block_src, self.per_row, r, self.alpha, self.seed, seq,
            self.blk_start, self.walk_len, self.dropped, self._lo, self._hi, changed_slot, bits, kind,
            *old, *new, np.uint64(coin_base(self.seed, self.per_row, seq)), pos, target, new_len,
        )  # fmt: skip
        # the rerouted walks alone (arrays of them, not of their blocks' walks), by block: the
        # blocks are rewritten whole (their walks lie together)
        sel, ptr, e_walk, e_pos, e_target, e_visits, bound_s, stale, top = plan_entries(
            units, g, r, pos, target, new_len, self.walk_len
        )
        self.stages["plan"], clock = time.perf_counter() - clock, time.perf_counter()
        if sel.size == 0:
            return 0, 0, 0
        # (copies: kept for the undo; only the rerouted walks' lengths and marks change)
        undo.append((sel, self._start[sel].copy(), self._dirty[sel].copy(), e_walk,
                     self._len[e_walk], self._drop[e_walk] if self._drop.size else self._drop))  # fmt: skip
        if top > np.iinfo(self.walk_len.dtype).max:
            self._len = self._len.astype(np.uint32)
        new_start = self.used + np.cumsum(bound_s) - bound_s
        self._start = self._start.astype(_start_type(self.used + int(bound_s.sum())), copy=False)
        self._fit(graph.num_nodes)
        self._lo = _grow(self._lo, self.used + int(bound_s.sum()), self.used)
        self._hi = _grow(self._hi, self.used + int(bound_s.sum()), self.used)
        self.stale += int(stale)
        tail_at = np.cumsum(e_visits) - e_visits
        tails = np.empty(int(e_visits.sum()), np.int64)
        tail_len = np.empty(e_walk.shape[0], np.int64)
        tail_drop = np.empty(e_walk.shape[0], np.bool_)
        threads = max(1, min(numba.get_num_threads(), e_walk.shape[0]))
        walk_tails(e_walk, e_pos, e_target, e_visits, tail_at, self.block_src, self.per_row, r,
                   self.seed, seq, self.mode, *graph.kernel_arrays(), tails, tail_len, tail_drop,
                   threads)  # fmt: skip
        # the rewrite also writes the index entries of the stepping visits walked anew (after
        # each rerouted visit) and the hub rows' visit changes (see ``logged``): counted first
        visits = np.empty(sel.shape[0], np.int64)
        changes = np.empty(sel.shape[0], np.int64)
        self.live += rewrite_counts(ptr, e_walk, e_pos, e_target, self._len, tail_len, tail_drop,
                                    visits, changes)  # fmt: skip
        v_at = self.overflow_used + np.cumsum(visits) - visits
        need = self.overflow_used + int(visits.sum())
        self.overflow_nodes = _grow(self.overflow_nodes, need, self.overflow_used)
        self.overflow_units = _grow(self.overflow_units, need, self.overflow_used)
        log = self._log_room(changes)
        l_at = self.dl_used + np.cumsum(changes) - changes if log else changes
        walks_rewrite(
            sel, ptr, e_walk, e_pos, e_target, r, self.per_row, g, self.blk_start, self.walk_len,
            self.dropped, self._lo, self._hi, new_start, tail_at, tail_len, tail_drop, tails,
            v_at, self.overflow_units, self.overflow_nodes, log, l_at, self._dl_row,
            self._dl_node, self._dl_val,
        )  # fmt: skip
        self.overflow_used = need
        if log:
            self.dl_used += int(changes.sum())
        self.blk_start[sel] = new_start
        self.used += int(bound_s.sum())
        self.dirty[sel] = True
        self.stages["rewrite"] = time.perf_counter() - clock
        return int(e_walk.shape[0]), int(tail_len.sum()), int(sel.shape[0])

    def _log_room(self, changes: np.ndarray) -> bool:
        """Whether the visit-count changes a rewrite makes (``changes`` per block) are logged
        (see ``logged``), the log then grown to hold them."""
        if not self.logged or self._recount:
            return False
        need = self.dl_used + int(changes.sum())
        if need > max(self.log_min, self.live // self.log_share):
            # recounting the rows costs less: stop logging
            self._recount = True
            self.dl_used = 0
            return False
        self._dl_row = _grow(self._dl_row, need, self.dl_used)
        self._dl_node = _grow(self._dl_node, need, self.dl_used)
        self._dl_val = _grow(self._dl_val, need, self.dl_used)
        return True

    def delta_rows(
        self, indptr: np.ndarray, nodes: np.ndarray, counts: np.ndarray, num_nodes: int
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """(rows, (starts, lengths, nodes, counts)): the rows the logged visit changes touch,
        as the fingerprint rows (indptr, nodes, counts) with the changes applied (entries at
        0 removed, new nodes after the old ones, in the order the log first names them), row
        i's entries from ``starts[i]`` (with room left between rows): what :meth:`rows` would
        count, in another order."""
        u = self.dl_used
        row = self._dl_row[:u]
        # grouped by row (each repair logs its rows in order: a merge of sorted runs); within
        # a row, changes of one node are summed by apply_row_deltas, so no sort by node
        order = np.argsort(row, kind="stable")
        row = row[order]
        starts = np.flatnonzero(np.concatenate([[True], row[1:] != row[:-1]])) if u else row
        rows = row[starts].astype(np.int64)
        d_ip = np.append(starts, u).astype(np.int64)
        d_nodes = self._dl_node[:u][order]
        sums = self._dl_val[:u][order].astype(np.int64)
        room = np.diff(indptr)[rows] + np.diff(d_ip)
        off = np.cumsum(room) - room
        out_nodes = np.empty(int(room.sum()), np.int32)
        # zeros: the room a row leaves unused holds 0 or copies of its counts, so the whole
        # buffer's extremes are its rows'
        out_counts = np.zeros(int(room.sum()), np.int64)
        nnz = np.empty(rows.shape[0], np.int64)
        apply_row_deltas(
            rows, indptr, nodes, counts, d_ip, d_nodes, sums, num_nodes, off, out_nodes,
            out_counts, nnz, max(1, min(numba.get_num_threads(), rows.shape[0])),
        )  # fmt: skip
        if out_counts.size and out_counts.min() < 0:
            raise CorruptionError("walk store: a logged visit change has no visit to remove")
        return rows, (off, nnz, out_nodes, out_counts)

    def clear_log(self) -> None:
        """The logged changes are in the published fingerprints: start a new log."""
        self.dl_used = 0
        self._recount = False

    def _add_sources(self, graph: DynamicGraph, sources: np.ndarray) -> None:
        """Blocks of fresh walks (the builder's) for new source nodes."""
        r = self.R
        w0 = np.arange(self._nb, self._nb + sources.shape[0], dtype=np.int64) % self.per_row * r
        at, steps, walk_len, dropped = _walk_new(
            graph, sources, w0, r, self.alpha, self.seed, self.mode, self.used
        )
        self._fit(graph.num_nodes)
        self._lo = _grow(self._lo, self.used + steps.shape[0], self.used)
        self._hi = _grow(self._hi, self.used + steps.shape[0], self.used)
        self._lo[self.used : self.used + steps.shape[0]] = steps & 0xFFFF
        self._hi[self.used : self.used + steps.shape[0]] = steps >> 16
        first, last = self._nb, self._nb + sources.shape[0]
        if walk_len.max(initial=0) > np.iinfo(self._len.dtype).max:
            self._len = self._len.astype(np.uint32)
        # grow by half at least, so that adding nodes one by one stays O(1) each
        self._start = self._start.astype(_start_type(self.used + steps.shape[0]), copy=False)
        self._src, self._start, self._dirty = (
            _grow(a, last) for a in (self._src, self._start, self._dirty)
        )
        self._len = _grow(self._len, last * r)
        if self._drop.size:
            self._drop = _grow(self._drop, last * r)
        self._src[first:last] = sources
        self._start[first:last] = at[::r]
        self._len[first * r : last * r] = walk_len
        if self._drop.size:
            self._drop[first * r : last * r] = dropped
        self._dirty[first:last] = True
        self._nb = last
        self.used += steps.shape[0]
        self.live += steps.shape[0]
        # index the stepping visits (every visit after the source but the last, and the last
        # of a walk the drop rule cut); the sources are found from block_src
        lens = walk_len.astype(np.int64)
        step_in_walk = np.arange(steps.shape[0]) - np.repeat(np.cumsum(lens) - lens, lens)
        ends = lens - 1 + (dropped if dropped.size else 0)
        keep = step_in_walk < np.repeat(ends, lens)
        owner = np.repeat(np.arange(first * r, last * r, dtype=np.int64), lens)
        self._add_overflow(steps[keep], owner[keep] // self.per_unit)
        if self._by_src is None and first and sources.size and sources[0] < self._src[first - 1]:
            self._by_src = np.argsort(self.block_src, kind="stable")
        elif self._by_src is not None:
            self._by_src = np.argsort(self.block_src, kind="stable")

    @property
    def fold_due(self) -> bool:
        """Whether the overflow holds ``fold_share`` of the steps (a sixteenth: 8 bytes an
        entry, then half a byte a step at most, beside the steps' 3)."""
        return self.overflow_used > max(1 << 16, self.total_steps // self.fold_share)

    def fold(self, num_nodes: int) -> None:
        """Fold the overflow into the index, or, once ``stale_share`` of the visits were
        rerouted away since the index was built (their entries false hits), build it again
        (a pass over every walk). The walks a repair finds stay the same (less false hits)."""
        if self.stale > self.total_steps // self.stale_share:
            self._index(num_nodes)
        elif self.overflow_used:
            self._merge_overflow(num_nodes)

    def compact(self) -> None:
        """Pack the live blocks at the front of ``steps``, in place (in the order they lie):
        the buffer keeps its room to grow, so the next repair need not copy it. (A copy into
        new buffers in block order, in parallel, measured slower on 2 cores: their pages are
        touched anew.)"""
        r = self.R
        lens = self.walk_len.reshape(-1, r).sum(axis=1, dtype=np.int64)
        order = np.argsort(self.blk_start, kind="stable")
        starts = np.empty(self._nb, np.int64)
        live = int(pack_blocks(order, self.blk_start, lens, self._lo, self._hi, starts))
        self.blk_start = starts.astype(_start_type(live))
        self.used = self.live = live

    # -- storage ----------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str], prefix: str) -> None:
        """Write the walks as ``<prefix>_*.npy`` and ``<prefix>.json`` (compacting first)."""
        self.compact()
        d = Path(directory)
        for name in ("block_src", "block_w0", "blk_start", "walk_len", "dropped"):
            save_npy(d / f"{prefix}_{name}.npy", getattr(self, name))
        save_npy(d / f"{prefix}_steps.npy", self.steps)  # (node ids, int32)
        write_meta(
            d / f"{prefix}.json",
            {
                "schema": WALKS_SCHEMA,
                "version": WALKS_SCHEMA_VERSION,
                "walks_per_node": self.R,
                "per_row": self.per_row,
                "alpha": self.alpha,
                "seed": self.seed,
                "mode": self.mode,
                "blocks": self.num_blocks,
                "steps": self.used,
            },
        )

    @classmethod
    def load(cls, directory: str | os.PathLike[str], prefix: str, num_nodes: int) -> WalkStore:
        """Read walks written by :meth:`save` (into memory: they change)."""
        d = Path(directory)
        meta = read_meta(
            d / f"{prefix}.json", {"schema": WALKS_SCHEMA, "version": WALKS_SCHEMA_VERSION}
        )
        arrays = {
            name: np.array(load_npy(d / f"{prefix}_{name}.npy", mmap=False))
            for name in ("block_src", "block_w0", "blk_start", "walk_len", "dropped", "steps")
        }
        b, r = int(meta["blocks"]), int(meta["walks_per_node"])
        if (
            arrays["block_src"].shape != (b,)
            or arrays["walk_len"].shape != (b * r,)
            or arrays["steps"].shape != (int(meta["steps"]),)
            or int(arrays["walk_len"].sum(dtype=np.int64)) != int(meta["steps"])
        ):
            raise CorruptionError(
                f"walks at {d} ({prefix}): array shapes do not match {prefix}.json"
            )
        return cls(
            walks_per_node=r, alpha=meta["alpha"], seed=meta["seed"], mode=meta["mode"],
            used=int(meta["steps"]), num_nodes=num_nodes, per_row=int(meta["per_row"]), **arrays,
        )  # fmt: skip


def _distinct(sorted_ids: np.ndarray) -> int:
    """How many distinct values an ascending array holds."""
    return int(sorted_ids.shape[0] and np.count_nonzero(np.diff(sorted_ids)) + 1)


def _threads_for(work: int) -> Any:
    """One thread for small repairs: waking a parallel region's threads costs more (and on a
    loaded machine, milliseconds) than scanning a few thousand walks."""
    import contextlib

    if work >= 1 << 15:
        return contextlib.nullcontext()
    previous = numba.get_num_threads()

    @contextlib.contextmanager
    def one() -> Any:
        numba.set_num_threads(1)
        try:
            yield
        finally:
            numba.set_num_threads(previous)

    return one()


def _walk_new(
    graph: DynamicGraph, sources: np.ndarray, walk0: np.ndarray, r: int, alpha: float, seed: int,
    mode: int, offset: int, done: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(walk starts + ``offset``, steps, walk lengths, drop marks) of fresh walks: R per
    source, numbered from ``walk0``; with ``done``, walked in chunks of about ``_CHUNK_WALKS``
    walks (a walk depends only on its key: the same walks), ``done(walks)`` after each."""
    bounds = walks_bounds(sources, walk0, r, alpha, seed)
    at = np.zeros(bounds.shape[0], np.int64)
    np.cumsum(bounds[:-1], out=at[1:]) if bounds.size else None
    total = int(bounds.sum())
    idx_dtype = np.int32 if graph.num_nodes - 1 <= np.iinfo(np.int32).max else np.int64
    steps = np.empty(total, idx_dtype)
    top = bounds.max(initial=0)
    walk_len = np.empty(
        bounds.shape[0], np.uint8 if top <= 255 else np.uint16 if top <= _U16 else np.uint32
    )
    dropped = np.zeros(bounds.shape[0] if mode == MODE_DROP else 0, np.bool_)
    arrays = graph.kernel_arrays()
    chunk = sources.size if done is None else max(1, _CHUNK_WALKS // r)  # sources a call
    for lo in range(0, sources.size, max(chunk, 1)):
        hi = min(sources.size, lo + chunk)
        part = slice(lo * r, hi * r)  # the chunk's walks (steps: at their absolute places)
        walks_build(
            sources[lo:hi], walk0[lo:hi], r, alpha, seed, mode, *arrays, at[part], steps,
            walk_len[part], dropped[part] if dropped.size else dropped,
        )  # fmt: skip
        if done is not None:
            done((hi - lo) * r)
    if mode == MODE_DROP and (walk_len < bounds).any():  # cut walks: close the gaps
        keep = _gather(at, walk_len.astype(np.int64))
        steps = steps[keep]
        at = np.cumsum(walk_len, dtype=np.int64) - walk_len
    return at + offset, steps, walk_len, dropped
