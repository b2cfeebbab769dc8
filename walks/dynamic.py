"""``DynamicGraph``: a :class:`CSRGraph` that takes edge upserts and deletes.

The graph is an immutable base CSR plus a log-structured delta: every node whose out-edges
changed since the base has an extension segment in append-only delta arrays
(``row_start[u]``, ``row_len[u]``, room for ``row_cap[u]``), and its current row is its base
row (while ``base_live[u]``) followed by its segment. An upsert of new edges appends them to
their sources' segments, in order of arrival (a full segment moves to the end with twice the
room: amortised, a batch costs its own size, not the size of the rows it touches); a delete or a
weight change rewrites the node's whole row into a fresh segment and retires its base row.
New nodes get internal ids after the base's, in order of arrival; a deleted node loses its
in- and out-edges and its external id (its internal slot stays, isolated, under a negative
placeholder id that no query can name, so internal ids never move and walks and fingerprints
stay aligned). :meth:`merged` builds the current graph as a plain CSR (rows sorted; cached
until the next change), what every read sees; :meth:`compacted` starts a new base from it (the
owner does so at compaction, when the delta outgrows a share of the base).

Edge rules of updates (documented once, applied by :meth:`prepare`):

* an upsert of an existing edge replaces its weight; within one batch the last one wins;
* a weighted graph takes finite weights > 0 (default 1.0); an unweighted graph takes none;
* self-loops are refused when the graph was created with ``self_loops="drop"``;
* a delete names existing edges (or nodes): an unknown node or a missing edge is an error and
  the batch changes nothing;
* undirected graphs change both directions of every edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from shardwalk.walks import _check
from shardwalk.walks.graph import CSRGraph
from shardwalk.walks.kernels.bitmap import mark_bits
from shardwalk.walks.kernels.repair import base_find

from shardwalk.errors import InvalidArgumentError, NotFoundError

__all__ = ["Change", "DynamicGraph", "EdgeBatch"]

_INT32_MAX = np.iinfo(np.int32).max


@dataclass(frozen=True)
class EdgeBatch:
    """One validated update: ``op`` is "upsert", "delete" or "delete_nodes"; ``src``/``dst``
    external ids (for "delete_nodes": ``src`` holds the nodes, ``dst`` is empty); ``weights``
    float32 for weighted upserts, else None."""

    op: str
    src: np.ndarray
    dst: np.ndarray
    weights: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(self.src.shape[0])


@dataclass(frozen=True)
class Change:
    """What one applied batch changed, for the walk store: the nodes whose out-rows changed
    (internal, sorted) and, per node, ``kind`` 0 (its rows before and after, whole) or 1 (it
    only gained edges and had some: its row before is left out, its row after holds only the
    new edges); rows as CSR over ``nodes`` (targets int64 sorted, weights float64, empty
    weights when unweighted); ``old_total`` / ``new_total`` the rows' total weight (out-degree
    when unweighted) before and after; how many nodes were added."""

    nodes: np.ndarray
    old_indptr: np.ndarray
    old_targets: np.ndarray
    old_weights: np.ndarray
    new_indptr: np.ndarray
    new_targets: np.ndarray
    new_weights: np.ndarray
    num_nodes_before: int
    num_nodes_after: int
    kind: np.ndarray | None = None  # None: every row whole (kind 0)
    old_total: np.ndarray | None = None
    new_total: np.ndarray | None = None
    old_degree: np.ndarray | None = None
    new_degree: np.ndarray | None = None

    @property
    def kinds(self) -> np.ndarray:
        return np.zeros(self.nodes.shape[0], np.uint8) if self.kind is None else self.kind

    @property
    def edges_delta(self) -> int:
        """Out-edges after less out-edges before, over the changed rows."""
        if self.old_degree is None or self.new_degree is None:
            return int(self.new_targets.size) - int(self.old_targets.size)
        return int(self.new_degree.sum()) - int(self.old_degree.sum())


def _gather(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Flat positions of the slices ``[starts[i], starts[i] + lens[i])``, concatenated."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    first = np.cumsum(lens) - lens
    return np.repeat(starts - first, lens) + np.arange(total, dtype=np.int64)


def _effective(
    nodes: np.ndarray, indptr: np.ndarray, targets: np.ndarray, weights: np.ndarray, drop: bool,
    kind: np.ndarray, total: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Move distributions of changed rows as the walks see them: (indptr, targets, weights,
    totals); a dangling row moves to itself (self_loop rule) or to -1, the end (drop rule).
    Rows of ``kind`` 1 (a node that only gained edges: ``Change``) are taken as they are, with
    their totals from ``total``."""
    lens = np.diff(indptr)
    whole = kind == 0
    eff = np.where(whole, np.maximum(lens, 1), lens)
    ip = np.zeros(nodes.shape[0] + 1, np.int64)
    np.cumsum(eff, out=ip[1:])
    t = np.empty(int(ip[-1]), np.int64)
    w = np.ones(int(ip[-1]), np.float64)
    out = _gather(ip[:-1], lens)
    t[out] = targets
    if weights.size:
        w[out] = weights
    empty = whole & (lens == 0)
    t[ip[:-1][empty]] = -1 if drop else nodes[empty]
    tot = np.bincount(np.repeat(np.arange(nodes.shape[0]), eff), weights=w,
                      minlength=nodes.shape[0])  # fmt: skip
    if total is not None and not whole.all():
        tot[~whole] = total[~whole]
    return ip, t, w, tot


def _used(name: str, doc: str) -> property:
    """A read-only property of a :class:`DynamicGraph`: the used prefix ``[: self._n]`` of its
    array attribute ``name`` (the arrays keep room to grow)."""
    return property(lambda graph: getattr(graph, name)[: graph._n], doc=doc)


class DynamicGraph:
    """A base :class:`CSRGraph` plus per-node appended edges (see the module docstring).

    Not thread-safe: the owner serialises writes and swaps in :meth:`merged` results for reads.
    """

    def __init__(self, base: CSRGraph, *, self_loops: str = "keep") -> None:
        self.base = base
        self.self_loops = _check.check_choice("self_loops", self_loops, ("keep", "drop"))
        self.directed = bool(base.directed)
        self.weighted = base.weights is not None
        n = base.num_nodes
        # per node, with room to grow (the views below are the first _n entries)
        self._n = n
        self._ids = np.array(base.node_ids, dtype=np.int64)  # current ids (placeholders < 0)
        self._row_start = np.full(n, -1, np.int64)  # extension segment start (-1: none)
        self._row_len = np.zeros(n, np.int64)  # its length
        self._row_cap = np.zeros(n, np.int64)  # its room
        # the base row is current (else the segment is the row)
        self._base_live = np.ones(n, np.bool_)
        # bit v set: v's row is not its base row alone (a segment, a retired base row or a new
        # node), so the walk kernels read row_len and base_live only for these (a bitmap that
        # stays in cache; every other step is a plain CSR step)
        self._ext_bits = np.zeros((n >> 6) + 1, np.uint64)
        self.d_targets = np.zeros(0, np.int64)
        self.d_weights = np.zeros(0, np.float32)
        self.d_cum = np.zeros(0, np.float64)  # cumulative weights from each segment's start
        self.d_used = 0  # entries of the delta arrays in use (segments, their room, moved ones)
        self.d_live = 0  # entries in current segments
        self.version = 0  # batches applied since the base
        self._b_tot: np.ndarray | None = None  # weighted: total weight of each base row
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None  # ids added since the base
        self._merged: CSRGraph | None = base
        self._index: dict[int, int] | None = None  # external -> internal of new nodes

    # -- shape ------------------------------------------------------------------------------
    node_ids = _used(
        "_ids", "External id of each internal node (negative placeholders for deleted nodes)."
    )
    row_start = _used("_row_start", "Where each node's extension segment starts (-1: none).")
    row_len = _used("_row_len", "Length of each node's extension segment.")
    row_cap = _used("_row_cap", "Room of each node's extension segment.")
    base_live = _used("_base_live", "Whether each node's base row is (still) part of its row.")

    @property
    def ext_bits(self) -> np.ndarray:
        """Bitmap (bit v & 63 of word v >> 6) of the nodes whose row is not their base row
        alone: an appended segment, a retired base row, or a node added since the base."""
        return self._ext_bits

    def _mark_ext(self, nodes: np.ndarray) -> None:
        mark_bits(self._ext_bits, np.asarray(nodes, np.int64))

    @property
    def num_nodes(self) -> int:
        """Internal nodes (deleted ones included: their slots stay)."""
        return self._n

    @property
    def changed(self) -> bool:
        return self.version > 0 or self.num_nodes != self.base.num_nodes

    @property
    def delta_edges(self) -> int:
        """Out-edges held in the delta's segments."""
        return int(self.d_live)

    def _base_degrees(self, nodes: np.ndarray) -> np.ndarray:
        """Out-degree of the current base part of each of ``nodes``' rows."""
        nb = self.base.num_nodes
        ip = self.base.indptr
        c = np.minimum(nodes, nb)
        deg = ip[np.minimum(c + 1, nb)] - ip[c]
        return np.where(self.base_live[nodes], deg, 0).astype(np.int64)

    def degrees(self) -> np.ndarray:
        deg = np.zeros(self.num_nodes, np.int64)
        deg[: self.base.num_nodes] = self.base.out_degrees()
        deg[~self.base_live] = 0
        return deg + self.row_len

    @property
    def num_edges(self) -> int:
        return int(self.degrees().sum())

    def _base_totals(self) -> np.ndarray:
        """Total weight of each base row (weighted graphs; computed once per base)."""
        if self._b_tot is None:
            w = np.asarray(self.base.weights, np.float64)
            cum = np.concatenate([[0.0], np.cumsum(w)])
            self._b_tot = cum[self.base.indptr[1:]] - cum[self.base.indptr[:-1]]
        return self._b_tot

    def totals(self, nodes: np.ndarray) -> np.ndarray:
        """Total weight (out-degree when unweighted) of ``nodes``' current rows."""
        nodes = np.asarray(nodes, np.int64)
        if not self.weighted:
            return (self._base_degrees(nodes) + self.row_len[nodes]).astype(np.float64)
        out = np.zeros(nodes.shape[0], np.float64)
        live = self.base_live[nodes]
        out[live] = self._base_totals()[nodes[live]]
        seg_len = self.row_len[nodes]
        ext = seg_len > 0
        out[ext] += self.d_cum[self.row_start[nodes[ext]] + seg_len[ext] - 1]
        return out

    # -- ids --------------------------------------------------------------------------------
    # -- ids --------------------------------------------------------------------------------
    def _new_lookup(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted external ids of the nodes added since the base, their internal ids)."""
        if self._lookup is None:
            nb = self.base.num_nodes
            added = self.node_ids[nb:]
            order = np.argsort(added, kind="stable")
            self._lookup = (added[order], order.astype(np.int64) + nb)
        return self._lookup

    def _internal(self, ext: np.ndarray) -> np.ndarray:
        """External ids (int64) -> internal ids, -1 for ids that are not (live) nodes: a base
        node whose id was deleted no longer answers to it (a node added later may)."""
        out = self.base.lookup(ext)
        hit = out >= 0
        out[hit] = np.where(self.node_ids[out[hit]] >= 0, out[hit], -1)
        if self.num_nodes > self.base.num_nodes:
            rest = np.flatnonzero(out < 0)
            added, internal = self._new_lookup()
            pos = np.minimum(np.searchsorted(added, ext[rest]), added.size - 1)
            found = added[pos] == ext[rest]
            out[rest[found]] = internal[pos[found]]
        return out

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Per external id, whether it is a (not deleted) node."""
        return self._internal(np.asarray(ids, dtype=np.int64)) >= 0

    def to_internal(self, ids: np.ndarray, *, what: str = "node") -> np.ndarray:
        """External -> internal ids; NotFoundError names unknown (or deleted) ones."""
        ext = _check.as_ids(ids, what=f"{what} ids")
        out = self._internal(ext)
        if (out < 0).any():
            bad = np.unique(ext[out < 0])
            shown = ", ".join(str(int(b)) for b in bad[:5])
            more = f" and {bad.size - 5} more" if bad.size > 5 else ""
            live = int((self.node_ids >= 0).sum())
            raise NotFoundError(
                f"unknown {what} id(s) {shown}{more}: not in this graph of {live} nodes "
                "(ids are the external ids given when the graph was built or updated)"
            )
        return out

    # -- rows -------------------------------------------------------------------------------
    def rows(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr over ``nodes``, targets int64 sorted per row, weights float32 or empty) of
        their current out-rows."""
        nodes = np.asarray(nodes, np.int64)
        blen = self._base_degrees(nodes)
        bstart = self.base.indptr[np.minimum(nodes, self.base.num_nodes)]
        xlen = self.row_len[nodes]
        indptr = np.zeros(nodes.shape[0] + 1, np.int64)
        np.cumsum(blen + xlen, out=indptr[1:])
        m = int(indptr[-1])
        targets = np.empty(m, np.int64)
        weights = np.empty(m if self.weighted else 0, np.float32)
        pos_b, out_b = _gather(bstart, blen), _gather(indptr[:-1], blen)
        targets[out_b] = self.base.indices[pos_b]
        has = np.flatnonzero(xlen)
        pos_x = _gather(self.row_start[nodes[has]], xlen[has])
        out_x = _gather(indptr[:-1][has] + blen[has], xlen[has])
        targets[out_x] = self.d_targets[pos_x]
        if self.weighted:
            weights[out_b] = self.base.weights[pos_b]  # type: ignore[index]
            weights[out_x] = self.d_weights[pos_x]
        if has.size:  # rows with appended edges: sorted by target
            _sort_rows(indptr, has, targets, weights if self.weighted else None)
        return indptr, targets, weights

    def in_neighbours(self, nodes: np.ndarray) -> np.ndarray:
        """Internal ids of every node with an out-edge into ``nodes`` (sorted, unique)."""
        nodes = np.asarray(nodes, np.int64)
        if not self.directed:
            _, targets, _ = self.rows(nodes)
            return np.unique(targets)
        mark = np.zeros(self.num_nodes, bool)
        mark[nodes] = True
        base = self.base
        hit = np.flatnonzero(mark[np.asarray(base.indices)])
        src = np.searchsorted(base.indptr, hit, side="right") - 1
        src = src[self.base_live[src]]  # retired base rows answer from their segments
        has = np.flatnonzero(self.row_len)
        pos = _gather(self.row_start[has], self.row_len[has])
        owners = np.repeat(has, self.row_len[has])
        src_d = owners[mark[self.d_targets[pos]]]
        return np.unique(np.concatenate([src, src_d]))

    # -- updates ----------------------------------------------------------------------------
    def prepare(self, op: str, edges_or_nodes: Any, weights: Any = None) -> EdgeBatch:
        """Validate an update without applying it (see the module docstring for the rules).

        Raises
        ------
        InvalidArgumentError
            Wrong shape, non-integer or negative ids, bad weights, a refused self-loop.
        NotFoundError
            A delete names an unknown node or a missing edge.
        """
        if op == "delete_nodes":
            ids = _check.as_ids(edges_or_nodes, what="node ids")
            self.to_internal(ids, what="node")
            return EdgeBatch("delete_nodes", np.unique(ids), np.zeros(0, np.int64))
        src, dst = edge_arrays(edges_or_nodes)
        src = _check.as_ids(src, what="edge sources")
        dst = _check.as_ids(dst, what="edge targets")
        if src.shape != dst.shape:
            raise InvalidArgumentError(
                f"src and dst must have the same length; got {src.shape[0]} and {dst.shape[0]}"
            )
        if op == "upsert":
            w = None
            if weights is not None:
                if not self.weighted:
                    raise InvalidArgumentError(
                        "this graph is unweighted: upsert_edges takes no weights (create a "
                        "weighted graph to keep weights)"
                    )
                w = _check.check_weights(weights, src.shape[0]).astype(np.float32)
                if not np.all(np.isfinite(w) & (w > 0)):
                    raise InvalidArgumentError(
                        "edge weights must fit float32 as finite values > 0; some overflow or "
                        "underflow (rescale the weights)"
                    )
            elif self.weighted:
                w = np.ones(src.shape[0], np.float32)
            if self.self_loops == "drop" and np.any(src == dst):
                i = int(np.flatnonzero(src == dst)[0])
                raise InvalidArgumentError(
                    f"edge {i} ({int(src[i])} -> {int(dst[i])}) is a self-loop, and this graph "
                    "was created with self_loops='drop'; nothing was changed"
                )
            return EdgeBatch("upsert", src, dst, w)
        if op != "delete":
            raise InvalidArgumentError(f"unknown update {op!r}")
        if weights is not None:
            raise InvalidArgumentError("delete_edges takes no weights")
        si = self.to_internal(src, what="edge source")
        di = self.to_internal(dst, what="edge target")
        indptr, targets, _ = self.rows(si)
        owner = np.repeat(np.arange(si.shape[0]), np.diff(indptr))
        have = np.zeros(si.shape[0], bool)
        have[owner[targets == di[owner]]] = True
        if not have.all():
            i = int(np.flatnonzero(~have)[0])
            raise NotFoundError(
                f"no edge {int(src[i])} -> {int(dst[i])} to delete ({int((~have).sum())} of "
                f"{si.shape[0]} edges are missing); nothing was deleted"
            )
        return EdgeBatch("delete", src, dst)

    def apply(self, batch: EdgeBatch) -> Change:
        """Apply a batch made by :meth:`prepare` (on this graph, in its current state)."""
        before = self.num_nodes
        if batch.op == "delete_nodes":
            x = self.to_internal(batch.src)
            touched = np.union1d(x, self.in_neighbours(x))
            indptr, targets, weights = self.rows(touched)
            owner = np.repeat(np.arange(touched.shape[0]), np.diff(indptr))
            gone = np.zeros(self.num_nodes, bool)
            gone[x] = True
            keep = ~gone[targets] & ~gone[touched[owner]]
            change = self._rewrite(touched, (indptr, targets, weights), touched[owner[keep]],
                                   targets[keep], weights[keep] if self.weighted else weights)  # fmt: skip
            self.node_ids[x] = -(x + 2)  # no query can name a negative id
            self._lookup = None
            return change
        si = self._intern(batch.src, add=batch.op == "upsert")
        di = self._intern(batch.dst, add=batch.op == "upsert")
        w = batch.weights
        if not self.directed:  # each edge then its reverse, so the last word on {u, v} wins
            keep = np.stack([np.ones(si.shape[0], bool), si != di], axis=1).ravel()
            si, di = np.stack([si, di], 1).ravel()[keep], np.stack([di, si], 1).ravel()[keep]
            if w is not None:
                w = np.repeat(w, 2)[keep]
        # one entry per (u, v), the last word winning, sorted by (u, v)
        span = np.int64(self.num_nodes)
        key = si * span + di
        order = np.argsort(key, kind="stable")
        key = key[order]
        last = np.ones(key.shape[0], bool)
        last[:-1] = key[1:] != key[:-1]
        order = order[last]
        si, di = si[order], di[order]
        w = None if w is None else w[order]
        found = self._find(si, di)
        touched = np.unique(si)
        if batch.op == "delete":  # (prepare checked that every edge is there)
            rewrite = touched
        elif self.weighted:  # a weight replaced: the row is rewritten
            rewrite = np.unique(si[found])
        else:
            rewrite = np.zeros(0, np.int64)
            si, di = si[~found], di[~found]  # an existing edge upserted again changes nothing
            touched = np.unique(si)
        if rewrite.size:
            old = self.rows(rewrite)
            owner = np.repeat(np.arange(rewrite.shape[0]), np.diff(old[0]))
            cur = rewrite[owner]
            cur_key, sel = cur * span + old[1], np.isin(si, rewrite)
            at = np.searchsorted(cur_key, si[sel] * span + di[sel])
            hit = at < cur_key.shape[0]
            hit[hit] = cur_key[at[hit]] == (si[sel] * span + di[sel])[hit]
            keep = np.ones(cur_key.shape[0], bool)
            new_w = old[2].copy()
            if batch.op == "delete":
                keep[at[hit]] = False
                add_t = np.zeros(0, np.int64)
                add_o = add_t
                add_w = np.zeros(0, np.float32)
            else:
                new_w[at[hit]] = w[sel][hit]  # type: ignore[index]
                add_o, add_t = si[sel][~hit], di[sel][~hit]
                add_w = w[sel][~hit]  # type: ignore[index]
            own = np.concatenate([cur[keep], add_o])
            tgt = np.concatenate([old[1][keep], add_t])
            wts = np.concatenate([new_w[keep], add_w]) if self.weighted else new_w
            srt = np.lexsort((tgt, own))
            own, tgt = own[srt], tgt[srt]
            wts = wts[srt] if self.weighted else wts
        rest = ~np.isin(si, rewrite) if rewrite.size else np.ones(si.shape[0], bool)
        app = touched if not rewrite.size else np.setdiff1d(touched, rewrite)
        old_deg, old_tot = self._base_degrees(app) + self.row_len[app], self.totals(app)
        if rewrite.size:
            change_rw = self._rewrite(rewrite, old, own, tgt, wts)
        a_src, a_dst = si[rest], di[rest]
        a_w = w[rest] if w is not None else np.zeros(0, np.float32)
        self._append(a_src, a_dst, a_w)
        change_app = self._appended(app, old_deg, old_tot, a_src, a_dst, a_w)
        change = change_app if not rewrite.size else change_rw
        if rewrite.size and app.size:
            change = _join(change_rw, change_app)
        self.version += 1
        self._merged = None
        return change if before == self.num_nodes else _grown(change, before)

    def _find(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Whether each edge (internal ids; unique, sorted by (src, dst)) is in the graph."""
        pos = np.empty(src.shape[0], np.int64)
        base_find(self.base.indptr, self.base.indices, self.base_live, src, dst, pos)
        found = pos >= 0
        with_ext = np.unique(src[self.row_len[src] > 0])
        if with_ext.size:  # the segments of the rows touched (their own size)
            lens = self.row_len[with_ext]
            at = _gather(self.row_start[with_ext], lens)
            span = np.int64(self.num_nodes)
            seg_key = np.repeat(with_ext, lens) * span + self.d_targets[at]
            key = src * span + dst
            found |= np.isin(key, seg_key)
        return found

    def _intern(self, ids: np.ndarray, *, add: bool) -> np.ndarray:
        """Internal ids, giving new ids new slots (in order of first appearance) if ``add``."""
        if not add:
            return self.to_internal(ids)
        ids = np.asarray(ids, dtype=np.int64)
        out = self._internal(ids)
        known = out >= 0
        if not known.all():
            new, first = np.unique(ids[~known], return_index=True)
            new = new[np.argsort(first)]
            n0, n1 = self._n, self._n + new.size
            if n1 > self._ids.shape[0]:  # grow by half at least: adding nodes stays O(1) each
                cap = max(n1, self._ids.shape[0] * 3 // 2, 1024)
                per_node = (self._ids, self._row_start, self._row_len, self._row_cap,
                            self._base_live)  # fmt: skip
                self._ids, self._row_start, self._row_len, self._row_cap, self._base_live = (
                    np.resize(a, cap) for a in per_node
                )
            self._ids[n0:n1] = new
            # a new node's row is its segment, empty until appended to
            self._row_start[n0:n1] = -1
            self._row_len[n0:n1] = 0
            self._row_cap[n0:n1] = 0
            self._base_live[n0:n1] = False
            if (n1 >> 6) + 1 > self._ext_bits.shape[0]:
                bits = np.zeros((self._ids.shape[0] >> 6) + 1, np.uint64)
                bits[: self._ext_bits.shape[0]] = self._ext_bits
                self._ext_bits = bits
            self._mark_ext(np.arange(n0, n1, dtype=np.int64))
            self._n = n1
            self._lookup = None
            out[~known] = self._internal(ids[~known])
        return out

    def _reserve(self, need: int) -> None:
        if need > self.d_targets.shape[0]:
            cap = max(need, 2 * self.d_targets.shape[0], 1024)
            self.d_targets = np.resize(self.d_targets, cap)
            if self.weighted:
                self.d_weights = np.resize(self.d_weights, cap)
                self.d_cum = np.resize(self.d_cum, cap)

    def _append(self, src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> None:
        """Append new edges (sorted by source) to their sources' segments; a segment without
        the room moves to the end with twice what it needs."""
        if src.size == 0:
            return
        u, first, cnt = np.unique(src, return_index=True, return_counts=True)
        seg_start, seg_len, seg_cap = self._row_start[u], self._row_len[u], self._row_cap[u]
        need = seg_len + cnt
        move = np.flatnonzero(need > seg_cap)
        if move.size:
            cap = np.maximum(2 * need[move], 4)
            starts = self.d_used + np.cumsum(cap) - cap
            self._reserve(self.d_used + int(cap.sum()))
            src_at = _gather(seg_start[move], seg_len[move])
            dst_at = _gather(starts, seg_len[move])
            self.d_targets[dst_at] = self.d_targets[src_at]
            if self.weighted:
                self.d_weights[dst_at] = self.d_weights[src_at]
                self.d_cum[dst_at] = self.d_cum[src_at]
            self.d_used += int(cap.sum())
            seg_start[move], seg_cap[move] = starts, cap
        at = np.repeat(seg_start + seg_len, cnt) + np.arange(src.shape[0]) - np.repeat(first, cnt)
        self.d_targets[at] = dst
        if self.weighted:
            self.d_weights[at] = w
            cw = np.cumsum(w, dtype=np.float64)
            before = np.concatenate([[0.0], cw])[first]
            prior = np.zeros(u.shape[0])
            ext = seg_len > 0
            prior[ext] = self.d_cum[seg_start[ext] + seg_len[ext] - 1]
            self.d_cum[at] = cw - np.repeat(before - prior, cnt)
        self._row_start[u], self._row_len[u], self._row_cap[u] = seg_start, need, seg_cap
        self._mark_ext(u)
        self.d_live += int(src.shape[0])

    def _appended(self, nodes: np.ndarray, old_deg: np.ndarray, old_tot: np.ndarray,
                  src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> Change:  # fmt: skip
        """The Change of rows that only gained edges (``src``, ``dst`` sorted by (src, dst)):
        kind 1 where the row had edges, else kind 0 (a dangling node's move changes whole)."""
        k = nodes.shape[0]
        counts = np.bincount(np.searchsorted(nodes, src), minlength=k)
        new_ip = np.zeros(k + 1, np.int64)
        np.cumsum(counts, out=new_ip[1:])
        kind = (old_deg > 0).astype(np.uint8)
        nw = w.astype(np.float64) if self.weighted else np.zeros(0)
        return Change(
            nodes=nodes, old_indptr=np.zeros(k + 1, np.int64), old_targets=np.zeros(0, np.int64),
            old_weights=np.zeros(0), new_indptr=new_ip, new_targets=np.asarray(dst, np.int64),
            new_weights=nw, num_nodes_before=self.num_nodes, num_nodes_after=self.num_nodes,
            kind=kind, old_total=old_tot, new_total=self.totals(nodes), old_degree=old_deg,
            new_degree=old_deg + counts,
        )  # fmt: skip

    def _rewrite(
        self,
        touched: np.ndarray,
        old: tuple[np.ndarray, np.ndarray, np.ndarray],
        owner: np.ndarray,
        targets: np.ndarray,
        weights: np.ndarray,
    ) -> Change:
        """Write the whole new rows of ``touched`` (entries sorted by owner then target, owner
        internal ids) into fresh segments; their base rows retire."""
        old_indptr, old_targets, old_weights = old
        lens = np.bincount(np.searchsorted(touched, owner), minlength=touched.shape[0])
        new_indptr = np.zeros(touched.shape[0] + 1, np.int64)
        np.cumsum(lens, out=new_indptr[1:])
        m = int(new_indptr[-1])
        need = self.d_used + m
        self._reserve(need)
        self.d_targets[self.d_used : need] = targets
        if self.weighted:
            self.d_weights[self.d_used : need] = weights
            cw = np.cumsum(weights, dtype=np.float64)
            before = np.concatenate([[0.0], cw])[new_indptr[:-1]]
            self.d_cum[self.d_used : need] = cw - np.repeat(before, lens)
        self.d_live += m - int(self.row_len[touched].sum())
        self.row_start[touched] = self.d_used + new_indptr[:-1]
        self.row_len[touched] = lens
        self.row_cap[touched] = lens
        self.base_live[touched] = False
        self._mark_ext(touched)
        self.d_used = need
        self.version += 1
        self._merged = None
        ow = old_weights.astype(np.float64) if self.weighted else np.zeros(0)
        nw = weights.astype(np.float64) if self.weighted else np.zeros(0)
        old_deg, new_deg = np.diff(old_indptr), lens.astype(np.int64)
        k = touched.shape[0]

        def totals(deg: np.ndarray, w: np.ndarray) -> np.ndarray:
            if not self.weighted:
                return deg.astype(np.float64)
            return np.bincount(np.repeat(np.arange(k), deg), weights=w, minlength=k)

        return Change(
            nodes=touched, old_indptr=old_indptr, old_targets=old_targets, old_weights=ow,
            new_indptr=new_indptr, new_targets=np.asarray(targets, np.int64), new_weights=nw,
            num_nodes_before=self.num_nodes, num_nodes_after=self.num_nodes,
            kind=np.zeros(k, np.uint8), old_total=totals(old_deg, ow),
            new_total=totals(new_deg, nw), old_degree=old_deg, new_degree=new_deg,
        )  # fmt: skip

    # -- reads ------------------------------------------------------------------------------
    def kernel_arrays(self) -> tuple[Any, ...]:
        """The dynamic graph as the walk kernels take it (``kernels.repair.dyn_next``)."""
        base = self.base
        a_prob, a_idx = base.alias()
        b_tot = self._base_totals() if self.weighted else np.zeros(0)
        return (
            np.ascontiguousarray(base.indptr),
            np.ascontiguousarray(base.indices),
            a_prob,
            a_idx,
            self.weighted,
            b_tot,
            self.base_live,
            self.row_start,
            self.row_len,
            self.d_targets,
            self.d_cum,
            self._ext_bits,
        )

    def merged(self) -> CSRGraph:
        """The current graph as one CSR, rows sorted (cached until the next change)."""
        if self._merged is not None:
            return self._merged
        base, n, nb = self.base, self.num_nodes, self.base.num_nodes
        bdeg = np.zeros(n, np.int64)
        bdeg[:nb] = base.out_degrees()
        live = self.base_live
        blen = np.where(live, bdeg, 0)
        xlen = self.row_len
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(blen + xlen, out=indptr[1:])
        idx_dtype = np.int32 if n - 1 <= _INT32_MAX else np.int64
        m = int(indptr[-1])
        indices = np.empty(m, idx_dtype)
        weights = np.empty(m, np.float32) if self.weighted else None
        # each row: its base part, then its segment
        from_base = np.repeat(
            np.tile(np.array([True, False]), n), np.stack([blen, xlen], 1).ravel()
        )
        base_edge_kept = np.repeat(live[:nb], bdeg[:nb])
        indices[from_base] = base.indices[base_edge_kept]
        has = np.flatnonzero(xlen)
        pos = _gather(self.row_start[has], xlen[has])
        indices[~from_base] = self.d_targets[pos]
        if weights is not None:
            weights[from_base] = base.weights[base_edge_kept]  # type: ignore[index]
            weights[~from_base] = self.d_weights[pos]
        if has.size:
            _sort_rows(indptr, has, indices, weights)
        self._merged = CSRGraph(
            indptr=indptr,
            indices=indices,
            weights=weights,
            node_ids=self.node_ids.copy(),
            directed=self.directed,
        )
        return self._merged

    def compacted(self) -> DynamicGraph:
        """A new dynamic graph whose base is the current graph (an empty delta)."""
        return DynamicGraph(self.merged(), self_loops=self.self_loops)


def _sort_rows(indptr: np.ndarray, rows: np.ndarray, targets: np.ndarray,
               weights: np.ndarray | None) -> None:  # fmt: skip
    """Sort the entries of ``rows`` (row i: ``indptr[i]:indptr[i + 1]``) by target, in place."""
    lens = indptr[rows + 1] - indptr[rows]
    at = _gather(indptr[rows], lens)
    owner = np.repeat(np.arange(rows.shape[0]), lens)
    order = at[np.lexsort((targets[at], owner))]
    targets[at] = targets[order]
    if weights is not None and weights.size:
        weights[at] = weights[order]


def _join(a: Change, b: Change) -> Change:
    """One Change of two over disjoint nodes (rows ordered by node)."""
    nodes = np.concatenate([a.nodes, b.nodes])
    order = np.argsort(nodes, kind="stable")

    def rows(ip_a, t_a, w_a, ip_b, t_b, w_b):
        lens = np.concatenate([np.diff(ip_a), np.diff(ip_b)])[order]
        starts = np.concatenate([ip_a[:-1], ip_b[:-1] + t_a.shape[0]])[order]
        at = _gather(starts, lens)
        ip = np.zeros(nodes.shape[0] + 1, np.int64)
        np.cumsum(lens, out=ip[1:])
        t = np.concatenate([t_a, t_b])[at]
        w = np.concatenate([w_a, w_b])[at] if w_a.size + w_b.size else np.zeros(0)
        return ip, t, w

    o_ip, o_t, o_w = rows(a.old_indptr, a.old_targets, a.old_weights, b.old_indptr,
                          b.old_targets, b.old_weights)  # fmt: skip
    n_ip, n_t, n_w = rows(a.new_indptr, a.new_targets, a.new_weights, b.new_indptr,
                          b.new_targets, b.new_weights)  # fmt: skip

    def per_node(x, y, fill):
        x = np.full(a.nodes.shape[0], fill) if x is None else x
        y = np.full(b.nodes.shape[0], fill) if y is None else y
        return np.concatenate([x, y])[order]

    return Change(
        nodes=nodes[order], old_indptr=o_ip, old_targets=o_t, old_weights=o_w, new_indptr=n_ip,
        new_targets=n_t, new_weights=n_w, num_nodes_before=a.num_nodes_before,
        num_nodes_after=a.num_nodes_after, kind=per_node(a.kind, b.kind, 0).astype(np.uint8),
        old_total=per_node(a.old_total, b.old_total, 0.0),
        new_total=per_node(a.new_total, b.new_total, 0.0),
        old_degree=per_node(a.old_degree, b.old_degree, 0),
        new_degree=per_node(a.new_degree, b.new_degree, 0),
    )  # fmt: skip


def _grown(change: Change, before: int) -> Change:
    from dataclasses import replace

    return replace(change, num_nodes_before=before)


def edge_arrays(edges: Any) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst) from an (E, 2) array or a (src, dst) pair of sequences."""
    if isinstance(edges, tuple) and len(edges) == 2:
        return np.asarray(edges[0]), np.asarray(edges[1])
    arr = np.asarray(edges)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InvalidArgumentError(
            f"edges must be an (E, 2) array of (src, dst) ids or a (src, dst) pair of arrays; "
            f"got shape {arr.shape}"
        )
    return arr[:, 0], arr[:, 1]
