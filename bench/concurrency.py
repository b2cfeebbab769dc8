"""Concurrency benchmark (issue 13): shardwalk's embedded engine under many threads, side by side
with Qdrant Edge (``qdrant-edge-py``, Qdrant's Rust engine in process), same process, same data.

Measured, each back to back under steady load:

1. search QPS and p50/p99 latency with 1, 2, 8 and 32 Python threads, each looping single-query
   searches (one query per call) for a fixed time; unfiltered and scoped to the "2% tenant"
   (``tenant=`` in shardwalk, a payload filter on the indexed tenant field in Qdrant Edge);
   recall@10 of the searches that ran, against exact search (exact within the tenant);
2. search p50/p99 while a checkpoint of 25% new rows runs (n/4 rows upserted in batches without
   flushing, then ``flush()`` in another thread), against p50/p99 measured just before;
3. acknowledged single-row upserts/s with 1 and 8 writer threads;
4. resident memory growth (psutil), each system built in a fresh subprocess: the shardwalk
   collection, raw hnswlib, faiss IndexHNSWFlat, Qdrant Edge.

The kernel on the benchmark machine pages out memory left idle for about a second, so every
timed run starts with a warm-up of the same loop (``--warmup``) and measures continuously right
after it, without a pause; runs follow each other without sleeping.

Data: ``shardwalk.datasets.clustered_vectors(n, 128, seed=0)``; tenants as in
bench/filtered.py (``zipf_tenants``: exact Zipf(1) sizes over ``--tenants`` tenants, so the 2%
tenant has about the same share at every n); the "2% tenant" is the one whose size is closest to
2% of n. HNSW M=16, efConstruction=200, ef=64 on both sides (shardwalk ``index="hnsw"``, or
``index="partitioned"``: 8 partitions with those parameters each; ``index="multitenant"`` has no
HNSW parameters and uses its defaults).

    python bench/concurrency.py                              # 100K, index hnsw: about 5 min on 2 cores
    python bench/concurrency.py --index multitenant
    # resident memory only, one system per fresh process (as --memory runs them):
    python bench/concurrency.py --memory-child shardwalk [--index partitioned] [--n 1000000]
    python bench/concurrency.py --memory-child hnswlib   # and faiss-hnsw
    python bench/concurrency.py --n 200000
    python bench/concurrency.py --n 1000000 --duration 5

Writes bench/results/concurrency-<dataset>-<n>-<index>.json and .png (QPS against threads).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: F401  (Run, hammer, recall, search_around: also imported from here)
    Run,
    engine_source,
    exact_truths,
    hammer,
    hnsw_flags,
    hnsw_params,
    keep_best,
    machine,
    package_version,
    point_at,
    pool_flags,
    pyplot,
    qps_ratio,
    recall,
    recorder,
    save_figure,
    search_around,
    two_percent_tenant,
    window_flags,
    write_results,
)
from _memory import PeakRSS, arrow_bytes, release_free_memory, rss_parts
from filtered import zipf_tenants

import shardwalk
from shardwalk.datasets import clustered_vectors

HERE = Path(__file__).resolve().parent
K = 10
SHARDWALK, QDRANT = "shardwalk", "qdrant-edge"
PHASES = ("search", "checkpoint", "writes")
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


# --- load generators ------------------------------------------------------------------------


# --- the measurements -----------------------------------------------------------------------
def measure_search(
    systems: list[System], data: Data, truth: dict[str, np.ndarray], args, log
) -> dict[str, Any]:
    """Per system, scope and thread count, the round with the highest QPS (the machine is
    shared: a slower round is interference, not the engine), with every round's QPS."""
    best: dict[tuple[str, str, int], dict[str, Any]] = {}
    nq = data.queries.shape[0]
    for round_ in range(args.rounds):
        for scope in (UNFILTERED, TENANT):
            for threads in args.threads:
                for system in systems:  # interleaved: each comparison is close in time
                    found, keep = recorder(nq, K)
                    run = hammer(
                        lambda i, s=system, sc=scope: s.search(i % nq, sc),
                        threads,
                        args.warmup,
                        args.duration,
                        record=keep,
                    )
                    point = run.summary()
                    point["qps"] = point.pop("per_second")
                    rec, ran = recall(found, truth[scope])
                    point["recall"], point["recall_queries"] = round(rec, 4), ran
                    keep_best(best, (system.name, scope, threads), point)
                    log(
                        f"search round {round_ + 1} {scope:>10} {system.name:>11} "
                        f"threads={threads:>2}: {point['qps']:>8,.0f} QPS p50={point['p50_us']}us "
                        f"p99={point['p99_us']}us max={point['max_us']}us "
                        f"recall={point['recall']:.3f} calls/thread "
                        f"{point['calls_per_thread_min']}-{point['calls_per_thread_max']}"
                        + (f" ERRORS={point['errors']}" if "errors" in point else "")
                        + (f" STUCK={point['stuck_threads']}" if "stuck_threads" in point else "")
                    )
    return {
        system.name: {
            scope: [best[(system.name, scope, t)] for t in args.threads]
            for scope in (UNFILTERED, TENANT)
        }
        for system in systems
    }


def measure_checkpoint(systems: list[System], data: Data, args, log) -> dict[str, Any]:
    out: dict[str, Any] = {}
    nq = data.queries.shape[0]
    extra = data.new_rows.shape[0]
    names = data.tenant_names(data.new_owner)
    for system in systems:
        ids = np.arange(data.base.shape[0], data.base.shape[0] + extra)
        t0 = time.perf_counter()
        for a in range(0, extra, args.checkpoint_batch):
            b = min(a + args.checkpoint_batch, extra)
            system.upsert(ids[a:b], data.new_rows[a:b], names[a:b])
        upsert_seconds = time.perf_counter() - t0
        result = search_around(
            lambda i, s=system: s.search(i % nq, UNFILTERED),
            args.checkpoint_search_threads,
            args.warmup,
            args.duration,
            system.checkpoint,
        )
        result["new_rows"] = extra
        result["upsert_seconds"] = round(upsert_seconds, 2)
        result["upsert_rows_per_second"] = round(extra / upsert_seconds, 1)
        out[system.name] = result
        log(
            f"checkpoint {system.name:>11}: {extra:,} rows upserted in {upsert_seconds:.1f}s, "
            f"flush {result['action_seconds']:.2f}s; search p50/p99 idle "
            f"{result['idle']['p50_us']}/{result['idle']['p99_us']}us, during "
            f"{result['during']['p50_us']}/{result['during']['p99_us']}us "
            f"(max {result['during']['max_us']}us, {result['during']['searches']} searches)"
        )
    return out


def measure_writes(systems: list[System], data: Data, args, log) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pool, owners = data.new_rows, data.tenant_names(data.new_owner)
    next_id = 10 * data.base.shape[0]  # beyond every id written so far
    modes: list[tuple[str, System, bool]] = []
    for system in systems:
        modes.append((system.name, system, False))
        if isinstance(system, QdrantEdge):
            modes.append((f"{system.name}+flush", system, True))
    for threads in args.writers:
        for name, system, flush in modes:
            base = next_id
            next_id += 10**9

            def write(i: int, s=system, base=base, flush=flush) -> None:
                j = i % pool.shape[0]
                s.upsert(np.array([base + i]), pool[j : j + 1], [owners[j]])
                if flush:
                    s.checkpoint()

            groups_before = system.counters()
            run = hammer(write, threads, args.warmup, args.duration)
            point = run.summary()
            groups_after = system.counters()
            if groups_before and groups_after:  # warm-up included: writes per fsync
                groups = groups_after["groups"] - groups_before["groups"]
                writes = groups_after["writes"] - groups_before["writes"]
                point["writes_per_group_commit"] = round(writes / max(groups, 1), 2)
            point["upserts_per_second"] = point.pop("per_second")
            out.setdefault(name, []).append(point)
            log(
                f"writes {name:>17} writers={threads}: {point['upserts_per_second']:>8,.0f}/s "
                f"p50={point['p50_us']}us p99={point['p99_us']}us "
                f"calls/thread {point['calls_per_thread_min']}-{point['calls_per_thread_max']}"
                + (f" ERRORS={point['errors']}" if "errors" in point else "")
                + (f" STUCK={point['stuck_threads']}" if "stuck_threads" in point else "")
            )
    return out


def fsync_p50_us(directory: str | None, appends: int = 200) -> float:
    """Median time of a 100-byte append plus fsync where the collections live: the floor
    of a durable single-row write."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        fd = os.open(os.path.join(tmp, "probe"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            times = []
            for _ in range(appends):
                t0 = time.perf_counter()
                os.write(fd, b"x" * 100)
                os.fsync(fd)
                times.append(time.perf_counter() - t0)
        finally:
            os.close(fd)
    return round(float(np.median(times)) * 1e6, 1)


# --- memory, one fresh process per system ---------------------------------------------------
MEMORY_SYSTEMS = ("shardwalk", "hnswlib", "faiss-hnsw", "qdrant-edge")


def memory_child(args: argparse.Namespace) -> dict[str, Any]:
    """Build one system in this (fresh) process; resident growth after the build and one search."""
    data = load(args)
    base, q = data.base, data.queries[:1]
    n, dim = base.shape
    which = args.memory_child
    proc = psutil.Process()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        if which == "shardwalk":
            # numba's runtime (~50 MiB, once per process whatever the data) and the imports load
            # before the baseline, as in bench/filtered.py
            warm = shardwalk.Engine.memory().create_collection("warm", dim=dim, index=args.index)
            warm.upsert(np.arange(256), base[:256], tenants=["w"] * 256)
            warm.search(q, k=K)
            warm.search(q, k=K, tenant="w")
            del warm
        elif which == "qdrant-edge":
            import qdrant_edge  # noqa: F401
        elif which == "faiss-hnsw":
            import faiss

            faiss.omp_set_num_threads(args.build_threads)
        elif which == "hnswlib":
            import hnswlib
        gc.collect()
        before, parts_before = proc.memory_info().rss, rss_parts()
        arrow_before = arrow_bytes()
        t0 = time.perf_counter()
        with PeakRSS() as peak:
            if which == "shardwalk":
                system: Any = Shardwalk(
                    data, args, os.path.join(tmp, "sw"), checkpoint=not args.memory_no_flush
                )
                system.search(0, UNFILTERED)
            elif which == "qdrant-edge":
                system = QdrantEdge(data, args, os.path.join(tmp, "qe"))
                system.search(0, UNFILTERED)
            elif which == "hnswlib":
                import hnswlib

                system = hnswlib.Index(space="l2", dim=dim)
                system.init_index(
                    max_elements=n, M=args.m, ef_construction=args.ef_construction, random_seed=0
                )
                system.add_items(base, np.arange(n), num_threads=args.build_threads)
                system.set_ef(args.ef)
                system.knn_query(q, k=K, num_threads=1)
            else:
                import faiss

                system = faiss.IndexHNSWFlat(dim, args.m)
                system.hnsw.efConstruction = args.ef_construction
                system.add(base)
                system.hnsw.efSearch = args.ef
                system.search(q, K)
        seconds = time.perf_counter() - t0
        gc.collect()
        after, parts_after = proc.memory_info().rss, rss_parts()
        arrow_after = arrow_bytes()
        trimmed = release_free_memory()
        after_trim = proc.memory_info().rss
        if hasattr(system, "close"):
            system.close()
    return {
        "system": which,
        "flushed": which == "shardwalk" and not args.memory_no_flush,
        "resident_mib": round((after - before) / 2**20, 1),
        "peak_mib": round((max(peak.peak, after) - before) / 2**20, 1),
        "build_seconds": round(seconds, 1),
        "vectors_mib": round(base.nbytes / 2**20, 1),
        "arrow_pool_mib": round((arrow_after - arrow_before) / 2**20, 1),
        # what stays once the allocators hand freed memory back (Arrow's pool, glibc's heap):
        # the live data; the difference is memory the process holds but does not use
        "resident_after_trim_mib": round((after_trim - before) / 2**20, 1) if trimmed else None,
        **{
            f"{key[3:].lower()}_mib": round((parts_after[key] - parts_before[key]) / 2**20, 1)
            for key in parts_after
            if key in parts_before
        },
    }


def measure_memory(args: argparse.Namespace, log) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for which in args.memory:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", which]
        cmd += [f"--n={args.n}", f"--dim={args.dim}", f"--tenants={args.tenants}"]
        cmd += [f"--queries={args.queries}", f"--seed={args.seed}", f"--index={args.index}"]
        cmd += [f"--m={args.m}", f"--ef-construction={args.ef_construction}", f"--ef={args.ef}"]
        cmd += [f"--build-threads={args.build_threads}", f"--build-batch={args.build_batch}"]
        cmd += [f"--qdrant-segments={args.qdrant_segments}"]
        cmd += [f"--tmp={args.tmp}"] if args.tmp else []
        cmd += [f"--qdrant-full-scan-kb={args.qdrant_full_scan_kb}"]
        cmd += ["--memory-no-flush"] if args.memory_no_flush else []
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.memory_timeout)
        if done.returncode != 0:
            out[which] = {"error": done.stderr.strip().splitlines()[-1:]}
            log(f"memory {which}: FAILED {done.stderr.strip()[-500:]}")
            continue
        out[which] = json.loads(done.stdout.strip().splitlines()[-1])
        log(
            f"memory {which:>11}: +{out[which]['resident_mib']:.0f} MiB resident "
            f"(anonymous +{out[which].get('anon_mib')}, mapped files +{out[which].get('file_mib')}; "
            f"peak +{out[which]['peak_mib']:.0f}; +{out[which]['resident_after_trim_mib']} once "
            f"freed memory is trimmed), built in {out[which]['build_seconds']}s"
        )
    return out


# --- report ---------------------------------------------------------------------------------
def ratios(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    search = result.get("search", {})

    def at(system: str, scope: str, threads: int) -> dict[str, Any] | None:
        return point_at(search, system, scope, threads)

    for system in search:
        for scope in (UNFILTERED, TENANT):
            ratio = qps_ratio(at(system, scope, 8), at(system, scope, 1))
            if ratio is not None:
                out[f"{system} {scope} qps 8 threads / 1 thread"] = ratio
    if QDRANT in search:
        for scope in (UNFILTERED, TENANT):
            ratio = qps_ratio(at(SHARDWALK, scope, 8), at(QDRANT, scope, 8))
            if ratio is not None:
                out[f"{scope} qps at 8 threads shardwalk / qdrant-edge"] = ratio
    for system, r in result.get("checkpoint", {}).items():
        if "p99_ratio_during_vs_idle" in r:
            out[f"{system} search p99 during checkpoint / idle"] = r["p99_ratio_during_vs_idle"]
    for name, points in result.get("writes", {}).items():
        by = {p["threads"]: p["upserts_per_second"] for p in points}
        if 1 in by and 8 in by and by[1]:
            out[f"{name} upserts/s 8 writers / 1 writer"] = round(by[8] / by[1], 3)
    memory = result.get("memory", {})
    sw, hl = memory.get("shardwalk", {}), memory.get("hnswlib", {})
    if sw.get("resident_mib") and hl.get("resident_mib"):
        out["memory shardwalk / hnswlib"] = round(sw["resident_mib"] / hl["resident_mib"], 3)
    if sw.get("resident_after_trim_mib") and hl.get("resident_after_trim_mib"):
        out["memory shardwalk / hnswlib, after trimming freed memory"] = round(
            sw["resident_after_trim_mib"] / hl["resident_after_trim_mib"], 3
        )
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(20, 5))
    for system, scopes in result["search"].items():
        for ax, scope in zip(axes[:2], (UNFILTERED, TENANT)):
            pts = scopes[scope]
            ax.plot([p["threads"] for p in pts], [p["qps"] for p in pts], marker="o", label=system)
        for ax, key in ((axes[2], "p99_us"), (axes[3], "max_us")):
            for scope, style in ((UNFILTERED, "-"), (TENANT, "--")):
                pts = scopes[scope]
                ax.plot(
                    [p["threads"] for p in pts],
                    [p[key] for p in pts],
                    style,
                    marker="o",
                    label=f"{system} {scope}",
                )
    titles = [
        f"search, {UNFILTERED}",
        f"search, {TENANT}",
        "p99 latency",
        "max latency (a thread kept waiting shows here)",
    ]
    for ax, title in zip(axes, titles):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("Python threads (one query per call)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("queries per second")
    axes[1].set_ylabel("queries per second")
    for ax in axes[2:]:
        ax.set_ylabel("latency (us)")
        ax.set_yscale("log")
    save_figure(
        fig,
        path,
        f"{result['dataset']}, shardwalk index={result['index']}: "
        f"M={result['params']['m']} efC={result['params']['ef_construction']} "
        f"ef={result['params']['ef']}, {result['machine']['cpus']} CPUs",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    data = load(args)
    log = lambda msg: print(  # noqa: E731
        f"[{time.perf_counter() - t_start:6.1f}s {data.name} {args.index}] {msg}", flush=True
    )
    log(
        f"2% tenant: {data.tenant} with {data.tenant_rows:,} rows "
        f"({data.tenant_rows / args.n:.2%}); warm-up {args.warmup}s then {args.duration}s measured "
        "continuously per run (idle memory is paged out here after ~1 s)"
    )
    source = engine_source()
    truth = ground_truth(data)
    load_before = os.getloadavg()
    tmp = tempfile.TemporaryDirectory(dir=args.tmp, prefix="concurrency-")
    systems: list[System] = []
    built: dict[str, Any] = {}
    if args.phases:  # (memory alone builds each system in a process of its own)
        sw = Shardwalk(data, args, os.path.join(tmp.name, "shardwalk"))
        systems.append(sw)
        log(
            f"shardwalk {args.index}: built in {sw.build_seconds:.1f}s (+ first checkpoint "
            f"{sw.flush_seconds:.1f}s); planner paths {sw.paths}"
        )
        built[SHARDWALK] = {
            "build_seconds": round(sw.build_seconds, 1),
            "checkpoint_seconds": round(sw.flush_seconds, 2),
            "paths": sw.paths,
        }
    if args.phases and not args.no_qdrant:
        qd = QdrantEdge(data, args, os.path.join(tmp.name, "qdrant"))
        systems.append(qd)
        built[QDRANT] = {
            "build_seconds": round(qd.build_seconds, 1),
            "upsert_seconds": round(qd.upsert_seconds, 1),
            **qd.info,
        }
        log(f"qdrant-edge: built in {qd.build_seconds:.1f}s, {qd.info}")
    result: dict[str, Any] = {
        "command": shlex.join(["python", *sys.argv]),
        "dataset": data.name,
        "n": args.n,
        "dim": args.dim,
        "index": args.index,
        "k": K,
        "tenant": {"name": data.tenant, "rows": data.tenant_rows},
        "params": {
            **hnsw_params(args),
            "warmup_seconds": args.warmup,
            "duration_seconds": args.duration,
            "search_rounds": args.rounds,
            "threads": args.threads,
            "writers": args.writers,
            "checkpoint_search_threads": args.checkpoint_search_threads,
            "engine": args.engine,
            "checkpoint_batch": args.checkpoint_batch,
            "qdrant_segments": args.qdrant_segments,
            "qdrant_full_scan_threshold_kb": args.qdrant_full_scan_kb,
        },
        "method": (
            f"each run: threads loop one call back to back; {args.warmup}s warm-up then "
            f"{args.duration}s measured continuously (throughput = calls completed in the "
            "window); runs back to back, systems interleaved per setting. Idle memory is paged "
            "out on this machine after ~1 s, hence the warm-up with no pause before measuring."
        ),
        "built": built,
    }
    if "search" in args.phases:
        result["search"] = measure_search(systems, data, truth, args, log)
    if "checkpoint" in args.phases:
        result["checkpoint"] = measure_checkpoint(systems, data, args, log)
    if "writes" in args.phases:
        result["fsync_p50_us"] = fsync_p50_us(args.tmp)
        log(f"fsync of a 100-byte append: p50 {result['fsync_p50_us']} us")
        result["writes"] = measure_writes(systems, data, args, log)
    for system in systems:
        system.close()
    tmp.cleanup()
    del systems
    gc.collect()
    if args.memory:
        result["memory"] = measure_memory(args, log)
    if not args.no_qdrant:
        result["qdrant_edge_api"] = {"version": package_version("qdrant-edge-py"), **QDRANT_API}
    result["shardwalk_source"] = source
    versions = {
        "shardwalk": shardwalk.__version__,
        "hnswlib": package_version("hnswlib"),
        "faiss": package_version("faiss-cpu"),
    }
    result["machine"] = machine(load_before, versions)
    result["ratios"] = ratios(result)
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    parser.add_argument("--dataset", choices=["clustered"], default="clustered")
    parser.add_argument("--n", type=int, default=100_000, help="also run 200000 and 1000000")
    pool_flags(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", choices=["hnsw", "partitioned", "multitenant"], default="hnsw")
    hnsw_flags(parser)
    parser.add_argument("--threads", type=ints, default=[1, 2, 8, 32], help="search threads")
    parser.add_argument("--writers", type=ints, default=[1, 8], help="writer threads")
    window_flags(parser, "run", "search rounds (each point keeps its best)")
    parser.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--build-batch", type=int, default=50_000, help="rows per build upsert")
    parser.add_argument("--checkpoint-batch", type=int, default=1000)
    parser.add_argument("--checkpoint-search-threads", type=int, default=1)
    parser.add_argument(
        "--qdrant-segments", type=int, default=1, help="Qdrant default_segment_number (0: auto)"
    )
    parser.add_argument(
        "--qdrant-full-scan-kb",
        type=int,
        default=10_000,
        help="Qdrant full_scan_threshold (KB of vectors; 10000 is Qdrant's default)",
    )
    parser.add_argument("--no-qdrant", action="store_true")
    parser.add_argument(
        "--engine",
        choices=["disk", "memory"],
        default="disk",
        help="shardwalk with a data directory (durable writes) or in memory (no log, no fsync)",
    )
    parser.add_argument(
        "--memory",
        type=lambda s: [x for x in s.split(",") if x],
        default=list(MEMORY_SYSTEMS),
        help=f"systems whose memory to measure, each in a fresh process ({','.join(MEMORY_SYSTEMS)}; '' for none)",
    )
    parser.add_argument("--memory-timeout", type=float, default=1800)
    parser.add_argument(
        "--memory-no-flush",
        action="store_true",
        help="measure the shardwalk collection before its first checkpoint (default: after it)",
    )
    parser.add_argument("--memory-child", choices=MEMORY_SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--tmp", default=None, help="directory for the collections (default: TMPDIR)"
    )
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument(
        "--phases",
        type=lambda s: [x for x in s.split(",") if x],
        default=list(PHASES),
        help=f"what to measure, of {','.join(PHASES)} (memory: --memory)",
    )
    parser.add_argument(
        "--label", default="", help="added to the results file's name (e.g. the engine's tree)"
    )
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args)), flush=True)
        return
    if any(m not in MEMORY_SYSTEMS for m in args.memory):
        parser.error(f"--memory takes names among {', '.join(MEMORY_SYSTEMS)}; got {args.memory}")
    result = run(args)
    stem = f"concurrency-{args.dataset}-{args.n}-{args.index}"
    if args.phases != list(PHASES):
        stem += "-" + ("-".join(args.phases) or "memory")
    if args.label:
        stem += f"-{args.label}"
    out = write_results(args.out, stem, result)
    if "search" in result:
        plot(result, out / f"{stem}.png")
    print(json.dumps(result["ratios"], indent=1))


if __name__ == "__main__":
    main()
