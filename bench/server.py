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
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common
from _server_cpu import cpu_seconds, profile
from _server_peers import (
    PGVECTOR,
    Chroma,
    Milvus,
    PgVector,
    absent,
    build_pgvector,
    pg_unavailable,
    postmaster_pid,
)
from _server_report import plot, ratios, targets
from _server_systems import (
    AIO,
    BATCH,
    CHROMA,
    COMPOSE,
    COMPOSE_TENANT,
    MILVUS,
    PPR_ADMIN,
    PPR_TENANT,
    SCOPES,
    SYNC,
    TENANT,
    UNFILTERED,
    Data,
    GrpcFloor,
    InProcess,
    InProcessServer,
    K,
    Served,
    System,
    bucket_tenants,
    build_shardwalk,
    name_of,
    pad,
    write_config,
)
from shardwalk.index import exact_search

HERE = Path(__file__).resolve().parent


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
                found = np.stack([pad(system.search_in(q, name_of(t))) for q in queries])
                values.append(round(common.recall(found, truth[t])[0], 4))
            per[label] = {"min": min(values), "per_tenant": values}
        out["recall"][system.name] = per
        log(
            f"bucket recall {system.name:>22}: "
            + ", ".join(f"{b} {v['min']:.3f}" for b, v in per.items())
            + f" ({time.perf_counter() - t0:.1f}s)"
        )
    return out


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
        note = absent(
            "--skip-milvus" if args.skip_milvus else None,
            ("milvus_lite", "pymilvus"),
            "pymilvus milvus-lite",
        )
        if note:
            skipped[MILVUS] = note
        else:
            mv = Milvus(data, os.path.join(root, "milvus"), args, log)
            systems.append(mv)
            built[MILVUS] = {
                "insert_seconds": round(mv.insert_seconds, 1),
                "build_seconds": round(mv.build_seconds, 1),
                "index": mv.info,
                "path_check": mv.path_check(args.milvus_check_queries, 4.0, log),
            }
            log(f"milvus-lite: built in {mv.build_seconds:.1f}s (insert {mv.insert_seconds:.1f}s)")
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
        note = absent("--skip-chroma" if args.skip_chroma else None, ("chromadb",), "chromadb")
        if note:
            skipped[CHROMA] = note
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
    common.window_flags(parser, "point", "each point keeps its best round")
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
