"""Tenants: who may see which rows, and a multi-tenant index in the spirit of Curator.

``TenantDirectory`` maps each tenant to the rows it may see (it owns them or they are shared
with it). Every collection keeps one, whatever its index, so a tenant-scoped search only ever
considers that tenant's rows.

``MultiTenantIndex`` (Curator, Jin et al.): one shared clustering of all vectors into leaves,
with per-tenant sub-structures: for each tenant, the leaves that hold its vectors and its row
list in each of them. A tenant's search ranks only its own leaves and scans only its own rows
there, so it costs about what a dedicated per-tenant index would, while every vector is stored
once (memory close to one shared index). The tree has two levels: about sqrt(n) leaves and,
above TREE_MIN_LEAVES of them, about sqrt(leaves) top nodes, so a tenant's search ranks its top
nodes and then only the leaves under the closest ones (Curator's tree is deeper). A tenant's
lists are rebuilt lazily after inserts. Leaves re-cluster when the collection has grown fourfold since the last clustering.

The vectors are laid out leaf by leaf, and by owner tenant within a leaf, so the rows a tenant
scans in a leaf are consecutive in memory (one stream the prefetcher follows, not a random
read per row). Rows inserted since are appended; the layout is redone once they are an eighth
of the collection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from shardwalk.index._kernels import probe_leaves, scan_rows
from shardwalk.index.base import (
    IndexBase,
    IndexOptions,
    SearchResult,
    empty_result,
    read_meta,
    relabel,
    save_index,
)
from shardwalk.index.store import VectorStore

from shardwalk._threads import ThreadBudget

if TYPE_CHECKING:
    from shardwalk.index.base import SearchOptions
    from typing_extensions import Unpack

__all__ = ["TREE_MIN_LEAVES", "MultiTenantIndex", "TenantDirectory"]

# Above this many leaves a tenant's search finds its closest leaves through a top level of the
# tree (ranking a few dozen top nodes and their leaves) instead of ranking every leaf.
TREE_MIN_LEAVES = 256
# See MultiTenantIndex's probe_ratio: 1.5 takes mnist's recall@10 from 0.981 to 0.992 for 22%
# more rows scored and costs 0.4% more rows on 200K x 128 clustered vectors (simulated, unfiltered).
PROBE_RATIO = 1.5


@dataclass(frozen=True)
class _SubTree:
    """A row set's (a tenant's) view of the shared tree: the leaves holding its rows
    (``centroids``, squared ``norms``), the top nodes above them (empty for a flat tree; leaves
    ``top_offsets[t]:top_offsets[t + 1]`` under top node t), and its rows grouped by leaf
    (``rows[offsets[j]:offsets[j + 1]]``, in physical order within a leaf, so a scan reads
    forward) with their ``positions`` in the vector store."""

    version: int
    centroids: np.ndarray
    norms: np.ndarray
    top_centroids: np.ndarray
    top_norms: np.ndarray
    top_offsets: np.ndarray
    offsets: np.ndarray
    rows: np.ndarray
    positions: np.ndarray


_FEW_NAMES = 64  # rows a write groups by name in Python (the Arrow path costs ~40 us a call)


def _group(rows: np.ndarray, names: pa.Array) -> dict[str, np.ndarray]:
    """rows grouped by a parallel string array (nulls dropped)."""
    if len(names) == 0 or names.null_count == len(names):
        return {}
    if len(names) <= _FEW_NAMES:  # a small write: Python beats Arrow's per-call overhead
        groups: dict[str, list[int]] = {}
        for row, name in zip(rows.tolist(), names.to_pylist()):
            if name is not None:
                groups.setdefault(name, []).append(row)
        return {name: np.array(at, dtype=np.int64) for name, at in groups.items()}
    encoded = pc.dictionary_encode(names)
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    labels = encoded.dictionary.to_pylist()
    keep = codes >= 0
    codes, rows = codes[keep], rows[keep]
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(labels) + 1))
    return {
        labels[c]: rows[order[bounds[c] : bounds[c + 1]]]
        for c in range(len(labels))
        if bounds[c + 1] > bounds[c]
    }


class TenantDirectory:
    """tenant name -> the rows it may see (including rows deleted since; callers mask them)."""

    def __init__(self) -> None:
        self._chunks: dict[str, list[np.ndarray]] = {}
        self._version: dict[str, int] = {}
        self._codes: dict[str, int] = {}  # owner tenant -> a small int, in order of appearance

    def add(self, rows: np.ndarray, owners: pa.Array, shared: pa.Array | None = None) -> np.ndarray:
        """Record who may see ``rows`` (ascending); returns each row's owner code (-1: none)."""
        groups = [_group(rows, owners)]
        if shared is not None and shared.null_count < len(shared):
            flat = pc.list_flatten(shared)
            parents = pc.list_parent_indices(shared).to_numpy()
            groups.append(_group(rows[parents], flat))
        for group in groups:
            for tenant, tenant_rows in group.items():
                self._chunks.setdefault(tenant, []).append(tenant_rows)
                self._version[tenant] = self._version.get(tenant, 0) + 1
        for tenant in groups[0]:  # (codes in order of appearance)
            self._codes.setdefault(tenant, len(self._codes))
        if len(owners) <= _FEW_NAMES:  # (one call, not one a tenant)
            known = self._codes
            return np.array([known.get(t, -1) for t in owners.to_pylist()], dtype=np.int32)
        codes = np.full(rows.size, -1, dtype=np.int32)
        for tenant, tenant_rows in groups[0].items():
            codes[np.searchsorted(rows, tenant_rows)] = self._codes[tenant]
        return codes

    def rows(self, tenant: str) -> np.ndarray:
        chunks = self._chunks.get(tenant)
        if not chunks:
            return np.zeros(0, dtype=np.int64)
        if len(chunks) == 1:
            return chunks[0]
        # Readers run at once: each merges its own copy and publishes it with one assignment
        # (equal results, so the last one wins harmlessly); the list it read is never changed.
        merged = np.unique(np.concatenate(chunks))  # an id shared with its owner listed once
        self._chunks[tenant] = [merged]
        return merged

    def version(self, tenant: str) -> int:
        return self._version.get(tenant, 0)

    def __contains__(self, tenant: object) -> bool:
        return tenant in self._chunks

    def tenants(self) -> list[str]:
        return sorted(self._chunks)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for chunks in self._chunks.values() for c in chunks)


class MultiTenantIndex(IndexBase):
    """One shared clustering of all vectors into leaves; per-tenant leaf lists (Curator).

    Parameters
    ----------
    dim, metric, seed, threads, budget
        As for every index (:class:`~shardwalk.index.base.IndexBase`): a batch search takes
        up to one thread per query (at most ``threads``).
    leaves : int, optional
        Leaves of the shared clustering (default ``sqrt(n)`` at clustering time, 16-4096).
    nprobe : int, default 8
        Leaves a search visits at least (per query, among the leaves that hold rows it may see).
    candidates : int, default 256
        Rows a search scores at least before it stops visiting leaves (raised to 4 k).
    probe_ratio : float, default 1.5
        After that minimum, a search (l2) still visits the next closest leaf while its
        centroid's squared distance is within ``probe_ratio`` x the closest leaf's (SPANN's
        query-aware rule; up to ``max(64, 4 nprobe)`` leaves): data with wide neighbourhoods
        (mnist: recall@10 0.981 at nprobe=8 without it) is searched deeper, well-clustered data
        costs the same. 0 turns it off.
    train_size : int, optional
        Vectors to collect before the first clustering (default 4096); until then searches
        scan exactly.
    quantization : {"none", "sq8"}, default "none"
        "none": score the float vectors directly. "sq8": a first pass on 8-bit
        scalar-quantised codes kept in leaf order (a quarter of the bytes, read close
        together), the best candidates re-ranked on the exact vectors (in the spirit of
        SQUASH): about 3x faster when a search scores many rows (large scopes, unfiltered),
        slower for small tenants, and a quarter more memory.
    rerank : int, default 4
        With "sq8", candidates re-ranked exactly per result wanted (rerank * k, at least 32).

    Thread safety: searches and ``get`` may run from many threads at once (the caches they
    fill, a row set's view of the tree and the packed live bitmap, are built whole and then
    published with one assignment); writes need the caller to exclude every other call.
    """

    kind = "multitenant"
    scoped = True
    scoped_how = "visit the shared clustering's leaves that hold rows in scope, closest first"
    relayout_fraction = 8  # redo the layout once 1/8 of the rows were appended since
    saved_params = ("leaves", "nprobe", "candidates", "probe_ratio", "quantization")

    def __init__(
        self,
        *,
        leaves: int | None = None,
        nprobe: int = 8,
        candidates: int = 256,
        probe_ratio: float = PROBE_RATIO,
        train_size: int | None = None,
        quantization: str = "none",
        rerank: int = 4,
        **options: Unpack[IndexOptions],
    ) -> None:
        super().__init__(**options)
        dim = self.dim
        self.quantization = quantization
        self.rerank = rerank
        self.leaves = leaves
        self.nprobe = nprobe
        self.candidates = candidates
        self.probe_ratio = probe_ratio
        self.train_size = train_size or 4096
        self.store = VectorStore(dim)  # shared with the collection: vectors stored once
        self._alive = np.zeros(1024, dtype=bool)
        self._leaf_of = np.zeros(1024, dtype=np.int32)
        self._group_of = np.full(1024, -1, dtype=np.int32)  # owner tenant code, for the layout
        self._centroids: np.ndarray | None = None
        # the tree's top level (above TREE_MIN_LEAVES leaves): leaves are numbered top node by
        # top node, _top_of[leaf] ascending
        self._top_of: np.ndarray | None = None
        self._top_centroids: np.ndarray | None = None
        self._clustered_at = 0
        self._arranged_at = 0
        self._live = 0
        self._packed_alive: np.ndarray | None = None  # _alive as a bitmap, rebuilt after writes
        self._lists: dict[Any, _SubTree] = {}  # row set key -> its view of the tree
        # SQ8 codes in the vectors' physical order (codes[p] encodes physical()[p])
        self._codes = np.zeros((0, dim), dtype=np.uint8)
        self._n_codes = 0
        self._low = np.zeros(dim, dtype=np.float32)
        self._step = np.ones(dim, dtype=np.float32)

    @property
    def trained(self) -> bool:
        return self._centroids is not None

    def _grow(self, n: int) -> None:
        if n > self._alive.shape[0]:
            size = max(n, 2 * self._alive.shape[0])
            alive = np.zeros(size, dtype=bool)
            alive[: self._alive.shape[0]] = self._alive
            leaf_of = np.zeros(size, dtype=np.int32)
            leaf_of[: self._leaf_of.shape[0]] = self._leaf_of
            group_of = np.full(size, -1, dtype=np.int32)
            group_of[: self._group_of.shape[0]] = self._group_of
            self._alive, self._leaf_of, self._group_of = alive, leaf_of, group_of

    # -- writes -----------------------------------------------------------------------------
    def _insert(self, labels: np.ndarray, vectors: np.ndarray, groups: np.ndarray | None) -> None:
        """Append rows ``labels`` (continuing 0, 1, ...). ``groups`` (int per row, e.g. the
        owner tenant's code) keeps a group's rows together within each leaf."""
        with self.budget.take(self.budget.threads):  # k-means and assignment: faiss's OpenMP
            self._add(labels, vectors, groups)

    def _add(self, labels: np.ndarray, vectors: np.ndarray, groups: np.ndarray | None) -> None:
        start = len(self.store)
        if labels[0] != start or not np.array_equal(labels, np.arange(start, start + labels.size)):
            raise ValueError(
                "MultiTenantIndex labels are row numbers: they must continue 0, 1, ..."
            )
        rows = self.store.extend(vectors)
        self._grow(len(self.store))
        self._alive[rows] = True
        if groups is not None:
            self._group_of[rows] = groups
        self._live += rows.size
        self._packed_alive = None
        n = len(self.store)
        if self._centroids is None:
            if n >= self.train_size:
                self._cluster()
        elif n >= 4 * self._clustered_at:
            self._cluster()
        else:
            self._leaf_of[rows] = self._assign(vectors)
            self._append_codes(vectors)
            if n - self._arranged_at > n // self.relayout_fraction:
                self._arrange()
        self._lists.clear()

    def _alive_bits(self) -> np.ndarray:
        bits = self._packed_alive
        if bits is None:  # built whole, then published (searches run at once)
            bits = np.packbits(self._alive, bitorder="little")
            self._packed_alive = bits
        return bits

    def _assign(self, vectors: np.ndarray) -> np.ndarray:
        assert self._centroids is not None
        index = faiss.IndexFlatL2(self.dim) if self.metric == "l2" else faiss.IndexFlatIP(self.dim)
        index.add(self._centroids)
        _, nearest = index.search(vectors, 1)
        return nearest[:, 0].astype(np.int32)

    def _cluster(self) -> None:
        """(Re)place the leaves over every stored vector and re-assign all rows."""
        vectors = self.store.physical()
        n = vectors.shape[0]
        leaves = self.leaves or int(np.clip(np.sqrt(n), 16, 4096))
        leaves = min(leaves, n)
        km = faiss.Kmeans(
            self.dim,
            leaves,
            niter=10,
            seed=self.seed,
            max_points_per_centroid=64,
            min_points_per_centroid=1,
        )
        km.train(vectors)
        assert km.centroids is not None  # (set by train)
        self._set_tree(km.centroids)
        self._leaf_of[:n] = self._assign(vectors)[self.store.positions(np.arange(n))]
        self._clustered_at = n
        if self.quantization == "sq8":
            self._low = vectors.min(axis=0).astype(np.float32)
            span = vectors.max(axis=0) - self._low
            self._step = np.where(span > 0, span / 255.0, 1.0).astype(np.float32)
        self._arrange()

    def _set_tree(self, centroids: np.ndarray) -> None:
        """Leaves, and above TREE_MIN_LEAVES of them a top level: about sqrt(leaves) top nodes
        clustered from the leaf centroids, the leaves renumbered top node by top node."""
        self._top_of = self._top_centroids = None
        if centroids.shape[0] > TREE_MIN_LEAVES:
            top = faiss.Kmeans(
                self.dim,
                round(np.sqrt(centroids.shape[0])),
                niter=20,
                seed=self.seed,
                min_points_per_centroid=1,
                max_points_per_centroid=centroids.shape[0],
            )
            top.train(centroids)
            assert top.centroids is not None  # (set by train)
            _, nearest = top.index.search(centroids, 1)
            order = np.argsort(nearest[:, 0], kind="stable")
            centroids = centroids[order]
            self._top_of = nearest[order, 0].astype(np.int32)
            self._top_centroids = top.centroids.copy()
        self._centroids = np.ascontiguousarray(centroids)

    def _encode(self, vectors: np.ndarray) -> np.ndarray:
        codes = np.rint((vectors - self._low) / self._step)
        return np.clip(codes, 0, 255).astype(np.uint8)

    def _arrange(self) -> None:
        """Lay the vectors out by leaf, then owner group, then row; re-encode the codes."""
        n = len(self.store)
        self.store.arrange(np.lexsort((self._group_of[:n], self._leaf_of[:n])))
        self._arranged_at = n
        self._n_codes = 0
        self._append_codes(self.store.physical())

    def _append_codes(self, vectors: np.ndarray) -> None:
        """SQ8 codes of vectors appended physically at the end of the store."""
        if self.quantization != "sq8":
            return
        end = self._n_codes + vectors.shape[0]
        if end > self._codes.shape[0]:
            grown = np.empty((max(end, 2 * self._codes.shape[0]), self.dim), dtype=np.uint8)
            grown[: self._n_codes] = self._codes[: self._n_codes]
            self._codes = grown
        for start in range(0, vectors.shape[0], 1 << 16):  # encode in chunks: bounded temporaries
            chunk = vectors[start : start + (1 << 16)]
            at = self._n_codes + start
            self._codes[at : at + chunk.shape[0]] = self._encode(chunk)
        self._n_codes = end

    def delete(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        labels = labels[(labels >= 0) & (labels < len(self.store))]
        labels = labels[self._alive[labels]]
        self._alive[labels] = False
        self._live -= labels.size
        self._packed_alive = None

    # -- reads ------------------------------------------------------------------------------
    def _subtree(self, key: Any, version: int, rows: np.ndarray | None) -> _SubTree:
        """A tenant's (or everyone's, ``rows=None``) view of the shared tree, cached.

        Searches call this at once: a missing view is built whole by whoever needs it and
        published with one dict assignment (two builders publish equal views)."""
        cached = self._lists.get(key)
        if cached is not None and cached.version == version:
            return cached
        assert self._centroids is not None
        n = len(self.store)
        rows = np.arange(n, dtype=np.int64) if rows is None else rows
        leaf = self._leaf_of[rows]
        positions = self.store.positions(rows)
        order = np.lexsort((positions, leaf))
        leaf_ids, starts = np.unique(leaf[order], return_index=True)
        centroids = np.ascontiguousarray(self._centroids[leaf_ids])
        top_centroids = np.zeros((0, self.dim), dtype=np.float32)
        top_offsets = np.zeros(0, dtype=np.int64)
        if self._top_of is not None and self._top_centroids is not None:
            if leaf_ids.size > TREE_MIN_LEAVES:
                top_ids, top_starts = np.unique(self._top_of[leaf_ids], return_index=True)
                top_centroids = np.ascontiguousarray(self._top_centroids[top_ids])
                top_offsets = np.append(top_starts, leaf_ids.size).astype(np.int64)
        tree = _SubTree(
            version=version,
            centroids=centroids,
            norms=(centroids * centroids).sum(axis=1),
            top_centroids=top_centroids,
            top_norms=(top_centroids * top_centroids).sum(axis=1),
            top_offsets=top_offsets,
            offsets=np.append(starts, rows.size).astype(np.int64),
            rows=rows[order],
            positions=positions[order],
        )
        if key is not None:  # rows without a key are not cached
            self._lists[key] = tree
        return tree

    def _search(self, queries: np.ndarray, k: int, options: SearchOptions) -> SearchResult:
        """Top-k among ``rows`` (default: all) where ``allowed`` (default: live rows).

        ``rows_key``/``rows_version`` identify the row set (a tenant) for the cache of its
        per-leaf lists (no key: not cached); ``allowed_bits`` is ``allowed`` packed little-endian (saves packing).
        """
        n = queries.shape[0]
        if len(self.store) == 0:
            return empty_result(n, k)
        with self.budget.take(min(n, self.threads or n)):  # the kernels' prange runs within it
            return self._search_leaves(queries, k, options)

    def _search_leaves(self, queries: np.ndarray, k: int, options: SearchOptions) -> SearchResult:
        rows, allowed = options.get("rows"), options.get("allowed")
        allowed = self._alive if allowed is None else allowed
        ip = self.metric == "ip"
        vectors = self.store.physical()
        if self._centroids is None:
            scan = np.arange(len(self.store), dtype=np.int64) if rows is None else rows
            scan = scan[allowed[scan]]
            local, distances = scan_rows(queries, vectors, self.store.positions(scan), k, ip)
            return SearchResult(ids=relabel(local, scan), distances=distances)
        rows_key, rows_version = options.get("rows_key"), options.get("rows_version", 0)
        if rows is None:
            rows_key, rows_version = ("__all__",), len(self.store)
        tree = self._subtree(rows_key, rows_version, rows)
        shape = (
            tree.centroids,
            tree.norms,
            tree.top_centroids,
            tree.top_norms,
            tree.top_offsets,
            tree.offsets,
            tree.rows,
            tree.positions,
        )
        allowed_bits = options.get("allowed_bits")
        if allowed_bits is None:
            allowed_bits = (
                self._alive_bits()
                if allowed is self._alive
                else np.packbits(allowed, bitorder="little")
            )
        min_probe = options.get("nprobe") or self.nprobe
        min_candidates = max(options.get("candidates") or self.candidates, 4 * k)
        probe_ratio = options.get("probe_ratio")
        ratio = self.probe_ratio if probe_ratio is None else float(probe_ratio)
        sq8 = self.quantization == "sq8"
        found, distances, _ = probe_leaves(
            queries,
            vectors,
            sq8,
            self._codes,
            self._low,
            self._step,
            *shape,
            allowed_bits,
            k,
            max(self.rerank * k, 32) if sq8 else k,
            min_probe,
            min_candidates,
            ratio,
            ip,
        )
        return SearchResult(ids=found, distances=distances)

    def get(self, labels: np.ndarray) -> np.ndarray:
        return self.store.take(np.asarray(labels, dtype=np.int64))

    @property
    def alive(self) -> np.ndarray:
        return self._alive[: len(self.store)]

    def __len__(self) -> int:
        return self._live

    def stats(self) -> dict[str, Any]:
        n = len(self.store)
        return {
            "kind": self.kind,
            "live": self._live,
            "slots": n,
            **self.params(),
            "leaves_built": 0 if self._centroids is None else int(self._centroids.shape[0]),
            "top_nodes": 0 if self._top_centroids is None else int(self._top_centroids.shape[0]),
            "memory_bytes": self.store.nbytes
            + n * 9
            + self._n_codes * self.dim
            + (0 if self._centroids is None else self._centroids.nbytes),
        }

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        n = len(self.store)
        arrays = {
            "vectors.npy": self.store.physical(),
            "positions.npy": self.store.row_positions(),
            "alive.npy": self._alive[:n],
            "leaf_of.npy": self._leaf_of[:n],
            "group_of.npy": self._group_of[:n],
            "centroids.npy": self._centroids
            if self._centroids is not None
            else np.zeros((0, self.dim), np.float32),
            "quantizer.npy": np.stack([self._low, self._step]),
            "top_of.npy": np.zeros(0, np.int32) if self._top_of is None else self._top_of,
            "top_centroids.npy": self._top_centroids
            if self._top_centroids is not None
            else np.zeros((0, self.dim), np.float32),
        }
        save_index(
            directory,
            self,
            {
                "train_size": self.train_size,
                "clustered_at": self._clustered_at,
                "arranged_at": self._arranged_at,
                **self.params(),
                "rerank": self.rerank,
            },
            arrays,
        )

    @classmethod
    def load(cls, directory: str, *, budget: ThreadBudget | None = None) -> MultiTenantIndex:
        meta = read_meta(directory, cls.kind)
        index = cls(
            dim=meta["dim"],
            metric=meta["metric"],
            leaves=meta["leaves"],
            nprobe=meta["nprobe"],
            candidates=meta["candidates"],
            probe_ratio=meta.get("probe_ratio", PROBE_RATIO),
            train_size=meta["train_size"],
            quantization=meta["quantization"],
            rerank=meta["rerank"],
            seed=meta["seed"],
            budget=budget,
        )

        def array(name: str) -> np.ndarray | None:
            path = os.path.join(directory, name)
            return np.load(path) if os.path.exists(path) else None  # None: an older snapshot

        def required(name: str) -> np.ndarray:
            found = array(name)
            assert found is not None, name
            return found

        vectors = required("vectors.npy")
        index.store = VectorStore(meta["dim"], vectors, array("positions.npy"))
        n = vectors.shape[0]
        index._grow(n)
        index._alive[:n] = required("alive.npy")
        index._leaf_of[:n] = required("leaf_of.npy")
        groups = array("group_of.npy")
        if groups is not None:
            index._group_of[:n] = groups
        centroids = required("centroids.npy")
        index._centroids = centroids if centroids.shape[0] else None
        top_of, top_centroids = array("top_of.npy"), array("top_centroids.npy")
        if top_of is not None and top_of.shape[0]:  # else a flat tree (or an older snapshot)
            index._top_of, index._top_centroids = top_of, top_centroids
        index._clustered_at = meta["clustered_at"]
        index._arranged_at = meta.get("arranged_at", 0)
        index._live = int(np.count_nonzero(index._alive[:n]))
        index._low, index._step = required("quantizer.npy")
        if index._centroids is not None:  # the codes are derived data: re-encode them
            index._append_codes(index.store.physical())
        return index
