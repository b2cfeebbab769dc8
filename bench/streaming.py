"""Reads under writes (issue 26, items 3 and 4), in the manner of the NeurIPS'23 Big-ANN streaming
track, shardwalk side by side with Qdrant Edge (``qdrant-edge-py``) in the same run.

1. **Runbook** (every dataset): a sliding window. The first ``window`` rows are inserted and
   indexed; then each step inserts the next ``chunk`` rows (upserts of ``--write-batch`` rows),
   deletes the ``chunk`` oldest, and runs a search step at once, without waiting for any
   index: ``--queries`` queries, plain, tenant-scoped and filtered, whose recall@10 is taken
   against the exact answer over the rows live at that step (in that scope).
2. **Searches under a writer** (the clustered dataset, its window after the runbook): one
   caller loops single-query searches (plain, tenant-scoped, filtered) while a writer thread
   upserts new rows at a fixed rate (100, 1,000, 5,000 rows/s; single rows and batches of 10)
   and deletes as many of the oldest (the window slides). Per rate and scope, ``--cycles``
   slices of ``--slice`` seconds with the writer on alternate with as many with it off (at
   rest: once the writes' background index work is done, shardwalk's compaction and delta
   indexing and Qdrant Edge's optimizer run, then 0.1 s): the machine's load, which other work
   moves, falls on both alike. QPS and p99 writing and at rest, and the rate the writer achieved. Each rate runs
   on both systems back to back, each settled (indexed, compacted, optimized) before its turn.
3. ``--server``: the same through the gRPC server (shardwalk only: Qdrant Edge has no server):
   a server on 127.0.0.1 port 0 with quotas on every key (calls in flight and a token bucket
   above the load), a writer client in a process of its own streaming upserts and deletes
   with an admin key (switched on and off by the bench), and a searcher client (a tenant key
   for the tenant scope).

Qdrant Edge runs as its users run it: updates go to its appendable (growing) segment, scanned
exactly; a maintenance thread calls ``optimize()`` (Edge has no background optimizer of its
own: its optimizations are manual) every 0.2 s, which indexes, merges and vacuums segments per
its optimizer config (defaults; vacuum at 20% deleted, as shardwalk's compaction).
qdrant-edge-py's ``optimize()`` holds the GIL while it runs (an HNSW build: a second or more),
so every Python thread of the process, the writer's and the searcher's, stands still
meanwhile: each point records the share of its writer and at-rest slices that optimize()
calls overlapped (``optimize_overlap``), which is what holds Qdrant Edge's writer below its
rate when a long one lands in a writer slice (it catches up at most a second's worth). Same HNSW
parameters on both sides (M=16, efConstruction=100, ef=64); tenants in a keyword payload index
(``is_tenant``), ``y`` in an integer index; its indexing threshold at 2 MiB, shardwalk's write
delta (its default, 10-20 MB, would leave the whole window unindexed). Shardwalk: an hnsw
collection, background indexing of the write delta and background compaction at their
defaults; ``--engine memory`` (the default: no log, as Qdrant Edge's ``update()`` returns
before any fsync) or ``disk`` (every write fsynced before it returns: one writer thread then
writes no faster than the disk syncs). Python's GIL switch interval is 0.5 ms
(``--switch-interval``; the default 5 ms lets a searching thread hold up the writer's every
blocking call by up to 5 ms, and the other way round).

Data: clustered (``clustered_vectors``, 64 dims; 100 Zipf tenants, tenant t5 searched, about
3% of the rows; an integer ``y`` uniform in 0-29, filter ``y < 3``) and mnist-784 from
../shared/data (9,000 rows; the digit as tenant, d5 searched; ``y`` as above).

    python bench/streaming.py                # clustered 60K (window 30K) + mnist, ~10 min
    python bench/streaming.py --server       # the server variant
    python bench/report.py streaming-clustered-60000  # the tables of bench/README.md

Writes bench/results/streaming-<dataset>-<n>[-server][-disk].json (commit, load at start and
end, parameters, every figure).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SlidingWriter
from filtered import zipf_tenants
from shardwalk.index import exact_search

import shardwalk
from shardwalk import F
from shardwalk.datasets import clustered_vectors

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# ../shared/data beside the checkout (or SHARDWALK_SHARED_DATA, e.g. from a worktree elsewhere)
DATA = Path(os.environ.get("SHARDWALK_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
K = 10
SCOPES = ("plain", "tenant", "filter")
Y_BELOW = 3  # the filter: y < 3 (10% of the rows)
M, EF_CONSTRUCTION, EF = 16, 100, 64


# --- data -----------------------------------------------------------------------------------
@dataclass
class Data:
    name: str
    pool: np.ndarray  # (n, dim) float32: row i is id i; later ids reuse row id % n
    queries: np.ndarray
    tenants: np.ndarray  # (n,) tenant number per row
    y: np.ndarray  # (n,) int
    tenant: int  # the tenant searched
    prefix: str  # tenant names: prefix + number

    def names(self, ids: np.ndarray) -> list[str]:
        return [f"{self.prefix}{t}" for t in self.tenants[ids % len(self.pool)].tolist()]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        return self.pool[ids % len(self.pool)]

    def ys(self, ids: np.ndarray) -> list[int]:
        return self.y[ids % len(self.pool)].tolist()


def clustered(n: int, queries: int, seed: int) -> Data:
    data = clustered_vectors(n, 64, queries=queries, seed=seed, metadata=False)
    rng = np.random.default_rng(seed)
    return Data(
        name=f"clustered-{n}",
        pool=data.vectors,
        queries=np.ascontiguousarray(data.queries),
        tenants=zipf_tenants(n, 100, rng),
        y=rng.integers(0, 30, n),
        tenant=5,
        prefix="t",
    )


def mnist(queries: int, seed: int) -> Data:
    folder = DATA / "mnist-784-euclidean-test10k"
    rng = np.random.default_rng(seed)
    base = np.load(folder / "base.npy")
    return Data(
        name="mnist",
        pool=np.ascontiguousarray(base),
        queries=np.ascontiguousarray(np.load(folder / "query.npy")[:queries]),
        tenants=np.load(folder / "base_labels.npy").astype(np.int64),
        y=rng.integers(0, 30, base.shape[0]),
        tenant=5,
        prefix="d",
    )


def truth(data: Data, lo: int, hi: int, scope: str) -> np.ndarray:
    """The exact top-k ids over the live ids lo..hi-1 (ids below n: their own rows)."""
    ids = np.arange(lo, hi)
    keep = np.ones(ids.size, dtype=bool)
    if scope == "tenant":
        keep = data.tenants[ids % len(data.pool)] == data.tenant
    elif scope == "filter":
        keep = data.y[ids % len(data.pool)] < Y_BELOW
    found = exact_search(data.rows(ids), data.queries, K, "l2", mask=keep).ids
    return np.where(found >= 0, ids[np.maximum(found, 0)], -1)


def recall(found: list[np.ndarray], exact: np.ndarray) -> float:
    hits = [
        len(set(f.tolist()) & set(t[t >= 0].tolist())) / max(int((t >= 0).sum()), 1)
        for f, t in zip(found, exact)
    ]
    return float(np.mean(hits))


# --- systems --------------------------------------------------------------------------------
class Shardwalk:
    name = "shardwalk"

    def __init__(self, data: Data, path: str, engine: str = "memory") -> None:
        self.data = data
        # "disk": a data directory, every write fsynced before it returns; "memory": no log
        # (as Qdrant Edge's update(), which returns before any fsync)
        self.engine = shardwalk.Engine.open(path) if engine == "disk" else shardwalk.Engine.memory()
        self.col = self.engine.create_collection(
            "stream",
            dim=data.pool.shape[1],
            index="hnsw",
            m=M,
            ef_construction=EF_CONSTRUCTION,
            ef=EF,
            attributes={"y": "int64"},
        )
        self.where = F("y") < Y_BELOW
        self.tenant = f"{data.prefix}{data.tenant}"

    def upsert(self, ids: np.ndarray) -> None:
        d = self.data
        self.col.upsert(ids, d.rows(ids), tenants=d.names(ids), attributes={"y": d.ys(ids)})

    def delete(self, ids: np.ndarray) -> None:
        self.col.delete(ids)

    def search(self, q: np.ndarray, scope: str) -> np.ndarray:
        if scope == "tenant":
            return self.col.search(q, k=K, tenant=self.tenant).ids[0]
        if scope == "filter":
            return self.col.search(q, k=K, where=self.where).ids[0]
        return self.col.search(q, k=K).ids[0]

    def quiet(self) -> None:
        """At rest: the writes' background index work done (a compaction they started run to
        its end, as Qdrant Edge's optimize() below; the delta indexed: its last turn runs once
        no write came for a moment), then 0.1 s."""
        self.col.wait_compacted()
        end = time.perf_counter() + 10.0
        while self.col.stats()["delta"]["rows"] and time.perf_counter() < end:
            time.sleep(0.01)
        time.sleep(0.1)

    def settle(self) -> None:
        """Everything indexed and compacted (as a collection at rest is)."""
        self.col.wait_compacted()
        self.col.wait_indexed()

    def info(self) -> dict[str, Any]:
        s = self.col.stats()
        return {
            "rows": s["rows"],
            "live": s["count"],
            "delta_rows": s["delta"]["rows"],
            "compaction": s["compaction"],
            "tombstones": s["index_stats"]["deleted"],
        }

    def close(self) -> None:
        self.engine.close()


class QdrantEdge:
    name = "qdrant-edge"

    def __init__(self, data: Data, path: str) -> None:
        import qdrant_edge as qe

        self.qe, self.data = qe, data
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=data.pool.shape[1], distance=qe.Distance.Euclid),
            hnsw_config=qe.HnswIndexConfig(
                m=M, ef_construct=EF_CONSTRUCTION, full_scan_threshold=10_000, payload_m=M
            ),  # full_scan_threshold: Qdrant's default (KB)
            # its defaults, but for the indexing threshold: its default (10-20 MB) would leave
            # a 30K x 64 window (7.7 MB) unindexed, scanned exactly; 2 MiB is shardwalk's delta
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=2048),
            payload_memory=qe.Memory.Cached,  # in RAM, as shardwalk's columns
        )
        self.shard = qe.EdgeShard.create(path, config)
        self.shard.update(
            qe.UpdateOperation.create_field_index("tenant", qe.KeywordIndexParams(is_tenant=True))
        )
        self.shard.update(
            qe.UpdateOperation.create_field_index(
                "y", qe.IntegerIndexParams(lookup=True, range=True)
            )
        )
        self.params = qe.SearchParams(hnsw_ef=EF)
        self.filters = {
            "plain": None,
            "tenant": qe.Filter(
                must=[
                    qe.FieldCondition("tenant", match=qe.MatchValue(f"{data.prefix}{data.tenant}"))
                ]
            ),
            "filter": qe.Filter(
                must=[qe.FieldCondition("y", range=qe.RangeFloat(lt=float(Y_BELOW)))]
            ),
        }
        self.lock = threading.Lock()  # the maintenance thread's optimize() is under way
        self.optimizations = 0
        self.optimize_seconds = 0.0
        # (start, end) of each optimize() call: it holds the GIL throughout (a thread spinning
        # beside one ran at ~1% of its rate), so every Python thread of the process, the
        # writer and the searcher, stands still meanwhile; see optimize_overlap
        self.optimize_spans: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.maintenance = threading.Thread(target=self._maintain, daemon=True)
        self.maintenance.start()

    def _maintain(self) -> None:
        """What an application embedding Edge runs: its optimizers, periodically."""
        while not self.stop.wait(0.2):
            with self.lock:
                t0 = time.perf_counter()
                worked = self.shard.optimize()
                t1 = time.perf_counter()
                if worked:
                    self.optimizations += 1
                    self.optimize_seconds += t1 - t0
                if t1 - t0 > 0.001:
                    self.optimize_spans.append((t0, t1))

    def upsert(self, ids: np.ndarray) -> None:
        qe, d = self.qe, self.data
        points = [
            qe.Point(int(i), v, {"tenant": t, "y": y})
            for i, v, t, y in zip(ids.tolist(), d.rows(ids).tolist(), d.names(ids), d.ys(ids))
        ]
        self.shard.update(qe.UpdateOperation.upsert_points(points))

    def delete(self, ids: np.ndarray) -> None:
        self.shard.update(self.qe.UpdateOperation.delete_points([int(i) for i in ids.tolist()]))

    def search(self, q: np.ndarray, scope: str) -> np.ndarray:
        qe = self.qe
        request = qe.QueryRequest(
            limit=K,
            query=qe.Query.Nearest(q.tolist()),
            filter=self.filters[scope],
            params=self.params,
        )
        return np.array([p.id for p in self.shard.query(request)], dtype=np.int64)

    def quiet(self) -> None:
        """At rest: the writes' optimization done (run now, as its maintenance thread would
        next), then 0.1 s."""
        with self.lock:
            self.shard.optimize()
        time.sleep(0.1)

    def settle(self) -> None:
        with self.lock:
            self.shard.optimize()

    def info(self) -> dict[str, Any]:
        info = self.shard.info()
        return {
            "segments": info.segments_count,
            "points": info.points_count,
            "indexed_vectors": info.indexed_vectors_count,
            "optimizations": self.optimizations,
            "optimize_seconds": round(self.optimize_seconds, 3),
        }

    def close(self) -> None:
        self.stop.set()
        self.maintenance.join()
        self.shard.close()


# --- 1. the runbook -------------------------------------------------------------------------
def runbook(system: Any, data: Data, window: int, chunk: int, batch: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    for a in range(0, window, 1000):
        system.upsert(np.arange(a, min(a + 1000, window)))
    system.settle()
    build = time.perf_counter() - t0
    lo, hi = 0, window
    steps = []
    while hi + chunk <= len(data.pool):
        t0 = time.perf_counter()
        for a in range(hi, hi + chunk, batch):
            system.upsert(np.arange(a, min(a + batch, hi + chunk)))
        for a in range(lo, lo + chunk, batch):
            system.delete(np.arange(a, min(a + batch, lo + chunk)))
        writes = time.perf_counter() - t0
        lo, hi = lo + chunk, hi + chunk
        step: dict[str, Any] = {"live": [lo, hi], "write_seconds": round(writes, 3)}
        for scope in SCOPES:  # at once: no index is waited for
            t0 = time.perf_counter()
            found = [system.search(q, scope) for q in data.queries]
            step[f"{scope}_seconds"] = round(time.perf_counter() - t0, 3)
            step[f"{scope}_recall"] = round(recall(found, truth(data, lo, hi, scope)), 4)
        step["state"] = system.info()
        steps.append(step)
        log(
            f"  {system.name} step {len(steps)}: live {lo}-{hi}, recall "
            + ", ".join(f"{s} {step[f'{s}_recall']:.3f}" for s in SCOPES)
        )
    return {
        "build_seconds": round(build, 2),
        "steps": steps,
        "min_recall": {s: min(x[f"{s}_recall"] for x in steps) for s in SCOPES},
    }


# --- 2. searches under a writer -------------------------------------------------------------
def searches(search: Any, queries: np.ndarray, scope: str, seconds: float) -> np.ndarray:
    """One caller looping single-query searches for ``seconds``: their latencies (s)."""
    latencies = []
    end = time.perf_counter() + seconds
    i = 0
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        search(queries[i % len(queries)], scope)
        latencies.append(time.perf_counter() - t0)
        i += 1
    return np.array(latencies)


def summary(latencies: list[np.ndarray], seconds: float) -> dict[str, Any]:
    lat = np.concatenate(latencies) * 1e3
    return {
        "qps": round(lat.size / seconds, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3),
        "calls": int(lat.size),
    }


def settings_list(args: argparse.Namespace) -> list[tuple[int, int]]:
    rates = [int(r) for r in args.rates.split(",") if int(r) > 0]
    batches = [int(b) for b in args.batches.split(",")]
    return [(r, b) for r in rates for b in batches]


def interleaved(
    search: Any,
    queries: np.ndarray,
    start: Any,
    stop: Any,
    quiet: Any,
    args: argparse.Namespace,
    spans: dict[str, list[tuple[float, float]]] | None = None,
) -> dict[str, Any]:
    """Per scope, ``--cycles`` cycles of a writer slice and an at-rest slice (``--slice``
    seconds each; ``start``/``stop`` the writer, ``quiet`` waits for the writes' index work
    to end before an at-rest slice): the machine's load, which other work moves, falls on
    both alike. ``spans``: the slices' (start, end) are added to its "writing" and "rest"."""
    out: dict[str, Any] = {"rest": {}, "writing": {}}
    spans = {"writing": [], "rest": []} if spans is None else spans
    for scope in SCOPES:
        searches(search, queries, scope, 0.1)  # warm
        hot: list[np.ndarray] = []
        rest: list[np.ndarray] = []
        for _ in range(args.cycles):
            start()
            searches(search, queries, scope, 0.05)  # the writer under way
            t0 = time.perf_counter()
            hot.append(searches(search, queries, scope, args.slice))
            spans["writing"].append((t0, time.perf_counter()))
            stop()
            quiet()
            t0 = time.perf_counter()
            rest.append(searches(search, queries, scope, args.slice))
            spans["rest"].append((t0, time.perf_counter()))
        out["writing"][scope] = summary(hot, args.cycles * args.slice)
        out["rest"][scope] = summary(rest, args.cycles * args.slice)
    return out


def under_writes(
    systems: list[Any], data: Data, window: dict[str, list[int]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    points = []
    for rate, batch in settings_list(args):
        for system in systems:
            system.settle()
            lo, hi = window[system.name]
            writer = SlidingWriter(system.upsert, system.delete, rate, batch, lo, hi)
            writer.start()
            load = os.getloadavg()[0]
            spans: dict[str, list[tuple[float, float]]] = {"writing": [], "rest": []}
            measured = interleaved(
                system.search, data.queries, writer.active.set, writer.active.clear,
                system.quiet, args, spans,
            )  # fmt: skip
            writer.halt.set()
            writer.join()
            window[system.name] = [writer.lo, writer.hi]
            point: dict[str, Any] = {"system": system.name, "rate": rate, "batch": batch}
            point.update(measured)
            point["achieved_rows_per_s"] = round(writer.rows / max(writer.seconds, 1e-9), 1)
            if hasattr(system, "optimize_spans"):
                point["optimize_overlap"] = optimize_overlap(system.optimize_spans, spans)
            point["load"] = round((load + os.getloadavg()[0]) / 2, 2)
            point["state"] = system.info()
            points.append(point)
            log_point(point)
    return points


def optimize_overlap(
    optimizing: list[tuple[float, float]], slices: dict[str, list[tuple[float, float]]]
) -> dict[str, float]:
    """Seconds of Qdrant Edge's optimize() calls inside the writing and the at-rest slices,
    over the slices' seconds: the share of a slice in which every Python thread stood still
    (optimize() holds the GIL), the writer's and the searcher's alike. The writer catches up
    at most one second's worth after such a stall, so a stall past a second costs it rows:
    its achieved rate falls short of the target by that much (753-1,014 rows/s in session
    12's quiet runs, by whether an optimization landed in a writer slice)."""
    out = {}
    for state, spans in slices.items():
        total = sum(b - a for a, b in spans)
        inside = sum(max(0.0, min(b, d) - max(a, c)) for a, b in spans for c, d in optimizing)
        out[f"{state}_share"] = round(inside / max(total, 1e-9), 4)
    out["calls_over_1s"] = sum(1 for a, b in optimizing if b - a > 1.0)
    out["longest_s"] = round(max((b - a for a, b in optimizing), default=0.0), 3)
    return out


def log_point(point: dict[str, Any]) -> None:
    log(
        f"  {point['system']} writer {point['rate']}/s x{point['batch']} "
        f"(wrote {point['achieved_rows_per_s']:.0f}/s): "
        + ", ".join(
            f"{s} {point['writing'][s]['qps']:.0f} q/s p99 {point['writing'][s]['p99_ms']:.2f} "
            f"ms (rest {point['rest'][s]['qps']:.0f}, {point['rest'][s]['p99_ms']:.2f})"
            for s in SCOPES
        )
        + (
            f"; optimize() held the GIL {100 * point['optimize_overlap']['writing_share']:.0f}%"
            " of the writer slices"
            if "optimize_overlap" in point
            else ""
        )
    )


def ratios(points: list[dict[str, Any]], rate: int, batch: int) -> dict[str, Any]:
    """Per system and scope at ``rate``/``batch``: QPS and p99 writing against at rest (the
    interleaved slices), and shardwalk's QPS writing over Qdrant Edge's."""
    out: dict[str, Any] = {}
    by = {(p["system"], p["rate"], p["batch"]): p for p in points}
    for system in sorted({p["system"] for p in points}):
        p = by.get((system, rate, batch))
        if p is None:
            continue
        for scope in SCOPES:
            hot, rest = p["writing"][scope], p["rest"][scope]
            out[f"{system} {scope} qps vs rest"] = round(hot["qps"] / rest["qps"], 3)
            out[f"{system} {scope} p99 vs rest"] = round(hot["p99_ms"] / rest["p99_ms"], 3)
    mine, theirs = by.get(("shardwalk", rate, batch)), by.get(("qdrant-edge", rate, batch))
    if mine and theirs:
        for scope in SCOPES:
            out[f"shardwalk / qdrant-edge {scope} qps"] = round(
                mine["writing"][scope]["qps"] / theirs["writing"][scope]["qps"], 3
            )
            out[f"shardwalk / qdrant-edge {scope} qps at rest"] = round(
                mine["rest"][scope]["qps"] / theirs["rest"][scope]["qps"], 3
            )
    return out


# --- 3. through the server ------------------------------------------------------------------
KEYS = {"admin": "streaming-admin-key-0001", "tenant": "streaming-tenant-key-001"}


class _ClientWriter:
    """The few calls the writer makes, through a client."""

    def __init__(self, col: Any, data: Data) -> None:
        self.col, self.data = col, data

    def upsert(self, ids: np.ndarray) -> None:
        d = self.data
        self.col.upsert(ids, d.rows(ids), tenants=d.names(ids), attributes={"y": d.ys(ids)})

    def delete(self, ids: np.ndarray) -> None:
        self.col.delete(ids)


def stream_writer(address: str, key: str, pool: str, rate: int, batch: int, lo: int, hi: int):
    """The writer client, in a process of its own: a :class:`~_common.SlidingWriter` through the server,
    switched by stdin's lines ("on", "off"; "quit": prints rows, seconds active, lo, hi)."""
    with np.load(pool) as d:
        data = Data("", d["pool"], d["pool"][:0], d["tenants"], d["y"], 0, str(d["prefix"]))
    col = shardwalk.Client(address, api_key=key).collection("stream")
    col.search(data.pool[:1], K)  # connected
    client = _ClientWriter(col, data)
    writer = SlidingWriter(client.upsert, client.delete, rate, batch, lo, hi)
    writer.start()
    print("ready", flush=True)
    for line in sys.stdin:
        word = line.strip()
        if word == "on":
            writer.active.set()
        elif word == "off":
            writer.active.clear()
        else:
            break
        print(word, flush=True)
    writer.active.clear()
    writer.halt.set()
    writer.join()
    print(writer.rows, writer.seconds, writer.lo, writer.hi, flush=True)


def server_run(data: Data, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    from shardwalk.server.app import Server
    from shardwalk.server.config import parse_config

    system = Shardwalk(data, os.path.join(tmp, "server-db"), args.engine)
    window = args.window
    for a in range(0, window, 1000):
        system.upsert(np.arange(a, min(a + 1000, window)))
    system.col.wait_indexed()
    quota = {"max_concurrent": 8, "requests_per_second": 50_000.0}
    config = parse_config(
        {
            "api_keys": [
                {"key": KEYS["admin"], "role": "admin", **quota},
                {"key": KEYS["tenant"], "tenant": f"{data.prefix}{data.tenant}", **quota},
            ]
        }
    )
    server = Server(system.engine, config, host="127.0.0.1", port=0).start()
    address = f"127.0.0.1:{server.port}"
    admin = shardwalk.Client(address, api_key=KEYS["admin"]).collection("stream")
    mine = shardwalk.Client(address, api_key=KEYS["tenant"]).collection("stream")
    where = F("y") < Y_BELOW

    def search(q: np.ndarray, scope: str) -> np.ndarray:
        if scope == "tenant":
            return mine.search(q[None], K).ids[0]
        if scope == "filter":
            return admin.search(q[None], K, where=where).ids[0]
        return admin.search(q[None], K).ids[0]

    pool = os.path.join(tmp, "pool.npz")
    np.savez(pool, pool=data.pool, tenants=data.tenants, y=data.y, prefix=data.prefix)
    lo, hi = 0, window
    points = []
    try:
        for rate, batch in settings_list(args):
            system.settle()
            code = (
                f"import sys; sys.path.insert(0, {str(HERE)!r}); import streaming; "
                f"sys.setswitchinterval({args.switch_interval}); streaming.stream_writer("
                f"{address!r}, {KEYS['admin']!r}, {pool!r}, {rate}, {batch}, {lo}, {hi})"
            )
            proc = subprocess.Popen(
                [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            assert proc.stdin is not None and proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"

            def command(word: str, proc: Any = proc) -> None:
                proc.stdin.write(word + "\n")
                proc.stdin.flush()
                assert proc.stdout.readline().strip() == word

            load = os.getloadavg()[0]
            measured = interleaved(
                search, data.queries, lambda: command("on"), lambda: command("off"),
                lambda: time.sleep(0.1), args,
            )  # fmt: skip
            out, _ = proc.communicate("quit\n", timeout=120)
            rows, seconds, lo_, hi_ = out.split()
            lo, hi = int(lo_), int(hi_)
            point: dict[str, Any] = {"system": "shardwalk-server", "rate": rate, "batch": batch}
            point.update(measured)
            point["achieved_rows_per_s"] = round(int(rows) / max(float(seconds), 1e-9), 1)
            point["load"] = round((load + os.getloadavg()[0]) / 2, 2)
            point["state"] = system.info()
            points.append(point)
            log_point(point)
    finally:
        server.stop(grace=1)
        system.close()
    return {"points": points}


# --- main -----------------------------------------------------------------------------------
def log(message: str) -> None:
    print(message, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60_000, help="clustered rows (60,000)")
    parser.add_argument("--window", type=int, default=30_000, help="live rows (30,000)")
    parser.add_argument("--chunk", type=int, default=3_000, help="rows in/out a step (3,000)")
    parser.add_argument("--write-batch", type=int, default=100, help="rows an upsert (100)")
    parser.add_argument("--queries", type=int, default=200, help="queries a step (200)")
    parser.add_argument("--rates", default="100,1000,5000", help="writer rows/s")
    parser.add_argument("--batches", default="1,10", help="writer rows per call")
    parser.add_argument("--cycles", type=int, default=3, help="writer/rest slices (3)")
    parser.add_argument("--slice", type=float, default=0.6, help="seconds a slice (0.6)")
    parser.add_argument(
        "--engine", choices=("memory", "disk"), default="memory",
        help="shardwalk's engine: memory (no log: Qdrant Edge's update() does not fsync "
        "either) or disk (every write fsynced before it returns)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--label", default="", help="appended to the results' name (e.g. main, for a baseline)"
    )
    parser.add_argument("--no-mnist", action="store_true", help="skip the mnist runbook")
    parser.add_argument("--server", action="store_true", help="through the server (item 4)")
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=0.0005,
        help="sys.setswitchinterval (s): how long a thread waiting for the GIL may wait before "
        "the running one is asked to hand it over (Python's default 0.005: a writer thread "
        "beside a searching one then waits up to 5 ms at each of its blocking calls and falls "
        "far behind its rate, and a search waits as long behind the writer); 0.0005 here",
    )
    args = parser.parse_args()
    sys.setswitchinterval(args.switch_interval)
    load_start = os.getloadavg()[0]
    # the commit of the shardwalk imported (a checkout's HEAD; SHARDWALK_COMMIT for a source
    # tree without git): another checkout's venv runs this script against its code
    source = Path(shardwalk.__file__).resolve().parent.parent
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=source
    ).stdout.strip() or os.environ.get("SHARDWALK_COMMIT", "unknown")
    data = clustered(args.n, args.queries, args.seed)
    out: dict[str, Any] = {
        "command": "python bench/streaming.py " + " ".join(sys.argv[1:]),
        "commit": commit,
        "cores": os.cpu_count(),
        "load_start": load_start,
        "params": {
            **{k: v for k, v in vars(args).items()},
            "k": K,
            "m": M,
            "ef_construction": EF_CONSTRUCTION,
            "ef": EF,
            "filter": f"y < {Y_BELOW} (y uniform in 0-29)",
            "tenant": f"t{data.tenant} of 100 Zipf tenants; mnist: digit d{data.tenant}",
        },
    }
    with tempfile.TemporaryDirectory(prefix="sw-streaming-") as tmp:
        if args.server:
            log(f"server: {data.name}, window {args.window}")
            out["server"] = server_run(data, args, tmp)
            out["load_end"] = os.getloadavg()[0]
            out["ratios"] = ratios(out["server"]["points"], 1000, 10)
            name = f"streaming-{data.name}-server{'-disk' if args.engine == 'disk' else ''}"
        else:
            from importlib.metadata import version

            import qdrant_edge  # noqa: F401  (fail before any work)

            out["qdrant_edge_py"] = version("qdrant-edge-py")
            datasets = [data] + ([] if args.no_mnist else [mnist(args.queries, args.seed)])
            out["runbooks"] = {}
            systems: list[Any] = []
            for d in datasets:
                window = args.window if d is data else len(d.pool) // 2
                chunk = args.chunk if d is data else len(d.pool) // 20
                for make in (Shardwalk, QdrantEdge):
                    log(f"runbook: {make.name} on {d.name}, window {window}, chunk {chunk}")
                    path = os.path.join(tmp, f"{make.name}-{d.name}")
                    system = Shardwalk(d, path, args.engine) if make is Shardwalk else make(d, path)
                    result = runbook(system, d, window, chunk, args.write_batch)
                    out["runbooks"].setdefault(d.name, {"window": window, "chunk": chunk})
                    out["runbooks"][d.name][make.name] = result
                    if d is data:
                        systems.append(system)
                    else:
                        system.close()
            log("searches under a writer: clustered")
            done = out["runbooks"][data.name]
            window_now = {s.name: list(done[s.name]["steps"][-1]["live"]) for s in systems}
            out["under_writes"] = under_writes(systems, data, window_now, args)
            for s in systems:
                s.close()
            out["load_end"] = os.getloadavg()[0]
            out["ratios"] = ratios(out["under_writes"], 1000, 10)
            name = f"streaming-{data.name}{'-disk' if args.engine == 'disk' else ''}"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}{'-' + args.label if args.label else ''}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    log(f"wrote {path}")
    for key, value in out["ratios"].items():
        log(f"  {key}: {value}")


if __name__ == "__main__":
    main()
