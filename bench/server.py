"""Server benchmark (issue 9): the shardwalk gRPC service against the embedded call it wraps, its
two server models (grpc's sync thread pool and grpc.aio) against each other, and Milvus Lite and
Chroma's HTTP server on the same data and tenants.

Measured, back to back under steady load (each point: N client threads looping one single-query
call for ``--warmup`` seconds, then ``--duration`` seconds measured continuously right after):

1. QPS, p50, p99 with 1, 8 and 32 client threads, and recall@10 of the calls that ran, for:
   * ``in-process``: ``Collection.search`` / ``Graph.ppr`` in this process (the overhead baseline);
   * ``server-sync`` and ``server-aio``: ``shardwalk serve [--aio]`` in a process of its own (as
     users run it; client and server do not share a GIL), called through ``shardwalk.Client``;
   * ``server-sync-in-process``: the sync ``Server`` in this process, on the in-process engine
     (client and server share a GIL; a note, not a deployment);
   * ``milvus-lite``: pymilvus ``MilvusClient`` on a local .db file (it starts milvus-lite's own
     server process), HNSW, the tenant as partition key and filter expression;
   * ``chroma``: ``chroma run`` as a subprocess, ``chromadb.HttpClient``, HNSW through the
     collection configuration, the tenant as ``where={"tenant": ...}`` metadata filter;
   * ``pgvector``, ``pgvector-relaxed``, ``pgvector-rls``: PostgreSQL + pgvector (started by
     ``../shared/peers/pgvector/start.sh``; ``--pg-dsn``) through psycopg, a connection per
     client thread, prepared statements; the tenant by ``WHERE`` with the plan Postgres picks,
     the same with ``hnsw.iterative_scan = relaxed_order``, and a row-level-security policy
     (:class:`PgVector`); each statement's ``EXPLAIN`` is kept. Skipped with a note when
     PostgreSQL is not reachable;
   * ``server-sync-coalesce<W>us``: the sync server coalescing concurrent single-query
     searches (``--coalesce``), and ``grpc-floor``: grpc's Python stack with nothing behind it.
2. Workloads: Search unfiltered (admin key) and scoped to the "2% tenant" (that tenant's own API
   key); PersonalizedPageRank from one seed, admin (whole graph) and tenant (``collection=``,
   seeds and results scoped to the tenant's rows); Compose (kNN-seeded PPR, fused), admin and
   tenant-scoped, with the engine's defaults (knn_k=10, alpha 0.5, RRF).
3. Recall per tenant size bucket (single-query calls, up to 3 tenants per bucket), every system.
4. CPU seconds per call in the client process and in the server process (psutil), which on a
   2-core machine says where the time goes, with the server's kernel share and every thread's
   context switches per call; ``--profile``: the server's CPU per call by thread (handler
   threads, grpc's completion-queue thread, its C-core I/O threads) beside the grpc floor's,
   and py-spy flame graphs.

Data: ``clustered_vectors(n, 128, seed=0)``; tenants as bench/concurrency.py (``zipf_tenants``
over 100 tenants); a ``power_law_graph`` over the same ids (about 10 edges per node) with
fingerprints built (10 walks per node). HNSW M=16, efConstruction=200, ef=64, k=10 everywhere.
Ground truth: exact search (exact within the tenant); PPR: Forward Push to residual 1e-7
(``--ppr-truth exact``: power iteration, 3x slower); Compose: the same composition in process
with kNN at ef=1024 (recall 1.0 here) and that PPR solver, so its recall counts both stages'
errors.

    python bench/server.py                          # 100K: about 15 min on 2 cores
    python bench/server.py --skip-milvus --skip-chroma --concurrency 1,8
    python bench/server.py --quick                  # a smoke run of a few seconds
    python bench/server.py --tag pgvector --scopes search,search-tenant-2%,search-batch \
        --profile 8 --baseline OTHER/.venv/bin/python   # issue 21 (bench/README.md)

Milvus Lite: ``pip install pymilvus milvus-lite``; Chroma: ``pip install chromadb`` (a large
dependency tree, hence not in the ``bench`` extra). Each is skipped with a note when missing.
Every server listens on 127.0.0.1 only. Writes bench/results/server-<dataset>.json and .png.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common
from filtered import zipf_tenants
from shardwalk.index import exact_search

import shardwalk
from shardwalk.datasets import clustered_vectors

HERE = Path(__file__).resolve().parent
K = 10
ADMIN_KEY = "bench-admin-key"
TENANT_KEY = "bench-tenant-key"
COLLECTION, GRAPH = "bench", "links"
INPROC, SYNC, AIO, SYNC_INPROC = "in-process", "server-sync", "server-aio", "server-sync-in-process"
MILVUS, CHROMA = "milvus-lite", "chroma"
UNFILTERED, TENANT = "search", "search-tenant-2%"
PPR_ADMIN, PPR_TENANT = "ppr-admin", "ppr-tenant-2%"
COMPOSE, COMPOSE_TENANT = "compose", "compose-tenant-2%"
BATCH = "search-batch"  # unfiltered, --batch queries per request
SCOPES = (UNFILTERED, TENANT, PPR_ADMIN, PPR_TENANT, COMPOSE, COMPOSE_TENANT, BATCH)
BUCKETS = [
    (0.0, 0.005, "<0.5%"),
    (0.005, 0.01, "0.5-1%"),
    (0.01, 0.05, "1-5%"),
    (0.05, 1.01, ">=5%"),
]


# --- data -----------------------------------------------------------------------------------
class Data:
    def __init__(self, args: argparse.Namespace) -> None:
        d = clustered_vectors(
            args.n, args.dim, queries=args.queries, seed=args.seed, metadata=False
        )
        self.base, self.queries = d.vectors, np.ascontiguousarray(d.queries)
        rng = np.random.default_rng(args.seed)
        self.owner = zipf_tenants(args.n, args.tenants, rng)
        two, self.sizes = common.two_percent_tenant(self.owner, args.tenants, args.n)
        self.tenant_id, self.tenant = two, name_of(two)
        # BATCH requests: consecutive blocks of the query pool (rows of block j: self.block_rows[j])
        width = args.batch
        self.block_rows = [np.arange(j * width, (j + 1) * width) % args.queries
                           for j in range(max(1, args.queries // width))]  # fmt: skip
        self.blocks = [np.ascontiguousarray(self.queries[r]) for r in self.block_rows]
        self.tenant_rows = int(self.sizes[two])
        self.names = [name_of(t) for t in self.owner.tolist()]
        self.name = f"clustered-{args.n}x{args.dim}-{args.tenants}tenants"
        seeds = np.random.default_rng(args.seed + 1)
        self.ppr_seeds = {
            PPR_ADMIN: seeds.integers(0, args.n, args.ppr_seeds),
            PPR_TENANT: seeds.choice(np.flatnonzero(self.owner == two), args.ppr_seeds),
        }


def name_of(tenant: int) -> str:
    return f"t{tenant:04d}"


def bucket_tenants(data: Data, n: int, per_bucket: int) -> dict[str, list[int]]:
    """Up to ``per_bucket`` tenants per size bucket: the smallest, the largest, one between."""
    out: dict[str, list[int]] = {}
    share = data.sizes / n
    for lo, hi, label in BUCKETS:
        inside = [int(t) for t in np.argsort(share) if lo <= share[t] < hi and data.sizes[t] > 0]
        if not inside:
            continue
        picks = sorted({inside[0], inside[len(inside) // 2], inside[-1]}, key=lambda t: share[t])
        out[label] = picks[:per_bucket]
    return out


# --- processes ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_line(process: subprocess.Popen, timeout: float) -> str:
    """The first stdout line of a process, waiting at most ``timeout`` seconds."""
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no line from {process.args[:4]} within {timeout}s")
    return process.stdout.readline()


def start_server(
    cmd: list[str], log_path: str, connect: Any, ready: Any, timeout: float = 120.0
) -> tuple[subprocess.Popen, Any]:
    """A competitor's server process (its output to ``log_path``, never a pipe: a request log
    would fill it) and a client of it, once ``ready(client)`` answers."""
    process = subprocess.Popen(cmd, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    t0 = time.perf_counter()
    while True:
        try:
            client = connect()
            ready(client)
            return process, client
        except Exception:
            if time.perf_counter() - t0 > timeout or process.poll() is not None:
                raise
            time.sleep(0.2)


def stop_process(process: subprocess.Popen, grace: float = 60.0) -> int | None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(timeout=10)
    return process.returncode


# --- systems --------------------------------------------------------------------------------
class System:
    """One engine behind the calls the benchmark makes; ``call(scope, i)`` returns result ids."""

    name: str
    scopes: tuple[str, ...] = (UNFILTERED, TENANT)
    server: psutil.Process | None = None  # the server process, for its CPU time

    def __init__(self, data: Data) -> None:
        self.queries = data.queries
        self.seeds = data.ppr_seeds
        self.blocks = data.blocks

    def call(self, scope: str, i: int) -> np.ndarray:
        raise NotImplementedError

    def search_in(self, query: np.ndarray, tenant: str) -> np.ndarray:
        """One query scoped to any tenant (recall per tenant size bucket)."""
        raise NotImplementedError

    def close(self) -> None: ...


class InProcess(System):
    name = INPROC
    scopes = SCOPES

    def __init__(self, data: Data, path: str, threads: int) -> None:
        super().__init__(data)
        from shardwalk.compose import scoped_ppr

        self.engine = shardwalk.Engine.open(path, threads=threads)
        self.col = self.engine.collection(COLLECTION)
        self.graph = self.engine.graph(GRAPH)
        self.tenant = data.tenant
        # the server's tenant-scoped PPR is the library's PPR plus a visibility filter: the
        # same function, called here in process
        self.scoped_ppr = scoped_ppr

    def call(self, scope: str, i: int) -> np.ndarray:
        if scope == UNFILTERED:
            return self.col.search(self.queries[i], k=K).ids[0]
        if scope == BATCH:
            return self.col.search(self.blocks[i % len(self.blocks)], k=K).ids
        if scope == TENANT:
            return self.col.search(self.queries[i], k=K, tenant=self.tenant).ids[0]
        if scope in (COMPOSE, COMPOSE_TENANT):
            tenant = self.tenant if scope == COMPOSE_TENANT else None
            return self.engine.compose(COLLECTION, GRAPH, self.queries[i], k=K, tenant=tenant).ids[
                0
            ]
        seed = int(self.seeds[scope][i])
        if scope == PPR_ADMIN:
            return self.graph.ppr(seed, K).ids[0]
        return self.scoped_ppr(self.graph, self.col, [[seed]], K, tenant=self.tenant).ids[0]

    def reference_ppr(self, scope: str, seed: int, method: str) -> np.ndarray:
        """The top-k of an accurate solver: power iteration (``exact``, about 0.7 s a seed
        here) or Forward Push to residual 1e-7 (``push``, about 0.2 s; same top-10 on the
        seeds checked)."""
        options: dict[str, Any] = {"method": method}
        if method == "push":
            options["r_max"] = 1e-7
        if scope == PPR_ADMIN:
            return self.graph.ppr(seed, K, **options).ids[0]
        return self.scoped_ppr(
            self.graph, self.col, [[seed]], K, tenant=self.tenant, **options
        ).ids[0]

    def reference_compose(self, scope: str, method: str, queries: int) -> np.ndarray:
        """Compose of every query with kNN at ef=1024 and the reference PPR solver: the same
        fusion with accurate stages."""
        ppr: dict[str, Any] = {"method": method}
        if method == "push":
            ppr["r_max"] = 1e-7
        tenant = self.tenant if scope == COMPOSE_TENANT else None
        return self.engine.compose(
            COLLECTION,
            GRAPH,
            self.queries[:queries],
            k=K,
            tenant=tenant,
            knn_params={"ef": 1024},
            ppr_params=ppr,
        ).ids

    def search_in(self, query: np.ndarray, tenant: str) -> np.ndarray:
        return self.col.search(query, k=K, tenant=tenant).ids[0]

    def close(self) -> None:
        self.engine.close()


class Remote(System):
    """``shardwalk.Client`` on a server: one client (one channel) shared by every thread, as an
    application would; the admin key for unfiltered calls, the 2% tenant's key for scoped ones."""

    scopes = SCOPES

    def __init__(self, data: Data, name: str, address: str) -> None:
        super().__init__(data)
        self.name = name
        self.admin = shardwalk.Client(address, api_key=ADMIN_KEY)
        self.mine = shardwalk.Client(address, api_key=TENANT_KEY)
        self.cols = {UNFILTERED: self.admin.collection(COLLECTION)}
        self.cols[TENANT] = self.mine.collection(COLLECTION)
        self.graphs = {PPR_ADMIN: self.admin.graph(GRAPH), PPR_TENANT: self.mine.graph(GRAPH)}

    def call(self, scope: str, i: int) -> np.ndarray:
        if scope in (UNFILTERED, TENANT):
            return self.cols[scope].search(self.queries[i], k=K).ids[0]
        if scope == BATCH:
            return self.cols[UNFILTERED].search(self.blocks[i % len(self.blocks)], k=K).ids
        if scope in (COMPOSE, COMPOSE_TENANT):
            client = self.mine if scope == COMPOSE_TENANT else self.admin
            return client.compose(COLLECTION, GRAPH, self.queries[i], k=K).ids[0]
        seed = int(self.seeds[scope][i])
        if scope == PPR_ADMIN:
            return self.graphs[scope].ppr(seed, K).ids[0]
        return self.graphs[scope].ppr(seed, K, collection=COLLECTION).ids[0]

    def search_in(self, query: np.ndarray, tenant: str) -> np.ndarray:
        return self.cols[UNFILTERED].search(query, k=K, tenant=tenant).ids[0]

    def close(self) -> None:
        self.admin.close()
        self.mine.close()


class Served(Remote):
    """``shardwalk serve`` in its own process."""

    def __init__(
        self, data: Data, name: str, path: str, config: str, args, python: str = sys.executable
    ) -> None:
        cmd = [python, "-m", "shardwalk.cli", "serve", "--data", path, "--config", config]
        cmd += ["--host", "127.0.0.1", "--port", "0", "--log-level", args.server_log_level]
        cmd += ["--threads", str(args.threads)]
        cmd += ["--aio"] if name.startswith(AIO) else []
        self.log_path = f"{path}.log"
        self.process = subprocess.Popen(  # run outside any checkout: -m imports what
            cmd,  # ``python`` has installed, not the shardwalk/ folder of the current directory
            stdout=subprocess.PIPE,
            stderr=open(self.log_path, "w"),
            text=True,
            cwd=os.path.dirname(path),
        )
        t0 = time.perf_counter()
        line = read_line(self.process, 600)
        found = re.search(r"on 127\.0\.0\.1:(\d+)", line)
        if not found:
            raise RuntimeError(f"{name}: {line!r}; log {self.log_path}")
        self.start_seconds = time.perf_counter() - t0
        super().__init__(data, name, f"127.0.0.1:{found.group(1)}")
        self.server = psutil.Process(self.process.pid)

    def close(self) -> None:
        super().close()
        self.exit_code = stop_process(self.process)


class InProcessServer(Remote):
    """The sync ``Server`` in this process, over the in-process engine."""

    def __init__(self, data: Data, engine: shardwalk.Engine, config: Any) -> None:
        from shardwalk.server.app import Server

        self.srv = Server(engine, config, host="127.0.0.1", port=0).start()
        super().__init__(data, SYNC_INPROC, f"127.0.0.1:{self.srv.port}")

    def close(self) -> None:
        super().close()
        self.srv._server.stop(1).wait()  # no checkpoint: the engine is read only here


_ECHO = """
import sys, time
from concurrent import futures
import grpc
from shardwalk.v1 import shardwalk_pb2 as pb
answer = pb.SearchResponse(rows=1, k=10, ids=bytes(80), distances=bytes(40)).SerializeToString()
handler = grpc.unary_unary_rpc_method_handler(lambda request, context: answer)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
server.add_generic_rpc_handlers(
    (grpc.method_handlers_generic_handler("shardwalk.v1.Shardwalk", {"Search": handler}),)
)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(f"on 127.0.0.1:{port}", flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
server.stop(0)
"""


class GrpcFloor(System):
    """The floor of one call through grpc's Python stack here: a sync grpc server (same pool
    size) in its own process whose Search handler returns a fixed 10-hit answer at once, called
    with the serialized request bytes of each query (no conversion on either side)."""

    name = "grpc-floor"
    scopes = (UNFILTERED,)

    def __init__(self, data: Data) -> None:
        super().__init__(data)
        import grpc

        from shardwalk._wire import vectors_to_pb
        from shardwalk.v1 import shardwalk_pb2 as pb

        self.process = subprocess.Popen(
            [sys.executable, "-c", _ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        line = read_line(self.process, 120)
        found = re.search(r"on 127\.0\.0\.1:(\d+)", line)
        if not found:
            raise RuntimeError(f"grpc floor server: {line!r}")
        self.server = psutil.Process(self.process.pid)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{found.group(1)}")
        self.method = self.channel.unary_unary("/shardwalk.v1.Shardwalk/Search")
        self.requests = [
            pb.SearchRequest(
                collection=COLLECTION, queries=vectors_to_pb(q), k=K
            ).SerializeToString()
            for q in data.queries
        ]
        self.metadata = (("authorization", f"Bearer {ADMIN_KEY}"),)
        self.ids = np.full(K, -1, dtype=np.int64)

    def call(self, scope: str, i: int) -> np.ndarray:
        self.method(self.requests[i], timeout=30.0, metadata=self.metadata)
        return self.ids

    def close(self) -> None:
        self.channel.close()
        self.process.stdin.close()
        stop_process(self.process)


class Milvus(System):
    """Milvus Lite through pymilvus' ``MilvusClient``, its server in a process of its own
    (``milvus-lite server --data-dir DIR --host 127.0.0.1 --port P``), like ours. (Given a
    local ``.db`` path, MilvusClient of milvus-lite 3.x starts the same gRPC server in a thread
    of the caller's process instead: client and server would share one GIL.) HNSW
    M/efConstruction as ours, ef per search; the tenant is the partition key and a filter
    expression ``tenant == "..."``. Rows inserted in batches, then flushed, indexed, loaded."""

    name = MILVUS

    def __init__(self, data: Data, path: str, args, log) -> None:
        super().__init__(data)
        from pymilvus import DataType, MilvusClient

        exe = shutil.which("milvus-lite", path=os.path.dirname(sys.executable)) or "milvus-lite"
        port = free_port()
        self.log_path = f"{path}.log"
        cmd = [exe, "server", "--data-dir", path, "--host", "127.0.0.1", "--port", str(port)]
        self.process, self.client = start_server(
            cmd, self.log_path, lambda: MilvusClient(uri=f"http://127.0.0.1:{port}", timeout=5),
            lambda client: client.list_collections(),
        )  # fmt: skip
        self.server = psutil.Process(self.process.pid)
        c = self.client
        schema = c.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=data.base.shape[1])
        schema.add_field("tenant", DataType.VARCHAR, max_length=16, is_partition_key=True)
        c.create_collection(COLLECTION, schema=schema)
        t0 = time.perf_counter()
        n = data.base.shape[0]
        for a in range(0, n, args.ingest_batch):
            b = min(n, a + args.ingest_batch)
            rows = [
                {"id": i, "vec": v, "tenant": t}
                for i, v, t in zip(range(a, b), data.base[a:b].tolist(), data.names[a:b])
            ]
            c.insert(COLLECTION, rows)
            if time.perf_counter() - t0 > args.ingest_limit:
                raise TimeoutError(f"milvus-lite ingestion over {args.ingest_limit}s at {b} rows")
        c.flush(COLLECTION)
        self.insert_seconds = time.perf_counter() - t0
        index = c.prepare_index_params()
        index.add_index(
            field_name="vec",
            index_type="HNSW",
            metric_type="L2",
            params={"M": args.m, "efConstruction": args.ef_construction},
        )
        try:
            c.create_index(COLLECTION, index)
        except Exception as exc:  # pymilvus retries a slow create_index (seen at 1M under load)
            if "index already exists" not in str(exc):  # and the retry finds the first one's
                raise
            log(f"milvus-lite: create_index retried by pymilvus, the index exists: {exc}")
        c.load_collection(COLLECTION)
        self.build_seconds = time.perf_counter() - t0
        self.info = c.describe_index(COLLECTION, "vec")
        log(f"milvus-lite: {self.info}")
        self.params = {"metric_type": "L2", "params": {"ef": args.ef}}
        self.filter = f'tenant == "{data.tenant}"'
        self.query_lists = [q.tolist() for q in data.queries]
        self.data = data

    def _search(self, q: list, flt: str, params: dict | None = None) -> np.ndarray:
        hits = self.client.search(
            COLLECTION, data=[q], limit=K, filter=flt, search_params=params or self.params,
            output_fields=[],
        )[0]  # fmt: skip
        return np.array([h["id"] for h in hits], dtype=np.int64)

    def path_check(self, queries: int, seconds: float, log) -> dict[str, Any]:
        """Which path Milvus Lite's searches take. Its index description (HNSW, rows indexed);
        recall@10 and p50 of single unfiltered queries at three ef values (an HNSW search's
        recall moves with ef, a brute-force one's does not); and, from py-spy on its server
        process under one client, the share of the server's samples in the faiss index search
        against the passes over every row of every segment that each search makes in Python
        (milvus_lite/search/executor_indexed.py: a dict of the newest sequence number per
        primary key, then a per-row mask of the live rows), which grow with the collection
        whatever the index."""
        qs = self.data.queries[:queries]
        truth = exact_search(self.data.base, qs, K, "l2").ids
        by_ef = []
        for ef in (8, 64, 512):
            params = {"metric_type": "L2", "params": {"ef": ef}}
            found, took = [], []
            for q in qs.tolist():
                t0 = time.perf_counter()
                found.append(_pad(self._search(q, "", params)))
                took.append(time.perf_counter() - t0)
            by_ef.append(
                {
                    "ef": ef,
                    "recall": round(common.recall(np.stack(found), truth)[0], 4),
                    "p50_ms": round(float(np.median(took)) * 1e3, 2),
                }
            )
        out: dict[str, Any] = {"index": self.info, "unfiltered_by_ef": by_ef}
        exe = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
        if exe is None:
            out["profile"] = "skipped: py-spy not installed"
        else:
            with tempfile.TemporaryDirectory() as tmp:
                raw = Path(tmp) / "milvus.txt"
                spy = subprocess.Popen(
                    [exe, "record", "--pid", str(self.process.pid), "--rate", "200",
                     "--duration", str(int(seconds)), "--nonblocking", "--format", "raw",
                     "-o", str(raw)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                )  # fmt: skip
                common.hammer(
                    lambda i: self.call(UNFILTERED, i % len(self.queries)), 1, 0.5, seconds
                )
                _, err = spy.communicate(timeout=120)
                text = raw.read_text() if raw.exists() else ""
            out["profile"] = _milvus_shares(text) if text else f"py-spy failed: {err[-300:]}"
        log(f"milvus-lite path check: {json.dumps(out)}")
        return out

    def call(self, scope: str, i: int) -> np.ndarray:
        return self._search(self.query_lists[i], self.filter if scope == TENANT else "")

    def search_in(self, query: np.ndarray, tenant: str) -> np.ndarray:
        return self._search(query.tolist(), f'tenant == "{tenant}"')

    def close(self) -> None:
        self.client.close()
        stop_process(self.process)


class Chroma(System):
    """``chroma run`` in a subprocess, ``chromadb.HttpClient``; HNSW through the collection's
    configuration (max_neighbors = M, ef_construction, ef_search); tenant as metadata."""

    name = CHROMA

    def __init__(self, data: Data, path: str, args, log) -> None:
        super().__init__(data)
        import chromadb

        exe = shutil.which("chroma", path=os.path.dirname(sys.executable)) or "chroma"
        port = free_port()
        self.log_path = f"{path}.log"
        cmd = [exe, "run", "--path", path, "--host", "127.0.0.1", "--port", str(port)]
        self.process, self.client = start_server(
            cmd, self.log_path, lambda: chromadb.HttpClient(host="127.0.0.1", port=port),
            lambda client: client.heartbeat(),
        )  # fmt: skip
        self.server = psutil.Process(self.process.pid)
        self.col = self.client.create_collection(
            COLLECTION,
            configuration={
                "hnsw": {
                    "space": "l2",
                    "max_neighbors": args.m,
                    "ef_construction": args.ef_construction,
                    "ef_search": args.ef,
                }
            },
            embedding_function=None,
        )
        self.info = {"configuration": str(self.col.configuration)}
        log(f"chroma: {self.info}")
        batch = min(args.ingest_batch, self.client.get_max_batch_size())
        t0 = time.perf_counter()
        n = data.base.shape[0]
        for a in range(0, n, batch):
            b = min(n, a + batch)
            self.col.add(
                ids=[str(i) for i in range(a, b)],
                embeddings=data.base[a:b],
                metadatas=[{"tenant": t} for t in data.names[a:b]],
            )
            if time.perf_counter() - t0 > args.ingest_limit:
                raise TimeoutError(f"chroma ingestion over {args.ingest_limit}s at {b} rows")
        self.build_seconds = time.perf_counter() - t0
        self.where = {"tenant": data.tenant}

    def _search(self, q: np.ndarray, where: dict | None) -> np.ndarray:
        found = self.col.query(query_embeddings=q[None, :], n_results=K, where=where, include=[])
        return np.array([int(i) for i in found["ids"][0]], dtype=np.int64)

    def call(self, scope: str, i: int) -> np.ndarray:
        return self._search(self.queries[i], self.where if scope == TENANT else None)

    def search_in(self, query: np.ndarray, tenant: str) -> np.ndarray:
        return self._search(query, {"tenant": tenant})

    def close(self) -> None:
        stop_process(self.process)


PGVECTOR = "pgvector"
PG_TABLE = "bench_items"


class PgVector(System):
    """PostgreSQL + pgvector through psycopg, as its users run it: one connection per client
    thread, server-side prepared statements (``prepare_threshold=0``), the query vector bound
    as a parameter (``pgvector.psycopg``), HNSW ``vector_l2_ops`` with m / ef_construction as
    ours and ``hnsw.ef_search`` per session; the tenant a ``text`` column with a btree index.
    ``variant``:

    * ``where``: ``WHERE tenant = $1`` (the plan Postgres picks; its ``EXPLAIN`` is kept);
    * ``relaxed``: the same with ``SET hnsw.iterative_scan = relaxed_order`` (pgvector >= 0.8);
    * ``rls``: a row-level-security policy (``tenant = current_setting('app.tenant')``) for a
      role the session switches to, the query unfiltered in SQL, relaxed_order on.

    Started by ``../shared/peers/pgvector/start.sh`` (``--pg-dsn``); the table is built once
    and shared by the variants."""

    scopes = (UNFILTERED, TENANT)

    def __init__(self, data: Data, dsn: str, variant: str, args, server_pid: int | None) -> None:
        super().__init__(data)
        import queue
        import threading

        self.name = PGVECTOR if variant == "where" else f"{PGVECTOR}-{variant}"
        self.scopes = (UNFILTERED, TENANT) if variant == "where" else (TENANT,)
        self.dsn, self.variant, self.ef = dsn, variant, args.ef
        self.tenant = data.tenant
        # idle connections: a call takes one (or opens one) and gives it back, so N client
        # threads hold N connections, whichever threads they are
        self.idle: Any = queue.SimpleQueue()
        self.connections: list[Any] = []
        self.lock = threading.Lock()
        self.server = psutil.Process(server_pid) if server_pid else None  # + its backends
        self.sql = {
            UNFILTERED: f"SELECT id FROM {PG_TABLE} ORDER BY embedding <-> %s LIMIT {K}",
            TENANT: (
                f"SELECT id FROM {PG_TABLE} ORDER BY embedding <-> %s LIMIT {K}"
                if variant == "rls"
                else f"SELECT id FROM {PG_TABLE} WHERE tenant = %s "
                f"ORDER BY embedding <-> %s LIMIT {K}"
            ),
        }

    def _connection(self) -> Any:
        try:
            return self.idle.get_nowait()
        except Exception:  # queue.Empty
            import psycopg
            from pgvector.psycopg import register_vector

            conn = psycopg.connect(self.dsn, autocommit=True, prepare_threshold=0)
            register_vector(conn)
            conn.execute(f"SET hnsw.ef_search = {int(self.ef)}")
            if self.variant in ("relaxed", "rls"):
                conn.execute("SET hnsw.iterative_scan = relaxed_order")
            if self.variant == "rls":
                conn.execute(f"SET ROLE {PG_TABLE}_tenant")
                conn.execute("SELECT set_config('app.tenant', %s, false)", (self.tenant,))
            with self.lock:
                self.connections.append(conn)
            return conn

    def _params(self, scope: str, q: np.ndarray) -> tuple:
        if scope == TENANT and self.variant != "rls":
            return (self.tenant, q)
        return (q,)

    def call(self, scope: str, i: int) -> np.ndarray:
        conn = self._connection()
        try:
            rows = conn.execute(
                self.sql[scope], self._params(scope, self.queries[i]), prepare=True
            ).fetchall()
        finally:
            self.idle.put(conn)
        return np.array([r[0] for r in rows], dtype=np.int64)

    def search_in(self, query: np.ndarray, tenant: str) -> np.ndarray:
        conn = self._connection()
        try:
            rows = conn.execute(self.sql[TENANT], (tenant, query), prepare=True).fetchall()
        finally:
            self.idle.put(conn)
        return np.array([r[0] for r in rows], dtype=np.int64)

    def explain(self, scope: str) -> str:
        """The plan of the measured statement, prepared and run as often as Postgres needs to
        settle on its cached plan (custom plans for the first five, then maybe generic)."""
        conn = self._connection()
        try:
            for _ in range(7):
                rows = conn.execute(
                    "EXPLAIN " + self.sql[scope], self._params(scope, self.queries[0]), prepare=True
                ).fetchall()
        finally:
            self.idle.put(conn)
        return "\n".join(r[0] for r in rows)

    def close(self) -> None:
        for conn in self.connections:
            conn.close()


def build_pgvector(data: Data, dsn: str, args, log) -> dict[str, Any]:
    """The table, its HNSW and tenant indexes, the RLS role and policy (rebuilt each run)."""
    import psycopg
    from pgvector.psycopg import register_vector

    out: dict[str, Any] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_vector(conn)
        out["version"] = conn.execute(
            "SELECT current_setting('server_version'), extversion FROM pg_extension "
            "WHERE extname = 'vector'"
        ).fetchone()
        conn.execute(f"DROP TABLE IF EXISTS {PG_TABLE}")
        conn.execute(
            f"CREATE TABLE {PG_TABLE} (id bigint PRIMARY KEY, tenant text NOT NULL, "
            f"embedding vector({data.base.shape[1]}) NOT NULL)"
        )
        t0 = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(
                f"COPY {PG_TABLE} (id, tenant, embedding) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["int8", "text", "vector"])
            for i in range(data.base.shape[0]):
                copy.write_row((i, data.names[i], data.base[i]))
        out["insert_seconds"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        conn.execute(
            f"CREATE INDEX ON {PG_TABLE} USING hnsw (embedding vector_l2_ops) "
            f"WITH (m = {args.m}, ef_construction = {args.ef_construction})"
        )
        conn.execute(f"CREATE INDEX ON {PG_TABLE} (tenant)")
        conn.execute(f"ANALYZE {PG_TABLE}")
        out["build_seconds"] = round(time.perf_counter() - t0, 1)
        role = f"{PG_TABLE}_tenant"
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            conn.execute(f"CREATE ROLE {role} NOLOGIN")
        conn.execute(f"GRANT {role} TO CURRENT_USER")
        conn.execute(f"GRANT SELECT ON {PG_TABLE} TO {role}")
        conn.execute(f"ALTER TABLE {PG_TABLE} ENABLE ROW LEVEL SECURITY")
        conn.execute(
            f"CREATE POLICY by_tenant ON {PG_TABLE} FOR SELECT TO {role} "
            "USING (tenant = current_setting('app.tenant'))"
        )
        out["settings"] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('shared_buffers', "
                "'max_parallel_workers_per_gather', 'work_mem', 'jit')"
            ).fetchall()
        )
    log(
        f"pgvector {out['version']}: COPY {out['insert_seconds']}s, HNSW + tenant index "
        f"{out['build_seconds']}s"
    )
    return out


def pg_unavailable(dsn: str) -> str | None:
    """Why pgvector cannot run here (None: it can)."""
    try:
        import pgvector.psycopg  # noqa: F401
        import psycopg
    except ImportError as exc:
        return f"not installed ({exc}): pip install 'psycopg[binary]' pgvector"
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
                return "the database has no vector extension: ../shared/peers/pgvector/start.sh"
    except psycopg.Error as exc:
        return (
            f"PostgreSQL not reachable at {dsn!r} ({str(exc).strip()[:200]}); start it with "
            "../shared/peers/pgvector/start.sh (or pass --pg-dsn)"
        )
    return None


def postmaster_pid(dsn: str) -> int | None:
    """The postmaster's pid (the parent of a backend), for the server's CPU time: it and its
    children, the backends. None if it is not this machine's."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        try:
            parent = psutil.Process(backend).parent()
        except psutil.Error:
            return None
    return None if parent is None else parent.pid


# --- build ----------------------------------------------------------------------------------
def build_shardwalk(data: Data, path: str, args, log) -> dict[str, Any]:
    from shardwalk.walks.generators import power_law_graph

    out: dict[str, Any] = {}
    with shardwalk.Engine.open(path, threads=args.threads) as engine:
        col = engine.create_collection(
            COLLECTION,
            dim=data.base.shape[1],
            index="hnsw",
            m=args.m,
            ef_construction=args.ef_construction,
            ef=args.ef,
            threads=args.threads,
        )
        t0 = time.perf_counter()
        n = data.base.shape[0]
        for a in range(0, n, 50_000):
            b = min(n, a + 50_000)
            col.upsert(np.arange(a, b), data.base[a:b], tenants=data.names[a:b])
        col.flush()
        out["collection_seconds"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        csr = power_law_graph(n, args.edges_per_node * n, seed=args.seed)
        graph = engine.create_graph(GRAPH, csr)
        fp = graph.build_fingerprints(walks_per_node=args.walks_per_node, seed=args.seed)
        engine.flush()
        out["graph_seconds"] = round(time.perf_counter() - t0, 1)
        out["graph"] = {k: v for k, v in graph.stats().items() if isinstance(v, int | float | str)}
        out["fingerprints"] = {k: v for k, v in fp.items() if isinstance(v, int | float | str)}
        out["paths"] = {
            UNFILTERED: col.explain(data.queries[0], k=K).path,
            TENANT: col.explain(data.queries[0], k=K, tenant=data.tenant).path,
        }
    log(
        f"shardwalk: collection built in {out['collection_seconds']}s, graph + fingerprints in "
        f"{out['graph_seconds']}s ({out['graph'].get('edges')} edges); paths {out['paths']}"
    )
    return out


def write_config(
    path: str, tenant: str, threads: int | None = None, coalesce_us: float | None = None
) -> str:
    with open(path, "w") as f:
        f.write(
            f'[[api_keys]]\nkey = "{ADMIN_KEY}"\nrole = "admin"\n\n'
            f'[[api_keys]]\nkey = "{TENANT_KEY}"\ntenant = "{tenant}"\n'
        )
        if threads:
            f.write(f"\n[limits]\nthreads = {threads}\n")
        if coalesce_us:
            f.write(f"\n[server]\ncoalesce_window_us = {coalesce_us:g}\n")
    return path


# --- measurements ---------------------------------------------------------------------------
def truths(data: Data, inproc: InProcess, args, log) -> dict[str, np.ndarray]:
    t0 = time.perf_counter()
    plain, scoped = common.exact_truths(data.base, data.queries, K, data.owner == data.tenant_id)
    out = {UNFILTERED: plain, TENANT: scoped}
    out[BATCH] = out[UNFILTERED][np.concatenate(data.block_rows)]
    for scope in (PPR_ADMIN, PPR_TENANT):
        if scope in args.scopes:
            out[scope] = np.stack(
                [inproc.reference_ppr(scope, int(s), args.ppr_truth) for s in data.ppr_seeds[scope]]
            )
    for scope in (COMPOSE, COMPOSE_TENANT):
        if scope in args.scopes:
            out[scope] = inproc.reference_compose(scope, args.ppr_truth, args.compose_queries)
    log(
        f"ground truth (exact search, PPR by {args.ppr_truth}, Compose of both) in "
        f"{time.perf_counter() - t0:.1f}s"
    )
    return out


def cpu_seconds(system: System) -> tuple[float, ...]:
    """(client CPU s, server CPU s, server kernel CPU s, client context switches, server
    context switches): the kernel share and the switches say how much of a call's cost is
    threads handing it over to each other rather than work."""
    me = psutil.Process()
    mine = me.cpu_times()
    server = kernel = 0.0
    server_switches = 0
    if system.server is not None:
        try:
            for p in (system.server, *system.server.children(recursive=True)):
                t = p.cpu_times()
                server += t.user + t.system
                kernel += t.system
                server_switches += context_switches(p.pid)
        except psutil.Error:
            pass
    return mine.user + mine.system, server, kernel, context_switches(me.pid), server_switches


def context_switches(pid: int) -> int:
    """Context switches of every thread of a process so far (psutil's count is the main
    thread's only, on Linux); 0 where /proc is not there."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.endswith("ctxt_switches:", 0, line.find(":") + 1):
                        total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total


def prime(systems: list[System], scopes: list[str], log) -> dict[str, Any]:
    """The first calls of every workload on every system, untimed by the runs: a server opens
    a collection or graph on first use and compiles its kernels then (seconds, not load)."""
    out: dict[str, Any] = {}
    for system in systems:
        for scope in scopes:
            if scope in system.scopes:
                t0 = time.perf_counter()
                for i in range(20):
                    system.call(scope, i)
                out[f"{system.name} {scope}"] = round(time.perf_counter() - t0, 3)
    log(f"first 20 calls (seconds): {out}")
    return out


def measure(systems: list[System], data: Data, truth: dict, args, log) -> dict[str, Any]:
    """Per system, scope and concurrency, the round with the highest QPS (a slower round on a
    shared machine is interference), with every round's QPS kept."""
    best: dict[tuple[str, str, int], dict[str, Any]] = {}
    scopes = [s for s in SCOPES if s in args.scopes]
    for round_ in range(args.rounds):
        for scope in scopes:
            pool = truth[scope].shape[0]
            for threads in args.concurrency:
                for system in systems:  # interleaved: each comparison close in time
                    if scope not in system.scopes:
                        continue
                    width = args.batch if scope == BATCH else 1  # queries per call
                    calls_pool = pool // width
                    found, keep = common.recorder(pool, K, width)
                    cpu0 = cpu_seconds(system)
                    run = common.hammer(
                        lambda i, s=system, sc=scope, n=calls_pool: s.call(sc, i % n),
                        threads,
                        args.warmup,
                        args.duration,
                        record=keep,
                    )
                    cpu1 = cpu_seconds(system)
                    point = run.summary()
                    point["qps"] = point.pop("per_second")
                    if width > 1:  # requests per second; and the queries they carried
                        point["queries_per_request"] = width
                        point["queries_per_second"] = round(point["qps"] * width, 1)
                    # CPU per call over warm-up and window (calls are counted in the window
                    # only, so scale by the share of the run it covers)
                    calls = (
                        max(1, run.latencies.size) * (args.warmup + args.duration) / args.duration
                    )
                    point["client_cpu_us_per_call"] = round((cpu1[0] - cpu0[0]) / calls * 1e6, 1)
                    point["client_switches_per_call"] = round((cpu1[3] - cpu0[3]) / calls, 2)
                    if system.server is not None:
                        point["server_cpu_us_per_call"] = round(
                            (cpu1[1] - cpu0[1]) / calls * 1e6, 1
                        )
                        point["server_kernel_us_per_call"] = round(
                            (cpu1[2] - cpu0[2]) / calls * 1e6, 1
                        )
                        point["server_switches_per_call"] = round((cpu1[4] - cpu0[4]) / calls, 2)
                    rec, ran = common.recall(found, truth[scope])
                    point["recall"], point["recall_queries"] = round(rec, 4), ran
                    common.keep_best(best, (system.name, scope, threads), point)
                    log(
                        f"round {round_ + 1} {scope:>16} {system.name:>22} c={threads:>2}: "
                        f"{point['qps']:>8,.0f} QPS p50={point['p50_us']}us p99={point['p99_us']}us "
                        f"recall={point['recall']:.3f} cpu/call client "
                        f"{point['client_cpu_us_per_call']}us server "
                        f"{point.get('server_cpu_us_per_call', '-')}us (kernel "
                        f"{point.get('server_kernel_us_per_call', '-')}us) switches/call client "
                        f"{point['client_switches_per_call']} server "
                        f"{point.get('server_switches_per_call', '-')}"
                        + (
                            f" ERRORS={point['errors']} {point['first_errors']}"
                            if "errors" in point
                            else ""
                        )
                        + (f" STUCK={point['stuck_threads']}" if "stuck_threads" in point else "")
                    )
    return {
        system.name: {
            scope: [best[(system.name, scope, t)] for t in args.concurrency]
            for scope in scopes
            if (system.name, scope, args.concurrency[0]) in best
        }
        for system in systems
    }


def profile(systems: list[System], args, log) -> dict[str, Any]:
    """Where a served Search's CPU goes, under 8 client threads of single-query Search, for
    each served sync server (``@baseline`` too) and the grpc floor: the server's CPU per call
    by thread role (:func:`thread_roles`: the handler threads, grpc's completion-queue thread,
    grpc's C-core I/O threads), measured alone; then, for this checkout's servers, py-spy
    flame graphs (SVG, committed under bench/results/) and the share of the samples spent in
    the frames that matter (inclusive), for the results JSON."""
    exe = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if exe is None:
        log("profile skipped: py-spy not installed (pip install py-spy)")
        return {"skipped": "py-spy not installed"}
    out: dict[str, Any] = {}
    for system in systems:
        served = isinstance(system, Served) and system.name.startswith(SYNC)
        if not (served or isinstance(system, GrpcFloor)) or "threads" in system.name:
            continue
        call = lambda i, s=system: s.call(UNFILTERED, i % len(s.queries))  # noqa: E731
        pid = system.process.pid
        before = thread_cpu(pid)
        run = common.hammer(call, 8, 0.0, args.profile)
        after = thread_cpu(pid)
        roles = thread_roles(exe, pid)
        calls = max(1, run.latencies.size)
        by_role: dict[str, float] = {}
        for tid, (comm, seconds) in after.items():
            role = roles.get(tid) or f"native: {comm}"
            used = seconds - before.get(tid, (comm, 0.0))[1]
            by_role[role] = by_role.get(role, 0.0) + used
        entry: dict[str, Any] = {
            "qps": round(calls / args.profile, 1),
            "server_cpu_us_per_call_by_thread": {
                role: round(s / calls * 1e6, 1)
                for role, s in sorted(by_role.items(), key=lambda x: -x[1])
                if s > 0
            },
        }
        out[system.name] = entry
        log(f"profile {system.name}: CPU us/call by thread " + json.dumps(entry))
        if not served or "@baseline" in system.name:
            continue
        Path(args.out).mkdir(parents=True, exist_ok=True)
        tag = f"-{args.tag}" if args.tag else ""
        svg = Path(args.out) / f"server-clustered-{args.n}{tag}-profile-{system.name}.svg"
        raw = svg.with_suffix(".txt")
        for path, fmt in ((svg, "flamegraph"), (raw, "raw")):
            spy = subprocess.Popen(
                [exe, "record", "--pid", str(pid), "--rate", "200",
                 "--duration", str(int(args.profile)), "--nonblocking", "--format", fmt,
                 "-o", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            common.hammer(call, 8, 0.5, args.profile)
            _, err = spy.communicate(timeout=60)
            if spy.returncode:
                log(f"py-spy on {system.name} failed: {err.strip()[-300:]}")
        if raw.exists():
            entry["inclusive_share"] = _profile_shares(raw.read_text())
            raw.unlink()
        entry["svg"] = svg.name
        log(f"profile {system.name}: {svg} " + json.dumps(entry.get("inclusive_share")))
    return out


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """{thread id: (its name in the kernel, user + system CPU seconds so far)} of a process
    (Linux /proc; empty elsewhere)."""
    out: dict[int, tuple[str, float]] = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # ended meanwhile
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (comm, (int(fields[11]) + int(fields[12])) / tick)
    return out


def thread_roles(exe: str, pid: int) -> dict[int, str]:
    """{thread id: role} of a server's Python threads, from ``py-spy dump --json``: grpc's
    completion-queue thread (it runs ``_serve``), the threads that run handlers (the fair
    pool's ``rpc_N`` or a ThreadPoolExecutor's), the rest by name. Threads py-spy does not
    list are native ones (grpc's C-core I/O threads: ``event_engine``)."""
    try:
        dump = subprocess.run(
            [exe, "dump", "--pid", str(pid), "--json", "--nonblocking"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        threads = json.loads(dump.stdout)
    except (subprocess.SubprocessError, json.JSONDecodeError):
        return {}
    roles = {}
    for t in threads:
        frames = {f.get("name") for f in t.get("frames", [])}
        name = t.get("thread_name") or ""
        if "_serve" in frames:
            role = "grpc completion-queue thread (Python)"
        elif name.startswith(("rpc_", "ThreadPoolExecutor")) or frames & {"_work", "_worker"}:
            role = "handler threads (Python: grpc's call handling, dispatcher, search)"
        else:
            role = f"python: {re.sub(r'[0-9_]+$', '', name) or 'unnamed'}"
        roles[int(t["os_thread_id"])] = role
    return roles


# the frames a served Search spends its samples in (py-spy raw: "frame;frame;... count")
_FRAMES = {
    "dispatcher (auth, parse, limits, handler, metrics)": "Dispatcher.call (",
    "Service.search (conversions + library)": "Service.search (",
    "Collection.search (library)": "Collection.search (",
    "faiss HNSW search (C, GIL released)": "HNSWGraph._search (",
    "grpc: receive the request (wait + C)": "unary_request (",
    "grpc: send the response (C)": "_status (",
    "grpc: completion queue poll thread (C)": "_serve (",
    "fair pool: a call queued (grpc's thread)": "FairPool.submit_as (",
    "fair pool: a slot freed": "FairPool.release (",
    "a thread waiting on a condition (leaf frame)": "leaf:Condition.wait (",
}


def _profile_shares(text: str) -> dict[str, float]:
    total, hits = 0, dict.fromkeys(_FRAMES, 0)
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        leaf = stack.rpartition(";")[2]
        for name, frame in _FRAMES.items():
            if (frame.startswith("leaf:") and leaf.startswith(frame[5:])) or frame in stack:
                hits[name] += int(count)
    return {name: round(v / max(total, 1), 3) for name, v in hits.items()}


# where Milvus Lite's server spends a search (py-spy raw frames: "function (file:line)")
_MILVUS_FRAMES = {
    "whole search (execute_search_with_index)": "execute_search_with_index (",
    "newest sequence number per primary key, every row (Python)": "_update_max_seqs (",
    "live-row mask, every row (Python)": "_build_local_mask (",
    "faiss HNSW index search": "index/faiss_hnsw.py",
    "brute-force index search": "index/brute_force.py",
}


def _milvus_shares(text: str) -> dict[str, float]:
    """The share of Milvus Lite's server samples (idle threads excluded) in each frame."""
    total, hits = 0, dict.fromkeys(_MILVUS_FRAMES, 0)
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for name, frame in _MILVUS_FRAMES.items():
            if frame in stack:
                hits[name] += int(count)
    return {"samples": total, **{k: round(v / max(total, 1), 3) for k, v in hits.items()}}


def bucket_recall(systems: list[System], data: Data, args, log) -> dict[str, Any]:
    """Recall@10 per tenant size bucket, single-query calls, every system."""
    picks = bucket_tenants(data, args.n, 3)
    queries = data.queries[: args.bucket_queries]
    out: dict[str, Any] = {"tenants": {}, "recall": {}}
    truth: dict[int, np.ndarray] = {}
    for label, tenants in picks.items():
        for t in tenants:
            truth[t] = exact_search(data.base, queries, K, "l2", mask=data.owner == t).ids
            out["tenants"].setdefault(label, []).append(
                {
                    "tenant": name_of(t),
                    "rows": int(data.sizes[t]),
                    "share": round(data.sizes[t] / args.n, 4),
                }
            )
    for system in systems:
        if isinstance(system, GrpcFloor) or getattr(system, "variant", "") == "rls":
            continue  # answers nothing / scoped to one tenant by its session
        per: dict[str, Any] = {}
        t0 = time.perf_counter()
        for label, tenants in picks.items():
            values = []
            for t in tenants:
                found = np.stack([_pad(system.search_in(q, name_of(t))) for q in queries])
                values.append(round(common.recall(found, truth[t])[0], 4))
            per[label] = {"min": min(values), "per_tenant": values}
        out["recall"][system.name] = per
        log(
            f"bucket recall {system.name:>22}: "
            + ", ".join(f"{b} {v['min']:.3f}" for b, v in per.items())
            + f" ({time.perf_counter() - t0:.1f}s)"
        )
    return out


def _pad(ids: np.ndarray) -> np.ndarray:
    row = np.full(K, -1, dtype=np.int64)
    row[: min(K, len(ids))] = ids[:K]
    return row


# --- report ---------------------------------------------------------------------------------
def ratios(result: dict[str, Any], args) -> dict[str, Any]:
    search = result["search"]
    out: dict[str, Any] = {}

    def at(system: str, scope: str, c: int) -> dict[str, Any] | None:
        return next((p for p in search.get(system, {}).get(scope, []) if p["threads"] == c), None)

    servers = [s for s in search if s.startswith("server-")]
    for server in servers:
        for scope in SCOPES:
            a, b = at(INPROC, scope, 1), at(server, scope, 1)
            if a and b:
                out[f"{scope} p50 overhead at c=1, {server} - in-process (ms)"] = round(
                    (b["p50_us"] - a["p50_us"]) / 1e3, 3
                )
    for scope in SCOPES:
        for c in args.concurrency:
            a, b = at(SYNC, scope, c), at(AIO, scope, c)
            if a and b and b["qps"]:
                out[f"{scope} qps c={c} sync / aio"] = round(a["qps"] / b["qps"], 3)
            a = at(INPROC, scope, c)
            for server in servers:
                b = at(server, scope, c)
                if a and b and a["qps"]:
                    out[f"{scope} qps c={c} {server} / in-process"] = round(b["qps"] / a["qps"], 3)
    for other in (MILVUS, CHROMA, PGVECTOR, f"{PGVECTOR}-relaxed", f"{PGVECTOR}-rls"):
        for scope in (UNFILTERED, TENANT):
            for c in args.concurrency:
                b = at(other, scope, c)
                for server in servers:
                    a = at(server, scope, c)
                    if a and b and b["qps"]:
                        out[f"{scope} qps c={c} {server} / {other}"] = round(a["qps"] / b["qps"], 2)
    return out


def targets(result: dict[str, Any], args) -> dict[str, Any]:
    """Issue 9's targets, each with the observed value."""
    search = result["search"]

    def at(system: str, scope: str, c: int) -> dict[str, Any] | None:
        return next((p for p in search.get(system, {}).get(scope, []) if p["threads"] == c), None)

    out: dict[str, Any] = {}
    for server in [s for s in search if s.startswith("server-") and s != SYNC_INPROC]:
        a, b = at(INPROC, UNFILTERED, 1), at(server, UNFILTERED, 1)
        if a and b:
            v = (b["p50_us"] - a["p50_us"]) / 1e3
            out[f"{server}: Search p50 overhead at c=1 <= 0.3 ms"] = {
                "observed_ms": round(v, 3),
                "met": v <= 0.3,
            }
        p = at(server, UNFILTERED, 8)
        if p:
            out[f"{server}: >= 3,000 Search QPS at c=8"] = {
                "observed": p["qps"],
                "met": p["qps"] >= 3000,
            }
        p = at(server, UNFILTERED, 32)
        if p:
            out[f"{server}: Search p99 <= 20 ms at c=32"] = {
                "observed_ms": round(p["p99_us"] / 1e3, 2),
                "met": p["p99_us"] <= 20_000,
            }
        for other in (MILVUS, CHROMA):
            best_other = max(
                (q["qps"] for q in search.get(other, {}).get(TENANT, [])), default=None
            )
            best_ours = max(
                (q["qps"] for q in search.get(server, {}).get(TENANT, [])), default=None
            )
            if best_other and best_ours:
                out[f"{server}: >= 10x {other} QPS, tenant-filtered (best concurrency each)"] = {
                    "observed_ratio": round(best_ours / best_other, 2),
                    "met": best_ours >= 10 * best_other,
                }
    out.update(pgvector_targets(search, at))
    buckets = result.get("bucket_recall", {}).get("recall", {})
    for system in (INPROC, SYNC, AIO):
        if system in buckets:
            low = min(v["min"] for v in buckets[system].values())
            out[f"{system}: tenant recall@10 >= 0.95 in every size bucket"] = {
                "observed_min": low,
                "met": low >= 0.95,
            }
    for system in [s for s in search if s == INPROC or s.startswith("server-")]:
        for scope in (COMPOSE, COMPOSE_TENANT):
            p = at(system, scope, 1)
            if p:
                out[f"{system}: {scope} p50 <= 3 ms (c=1)"] = {
                    "observed_ms": round(p["p50_us"] / 1e3, 2),
                    "recall": p["recall"],
                    "met": p["p50_us"] <= 3000,
                }
    return out


def _at_least(ours: float, theirs: float, factor: float, **extra: Any) -> dict[str, Any]:
    return {"observed_ratio": round(ours / theirs, 2), **extra, "met": ours >= factor * theirs}


def pgvector_targets(search: dict[str, Any], at: Any) -> dict[str, Any]:
    """Issue 21's targets against PostgreSQL + pgvector, and its per-call cost targets."""
    out: dict[str, Any] = {}
    pg = [s for s in search if s.startswith(PGVECTOR)]
    if not pg:
        return out
    pg1, pg8 = at(PGVECTOR, UNFILTERED, 1), at(PGVECTOR, UNFILTERED, 8)
    # the best pgvector plan that keeps recall >= 0.99 on the tenant, at 8 clients
    kept = [p for s in pg if (p := at(s, TENANT, 8)) and p["recall"] >= 0.99]
    best = max(kept, key=lambda p: p["qps"], default=None)
    best_name = next((s for s in pg if at(s, TENANT, 8) is best), None)
    for server in [s for s in search if s.startswith("server-") and s != SYNC_INPROC]:
        a1, a8 = at(server, UNFILTERED, 1), at(server, UNFILTERED, 8)
        if a8 and pg8:
            out[f"{server}: unfiltered QPS at 8 clients >= 1.2x pgvector's"] = _at_least(
                a8["qps"], pg8["qps"], 1.2
            )
        if a1 and pg1:
            out[f"{server}: unfiltered p50 at 1 client <= pgvector's"] = {
                "observed_ms": round(a1["p50_us"] / 1e3, 3),
                "pgvector_ms": round(pg1["p50_us"] / 1e3, 3),
                "met": a1["p50_us"] <= pg1["p50_us"],
            }
        t8 = at(server, TENANT, 8)
        if t8 and best:
            found = _at_least(t8["qps"], best["qps"], 3, recall=t8["recall"])
            found.update(pgvector_plan=best_name, pgvector_recall=best["recall"])
            found["met"] = found["met"] and t8["recall"] >= 0.99
            out[
                f"{server}: tenant QPS at 8 clients >= 3x pgvector's best plan at recall >= 0.99"
            ] = found
        b8 = at(server, BATCH, 8)
        if b8 and pg8:
            out[
                f"{server}: batch requests' queries/s at 8 clients >= 5x pgvector's unfiltered QPS"
            ] = _at_least(b8["queries_per_second"], pg8["qps"], 5)
        if a8 and "server_cpu_us_per_call" in a8:
            out[f"{server}: server CPU per single-query Search <= 300 us (c=8)"] = {
                "observed_us": a8["server_cpu_us_per_call"],
                "met": a8["server_cpu_us_per_call"] <= 300,
            }
            out[f"{server}: client CPU per single-query Search <= 150 us (c=8)"] = {
                "observed_us": a8["client_cpu_us_per_call"],
                "met": a8["client_cpu_us_per_call"] <= 150,
            }
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    plt = common.pyplot()
    scopes = [s for s in SCOPES if any(s in v for v in result["search"].values())]
    fig, axes = plt.subplots(2, len(scopes), figsize=(5 * len(scopes), 9), squeeze=False)
    colors = {s: f"C{i}" for i, s in enumerate(result["search"])}  # one colour per system
    for col, scope in enumerate(scopes):
        for system, per in result["search"].items():
            if scope not in per:
                continue
            pts = per[scope]
            c = [p["threads"] for p in pts]
            style = {"marker": "o", "label": system, "color": colors[system]}
            axes[0][col].plot(c, [p["qps"] for p in pts], **style)
            axes[1][col].plot(c, [p["p99_us"] / 1e3 for p in pts], **style)
        axes[0][col].set_title(f"{scope}: QPS")
        axes[1][col].set_title(f"{scope}: p99 latency")
        axes[0][col].set_ylabel("queries per second")
        axes[1][col].set_ylabel("ms")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("client threads (one query per call)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    p = result["params"]
    fig.suptitle(
        f"{result['dataset']}: HNSW M={p['m']} efC={p['ef_construction']} ef={p['ef']}, k={K}; "
        f"{result['machine']['cpus']} CPUs shared; warm-up {p['warmup_seconds']}s + "
        f"{p['duration_seconds']}s per point"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# --- run ------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    data = Data(args)
    log = lambda msg: print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", flush=True)  # noqa: E731
    log(
        f"{data.name}: 2% tenant {data.tenant} with {data.tenant_rows:,} rows "
        f"({data.tenant_rows / args.n:.2%}); warm-up {args.warmup}s then {args.duration}s "
        "measured continuously per point (idle memory is paged out here after ~1 s)"
    )
    tmp = tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench-server-")
    root = tmp.name
    base = os.path.join(root, "shardwalk")
    built = {"shardwalk": build_shardwalk(data, base, args, log)}
    config = write_config(os.path.join(root, "server.toml"), data.tenant)
    models = [(SYNC, config)] + ([] if args.skip_aio else [(AIO, config)])
    for t in args.sync_pool:  # the sync server with another [limits] threads
        path = os.path.join(root, f"server-{t}.toml")
        models.append((f"{SYNC}-{t}threads", write_config(path, data.tenant, t)))
    for us in args.coalesce:  # the sync server coalescing concurrent single-query searches
        path = os.path.join(root, f"server-coalesce-{us:g}.toml")
        models.append((f"{SYNC}-coalesce{us:g}us", write_config(path, data.tenant, coalesce_us=us)))
    if args.baseline:  # the same server models run by another checkout's interpreter
        models += [(f"{model}@baseline", c) for model, c in models if model in (SYNC, AIO)]
    for model, _ in models:  # one process owns a data directory: a copy per server
        shutil.copytree(base, os.path.join(root, model))
    skipped: dict[str, str] = {}
    systems: list[System] = []
    load_before = os.getloadavg()
    try:
        inproc = InProcess(data, base, args.threads)
        systems.append(inproc)
        for model, model_config in models:
            t0 = time.perf_counter()
            python = args.baseline if model.endswith("@baseline") else sys.executable
            served = Served(data, model, os.path.join(root, model), model_config, args, python)
            systems.append(served)
            built[model] = {"start_seconds": round(time.perf_counter() - t0, 1)}
            log(
                f"{model}: serving on {served.admin.address} (started in {built[model]['start_seconds']}s)"
            )
        if not args.skip_floor:
            systems.append(GrpcFloor(data))
        if not args.skip_in_process_server:
            from shardwalk.server.config import load_config

            systems.append(InProcessServer(data, inproc.engine, load_config(config)))
        if args.skip_milvus:
            skipped[MILVUS] = "--skip-milvus"
        else:
            try:
                import milvus_lite  # noqa: F401
                import pymilvus  # noqa: F401
            except ImportError as exc:
                skipped[MILVUS] = f"not installed ({exc}): pip install pymilvus milvus-lite"
            else:
                mv = Milvus(data, os.path.join(root, "milvus"), args, log)
                systems.append(mv)
                built[MILVUS] = {
                    "insert_seconds": round(mv.insert_seconds, 1),
                    "build_seconds": round(mv.build_seconds, 1),
                    "index": mv.info,
                    "path_check": mv.path_check(args.milvus_check_queries, 4.0, log),
                }
                log(
                    f"milvus-lite: built in {mv.build_seconds:.1f}s (insert {mv.insert_seconds:.1f}s)"
                )
        plans: dict[str, str] = {}
        if args.skip_pgvector:
            skipped[PGVECTOR] = "--skip-pgvector"
        else:
            note = pg_unavailable(args.pg_dsn)
            if note:
                skipped[PGVECTOR] = note
                log(f"pgvector skipped: {note}")
            else:
                built[PGVECTOR] = build_pgvector(data, args.pg_dsn, args, log)
                pid = postmaster_pid(args.pg_dsn)
                for variant in ("where", "relaxed", "rls"):
                    pg = PgVector(data, args.pg_dsn, variant, args, pid)
                    systems.append(pg)
                    for scope in pg.scopes:
                        plan = re.sub(r"'\[[^']*\]'::vector", "$query::vector", pg.explain(scope))
                        plans[f"{pg.name} {scope}"] = plan
                        log(f"{pg.name} {scope}: EXPLAIN\n{plan}")
        if args.skip_chroma:
            skipped[CHROMA] = "--skip-chroma"
        else:
            try:
                import chromadb  # noqa: F401
            except ImportError as exc:
                skipped[CHROMA] = f"not installed ({exc}): pip install chromadb"
            else:
                ch = Chroma(data, os.path.join(root, "chroma"), args, log)
                systems.append(ch)
                built[CHROMA] = {"build_seconds": round(ch.build_seconds, 1), **ch.info}
                log(f"chroma: built in {ch.build_seconds:.1f}s")
        truth = truths(data, inproc, args, log)
        result: dict[str, Any] = {
            "dataset": data.name,
            "n": args.n,
            "dim": args.dim,
            "k": K,
            "tenant": {"name": data.tenant, "rows": data.tenant_rows},
            "params": {
                **common.hnsw_params(args),
                "ppr_seeds": args.ppr_seeds,
                "compose_queries": args.compose_queries,
                "edges_per_node": args.edges_per_node,
                "walks_per_node": args.walks_per_node,
                "ppr_truth": args.ppr_truth + (" (r_max 1e-7)" if args.ppr_truth == "push" else ""),
                "warmup_seconds": args.warmup,
                "duration_seconds": args.duration,
                "rounds": args.rounds,
                "concurrency": args.concurrency,
                "engine_threads": args.threads,
                "server_log_level": args.server_log_level,
                "sync_pool_variants": args.sync_pool,
                "coalesce_window_us_variants": args.coalesce,
                "batch_queries_per_request": args.batch,
            },
            "method": (
                f"each point: N client threads loop one single-query call back to back; "
                f"{args.warmup}s warm-up then {args.duration}s measured continuously (QPS = calls "
                "completed in the window; latency of every call overlapping it); systems "
                "interleaved per setting; each point the best of its rounds (every round's QPS "
                "kept). Servers in their own processes on 127.0.0.1; one client object shared by "
                "the threads. CPU per call from psutil over warm-up + window."
            ),
            "built": built,
            "skipped": skipped,
        }
        result["pgvector_plans"] = plans
        result["first_calls_seconds"] = prime(systems, args.scopes, log)
        result["search"] = measure(systems, data, truth, args, log)
        if args.profile:
            result["profile"] = profile(systems, args, log)
        if args.bucket_queries:
            result["bucket_recall"] = bucket_recall(systems, data, args, log)
    finally:
        for system in systems:
            try:
                system.close()
            except Exception as exc:  # keep closing the others
                log(f"closing {system.name}: {exc}")
        gc.collect()
        tmp.cleanup()
    result["command"] = shlex.join(["python", *sys.argv])
    versions = ("grpcio", "pymilvus", "milvus-lite", "chromadb", "psycopg")
    result["machine"] = common.machine(
        load_before,
        {name: common.package_version(name) for name in versions},
        note="cores shared with other work (loadavg_before/after); ratios are within this run",
    )
    result["shardwalk_commit"] = common.commit_of(HERE)
    if args.baseline:
        where = subprocess.run(
            [
                args.baseline,
                "-c",
                "import shardwalk, os; print(os.path.dirname(shardwalk.__file__))",
            ],
            capture_output=True,
            text=True,
            cwd="/",  # not a checkout's folder: the interpreter's own shardwalk
        ).stdout.strip()
        result["baseline_commit"] = common.commit_of(where or HERE)
    result["ratios"] = ratios(result, args)
    result["targets"] = targets(result, args)
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    parser.add_argument("--n", type=int, default=100_000)
    common.pool_flags(parser)
    parser.add_argument("--ppr-seeds", type=int, default=200, help="PPR seed pool per scope")
    parser.add_argument(
        "--compose-queries", type=int, default=200, help="Compose query pool (first queries)"
    )
    parser.add_argument(
        "--ppr-truth", choices=["push", "exact"], default="push", help="reference PPR solver"
    )
    parser.add_argument("--seed", type=int, default=0)
    common.hnsw_flags(parser)
    parser.add_argument("--edges-per-node", type=int, default=10)
    parser.add_argument("--walks-per-node", type=int, default=10)
    parser.add_argument("--concurrency", type=ints, default=[1, 8, 32], help="client threads")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per point")
    parser.add_argument("--rounds", type=int, default=2, help="each point keeps its best round")
    parser.add_argument(
        "--scopes",
        type=lambda s: [x for x in s.split(",") if x],
        default=list(SCOPES),
        help="workloads to time",
    )
    parser.add_argument("--bucket-queries", type=int, default=100, help="0: no bucket recall")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="engine threads")
    parser.add_argument(
        "--server-log-level", default="INFO", help="serve's --log-level (its default)"
    )
    parser.add_argument("--ingest-batch", type=int, default=5000)
    parser.add_argument("--ingest-limit", type=float, default=900, help="seconds per competitor")
    parser.add_argument("--skip-milvus", action="store_true")
    parser.add_argument(
        "--milvus-check-queries",
        type=int,
        default=100,
        help="single queries per ef of Milvus Lite's path check (recall at ef 8, 64, 512)",
    )
    parser.add_argument("--skip-chroma", action="store_true")
    parser.add_argument("--skip-pgvector", action="store_true")
    parser.add_argument("--skip-aio", action="store_true", help="no grpc.aio server")
    parser.add_argument(
        "--pg-dsn",
        default="host=127.0.0.1 port=55432 dbname=bench user=bench "
        "passfile=/tmp/pgvector-bench.pgpass",
        help="PostgreSQL + pgvector (../shared/peers/pgvector/start.sh prints it)",
    )
    parser.add_argument(
        "--batch", type=int, default=32, help="queries per request of the search-batch workload"
    )
    parser.add_argument(
        "--coalesce",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=[200.0],
        help="also run the sync server with [server] coalesce_window_us = each; '' for none",
    )
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after the runs, record py-spy flame graphs of the served sync servers under 8 "
        "client threads of single-query Search for this long (bench/results/*.svg)",
    )
    parser.add_argument("--skip-in-process-server", action="store_true")
    parser.add_argument("--skip-floor", action="store_true", help="no grpc echo floor")
    parser.add_argument(
        "--sync-pool",
        type=ints,
        default=[16],
        help="also run the sync server with these [limits] threads (the default: 2 per core, "
        "at least 4); '' for none",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="PYTHON",
        help="also run the sync and aio servers with this interpreter (a venv of another "
        "checkout, e.g. the commit before a change), interleaved with this one's on copies of "
        "the same data: the change's cost, same run, same load",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--tmp", default=None, help="directory for the data (default: TMPDIR)")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument(
        "--tag", default="", help="results file server-clustered-<n>-<tag>.json (a run of its own)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.queries, args.ppr_seeds, args.tenants = 3000, 50, 20, 20
        args.compose_queries = 20
        args.concurrency, args.duration, args.warmup, args.rounds = [1, 4], 0.3, 0.2, 1
        args.ef_construction, args.bucket_queries, args.walks_per_node = 40, 10, 4
        args.batch = min(args.batch, 8)
    result = run(args)
    stem = f"server-clustered-{args.n}" + (f"-{args.tag}" if args.tag else "")
    stem += "-quick" if args.quick else ""
    out = common.write_results(args.out, stem, result)
    plot(result, out / f"{stem}.png")
    print(json.dumps({"ratios": result["ratios"], "targets": result["targets"]}, indent=1))
    return result


if __name__ == "__main__":
    main()
