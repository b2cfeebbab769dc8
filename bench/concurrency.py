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
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: F401  (Run, hammer, recall, search_around: also imported from here)
    Run,
    engine_source,
    hammer,
    hnsw_flags,
    hnsw_params,
    int_flags,
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
    window_flags,
    write_results,
)
from _concurrency_memory import MEMORY_SYSTEMS, measure_memory, memory_child
from _concurrency_systems import (
    QDRANT,
    QDRANT_API,
    SHARDWALK,
    TENANT,
    UNFILTERED,
    Data,
    K,
    QdrantEdge,
    Shardwalk,
    System,
    ground_truth,
    load,
)

import shardwalk

HERE = Path(__file__).resolve().parent
PHASES = ("search", "checkpoint", "writes")


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
    int_flags(
        parser,
        build_threads=os.cpu_count() or 1,
        build_batch=(50_000, "rows per build upsert"),
        checkpoint_batch=1000,
        checkpoint_search_threads=1,
        qdrant_segments=(1, "Qdrant default_segment_number (0: auto)"),
        qdrant_full_scan_kb=(
            10_000,
            "Qdrant full_scan_threshold (KB of vectors; 10000 is Qdrant's default)",
        ),
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
