"""``CSRGraph``: a graph in compressed sparse row form, its sharding, and its on-disk format.

Nodes are keyed by arbitrary int64 external ids (``node_ids``) and numbered 0..n-1 inside the
graph; every public result reports external ids. Edges are stored as out-edges: an undirected
graph stores each edge in both directions.

Edge rules (documented once, applied by ``from_edges``):

* Self-loops are kept by default as ordinary out-edges (a walk may stay in place; they count in
  the degree). ``self_loops="drop"`` removes them.
* Duplicate edges: ``duplicates="collapse"`` (default) keeps one edge; with weights, its weight
  is the sum of the duplicates' weights (the walk then matches the multigraph's). ``"count"``
  turns an unweighted multigraph into a weighted graph whose weights are the multiplicities.
  ``"error"`` raises. For undirected graphs "duplicate" is judged after mirroring, so an edge
  listed as both (u, v) and (v, u) is one edge.
* Weights must be finite and > 0 (stored float32). Negative or zero weights raise: a signed
  graph needs an explicit transform by the caller.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from shardwalk.walks import _check

from shardwalk._files import load_npy, read_meta, save_npy, write_meta
from shardwalk.errors import CorruptionError, InvalidArgumentError, NotFoundError

__all__ = ["CSRGraph", "GraphShard", "GRAPH_SCHEMA", "GRAPH_SCHEMA_VERSION"]

GRAPH_SCHEMA = "shardwalk.csr_graph"
GRAPH_SCHEMA_VERSION = 1
_INT32_MAX = np.iinfo(np.int32).max


def _read_meta(directory: Path, schema: str, supported: int) -> dict[str, Any]:
    """A saved object's meta.json, of ``schema`` at version ``supported``."""
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        raise NotFoundError(f"no {schema} at {directory} (meta.json is missing)")
    return read_meta(
        meta_path,
        {"schema": schema, "version": supported},
        hint=" (this build reads that version; upgrade shardwalk or rebuild the object)",
    )


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on uint64 arrays: a stable hash for hash sharding."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _load_saved(
    directory: str | os.PathLike[str], schema: str, version: int, what: str, *,
    arrays: tuple[str, ...], optional: dict[str, str] | None = None, mmap: bool = True,
) -> tuple[Path, dict[str, Any], dict[str, np.ndarray]]:  # fmt: skip
    """A saved object's directory, its ``meta.json`` (``schema`` at ``version``) and its
    ``arrays`` (``<name>.npy`` files, memory-mapped with ``mmap``), with those of ``optional``
    (name -> the meta.json entry that says it was written) where meta.json says so. A missing
    file is a CorruptionError naming ``what`` (e.g. "graph")."""
    d = Path(directory)
    meta = _read_meta(d, schema, version)
    names = [*arrays, *(name for name, key in (optional or {}).items() if meta.get(key))]
    try:
        found = {name: load_npy(d / f"{name}.npy", mmap=mmap) for name in names}
    except FileNotFoundError as exc:
        raise CorruptionError(f"{what} at {d} is incomplete: {exc.filename} is missing") from exc
    return d, meta, found


class CSRRows:
    """Rows by node in CSR form: ``indptr`` (rows + 1,) points at each node's entries (a
    graph's out-edges, a fingerprint store's visit counts)."""

    indptr: np.ndarray

    @property
    def num_nodes(self) -> int:
        return int(self.indptr.shape[0] - 1)

    def _save_arrays(self, directory: str | os.PathLike[str], names: tuple[str, ...]) -> Path:
        """Write the arrays ``names`` (attributes; those None skipped) as ``<name>.npy`` into
        ``directory`` (created if needed), each atomically; returns it. Its ``meta.json``,
        which makes it complete, is the caller's to write last."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name in names:
            array = getattr(self, name)
            if array is not None:
                save_npy(d / f"{name}.npy", array)
        return d


class OutEdges(CSRRows):
    """Out-edges in CSR form: row i's targets are ``indices[indptr[i]:indptr[i + 1]]``, their
    weights (None: unweighted) ``weights`` at the same places."""

    indices: np.ndarray
    weights: np.ndarray | None

    @property
    def num_edges(self) -> int:
        """Stored out-edges (an undirected edge counts twice, a self-loop once)."""
        return int(self.indices.shape[0])

    @property
    def weighted(self) -> bool:
        return self.weights is not None


@dataclass(frozen=True, kw_only=True, eq=False)
class CSRGraph(OutEdges):
    """A directed or undirected graph in CSR form (out-edges).

    Attributes
    ----------
    indptr : ndarray, int64, shape (n + 1,)
        Row pointers: the out-edges of internal node u are ``indptr[u]:indptr[u + 1]``.
    indices : ndarray, int32 (int64 only when n > 2**31 - 1), shape (nnz,)
        Internal target node of each out-edge, sorted within each row.
    weights : ndarray float32 (nnz,) or None
        Positive edge weights, or None for an unweighted graph.
    node_ids : ndarray, int64, shape (n,)
        External id of each internal node (unique).
    directed : bool
        False means each undirected edge is stored in both directions.

    Build with :meth:`from_edges` (or the loaders in ``shardwalk.walks.loaders``), never by
    hand unless followed by :meth:`validate`.
    """

    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray | None
    node_ids: np.ndarray
    directed: bool = True
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    # ----------------------------------------------------------------------------- basics

    @property
    def nbytes(self) -> int:
        w = 0 if self.weights is None else self.weights.nbytes
        return int(self.indptr.nbytes + self.indices.nbytes + w + self.node_ids.nbytes)

    def out_degrees(self) -> np.ndarray:
        return np.diff(self.indptr)

    def __repr__(self) -> str:
        return (
            f"CSRGraph(nodes={self.num_nodes}, edges={self.num_edges}, "
            f"directed={self.directed}, weighted={self.weighted})"
        )

    # ----------------------------------------------------------------------------- ids

    def _lookup(self) -> tuple[bool, np.ndarray | None, np.ndarray | None]:
        if "lookup" not in self._cache:
            ids = self.node_ids
            n = ids.shape[0]
            if n == 0 or (ids[0] == 0 and ids[-1] == n - 1 and bool(np.all(np.diff(ids) == 1))):
                self._cache["lookup"] = (True, None, None)
            else:
                order = np.argsort(ids, kind="stable")
                self._cache["lookup"] = (False, order, np.ascontiguousarray(ids[order]))
        return self._cache["lookup"]

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Per external id (an int64 array, any values), whether it is a node: a bool array
        in the order given. Never raises for unknown ids (see :meth:`to_internal`)."""
        ext = np.asarray(ids, dtype=np.int64)
        identity, _, sorted_ids = self._lookup()
        n = self.num_nodes
        if identity:
            return (ext >= 0) & (ext < n)
        assert sorted_ids is not None
        pos = np.minimum(np.searchsorted(sorted_ids, ext), n - 1)
        return sorted_ids[pos] == ext

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """External ids (int64) -> internal indices, -1 for ids that are not nodes; never
        raises. The ids are searched in sorted order (consecutive searches then share their
        path through the sorted ids: a fraction of the cache misses of random order)."""
        ext = np.asarray(ids, dtype=np.int64)
        identity, order, sorted_ids = self._lookup()
        n = self.num_nodes
        if identity:
            return np.where((ext >= 0) & (ext < n), ext, -1)
        assert order is not None and sorted_ids is not None
        out = np.full(ext.shape[0], -1, np.int64)
        if n == 0 or ext.size == 0:
            return out
        by = np.argsort(ext, kind="stable")
        needles = ext[by]
        pos = np.minimum(np.searchsorted(sorted_ids, needles), n - 1)
        hit = sorted_ids[pos] == needles
        out[by[hit]] = order[pos[hit]]
        return out

    def to_internal(self, ids: Any, *, what: str = "node") -> np.ndarray:
        """External ids -> internal indices 0..n-1 (int64).

        Raises
        ------
        NotFoundError
            If any id is not a node of the graph (the message names the first few).
        """
        ext = _check.as_ids(ids, what=f"{what} ids")
        identity, order, sorted_ids = self._lookup()
        n = self.num_nodes
        if identity:
            missing = (ext < 0) | (ext >= n)
            internal = ext
        else:
            assert order is not None and sorted_ids is not None  # not the identity
            pos = np.searchsorted(sorted_ids, ext)
            pos_c = np.minimum(pos, max(n - 1, 0))
            missing = (pos >= n) | (sorted_ids[pos_c] != ext) if n else np.ones(ext.shape, bool)
            internal = order[pos_c] if n else ext
        if missing.any():
            bad = np.unique(ext[missing])
            shown = ", ".join(str(int(b)) for b in bad[:5])
            more = f" and {bad.size - 5} more" if bad.size > 5 else ""
            raise NotFoundError(
                f"unknown {what} id(s) {shown}{more}: not in this graph of {n} nodes "
                "(ids are the external ids given when the graph was built)"
            )
        return np.ascontiguousarray(internal, dtype=np.int64)

    def to_external(self, internal: np.ndarray) -> np.ndarray:
        """Internal indices -> external ids; -1 stays -1 (padding)."""
        internal = np.asarray(internal)
        identity, _, _ = self._lookup()
        if identity:
            return internal.astype(np.int64, copy=True)
        out = self.node_ids[np.maximum(internal, 0)]
        return np.where(internal < 0, -1, out).astype(np.int64, copy=False)

    # ----------------------------------------------------------------------------- building

    @classmethod
    def from_edges(
        cls,
        src: Any,
        dst: Any,
        weights: Any = None,
        *,
        directed: bool = True,
        node_ids: Any = None,
        self_loops: Literal["keep", "drop"] = "keep",
        duplicates: Literal["collapse", "count", "error"] = "collapse",
    ) -> CSRGraph:
        """Build a graph from parallel arrays of edge endpoints (external ids).

        Parameters
        ----------
        src, dst : array-like of int
            Edge endpoints as external int64 ids (any integers, not necessarily 0..n-1).
        weights : array-like of float, optional
            One finite, strictly positive weight per edge (float64 accepted, stored float32).
        directed : bool
            If False, every edge is stored in both directions (a self-loop once).
        node_ids : array-like of int, optional
            The full node set, in the internal order to use (lets isolated nodes exist). Edges
            must only use these ids. Default: the sorted unique ids appearing in the edges.
        self_loops : {"keep", "drop"}
            Keep self-loops as ordinary edges (default) or remove them.
        duplicates : {"collapse", "count", "error"}
            See the module docstring.

        Returns
        -------
        CSRGraph

        Raises
        ------
        InvalidArgumentError
            Mismatched lengths, non-integer ids, bad weights, duplicates with "error".
        NotFoundError
            An edge uses an id missing from ``node_ids``.
        """
        s = _check.as_ids(src, what="src")
        d = _check.as_ids(dst, what="dst")
        if s.shape != d.shape:
            raise InvalidArgumentError(
                f"src and dst must have the same length; got {s.shape[0]} and {d.shape[0]}"
            )
        _check.check_choice("self_loops", self_loops, ("keep", "drop"))
        _check.check_choice("duplicates", duplicates, ("collapse", "count", "error"))
        w = None if weights is None else _check.check_weights(weights, s.shape[0])
        if not isinstance(directed, (bool, np.bool_)):
            raise InvalidArgumentError(f"directed must be a bool; got {directed!r}")

        top = int(max(s.max(), d.max())) + 1 if s.size else 0
        if node_ids is None and top <= 2 * (s.size + d.size) + 1024:
            # Ids are dense enough (SNAP files mostly are) for a presence table: the sorted
            # unique ids and every endpoint's internal index in O(E), no sort or binary search
            # (8x faster than np.unique + searchsorted on 3M edges).
            present = np.zeros(top, dtype=bool)
            present[s] = True
            present[d] = True
            ids = np.flatnonzero(present)
            internal = np.cumsum(present, dtype=np.int64) - 1
            si, di = internal[s], internal[d]
            del present, internal
        else:
            if node_ids is None:
                ids = np.unique(np.concatenate([s, d]))
            else:
                ids = _check.as_ids(node_ids, what="node_ids")
                if np.unique(ids).size != ids.size:
                    raise InvalidArgumentError("node_ids must be unique; found repeated ids")
            tmp = cls(
                indptr=np.zeros(ids.size + 1, np.int64),
                indices=np.zeros(0, np.int32),
                weights=None,
                node_ids=ids,
                directed=bool(directed),
            )
            si = tmp.to_internal(s, what="edge endpoint")
            di = tmp.to_internal(d, what="edge endpoint")
        n = ids.size

        if self_loops == "drop":
            keep = si != di
            si, di = si[keep], di[keep]
            if w is not None:
                w = w[keep]
        if not directed:
            off = si != di  # a self-loop is stored once
            si, di = np.concatenate([si, di[off]]), np.concatenate([di, si[off]])
            if w is not None:
                w = np.concatenate([w, w[off]])

        key = si * np.int64(max(n, 1)) + di
        order = np.argsort(key)  # any order among equal keys: they are merged below
        key = key[order]
        if w is not None:
            w = w[order]
        first = np.ones(key.shape[0], bool)
        first[1:] = key[1:] != key[:-1]
        n_dup = int(key.shape[0] - first.sum())
        if n_dup and duplicates == "error":
            i = int(np.flatnonzero(~first)[0])
            u, v = divmod(int(key[i]), max(n, 1))
            raise InvalidArgumentError(
                f"duplicate edges are not allowed (duplicates='error'); found {n_dup}, first "
                f"{ids[u]} -> {ids[v]} (use duplicates='collapse' to merge them)"
            )
        starts = np.flatnonzero(first)
        if n_dup:
            if w is not None:
                w = np.add.reduceat(w, starts) if starts.size else w[:0]
            elif duplicates == "count":
                w = np.diff(np.append(starts, key.shape[0])).astype(np.float64)
            key = key[starts]
        rows = key // max(n, 1)
        cols = key - rows * max(n, 1)
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        idx_dtype = np.int32 if n - 1 <= _INT32_MAX else np.int64
        w32 = None
        if w is not None:
            w32 = w.astype(np.float32)
            if not np.all(np.isfinite(w32) & (w32 > 0)):
                raise InvalidArgumentError(
                    "edge weights (after summing duplicates) must fit float32 as finite values "
                    "> 0; some overflow or underflow (rescale the weights)"
                )
        return cls(
            indptr=indptr,
            indices=cols.astype(idx_dtype),
            weights=w32,
            node_ids=ids,
            directed=bool(directed),
        )

    # ----------------------------------------------------------------------------- checks

    def validate(self) -> CSRGraph:
        """Check every CSR invariant; returns self.

        Raises
        ------
        InvalidArgumentError
            Naming the first violated invariant.
        """
        ip, ix, w, ids = self.indptr, self.indices, self.weights, self.node_ids

        def bad(msg: str) -> InvalidArgumentError:
            return InvalidArgumentError(f"invalid CSRGraph: {msg}")

        if not isinstance(ip, np.ndarray) or ip.dtype != np.int64 or ip.ndim != 1 or ip.size < 1:
            raise bad("indptr must be a 1-D int64 array of n + 1 >= 1 entries")
        n = ip.size - 1
        if ip[0] != 0 or (n and np.any(np.diff(ip) < 0)):
            raise bad("indptr must start at 0 and be non-decreasing")
        if not isinstance(ix, np.ndarray) or ix.ndim != 1 or ix.dtype not in (np.int32, np.int64):
            raise bad("indices must be a 1-D int32 (or int64) array")
        if ix.dtype == np.int64 and n - 1 <= _INT32_MAX:
            raise bad("indices must be int32 when n <= 2**31 (int64 only for larger graphs)")
        if ip[-1] != ix.size:
            raise bad(f"indptr[-1] = {int(ip[-1])} but there are {ix.size} indices")
        if ix.size and (ix.min() < 0 or ix.max() >= n):
            raise bad(f"indices must be in [0, {n}); got range [{ix.min()}, {ix.max()}]")
        if ix.size:
            rows = np.repeat(np.arange(n), np.diff(ip))
            same_row = rows[1:] == rows[:-1]
            if np.any(same_row & (ix[1:] <= ix[:-1])):
                raise bad("indices must be strictly increasing within each row (no duplicates)")
        if w is not None:
            if not isinstance(w, np.ndarray) or w.dtype != np.float32 or w.shape != ix.shape:
                raise bad("weights must be float32 with one entry per edge, or None")
            if not np.all(np.isfinite(w) & (w > 0)):
                i = int(np.flatnonzero(~(np.isfinite(w) & (w > 0)))[0])
                raise bad(f"weights must be finite and > 0; got {float(w[i])!r} at edge {i}")
        if not isinstance(ids, np.ndarray) or ids.dtype != np.int64 or ids.shape != (n,):
            raise bad(f"node_ids must be int64 of shape ({n},)")
        if np.unique(ids).size != n:
            raise bad("node_ids must be unique")
        if not self.directed and ix.size:
            if not _is_symmetric(ip, ix):
                raise bad("directed=False but the stored edges are not symmetric")
        return self

    # ----------------------------------------------------------------------------- misc

    def digest(self) -> str:
        """A crc32 of the structure (indptr, indices, weights, ids): fingerprints and other
        derived objects record it, so loading them against a different graph is caught."""
        if "digest" not in self._cache:
            c = 0
            for arr in (self.indptr, self.indices, self.weights, self.node_ids):
                if arr is not None:
                    c = zlib.crc32(np.ascontiguousarray(arr).view(np.uint8).data, c)
            self._cache["digest"] = f"{c:08x}-{self.num_nodes}-{self.num_edges}"
        return self._cache["digest"]

    def transition_probs(self) -> np.ndarray:
        """Per-edge transition probabilities w_uv / sum_v w_uv (float64); empty if unweighted."""
        if "probs" not in self._cache:
            from shardwalk.walks.kernels.alias import row_probabilities

            if self.weights is None:
                self._cache["probs"] = np.zeros(0, np.float64)
            else:
                self._cache["probs"] = row_probabilities(self.indptr, self.weights)
        return self._cache["probs"]

    def alias(self) -> tuple[np.ndarray, np.ndarray]:
        """Alias tables (prob float32, alias int32 offsets) for weighted walks; empty if unweighted."""
        if "alias" not in self._cache:
            from shardwalk.walks.kernels.alias import alias_tables

            if self.weights is None:
                self._cache["alias"] = (np.zeros(0, np.float32), np.zeros(0, np.int32))
            else:
                import numba

                self._cache["alias"] = alias_tables(
                    self.indptr, self.weights, numba.get_num_threads()
                )
        return self._cache["alias"]

    # ----------------------------------------------------------------------------- shards

    def shard_assignment(
        self, num_shards: int, *, by: Literal["range", "hash"] = "range"
    ) -> np.ndarray:
        """The shard (0..num_shards-1) owning each internal node, int32 shape (n,).

        ``by="range"``: contiguous internal ranges with about equal (nodes + out-edges) each.
        ``by="hash"``: SplitMix64 of the external id modulo ``num_shards`` (stable across
        processes, independent of the internal order).
        """
        k = _check.check_int("num_shards", num_shards, minimum=1)
        _check.check_choice("by", by, ("range", "hash"))
        n = self.num_nodes
        if by == "hash":
            h = _mix64(self.node_ids.view(np.uint64))
            return (h % np.uint64(k)).astype(np.int32)
        cost = np.arange(1, n + 1, dtype=np.int64) + self.indptr[1:]
        total = int(cost[-1]) if n else 0
        bounds = np.searchsorted(cost, (np.arange(1, k) * total) // k, side="left")
        out = np.zeros(n, np.int32)
        for b in bounds:
            out[b + 1 :] += 1
        return out

    def shards(
        self, num_shards: int, *, by: Literal["range", "hash"] = "range"
    ) -> list[GraphShard]:
        """Split the nodes into ``num_shards`` shards, each holding its nodes' out-edges.

        Parameters
        ----------
        num_shards : int
            Number of shards (>= 1); a shard may be empty when there are fewer nodes.
        by : {"range", "hash"}
            See :meth:`shard_assignment`.

        Returns
        -------
        list of GraphShard
            Together they hold every node and every edge exactly once; edges keep global
            internal target indices so walks can cross shards.
        """
        owner = self.shard_assignment(num_shards, by=by)
        out = []
        deg = self.out_degrees()
        for s in range(int(num_shards)):
            nodes = np.flatnonzero(owner == s).astype(np.int64)
            d = deg[nodes]
            ip = np.zeros(nodes.size + 1, np.int64)
            np.cumsum(d, out=ip[1:])
            sel = np.repeat(self.indptr[nodes], d) + (np.arange(ip[-1]) - np.repeat(ip[:-1], d))
            out.append(
                GraphShard(
                    shard_id=s,
                    num_shards=int(num_shards),
                    by=by,
                    nodes=nodes,
                    node_ids=self.node_ids[nodes],
                    indptr=ip,
                    indices=self.indices[sel],
                    weights=None if self.weights is None else self.weights[sel],
                    graph_digest=self.digest(),
                )
            )
        return out

    # ----------------------------------------------------------------------------- storage

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the graph into ``directory`` (created if needed): ``indptr.npy``,
        ``indices.npy``, ``node_ids.npy``, ``weights.npy`` (if weighted) and ``meta.json``
        (schema, version, sizes, digest). Every file is replaced atomically and meta.json is
        written last, so a reader never sees a half-written graph as complete."""
        d = self._save_arrays(directory, ("indptr", "indices", "node_ids", "weights"))
        meta = {
            "schema": GRAPH_SCHEMA,
            "version": GRAPH_SCHEMA_VERSION,
            "num_nodes": self.num_nodes,
            "num_edges": self.num_edges,
            "directed": self.directed,
            "weighted": self.weighted,
            "indices_dtype": str(self.indices.dtype),
            "digest": self.digest(),
        }
        write_meta(d / "meta.json", meta)

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], *, mmap: bool = True, verify: bool = False
    ) -> CSRGraph:
        """Open a graph written by :meth:`save`; arrays are memory-mapped read-only by default.

        Parameters
        ----------
        verify : bool
            Also run :meth:`validate` and compare the digest (reads every byte).

        Raises
        ------
        NotFoundError
            No graph in ``directory``.
        CorruptionError
            Wrong schema/version, missing or truncated files, or a failed verification.
        """
        d, meta, found = _load_saved(
            directory, GRAPH_SCHEMA, GRAPH_SCHEMA_VERSION, "graph",
            arrays=("indptr", "indices", "node_ids"), optional={"weights": "weighted"}, mmap=mmap,
        )  # fmt: skip
        ip, ix, ids, w = found["indptr"], found["indices"], found["node_ids"], found.get("weights")
        n, m = meta["num_nodes"], meta["num_edges"]
        if (
            ip.shape != (n + 1,)
            or ix.shape != (m,)
            or ids.shape != (n,)
            or (w is not None and w.shape != (m,))
        ):
            raise CorruptionError(
                f"graph at {d}: array shapes do not match meta.json (n={n}, edges={m})"
            )
        g = cls(indptr=ip, indices=ix, weights=w, node_ids=ids, directed=bool(meta["directed"]))
        if verify:
            try:
                g.validate()
            except InvalidArgumentError as exc:
                raise CorruptionError(f"graph at {d}: {exc}") from exc
            if g.digest() != meta["digest"]:
                raise CorruptionError(
                    f"graph at {d}: digest {g.digest()} != {meta['digest']} in meta.json"
                )
        else:
            g._cache["digest"] = meta["digest"]
        return g


@dataclass(frozen=True, kw_only=True, eq=False)
class GraphShard(OutEdges):
    """The out-edges of one shard's nodes.

    ``nodes`` are internal indices (sorted) of the whole graph, ``node_ids`` their external ids;
    row i of (``indptr``, ``indices``, ``weights``) is node ``nodes[i]``, and ``indices`` are
    global internal indices, so a walk leaving the shard knows where it goes.
    """

    shard_id: int
    num_shards: int
    by: str
    nodes: np.ndarray
    node_ids: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray | None
    graph_digest: str

    def edges(self) -> Iterator[tuple[int, int]]:
        """(internal source, internal target) pairs, for debugging and tests."""
        for i, u in enumerate(self.nodes):
            for v in self.indices[self.indptr[i] : self.indptr[i + 1]]:
                yield int(u), int(v)

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the shard into ``directory`` (same conventions as :meth:`CSRGraph.save`)."""
        d = self._save_arrays(directory, ("nodes", "node_ids", "indptr", "indices", "weights"))
        meta = {
            "schema": GRAPH_SCHEMA + ".shard",
            "version": GRAPH_SCHEMA_VERSION,
            "shard_id": self.shard_id,
            "num_shards": self.num_shards,
            "by": self.by,
            "num_nodes": self.num_nodes,
            "num_edges": self.num_edges,
            "weighted": self.weights is not None,
            "graph_digest": self.graph_digest,
        }
        write_meta(d / "meta.json", meta)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, mmap: bool = True) -> GraphShard:
        d, meta, arrs = _load_saved(
            directory, GRAPH_SCHEMA + ".shard", GRAPH_SCHEMA_VERSION, "shard",
            arrays=("nodes", "node_ids", "indptr", "indices"), optional={"weights": "weighted"},
            mmap=mmap,
        )  # fmt: skip
        w = arrs.pop("weights", None)
        if arrs["indptr"].shape != (meta["num_nodes"] + 1,) or arrs["indices"].shape != (
            meta["num_edges"],
        ):
            raise CorruptionError(f"shard at {d}: array shapes do not match meta.json")
        return cls(
            shard_id=meta["shard_id"],
            num_shards=meta["num_shards"],
            by=meta["by"],
            weights=w,
            graph_digest=meta["graph_digest"],
            **arrs,
        )


def _is_symmetric(ip: np.ndarray, ix: np.ndarray) -> bool:
    """True if the edge set equals its transpose."""
    n = ip.size - 1
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(ip))
    cols = ix.astype(np.int64)
    return bool(np.array_equal(np.sort(rows * n + cols), np.sort(cols * n + rows)))
