"""bench/server.py's workload and the shardwalk systems it times: the data (vectors, tenants,
PPR seeds, batch blocks), the scope names, the processes (free ports, first lines, stops), the
:class:`System` interface every competitor implements (``call(scope, i)``, ``search_in``), and
shardwalk's side of it: in process, served (``shardwalk serve``), the in-process server, grpc's
floor; how its data directory and server configuration are built."""

from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import _common as common
import numpy as np
import psutil
from filtered import zipf_tenants

import shardwalk
from shardwalk.datasets import clustered_vectors

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


def beside_python(program: str) -> str | None:
    """Where ``program`` is: beside this interpreter first (a venv's own scripts), else on PATH."""
    return shutil.which(program, path=os.path.dirname(sys.executable)) or shutil.which(program)


def start_server(
    program: str, args: list[str], path: str, connect: Any, ready: Any, timeout: float = 120.0
) -> tuple[subprocess.Popen, Any]:
    """A competitor's server, ``program ARGS --host 127.0.0.1 --port P`` on a free port P (its
    output to ``path``.log, never a pipe: a request log would fill it), and a client of it,
    ``connect(P)``, once ``ready(client)`` answers."""
    port = free_port()
    cmd = [beside_python(program) or program, *args, "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(cmd, stdout=open(f"{path}.log", "w"), stderr=subprocess.STDOUT)
    t0 = time.perf_counter()
    while True:
        try:
            client = connect(port)
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


def pad(ids: np.ndarray) -> np.ndarray:
    """A result row of exactly K ids (padded with -1), for recall against the truth."""
    row = np.full(K, -1, dtype=np.int64)
    row[: min(K, len(ids))] = ids[:K]
    return row
