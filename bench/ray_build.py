"""Batch jobs on Ray against the embedded paths (issue 10), side by side in one run.

Build of a clustered collection from Parquet (partitioned HNSW, or ``--index spann``), and
fingerprints of the generated 1M-node/5M-edge power-law graph, each configuration in a fresh
subprocess (its own Ray, its own peak memory):

- build: ``engine`` (Engine.create_collection + upserts of 50K rows, the embedded path),
  ``threads-1``/``threads-2`` (shardwalk.jobs without Ray), ``ray-1``/``ray-2`` (a local Ray
  with 1 or 2 CPUs), ``cluster-2`` (two Ray nodes on 127.0.0.1 with one CPU each);
- fingerprints: ``embedded-1``/``embedded-2`` (walks.build_fingerprints with 1 or 2 numba
  threads), ``ray-1``/``ray-2`` (replicated), ``cluster-2``, and the sharded mode when given.

Wall time per stage, speedups, peak RSS of the driver and the workers, bytes through the object
store; the load average (``uptime``) before and after each run. Results:
``bench/results/ray_build.json``.

    python bench/ray_build.py --n 1000000 --dim 128
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import _common as common
import numpy as np

HERE = Path(__file__).resolve().parent


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> dict:
    """CPUs, and whether the kernel shares the CPU per session (autogroup): then every other
    busy session takes an equal share, and this run's processes (Ray's workers included: they
    stay in the bench's session) split one share, however many there are."""
    try:
        autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        autogroup = None
    return {"cpus": os.cpu_count(), "sched_autogroup": autogroup}


def peak_rss() -> int:
    from shardwalk._threads import peak_rss_bytes

    return peak_rss_bytes()


# -- data ---------------------------------------------------------------------------------------
def write_parquet(directory: Path, n: int, dim: int, files: int, seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from shardwalk.datasets import clustered_vectors

    if (directory / "DONE").exists():
        return
    directory.mkdir(parents=True, exist_ok=True)
    data = clustered_vectors(n, dim, queries=1, metadata=False, seed=seed)
    for f, rows in enumerate(np.array_split(np.arange(n), files)):
        table = pa.table(
            {
                "id": pa.array(rows.astype(np.int64)),
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(data.vectors[rows].ravel()), dim
                ),
            }
        )
        pq.write_table(table, directory / f"part-{f:03d}.parquet", row_group_size=32_768)
    (directory / "DONE").write_text("ok")


# -- one configuration (in a subprocess) --------------------------------------------------------
def start_ray(workers: int, cluster: bool) -> object:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from shardwalk.index.distributed import connect

    if not cluster:
        connect(None, workers)
        return None
    from ray.cluster_utils import Cluster

    local = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
    nodes = Cluster(initialize_head=True, head_node_args={**local, "include_dashboard": False})
    for _ in range(workers - 1):
        nodes.add_node(**local)
    nodes.wait_for_nodes()
    connect(nodes.address)
    assert len(ray.nodes()) == workers
    return nodes


def run_build(args: argparse.Namespace) -> dict:
    from shardwalk import Engine, jobs

    params = (
        {"partitions": args.partitions, "ef_construction": args.ef_construction}
        if args.index == "partitioned"
        else {}  # spann: its defaults
    )
    db = Path(args.work) / f"db-{args.config}"
    import shutil

    shutil.rmtree(db, ignore_errors=True)
    kind, _, workers = args.config.partition("-")
    workers_n = int(workers or 2)
    if kind == "engine":
        import pyarrow.parquet as pq

        t0 = time.perf_counter()
        with Engine.open(db, threads=workers_n) as engine:
            c = engine.create_collection("c", args.dim, index=args.index, **params)
            for path in sorted(Path(args.parquet).glob("*.parquet")):
                for batch in pq.ParquetFile(path).iter_batches(50_000):
                    flat = batch.column("vector").flatten().to_numpy()
                    c.upsert(batch.column("id").to_numpy(), flat.reshape(-1, args.dim))
            c.flush()
        total = time.perf_counter() - t0
        return {"seconds": {"total": total}, "peak_rss_bytes": {"driver": peak_rss()}}
    nodes = None
    if kind in ("ray", "cluster"):
        nodes = start_ray(workers_n, kind == "cluster")
    try:
        report = jobs.build_collection(
            db,
            "c",
            args.parquet,
            index=args.index,
            ray=kind != "threads",
            num_workers=workers_n,
            **params,
        )
    finally:
        if nodes is not None:
            import ray

            ray.shutdown()
            nodes.shutdown()  # type: ignore[attr-defined]
    for task in report["tasks"]:  # each build task: partition, rows, worker, CPU seconds
        task.pop("bytes_read", None)
    report["commit"] = _commit()
    if args.recall:
        report["recall@10"] = recall(db, args)
    return report


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=HERE)  # fmt: skip
    return done.stdout.strip()


def recall(db: Path, args: argparse.Namespace) -> float:
    from shardwalk.index import exact_search

    from shardwalk import Engine
    from shardwalk.datasets import clustered_vectors

    data = clustered_vectors(args.n, args.dim, queries=200, metadata=False, seed=args.seed)
    truth = exact_search(data.vectors, data.queries, 10, "l2").ids
    with Engine.open(db) as engine:
        params = {"ef": 64} if args.index == "partitioned" else {}
        found = engine.collection("c").search(data.queries, k=10, **params).ids
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))


def run_fingerprints(args: argparse.Namespace) -> dict:
    kind, _, workers = args.config.partition("-")
    workers_n = int(workers or 2)
    if kind == "embedded":
        os.environ["NUMBA_NUM_THREADS"] = str(workers_n)
    from shardwalk.walks import build_fingerprints
    from shardwalk.walks.generators import power_law_graph

    graph = power_law_graph(args.nodes, args.edges, seed=args.seed)
    params = {"walks_per_node": args.walks, "seed": 0}
    if kind == "embedded":
        build_fingerprints(power_law_graph(1000, 5000, seed=1), **params)  # compiled, warm
        t0 = time.perf_counter()
        store = build_fingerprints(graph, **params)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "threads": store.stats["threads"], "peak_rss_bytes": peak_rss(),
                "entries": store.num_entries, "graph_bytes": int(graph.nbytes)}  # fmt: skip
    mode = "sharded" if kind.startswith("sharded") else "replicated"
    nodes = start_ray(workers_n, kind == "cluster")
    from shardwalk.walks import distributed

    try:
        build = getattr(distributed, f"fingerprints_{mode}")
        build(power_law_graph(1000, 5000, seed=1), workers=workers_n, **params)  # warm workers
        t0 = time.perf_counter()
        store = build(graph, workers=workers_n, **params)
        seconds = time.perf_counter() - t0
    finally:
        import ray

        ray.shutdown()
        if nodes is not None:
            nodes.shutdown()  # type: ignore[attr-defined]
    stats = {k: v for k, v in store.stats.items() if not isinstance(v, (list, dict))}
    stats["phase_seconds"] = store.stats.get("phase_seconds")  # sharded: start/rounds/rows/merge
    return {"seconds": seconds, "stats": stats, "peak_rss_bytes": peak_rss(),
            "entries": store.num_entries, "graph_bytes": int(graph.nbytes),
            "actors": store.stats.get("actors")}  # fmt: skip


# -- the driver ---------------------------------------------------------------------------------
def child(args: argparse.Namespace, job: str, config: str) -> dict:
    cmd = [sys.executable, __file__, "--child", job, "--config", config]
    for key in (
        "n",
        "dim",
        "index",
        "partitions",
        "ef_construction",
        "seed",
        "nodes",
        "edges",
        "walks",
    ):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    cmd += ["--parquet", str(args.parquet), "--work", str(args.work)]
    if args.recall and config == "ray-2":
        cmd.append("--recall")
    before = load()
    t0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
        return {"error": done.stderr[-500:]}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # CPU seconds of the configuration's process tree: what it cost, whatever else ran
    # meanwhile; complete without Ray only (Ray's workers are not all waited for: undercounted,
    # so the tables leave it out for Ray)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    out.update(load_before=before, load_after=load(), wall=time.perf_counter() - t0, cpu=cpu)
    print(f"{job} {config}: {json.dumps(out)[:400]}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    common.int_flags(p, n=1_000_000, dim=128, files=16)
    p.add_argument("--index", default="partitioned", choices=["partitioned", "spann"])
    common.int_flags(
        p, partitions=8, ef_construction=100, seed=0, nodes=1_000_000, edges=5_000_000, walks=10
    )
    p.add_argument("--build", default="engine-2,threads-1,threads-2,ray-1,ray-2,cluster-2")
    p.add_argument("--fingerprints", default="embedded-1,embedded-2,ray-1,ray-2,cluster-2")
    p.add_argument("--recall", action="store_true", help="recall@10 of the ray-2 build")
    repeat_help = (
        "run the build and fingerprint configs N times, back to back in the order given (A, B, "
        "A, B: the later runs keyed config#2, config#3, ...)"
    )
    common.int_flags(p, repeat=(1, repeat_help))
    p.add_argument("--work", default="/tmp/shardwalk-bench-ray")
    p.add_argument("--parquet", default=None)
    p.add_argument("--out", default=str(HERE / "results" / "ray_build.json"))
    p.add_argument("--table", nargs="*", default=None, help="print these results as markdown")
    p.add_argument("--child", default=None)
    p.add_argument("--config", default=None)
    args = p.parse_args()
    args.parquet = args.parquet or f"{args.work}/parquet-{args.n}-{args.dim}"
    if args.table is not None:
        print(table(args.table or [args.out]))
        return
    if args.child:
        run = run_build if args.child == "build" else run_fingerprints
        print(json.dumps(run(args), default=str))
        return
    Path(args.work).mkdir(parents=True, exist_ok=True)
    write_parquet(Path(args.parquet), args.n, args.dim, args.files, args.seed)
    results: dict = {"args": {k: v for k, v in vars(args).items() if k not in ("child", "config")},
                     "machine": machine(), "commit": _commit(), "load_start": load(),
                     "build": {}, "fingerprints": {}}  # fmt: skip
    for rep in range(args.repeat):  # back to back, in the order given, ``repeat`` times
        for config in filter(None, args.build.split(",")):
            key = config if rep == 0 else f"{config}#{rep + 1}"
            results["build"][key] = child(args, "build", config)
    for rep in range(args.repeat):  # back to back, in the order given, ``repeat`` times
        for config in filter(None, args.fingerprints.split(",")):
            key = config if rep == 0 else f"{config}#{rep + 1}"
            results["fingerprints"][key] = child(args, "fingerprints", config)
    results["load_end"] = load()
    results["ratios"] = ratios(results)
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps(results["ratios"], indent=1))


def table(paths: list[str]) -> str:
    """Markdown tables of one or more result files (build, then fingerprints)."""
    mib = 1 << 20
    build = ["| config | total s | start | scan | train | assign | build | commit | scan MB/s per worker "
             "| assign MB/s per worker | CPU s scan / assign / build | build tail s | driver peak MiB | worker peak MiB | "
             "object store MiB | CPU s (process tree) | load before -> after |", "|---" * 17 + "|"]  # fmt: skip
    fps = ["| config | seconds | driver peak MiB | worker peak MiB | actors: graph share, peak MiB "
           "| sharded: start / rounds / rows / merge s | CPU s (process tree) | load before -> after |",
           "|---" * 8 + "|"]  # fmt: skip
    for path in paths:
        r = json.loads(Path(path).read_text())
        for config, e in r["build"].items():
            sec, peak = e.get("seconds", {}), e.get("peak_rss_bytes", {})
            cells = [f"{sec.get(k, 0):.1f}" if k in sec else "-"
                     for k in ("total", "start", "scan", "train", "assign", "build", "commit")]  # fmt: skip
            stages = e.get("stages", {})
            cells += [f"{stages[k]['vector_mb_per_s_per_worker']:.0f}" if k in stages else "-"
                      for k in ("scan", "assign")]  # fmt: skip
            schedule = e.get("build_schedule", {})
            cpu = [stages.get(k, {}).get("cpu_seconds") for k in ("scan", "assign")]
            cpu.append(schedule.get("cpu_seconds"))
            cells.append(" / ".join("-" if c is None else f"{c:.1f}" for c in cpu))
            tail = schedule.get("tail_seconds")
            cells.append("-" if tail is None else f"{tail:.1f}")
            store = e.get("bytes", {}).get("object_store")
            build.append(
                f"| {config} | " + " | ".join(cells) + f" | {peak.get('driver', 0) / mib:.0f} | "
                + (f"{peak['workers'] / mib:.0f}" if peak.get("workers") else "-") + " | "
                + (f"{store / mib:.0f}" if store else "-")
                + (f" | {e['cpu']:.0f}" if "cpu" in e and not store else " | -")
                + f" | {e.get('load_before')} -> {e.get('load_after')} |"
            )  # fmt: skip
        for config, e in r["fingerprints"].items():
            if "error" in e:
                fps.append(f"| {config} | failed: {e['error'].strip().splitlines()[-1][:120]} |")
                continue
            stats = e.get("stats") or {}
            actors = e.get("actors") or []
            shares = ", ".join(
                f"{a['graph_share']:.0%} {a['peak_rss_bytes'] / mib:.0f}" for a in actors
            )
            worker = stats.get("peak_rss_bytes")
            phases = stats.get("phase_seconds") or {}
            phase_cells = " / ".join(
                f"{phases[k]:.1f}" for k in ("start", "rounds", "rows", "merge") if k in phases
            )
            fps.append(
                f"| {config} | {e['seconds']:.1f} | {e['peak_rss_bytes'] / mib:.0f} | "
                + (f"{worker / mib:.0f}" if worker else "-")
                + f" | {shares or '-'} | "
                + (f"{phase_cells} ({stats.get('rounds')} rounds)" if phase_cells else "-")
                + (f" | {e['cpu']:.0f}" if "cpu" in e and not stats else " | -")
                + f" | {e.get('load_before')} -> {e.get('load_after')} |"
            )  # fmt: skip
    tables = [build, cpu_table(paths), timeline_table(paths), tasks_table(paths),
              targets_table(paths), fps]  # fmt: skip
    tables = [rows for rows in tables if len(rows) > 2]  # those with results
    return "\n\n".join("\n".join(rows) for rows in tables) + "\n"


def critical_path(entry: dict) -> dict | None:
    """The CPU seconds on a Ray build's critical path, stage by stage: the larger of the
    driver's and the busiest worker's (start: its start-up; scan, assign: its blocks; build:
    its partitions), stages in sequence. What the build would take with a core for each
    process, whatever else ran on the machine (a Ray worker runs one task at a time, so its
    tasks' CPU seconds are its own). None on threads, whose workers share the driver's
    process."""
    driver = entry.get("driver_cpu_seconds")
    if not driver or entry.get("executor") != "ray":
        return None
    stages = entry.get("stages", {})
    worker = {
        "start": max((w["cpu_seconds"] for w in entry.get("start", {}).get("workers", [])),
                     default=0.0),
        "scan": max(stages.get("scan", {}).get("cpu_seconds_per_process") or [0.0]),
        "assign": max(stages.get("assign", {}).get("cpu_seconds_per_process") or [0.0]),
        "build": max(entry.get("build_schedule", {}).get("cpu_seconds_per_worker") or [0.0]),
    }  # fmt: skip
    path = {stage: max(cpu, worker.get(stage, 0.0)) for stage, cpu in driver.items()}
    return {"stages": path, "total": sum(path.values()), "worker": worker, "driver": driver}


def cpu_table(paths: list[str]) -> list[str]:
    """Where each build's CPU went (results with per-process CPU only): the driver's per
    stage, each Ray worker's start-up, the busiest worker's per stage, the critical path, and
    the cores the build stage got (its CPU seconds over its wall seconds)."""
    rows = ["| config | driver CPU s start / scan / train / assign / build / commit | worker "
            "start-up CPU s | busiest worker CPU s scan / assign / build | CPU critical path s "
            "| build stage: CPU s / wall s = cores got | scan MB of vectors per CPU s "
            "| load before -> after |", "|---" * 8 + "|"]  # fmt: skip
    for path in paths:
        r = json.loads(Path(path).read_text())
        for config, e in r["build"].items():
            driver = e.get("driver_cpu_seconds")
            if not driver:
                continue
            crit = critical_path(e)
            cells = " / ".join(f"{driver.get(k, 0):.1f}" for k in
                               ("start", "scan", "train", "assign", "build", "commit"))  # fmt: skip
            starts = [w["cpu_seconds"] for w in e.get("start", {}).get("workers", [])]
            busiest = "-" if crit is None else " / ".join(
                f"{crit['worker'][k]:.1f}" for k in ("scan", "assign", "build"))  # fmt: skip
            cpu = e.get("build_schedule", {}).get("cpu_seconds", 0.0)
            wall = e.get("seconds", {}).get("build", 0.0)
            scan = e["stages"]["scan"]
            rows.append(
                f"| {config} | {cells} | "
                + (", ".join(f"{c:.1f}" for c in starts) or "-") + f" | {busiest} | "
                + ("-" if crit is None else f"{crit['total']:.1f}")
                + f" | {cpu:.1f} / {wall:.1f} = {cpu / max(wall, 1e-9):.2f}"
                + f" | {scan['vector_bytes'] / 1e6 / max(scan['cpu_seconds'], 1e-9):.0f}"
                + f" | {e.get('load_before')} -> {e.get('load_after')} |"
            )  # fmt: skip
    return rows


def timeline_table(paths: list[str]) -> list[str]:
    """Where the scan stage's wall time went (results with its timeline): seconds from the
    stage's start to the first block started, the last block ended and back in the driver, the
    driver's work after it (the id sort), the slowest block, and each process's CPU seconds."""
    rows = ["| config | scan wall s | first block started | last block ended | last back | "
            "driver after it | slowest block s | blocks | CPU s per process |", "|---" * 9 + "|"]  # fmt: skip
    for path in paths:
        r = json.loads(Path(path).read_text())
        for config, e in r["build"].items():
            scan = e.get("stages", {}).get("scan", {})
            if "first_block_started_seconds" not in scan:
                continue
            cells = [scan[k] for k in ("wall_seconds", "first_block_started_seconds",
                     "last_block_ended_seconds", "last_block_back_seconds",
                     "after_last_block_seconds", "slowest_block_seconds")]  # fmt: skip
            rows.append(
                f"| {config} | " + " | ".join(f"{c:.3f}" for c in cells) + f" | {scan['blocks']} | "
                + ", ".join(f"{c:.2f}" for c in scan["cpu_seconds_per_process"]) + " |"
            )  # fmt: skip
    return rows


def tasks_table(paths: list[str]) -> list[str]:
    """Each build task's CPU seconds (results that keep the tasks): a partition per row, a
    configuration per column, and the worker (a, b) that built it when there were two."""
    rows: list[str] = []
    for path in paths:
        r = json.loads(Path(path).read_text())
        configs = [c for c, e in r["build"].items() if e.get("tasks")]
        if not configs:
            continue
        by = {c: {t["partition"]: t for t in r["build"][c]["tasks"]} for c in configs}
        names = {c: {w: "ab"[i] if i < 2 else str(i) for i, w in
                     enumerate(dict.fromkeys(t["worker"] for t in r["build"][c]["tasks"]))}
                 for c in configs}  # fmt: skip
        rows += ["| partition | rows | " + " | ".join(f"{c}: CPU s (worker)" for c in configs)
                 + " |", "|---" * (2 + len(configs)) + "|"]  # fmt: skip
        first = by[configs[0]]
        for p in sorted(first, key=lambda p: -first[p]["rows"]):
            cells = []
            for c in configs:
                t = by[c].get(p)
                worker = f" ({names[c][t['worker']]})" if t and len(names[c]) > 1 else ""
                cells.append("-" if t is None else f"{t['cpu_seconds']:.1f}{worker}")
            rows.append(f"| {p} | {first[p]['rows']:,} | " + " | ".join(cells) + " |")
    return rows


def targets_table(paths: list[str]) -> list[str]:
    """Issue 27's targets against each result file's ratios (recomputed from its entries):
    in wall time, and in CPU seconds (the critical path: the same build with a core per
    process; for scan and assign, the blocks' CPU seconds)."""
    rows = ["| target (issue 27) | wall time | CPU (critical path; scan, assign: the blocks' "
            "CPU s) | met (wall; CPU) |", "|---" * 4 + "|"]  # fmt: skip

    def cell(value: float | None, unit: str = "x") -> str:
        return "-" if value is None else f"{value:.2f}{unit}"

    def met(value: float | None, ok: Callable[[float], bool]) -> str:
        return "-" if value is None else ("yes" if ok(value) else "no")

    for path in paths:
        r = json.loads(Path(path).read_text())
        if not any("driver_cpu_seconds" in e for e in r["build"].values()):
            continue
        b = ratios(r)["build"]
        entry = r["build"].get("ray-2", {}).get("stages", {}).get("scan")
        scan_wall = entry["vector_mb_per_s_per_worker"] if entry else None
        scan_cpu = entry["vector_bytes"] / 1e6 / max(entry["cpu_seconds"], 1e-9) if entry else None
        at_most, at_least = (lambda x: x <= 1.15), (lambda x: x >= 1.7)
        lines = [
            ("ray-2 within 15% of threads-2 (ray-2 / threads-2)", b.get("ray2_over_threads2"),
             None, at_most),
            ("2 Ray workers >= 1.7x one (ray-1 / ray-2)", b.get("ray2_speedup_over_ray1"),
             b.get("ray2_speedup_over_ray1_cpu_critical_path"), at_least),
            ("two nodes within 20% of local Ray (cluster-2 / ray-2)", b.get("cluster2_over_ray2"),
             b.get("cluster2_over_ray2_cpu_critical_path"), lambda x: x <= 1.2),
            ("scan within 1.5x of threads (ray-2 / threads-2)", b.get("ray2_scan_over_threads2"),
             b.get("ray2_scan_cpu_over_threads2"), lambda x: x <= 1.5),
            ("assign within 1.5x of threads (ray-2 / threads-2)",
             b.get("ray2_assign_over_threads2"), b.get("ray2_assign_cpu_over_threads2"),
             lambda x: x <= 1.5),
        ]  # fmt: skip
        for name, wall, cpu, ok in lines:
            rows.append(
                f"| {name} | {cell(wall)} | {cell(cpu)} | {met(wall, ok)}; {met(cpu, ok)} |"
            )
        scan_ok = lambda x: x >= 300  # noqa: E731
        rows.append(
            f"| scan >= 300 MB/s of vectors per worker (ray-2) | {cell(scan_wall, ' MB/s')} | "
            f"{cell(scan_cpu, ' MB/s')} | {met(scan_wall, scan_ok)}; {met(scan_cpu, scan_ok)} |"
        )
    return rows


def ratios(results: dict) -> dict:
    def total(section: str, config: str) -> float | None:
        entry = results[section].get(config) or {}
        seconds = entry.get("seconds")
        if isinstance(seconds, dict):
            return seconds.get("total")
        return seconds

    out: dict = {}
    for section in ("build", "fingerprints"):
        base = "threads" if section == "build" else "embedded"
        r1, r2, e1, e2 = (total(section, c) for c in ("ray-1", "ray-2", f"{base}-1", f"{base}-2"))
        c2 = total(section, "cluster-2")
        out[section] = {
            "ray2_speedup_over_ray1": r1 / r2 if r1 and r2 else None,
            "ray1_overhead_over_embedded1": r1 / e1 - 1 if r1 and e1 else None,
            "ray2_overhead_over_embedded2": r2 / e2 - 1 if r2 and e2 else None,
            "cluster2_over_ray2": c2 / r2 if c2 and r2 else None,
        }
    build = out["build"]
    t2, r1, r2 = (total("build", c) for c in ("threads-2", "ray-1", "ray-2"))
    stage = {c: results["build"].get(c, {}).get("seconds", {}) for c in ("threads-2", "ray-2")}
    for name in ("scan", "assign"):  # issue 27: each within 1.5x of the thread path's
        a, b = stage["ray-2"].get(name), stage["threads-2"].get(name)
        build[f"ray2_{name}_over_threads2"] = a / b if a and b else None
    build["ray2_over_threads2"] = r2 / t2 if r2 and t2 else None  # target <= 1.15

    def build_cpu(config: str) -> float | None:  # CPU seconds of the build tasks
        return (results["build"].get(config) or {}).get("build_schedule", {}).get("cpu_seconds")

    # the same partitions' graphs: CPU seconds on Ray workers over threads of the driver
    a, b = build_cpu("ray-2"), build_cpu("threads-2")
    build["ray2_build_cpu_over_threads2"] = a / b if a and b else None
    if "threads-2#2" in results["build"]:  # --repeat: both ratios in each repeat
        rep, each, each_cpu = 1, [], []
        while f"threads-2{(suffix := '' if rep == 1 else f'#{rep}')}" in results["build"]:
            a, b = total("build", f"ray-2{suffix}"), total("build", f"threads-2{suffix}")
            each.append(a / b if a and b else None)
            a, b = build_cpu(f"ray-2{suffix}"), build_cpu(f"threads-2{suffix}")
            each_cpu.append(a / b if a and b else None)
            rep += 1
        build["ray2_over_threads2_each_repeat"] = each
        build["ray2_build_cpu_over_threads2_each_repeat"] = each_cpu
    for name in ("scan", "assign"):  # CPU seconds: what a stage cost, whatever the load
        cpu = {c: results["build"].get(c, {}).get("stages", {}).get(name, {}).get("cpu_seconds")
               for c in ("threads-2", "ray-2")}  # fmt: skip
        a, b = cpu["ray-2"], cpu["threads-2"]
        build[f"ray2_{name}_cpu_over_threads2"] = a / b if a and b else None
    build["ray2_speedup_over_ray1"] = r1 / r2 if r1 and r2 else None  # target >= 1.7
    # the same on the CPU critical path (a core for each process; see critical_path)
    crit = {
        c: critical_path(results["build"].get(c) or {}) for c in ("ray-1", "ray-2", "cluster-2")
    }
    if crit["ray-1"] and crit["ray-2"]:
        build["ray2_speedup_over_ray1_cpu_critical_path"] = (
            crit["ray-1"]["total"] / crit["ray-2"]["total"]
        )
    if crit["cluster-2"] and crit["ray-2"]:
        build["cluster2_over_ray2_cpu_critical_path"] = (
            crit["cluster-2"]["total"] / crit["ray-2"]["total"]
        )
    cores = {c: (e.get("build_schedule", {}).get("cpu_seconds") or 0.0)
             / max(e.get("seconds", {}).get("build") or 0.0, 1e-9)
             for c, e in results["build"].items() if "build_schedule" in e}  # fmt: skip
    if cores:
        build["build_stage_cores_got"] = cores
    build["scan_mb_per_s_per_worker"] = {  # target >= 300
        c: e["stages"]["scan"]["vector_mb_per_s_per_worker"]
        for c, e in results["build"].items() if "stages" in e
    }  # fmt: skip
    build["scan_mb_per_cpu_second"] = {  # the same per CPU second of the blocks (any load)
        c: e["stages"]["scan"]["vector_bytes"] / 1e6 / max(e["stages"]["scan"]["cpu_seconds"], 1e-9)
        for c, e in results["build"].items() if "stages" in e
    }  # fmt: skip
    pairs = []  # sharded-2 over the ray-2 run of the same repeat
    for key in results["fingerprints"]:
        if key.startswith("sharded-2"):
            s, r = total("fingerprints", key), total("fingerprints", key.replace("sharded", "ray"))
            pairs.append(s / r if s and r else None)
    out["fingerprints"]["sharded2_over_replicated2"] = pairs[0] if pairs else None
    if len(pairs) > 1:
        out["fingerprints"]["sharded2_over_replicated2_each_repeat"] = pairs
    return out


if __name__ == "__main__":
    main()
