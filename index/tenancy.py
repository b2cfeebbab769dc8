"""Tenants: who may see which rows, and a multi-tenant index in the spirit of Curator.

``TenantDirectory`` maps each tenant to the rows it may see (it owns them or they are shared
with it). Every collection keeps one, whatever its index, so a tenant-scoped search only ever
considers that tenant's rows.

``MultiTenantIndex`` (Curator, Jin et al.): one shared clustering of all vectors into leaves,
with per-tenant sub-structures: for each tenant, the leaves that hold its vectors and its row
list in each of them. A tenant's search ranks only its own leaves and scans only its own rows
there, so it costs about what a dedicated per-tenant index would, while every vector is stored
once (memory close to one shared index). The clustering here is one level deep (a root and its
leaves; Curator's tree is deeper), and a tenant's per-leaf lists are rebuilt lazily after
inserts. Leaves re-cluster when the collection has grown fourfold since the last clustering.

The vectors are laid out leaf by leaf, and by owner tenant within a leaf, so the rows a tenant
scans in a leaf are consecutive in memory (one stream the prefetcher follows, not a random
read per row). Rows inserted since are appended; the layout is redone once they are an eighth
of the collection.
"""

from __future__ import annotations

import os
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from shardwalk.index._kernels import probe_leaves, probe_leaves_sq8, scan_rows
from shardwalk.index.base import (
    IndexMetric,
    SearchResult,
    empty_result,
    read_meta,
    relabel,
    write_meta,
)
from shardwalk.index.store import VectorStore

from shardwalk._atomic import atomic_write

__all__ = ["MultiTenantIndex", "TenantDirectory"]


def _group(rows: np.ndarray, names: pa.Array) -> dict[str, np.ndarray]:
    """rows grouped by a parallel string array (nulls dropped)."""
    if len(names) == 0 or names.null_count == len(names):
        return {}
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
        codes = np.full(rows.size, -1, dtype=np.int32)
        for tenant, tenant_rows in groups[0].items():
            codes[np.searchsorted(rows, tenant_rows)] = self._codes.setdefault(
                tenant, len(self._codes)
            )
        return codes

    def rows(self, tenant: str) -> np.ndarray:
        chunks = self._chunks.get(tenant)
        if not chunks:
            return np.zeros(0, dtype=np.int64)
        if len(chunks) > 1:
            # an id shared with a tenant that also owns it is listed once
            merged = np.unique(np.concatenate(chunks))
            self._chunks[tenant] = [merged]
        return self._chunks[tenant][0]

    def version(self, tenant: str) -> int:
        return self._version.get(tenant, 0)

    def __contains__(self, tenant: object) -> bool:
        return tenant in self._chunks

    def tenants(self) -> list[str]:
        return sorted(self._chunks)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for chunks in self._chunks.values() for c in chunks)


class MultiTenantIndex:
    """One shared clustering of all vectors into leaves; per-tenant leaf lists (Curator).

    Parameters
    ----------
    dim, metric
        As for every index.
    leaves : int, optional
        Leaves of the shared clustering (default ``sqrt(n)`` at clustering time, 16-4096).
    nprobe : int, default 8
        Leaves a search visits at least (per query, among the leaves that hold rows it may see).
    candidates : int, default 256
        Rows a search scores at least before it stops visiting leaves (raised to 4 k).
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
    seed : int, default 0
    """

    kind = "multitenant"
    relayout_fraction = 8  # redo the layout once 1/8 of the rows were appended since

    def __init__(
        self,
        *,
        dim: int,
        metric: IndexMetric,
        leaves: int | None = None,
        nprobe: int = 8,
        candidates: int = 256,
        train_size: int | None = None,
        quantization: str = "none",
        rerank: int = 4,
        seed: int = 0,
    ) -> None:
        self.dim = dim
        self.quantization = quantization
        self.rerank = rerank
        self.metric: IndexMetric = metric
        self.leaves = leaves
        self.nprobe = nprobe
        self.candidates = candidates
        self.train_size = train_size or 4096
        self.seed = seed
        self.store = VectorStore(dim)  # shared with the collection: vectors stored once
        self._alive = np.zeros(1024, dtype=bool)
        self._leaf_of = np.zeros(1024, dtype=np.int32)
        self._group_of = np.full(1024, -1, dtype=np.int32)  # owner tenant code, for the layout
        self._centroids: np.ndarray | None = None
        self._clustered_at = 0
        self._arranged_at = 0
        self._live = 0
        self._packed_alive: np.ndarray | None = None  # _alive as a bitmap, rebuilt after writes
        self._lists: dict[Any, tuple[Any, ...]] = {}  # key -> (version, sub-structure arrays)
        # SQ8 codes in the vectors' physical order (codes[p] encodes physical()[p])
        self._codes = np.zeros((0, dim), dtype=np.uint8)
        self._n_codes = 0
        self._low = np.zeros(dim, dtype=np.float32)
        self._step = np.ones(dim, dtype=np.float32)

    def params(self) -> dict[str, Any]:
        return {
            "leaves": self.leaves,
            "nprobe": self.nprobe,
            "candidates": self.candidates,
            "quantization": self.quantization,
        }

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
    def add(
        self, labels: np.ndarray, vectors: np.ndarray, groups: np.ndarray | None = None
    ) -> None:
        """Append rows ``labels`` (continuing 0, 1, ...). ``groups`` (int per row, e.g. the
        owner tenant's code) keeps a group's rows together within each leaf."""
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size == 0:
            return
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
        if self._packed_alive is None:
            self._packed_alive = np.packbits(self._alive, bitorder="little")
        return self._packed_alive

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
        self._centroids = km.centroids.copy()
        self._leaf_of[:n] = self._assign(vectors)[self.store.positions(np.arange(n))]
        self._clustered_at = n
        if self.quantization == "sq8":
            self._low = vectors.min(axis=0).astype(np.float32)
            span = vectors.max(axis=0) - self._low
            self._step = np.where(span > 0, span / 255.0, 1.0).astype(np.float32)
        self._arrange()

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
    def _leaf_lists(
        self, key: Any, version: int, rows: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A tenant's (or everyone's, ``rows=None``) sub-structure, cached: the centroids of the
        leaves that hold its rows and their squared norms; offsets; its rows grouped by leaf
        (in physical order within a leaf, so a scan reads forward) and their positions."""
        cached = self._lists.get(key)
        if cached is not None and cached[0] == version:
            return cached[1], cached[2], cached[3], cached[4], cached[5]
        assert self._centroids is not None
        n = len(self.store)
        rows = np.arange(n, dtype=np.int64) if rows is None else rows
        leaf = self._leaf_of[rows]
        positions = self.store.positions(rows)
        order = np.lexsort((positions, leaf))
        rows_by_leaf, positions = rows[order], positions[order]
        leaf_ids, starts = np.unique(leaf[order], return_index=True)
        offsets = np.append(starts, rows.size).astype(np.int64)
        centroids = np.ascontiguousarray(self._centroids[leaf_ids])
        norms = (centroids * centroids).sum(axis=1)
        if key is not None:  # rows without a key are not cached
            self._lists[key] = (version, centroids, norms, offsets, rows_by_leaf, positions)
        return centroids, norms, offsets, rows_by_leaf, positions

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        nprobe: int | None = None,
        candidates: int | None = None,
        rows: np.ndarray | None = None,
        rows_key: Any = None,
        rows_version: int = 0,
        allowed: np.ndarray | None = None,
        allowed_bits: np.ndarray | None = None,
        **_: Any,
    ) -> SearchResult:
        """Top-k among ``rows`` (default: all) where ``allowed`` (default: live rows).

        ``rows_key``/``rows_version`` identify the row set (a tenant) for the cache of its
        per-leaf lists (no key: not cached); ``allowed_bits`` is ``allowed`` packed little-endian (saves packing).
        """
        n = queries.shape[0]
        if n == 0 or len(self.store) == 0:
            return empty_result(n, k)
        allowed = self._alive if allowed is None else allowed
        ip = self.metric == "ip"
        vectors = self.store.physical()
        if self._centroids is None:
            scan = np.arange(len(self.store), dtype=np.int64) if rows is None else rows
            scan = scan[allowed[scan]]
            local, distances = scan_rows(queries, vectors, self.store.positions(scan), k, ip)
            return SearchResult(ids=relabel(local, scan), distances=distances)
        if rows is None:
            rows_key, rows_version = ("__all__",), len(self.store)
        centroids, norms, offsets, by_leaf, positions = self._leaf_lists(
            rows_key, rows_version, rows
        )
        if allowed_bits is None:
            allowed_bits = (
                self._alive_bits()
                if allowed is self._alive
                else np.packbits(allowed, bitorder="little")
            )
        min_probe = nprobe or self.nprobe
        min_candidates = max(candidates or self.candidates, 4 * k)
        if self.quantization == "sq8":
            found, distances, _ = probe_leaves_sq8(
                queries,
                vectors,
                self._codes,
                self._low,
                self._step,
                centroids,
                norms,
                offsets,
                by_leaf,
                positions,
                allowed_bits,
                k,
                max(self.rerank * k, 32),
                min_probe,
                min_candidates,
                ip,
            )
        else:
            found, distances, _ = probe_leaves(
                queries,
                vectors,
                centroids,
                norms,
                offsets,
                by_leaf,
                positions,
                allowed_bits,
                k,
                min_probe,
                min_candidates,
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
        }
        for name, array in arrays.items():
            with atomic_write(os.path.join(directory, name)) as f:
                np.save(f, array)
        write_meta(
            directory,
            {
                "kind": self.kind,
                "dim": self.dim,
                "metric": self.metric,
                "seed": self.seed,
                "train_size": self.train_size,
                "clustered_at": self._clustered_at,
                "arranged_at": self._arranged_at,
                "nprobe": self.nprobe,
                "candidates": self.candidates,
                "leaves": self.leaves,
                "quantization": self.quantization,
                "rerank": self.rerank,
            },
        )

    @classmethod
    def load(cls, directory: str) -> MultiTenantIndex:
        meta = read_meta(directory, cls.kind)
        index = cls(
            dim=meta["dim"],
            metric=meta["metric"],
            leaves=meta["leaves"],
            nprobe=meta["nprobe"],
            candidates=meta["candidates"],
            train_size=meta["train_size"],
            quantization=meta["quantization"],
            rerank=meta["rerank"],
            seed=meta["seed"],
        )

        def array(name: str) -> np.ndarray | None:
            path = os.path.join(directory, name)
            return np.load(path) if os.path.exists(path) else None  # None: an older snapshot

        vectors = array("vectors.npy")
        assert vectors is not None
        index.store = VectorStore(meta["dim"], vectors, array("positions.npy"))
        n = vectors.shape[0]
        index._grow(n)
        index._alive[:n] = array("alive.npy")
        index._leaf_of[:n] = array("leaf_of.npy")
        groups = array("group_of.npy")
        if groups is not None:
            index._group_of[:n] = groups
        centroids = array("centroids.npy")
        index._centroids = centroids if centroids.shape[0] else None
        index._clustered_at = meta["clustered_at"]
        index._arranged_at = meta.get("arranged_at", 0)
        index._live = int(np.count_nonzero(index._alive[:n]))
        index._low, index._step = array("quantizer.npy")
        if index._centroids is not None:  # the codes are derived data: re-encode them
            index._append_codes(index.store.physical())
        return index
