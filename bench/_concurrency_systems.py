"""bench/concurrency.py's data and the systems it times: the clustered vectors with Zipf tenants
(the 2% tenant, the checkpoint's new rows) and their exact truths, the :class:`System` calls the
benchmark makes, shardwalk's embedded collection and Qdrant Edge behind them, and what Qdrant
Edge's API offers for each concern (``QDRANT_API``, recorded with the results)."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from _common import exact_truths, two_percent_tenant
from filtered import zipf_tenants

import shardwalk
from shardwalk.datasets import clustered_vectors

K = 10
SHARDWALK, QDRANT = "shardwalk", "qdrant-edge"
UNFILTERED, TENANT = "unfiltered", "tenant-2%"


# --- data -----------------------------------------------------------------------------------
@dataclass
class Data:
    name: str
    base: np.ndarray  # (n, dim) float32; ids are row numbers
    queries: np.ndarray  # (q, dim)
    owner: np.ndarray  # (n,) tenant number per row
    new_rows: np.ndarray  # (n // 4, dim): the checkpoint's new rows, also the writes' vectors
    new_owner: np.ndarray  # (n // 4,)
    tenant: str = ""  # the 2% tenant's name
    tenant_rows: int = 0

    def tenant_names(self, owner: np.ndarray) -> list[str]:
        return [f"t{t:04d}" for t in owner.tolist()]


def load(args: argparse.Namespace) -> Data:
    extra = args.n // 4
    # one draw: base first (identical to clustered_vectors(n, dim, seed)), then the queries and
    # the new rows from the same clusters
    data = clustered_vectors(
        args.n, args.dim, queries=args.queries + extra, seed=args.seed, metadata=False
    )
    rng = np.random.default_rng(args.seed)
    owner = zipf_tenants(args.n, args.tenants, rng)
    two, sizes = two_percent_tenant(owner, args.tenants, args.n)
    return Data(
        name=f"clustered-{args.n}x{args.dim}-{args.tenants}tenants",
        base=data.vectors,
        queries=np.ascontiguousarray(data.queries[: args.queries]),
        owner=owner,
        new_rows=np.ascontiguousarray(data.queries[args.queries :]),
        new_owner=owner[rng.integers(0, args.n, extra)],
        tenant=f"t{two:04d}",
        tenant_rows=int(sizes[two]),
    )


def ground_truth(data: Data) -> dict[str, np.ndarray]:
    plain, scoped = exact_truths(data.base, data.queries, K, data.owner == int(data.tenant[1:]))
    return {UNFILTERED: plain, TENANT: scoped}


# --- systems --------------------------------------------------------------------------------
class System:
    """One engine behind the few calls the benchmark makes."""

    name: str

    def search(self, query: int, scope: str) -> np.ndarray: ...
    def upsert(self, ids: np.ndarray, vectors: np.ndarray, tenants: list[str]) -> None: ...
    def checkpoint(self) -> None: ...
    def close(self) -> None: ...
    def counters(self) -> dict[str, int] | None:
        return None


class Shardwalk(System):
    name = SHARDWALK

    def __init__(
        self, data: Data, args: argparse.Namespace, path: str, checkpoint: bool = True
    ) -> None:
        self.queries = data.queries
        self.tenant = data.tenant
        # "memory": no log and no fsync, the writes' CPU path alone
        memory = getattr(args, "engine", "disk") == "memory"
        self.engine = shardwalk.Engine.memory() if memory else shardwalk.Engine.open(path)
        params: dict[str, Any] = {}
        if args.index in ("hnsw", "partitioned"):
            params = {"m": args.m, "ef_construction": args.ef_construction, "ef": args.ef}
            params["threads"] = args.build_threads
        self.col = self.engine.create_collection(
            "bench", dim=data.base.shape[1], index=args.index, **params
        )
        t0 = time.perf_counter()
        names = data.tenant_names(data.owner)
        for a in range(0, data.base.shape[0], args.build_batch):
            b = min(a + args.build_batch, data.base.shape[0])
            self.col.upsert(np.arange(a, b), data.base[a:b], tenants=names[a:b])
        self.build_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        if checkpoint:  # the build as a snapshot: later writes go to a fresh log
            self.col.flush()
        self.flush_seconds = time.perf_counter() - t0
        self.paths = {
            UNFILTERED: self.col.explain(self.queries[0], k=K).path,
            TENANT: self.col.explain(self.queries[0], k=K, tenant=self.tenant).path,
        }

    def search(self, query: int, scope: str) -> np.ndarray:
        q = self.queries[query]
        if scope == TENANT:
            return self.col.search(q, k=K, tenant=self.tenant).ids[0]
        return self.col.search(q, k=K).ids[0]

    def upsert(self, ids: np.ndarray, vectors: np.ndarray, tenants: list[str]) -> None:
        self.col.upsert(ids, vectors, tenants=tenants)

    def checkpoint(self) -> None:
        self.col.flush()

    def counters(self) -> dict[str, int] | None:
        """Group commits so far ({"groups", "writes"}), where the engine reports them."""
        return self.col.stats().get("group_commits")

    def close(self) -> None:
        self.engine.close()


class QdrantEdge(System):
    """Qdrant Edge: one shard, HNSW M/ef_construct as ours, a keyword payload index on "tenant"
    (``is_tenant=True``) created before the points, so the HNSW build adds per-tenant links
    (``payload_m``); the optimizer merges into one indexed segment (as one HNSW graph here)."""

    name = QDRANT

    def __init__(self, data: Data, args: argparse.Namespace, path: str) -> None:
        import qdrant_edge as qe

        self.qe = qe
        self.queries = [q.tolist() for q in data.queries]
        dim = data.base.shape[1]
        n = data.base.shape[0]
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Euclid),
            hnsw_config=qe.HnswIndexConfig(
                m=args.m,
                ef_construct=args.ef_construction,
                full_scan_threshold=args.qdrant_full_scan_kb,
                max_indexing_threads=args.build_threads,
                payload_m=args.m,
            ),
            optimizers=qe.EdgeOptimizersConfig(
                default_segment_number=args.qdrant_segments,
                indexing_threshold=1,  # KB: index everything the optimizer touches
                max_segment_size=max(1, 2 * n * dim * 4 // 1024),
            ),
            payload_memory=qe.Memory.Cached,  # in RAM, as shardwalk's tenant columns
        )
        self.shard = qe.EdgeShard.create(path, config)
        self.shard.update(
            qe.UpdateOperation.create_field_index("tenant", qe.KeywordIndexParams(is_tenant=True))
        )
        t0 = time.perf_counter()
        names = data.tenant_names(data.owner)
        for a in range(0, n, args.build_batch):
            b = min(a + args.build_batch, n)
            self._upsert_points(range(a, b), data.base[a:b], names[a:b])
        self.upsert_seconds = time.perf_counter() - t0
        self.shard.optimize()  # builds the HNSW graph (Edge has no background optimizer)
        self.shard.flush()
        self.build_seconds = time.perf_counter() - t0
        info = self.shard.info()
        self.info = {
            "segments": info.segments_count,
            "points": info.points_count,
            "indexed_vectors": info.indexed_vectors_count,
        }
        self.params = qe.SearchParams(hnsw_ef=args.ef)
        self.filter = qe.Filter(
            must=[qe.FieldCondition("tenant", match=qe.MatchValue(data.tenant))]
        )

    def _upsert_points(self, ids: Any, vectors: np.ndarray, tenants: list[str]) -> None:
        qe = self.qe
        points = [
            qe.Point(int(i), v, {"tenant": t}) for i, v, t in zip(ids, vectors.tolist(), tenants)
        ]
        self.shard.update(qe.UpdateOperation.upsert_points(points))

    def search(self, query: int, scope: str) -> np.ndarray:
        qe = self.qe
        request = qe.QueryRequest(
            limit=K,
            query=qe.Query.Nearest(self.queries[query]),
            filter=self.filter if scope == TENANT else None,
            params=self.params,
        )
        return np.array([p.id for p in self.shard.query(request)], dtype=np.int64)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray, tenants: list[str]) -> None:
        self._upsert_points(ids.tolist(), vectors, tenants)

    def checkpoint(self) -> None:
        self.shard.flush()

    def close(self) -> None:
        self.shard.close()


QDRANT_API = {
    "hnsw": "HnswIndexConfig(m, ef_construct, full_scan_threshold, max_indexing_threads, "
    "payload_m, on_disk/memory, inline_storage); ef per search: SearchParams(hnsw_ef)",
    "tenant": "create_field_index('tenant', KeywordIndexParams(is_tenant=True)) before the "
    "points; filter Filter(must=[FieldCondition('tenant', match=MatchValue(name))]); the planner "
    "scores a filter matching fewer than full_scan_threshold KB of vectors exactly from the "
    "payload index, else filtered HNSW traversal",
    "durability": "update() appends to a memory-mapped WAL and returns with no fsync or msync "
    "(checked with strace): an acknowledged update survives a process crash, not an OS crash or "
    "power loss, until flush() (msync + fsync of the WAL and segments). WAL options are "
    "Rust-only; wal_enabled=False makes updates durable only at flush(). The '+flush' write mode "
    "acknowledges after update() and flush(): the durable equivalent of shardwalk's upsert.",
    "index build": "optimize() builds HNSW in the caller's thread (Edge has no background "
    "optimizer); until then new points sit in an unindexed appendable segment, scanned exactly",
}
