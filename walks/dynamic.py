"""``DynamicGraph``: a :class:`CSRGraph` that takes edge upserts and deletes.

The graph is an immutable base CSR plus a delta: every node whose out-edges changed since the
base has its whole current row (sorted targets, weights) in append-only delta arrays, and
``row_start[u]`` says where (``-1``: the base row is current). New nodes get internal ids after
the base's, in order of arrival; a deleted node loses its in- and out-edges and its external id
(its internal slot stays, isolated, under a negative placeholder id that no query can name, so
internal ids never move and walks and fingerprints stay aligned). :meth:`merged` builds the
current graph as a plain CSR (cached until the next change); :meth:`compacted` starts a new
base from it.

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
    (internal, sorted), their rows before and after (CSR over ``nodes``: targets int64 sorted,
    weights float64, empty weights when unweighted), and how many nodes were added."""

    nodes: np.ndarray
    old_indptr: np.ndarray
    old_targets: np.ndarray
    old_weights: np.ndarray
    new_indptr: np.ndarray
    new_targets: np.ndarray
    new_weights: np.ndarray
    num_nodes_before: int
    num_nodes_after: int


def _gather(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Flat positions of the slices ``[starts[i], starts[i] + lens[i])``, concatenated."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    first = np.cumsum(lens) - lens
    return np.repeat(starts - first, lens) + np.arange(total, dtype=np.int64)


class DynamicGraph:
    """A base :class:`CSRGraph` plus per-node replaced rows (see the module docstring).

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
        self._rs = np.full(n, -1, np.int64)
        self._rl = np.zeros(n, np.int64)
        self.d_targets = np.zeros(0, np.int64)
        self.d_weights = np.zeros(0, np.float32)
        self.d_cum = np.zeros(0, np.float64)  # cumulative weights within each delta row
        self.d_used = 0  # entries of the delta arrays in use (live rows and replaced ones)
        self.d_live = 0  # entries in live rows
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None  # ids added since the base
        self._merged: CSRGraph | None = base
        self._index: dict[int, int] | None = None  # external -> internal of new nodes

    # -- shape ------------------------------------------------------------------------------
    @property
    def node_ids(self) -> np.ndarray:
        """External id of each internal node (negative placeholders for deleted nodes)."""
        return self._ids[: self._n]

    @property
    def row_start(self) -> np.ndarray:
        """Where each node's delta row starts (-1: its base row is current)."""
        return self._rs[: self._n]

    @property
    def row_len(self) -> np.ndarray:
        return self._rl[: self._n]

    @property
    def num_nodes(self) -> int:
        """Internal nodes (deleted ones included: their slots stay)."""
        return self._n

    @property
    def changed(self) -> bool:
        return self.d_used > 0 or self.num_nodes != self.base.num_nodes

    @property
    def delta_edges(self) -> int:
        """Out-edges held in the delta's live rows."""
        return int(self.d_live)

    def degrees(self) -> np.ndarray:
        deg = np.zeros(self.num_nodes, np.int64)
        deg[: self.base.num_nodes] = self.base.out_degrees()
        over = self.row_start >= 0
        deg[over] = self.row_len[over]
        return deg

    @property
    def num_edges(self) -> int:
        return int(self.degrees().sum())

    # -- ids --------------------------------------------------------------------------------
    def _new_lookup(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted external ids of the nodes added since the base, their internal ids)."""
        if self._lookup is None:
            nb = self.base.num_nodes
            added = self.node_ids[nb:]
            order = np.argsort(added, kind="stable")
            self._lookup = (added[order], order.astype(np.int64) + nb)
        return self._lookup

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Per external id, whether it is a (not deleted) node."""
        ext = np.asarray(ids, dtype=np.int64)
        nb = self.base.num_nodes
        found = self.base.contains(ext)
        if found.any():  # a base node whose id was deleted no longer answers to it
            internal = self.base.to_internal(ext[found])
            found[np.flatnonzero(found)[self.node_ids[internal] < 0]] = False
        if self.num_nodes > nb:
            added, _ = self._new_lookup()
            pos = np.minimum(np.searchsorted(added, ext), added.size - 1)
            found |= added[pos] == ext
        return found

    def to_internal(self, ids: np.ndarray, *, what: str = "node") -> np.ndarray:
        """External -> internal ids; NotFoundError names unknown (or deleted) ones."""
        ext = _check.as_ids(ids, what=f"{what} ids")
        known = self.contains(ext)
        if not known.all():
            bad = np.unique(ext[~known])
            shown = ", ".join(str(int(b)) for b in bad[:5])
            more = f" and {bad.size - 5} more" if bad.size > 5 else ""
            live = int((self.node_ids >= 0).sum())
            raise NotFoundError(
                f"unknown {what} id(s) {shown}{more}: not in this graph of {live} nodes "
                "(ids are the external ids given when the graph was built or updated)"
            )
        out = np.empty(ext.shape[0], np.int64)
        in_base = self.base.contains(ext)
        if in_base.any():
            out[in_base] = self.base.to_internal(ext[in_base])
            in_base[in_base] = self.node_ids[out[in_base]] >= 0  # else deleted, then re-added
        if not in_base.all():
            added, internal = self._new_lookup()
            out[~in_base] = internal[np.searchsorted(added, ext[~in_base])]
        return out

    # -- rows -------------------------------------------------------------------------------
    def rows(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr over ``nodes``, targets int64, weights float32 or empty) of their current
        out-rows."""
        nodes = np.asarray(nodes, np.int64)
        nb = self.base.num_nodes
        over = np.zeros(nodes.shape[0], bool)
        inside = nodes < self.row_start.shape[0]
        over[inside] = self.row_start[nodes[inside]] >= 0
        lens = np.zeros(nodes.shape[0], np.int64)
        base_nodes = nodes[~over]
        in_base = base_nodes < nb
        lens_base = np.zeros(base_nodes.shape[0], np.int64)
        ip = self.base.indptr
        lens_base[in_base] = ip[base_nodes[in_base] + 1] - ip[base_nodes[in_base]]
        lens[~over] = lens_base
        lens[over] = self.row_len[nodes[over]]
        indptr = np.zeros(nodes.shape[0] + 1, np.int64)
        np.cumsum(lens, out=indptr[1:])
        targets = np.empty(int(indptr[-1]), np.int64)
        weights = np.empty(int(indptr[-1]) if self.weighted else 0, np.float32)
        # base rows
        starts_b = np.zeros(base_nodes.shape[0], np.int64)
        starts_b[in_base] = ip[base_nodes[in_base]]
        pos_b = _gather(starts_b, lens_base)
        out_b = _gather(indptr[:-1][~over], lens_base)
        targets[out_b] = self.base.indices[pos_b]
        if self.weighted:
            weights[out_b] = self.base.weights[pos_b]  # type: ignore[index]
        # delta rows
        pos_d = _gather(self.row_start[nodes[over]], lens[over])
        out_d = _gather(indptr[:-1][over], lens[over])
        targets[out_d] = self.d_targets[pos_d]
        if self.weighted:
            weights[out_d] = self.d_weights[pos_d]
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
        over = self.row_start >= 0
        src = src[~over[src]]  # replaced rows answer from the delta
        live = np.flatnonzero(over)
        pos = _gather(self.row_start[live], self.row_len[live])
        owners = np.repeat(live, self.row_len[live])
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
            owner = np.repeat(touched, np.diff(indptr))
            gone = np.zeros(self.num_nodes, bool)
            gone[x] = True
            keep = ~gone[targets] & ~gone[owner]
            change = self._install(touched, indptr, targets, weights, owner[keep],
                                   targets[keep], weights[keep] if self.weighted else weights)  # fmt: skip
            self.node_ids[x] = -(x + 2)  # no query can name a negative id
            self._lookup = None
            return change
        si = self._intern(batch.src, add=batch.op == "upsert")
        di = self._intern(batch.dst, add=batch.op == "upsert")
        w = batch.weights
        if not self.directed:
            off = si != di
            si, di = np.concatenate([si, di[off]]), np.concatenate([di, si[off]])
            if w is not None:
                w = np.concatenate([w, w[off]])
        touched = np.unique(si)
        indptr, targets, weights = self.rows(touched)
        owner = np.repeat(touched, np.diff(indptr))
        # the current rows are sorted by (owner, target): merge the batch into them by key,
        # the last word on (u, v) winning (O(rows + batch log batch), no sort of the rows)
        span = np.int64(self.num_nodes)
        cur_key = np.searchsorted(touched, owner) * span + targets
        key = np.searchsorted(touched, si) * span + di
        order = np.argsort(key, kind="stable")
        key = key[order]
        last = np.ones(key.shape[0], bool)
        last[:-1] = key[1:] != key[:-1]
        order, key = order[last], key[last]
        at = np.searchsorted(cur_key, key)
        found = np.zeros(key.shape[0], bool)
        inside = at < cur_key.shape[0]
        found[inside] = cur_key[at[inside]] == key[inside]
        keep = np.ones(cur_key.shape[0], bool)
        new_w = weights.copy() if self.weighted else weights
        if batch.op == "upsert":
            if self.weighted:
                new_w[at[found]] = w[order[found]]  # type: ignore[index]
            add = ~found
        else:
            keep[at[found]] = False
            add = np.zeros(key.shape[0], bool)
        pos = np.searchsorted(cur_key[keep], key[add])
        new_owner = np.insert(owner[keep], pos, si[order[add]])
        new_target = np.insert(targets[keep], pos, di[order[add]])
        if self.weighted:
            added = np.zeros(0, np.float32) if w is None else w[order[add]]
            new_w = np.insert(new_w[keep], pos, added)
        change = self._install(touched, indptr, targets, weights, new_owner, new_target, new_w)
        return change if before == self.num_nodes else _grown(change, before)

    def _intern(self, ids: np.ndarray, *, add: bool) -> np.ndarray:
        """Internal ids, giving new ids new slots (in order of first appearance) if ``add``."""
        if not add:
            return self.to_internal(ids)
        known = self.contains(ids)
        if not known.all():
            new, first = np.unique(ids[~known], return_index=True)
            new = new[np.argsort(first)]
            n0, n1 = self._n, self._n + new.size
            if n1 > self._ids.shape[0]:  # grow by half at least: adding nodes stays O(1) each
                cap = max(n1, self._ids.shape[0] * 3 // 2, 1024)
                self._ids, self._rs, self._rl = (
                    np.resize(a, cap) for a in (self._ids, self._rs, self._rl)
                )
            self._ids[n0:n1] = new
            self._rs[n0:n1] = 0  # a new node's row is in the delta, empty until installed
            self._rl[n0:n1] = 0
            self._n = n1
            self._lookup = None
        return self.to_internal(ids)

    def _install(
        self,
        touched: np.ndarray,
        old_indptr: np.ndarray,
        old_targets: np.ndarray,
        old_weights: np.ndarray,
        owner: np.ndarray,
        targets: np.ndarray,
        weights: np.ndarray,
    ) -> Change:
        """Write the new rows of ``touched`` (entries sorted by owner then target)."""
        lens = np.bincount(np.searchsorted(touched, owner), minlength=touched.shape[0])
        new_indptr = np.zeros(touched.shape[0] + 1, np.int64)
        np.cumsum(lens, out=new_indptr[1:])
        m = int(new_indptr[-1])
        need = self.d_used + m
        if need > self.d_targets.shape[0]:
            cap = max(need, 2 * self.d_targets.shape[0], 1024)
            self.d_targets = np.resize(self.d_targets, cap)
            if self.weighted:
                self.d_weights = np.resize(self.d_weights, cap)
                self.d_cum = np.resize(self.d_cum, cap)
        self.d_targets[self.d_used : need] = targets
        if self.weighted:
            self.d_weights[self.d_used : need] = weights
            cw = np.cumsum(weights, dtype=np.float64)
            before = np.concatenate([[0.0], cw])[new_indptr[:-1]]
            self.d_cum[self.d_used : need] = cw - np.repeat(before, lens)
        was = self.row_start[touched] >= 0
        self.d_live += m - int(self.row_len[touched][was].sum())
        self.row_start[touched] = self.d_used + new_indptr[:-1]
        self.row_len[touched] = lens
        self.d_used = need
        self._merged = None
        ow = old_weights.astype(np.float64) if self.weighted else np.zeros(0)
        nw = weights.astype(np.float64) if self.weighted else np.zeros(0)
        return Change(
            nodes=touched,
            old_indptr=old_indptr,
            old_targets=old_targets,
            old_weights=ow,
            new_indptr=new_indptr,
            new_targets=np.asarray(targets, np.int64),
            new_weights=nw,
            num_nodes_before=self.num_nodes,
            num_nodes_after=self.num_nodes,
        )

    # -- reads ------------------------------------------------------------------------------
    def kernel_arrays(self) -> tuple[Any, ...]:
        """The dynamic graph as the walk kernels take it (``_kernels.dyn_next``)."""
        base = self.base
        a_prob, a_idx = base.alias()
        return (
            np.ascontiguousarray(base.indptr),
            np.ascontiguousarray(base.indices),
            a_prob,
            a_idx,
            self.weighted,
            self.row_start,
            self.row_len,
            self.d_targets,
            self.d_cum,
        )

    def merged(self) -> CSRGraph:
        """The current graph as one CSR (cached until the next change)."""
        if self._merged is not None:
            return self._merged
        base, n, nb = self.base, self.num_nodes, self.base.num_nodes
        deg = self.degrees()
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(deg, out=indptr[1:])
        over = self.row_start >= 0
        idx_dtype = np.int32 if n - 1 <= _INT32_MAX else np.int64
        indices = np.empty(int(indptr[-1]), idx_dtype)
        weights = np.empty(int(indptr[-1]), np.float32) if self.weighted else None
        from_base = np.repeat(~over, deg)
        base_edge_kept = np.repeat(~over[:nb], base.out_degrees())
        indices[from_base] = base.indices[base_edge_kept]
        live = np.flatnonzero(over)
        pos = _gather(self.row_start[live], self.row_len[live])
        indices[~from_base] = self.d_targets[pos]
        if weights is not None:
            weights[from_base] = base.weights[base_edge_kept]  # type: ignore[index]
            weights[~from_base] = self.d_weights[pos]
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
