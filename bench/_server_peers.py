"""bench/server.py's peers: Milvus Lite (its own server process, through pymilvus), Chroma
(``chroma run``, through its HTTP client) and PostgreSQL + pgvector (through psycopg; the
table built once for three plans: ``WHERE``, relaxed iterative scan, row-level security), each
a :class:`~_server_systems.System` on the same data and tenants as shardwalk."""

from __future__ import annotations

import importlib
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as common
import numpy as np
import psutil
from _server_cpu import milvus_shares
from _server_systems import (
    CHROMA,
    COLLECTION,
    MILVUS,
    TENANT,
    UNFILTERED,
    Data,
    K,
    System,
    beside_python,
    pad,
    start_server,
    stop_process,
)
from shardwalk.index import exact_search


def absent(skip: str | None, modules: tuple[str, ...], packages: str) -> str | None:
    """Why a peer is left out: its ``--skip-...`` flag given (``skip``: the flag, or None), or
    a module of its client missing (with the pip command that installs ``packages``); None if
    it runs."""
    if skip:
        return skip
    try:
        for module in modules:
            importlib.import_module(module)
    except ImportError as exc:
        return f"not installed ({exc}): pip install {packages}"
    return None


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

        self.process, self.client = start_server(
            "milvus-lite", ["server", "--data-dir", path], path,
            lambda port: MilvusClient(uri=f"http://127.0.0.1:{port}", timeout=5),
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
                found.append(pad(self._search(q, "", params)))
                took.append(time.perf_counter() - t0)
            by_ef.append(
                {
                    "ef": ef,
                    "recall": round(common.recall(np.stack(found), truth)[0], 4),
                    "p50_ms": round(float(np.median(took)) * 1e3, 2),
                }
            )
        out: dict[str, Any] = {"index": self.info, "unfiltered_by_ef": by_ef}
        exe = beside_python("py-spy")
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
            out["profile"] = milvus_shares(text) if text else f"py-spy failed: {err[-300:]}"
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

        self.process, self.client = start_server(
            "chroma", ["run", "--path", path], path,
            lambda port: chromadb.HttpClient(host="127.0.0.1", port=port),
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
