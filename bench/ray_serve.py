"""Serving a partitioned collection from Ray actors, against the same collection in process.

One data directory (clustered vectors, Zipf tenants, an int attribute), opened in turn by:
- ``in-process``: ``Engine.open(path)``, the partitions in this process;
- ``ray-local``: ``Engine.open(path, ray=True)``, a local Ray (127.0.0.1) with 2 CPUs, one
  actor per CPU;
- ``cluster-2``: a two-node cluster on 127.0.0.1 (``ray.cluster_utils.Cluster``, one CPU per
  node), an actor on each node.

For each: single-query latency back to back (steady load: the kernel here pages out memory
idle for about a second), unscoped, for a 2% tenant and with a 30% filter; throughput of 8
client threads; batches of 100; recall@10 against exact search (the same for every system:
the same graphs answer); memory of the driver (this process) and of the actors.

    python bench/ray_serve.py                      # 200K x 128
    python bench/ray_serve.py --n 1000000 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every Ray node on 127.0.0.1

import numpy as np
from filtered import zipf_tenants
from shardwalk.index import exact_search

import shardwalk
from shardwalk import F
from shardwalk._threads import rss_bytes
from shardwalk.datasets import clustered_vectors

HERE = Path(__file__).resolve().parent
K = 10
SYSTEMS = ("in-process", "ray-local", "cluster-2")


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def build(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    d = clustered_vectors(args.n, args.dim, queries=args.queries, seed=args.seed, metadata=False)
    rng = np.random.default_rng(args.seed)
    owner = zipf_tenants(args.n, args.tenants, rng)
    sizes = np.bincount(owner, minlength=args.tenants)
    tenant = int(np.argmin(np.abs(sizes - 0.02 * args.n)))
    bucket = rng.integers(0, 100, args.n)
    data = {
        "vectors": d.vectors,
        "queries": np.ascontiguousarray(d.queries),
        "tenant": f"t{tenant}",
        "tenant_mask": owner == tenant,
        "filter_mask": bucket < 30,
    }
    t0 = time.perf_counter()
    if not (path / "manifest.json").exists():
        with shardwalk.Engine.open(path) as engine:
            docs = engine.create_collection(
                "docs", args.dim, index="partitioned", partitions=args.partitions
            )
            names = np.array([f"t{t}" for t in range(args.tenants)])
            for lo in range(0, args.n, 50_000):
                hi = min(lo + 50_000, args.n)
                docs.upsert(
                    np.arange(lo, hi),
                    d.vectors[lo:hi],
                    tenants=names[owner[lo:hi]].tolist(),
                    attributes={"bucket": bucket[lo:hi]},
                )
    data["build_seconds"] = time.perf_counter() - t0
    return data


def truths(data: dict[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for scope, mask in (
        ("search", None),
        ("tenant-2%", "tenant_mask"),
        ("filter-30%", "filter_mask"),
    ):
        rows = np.arange(len(data["vectors"])) if mask is None else np.flatnonzero(data[mask])
        found = exact_search(data["vectors"][rows], data["queries"], K, "l2")
        out[scope] = rows[found.ids]
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))


def measure(docs: Any, data: dict[str, Any], truth: dict, args: argparse.Namespace) -> dict:
    queries = data["queries"]
    scopes = {
        "search": {},
        "tenant-2%": {"tenant": data["tenant"]},
        "filter-30%": {"where": F("bucket") < 30},
    }
    out: dict[str, Any] = {}
    for name, scope in scopes.items():
        for q in queries[:50]:  # warm: caches, scope masks, actors' scope bitmaps
            docs.search(q, K, **scope)
        times = []
        found = np.zeros((len(queries), K), dtype=np.int64)
        for _ in range(args.rounds):
            for i, q in enumerate(queries):
                t = time.perf_counter()
                found[i] = docs.search(q, K, **scope).ids[0]
                times.append(time.perf_counter() - t)
        ms = np.array(times) * 1e3
        with ThreadPoolExecutor(8) as pool:  # 8 client threads, back to back
            t = time.perf_counter()
            list(pool.map(lambda q, s=scope: docs.search(q, K, **s), np.tile(queries, (2, 1))))
            qps8 = 2 * len(queries) / (time.perf_counter() - t)
        t = time.perf_counter()
        for lo in range(0, len(queries), 100):
            docs.search(queries[lo : lo + 100], K, **scope)
        batch_qps = len(queries) / (time.perf_counter() - t)
        out[name] = {
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "qps_1": float(1e3 / ms.mean()),
            "qps_8_threads": qps8,
            "qps_batch_100": batch_qps,
            "recall@10": recall(found, truth[name]),
            "load": load(),
        }
        print(f"  {name}: {out[name]}", flush=True)
    return out


def run_system(system: str, path: Path, data: dict, truth: dict, args) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster
    from shardwalk.index.distributed import connect

    cluster = None
    if system == "ray-local":
        connect(None, 2)
    elif system == "cluster-2":
        node = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
        cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
        cluster.add_node(**node)
        cluster.wait_for_nodes()
        connect(cluster.address)
    try:
        before = rss_bytes()
        t = time.perf_counter()
        ray_arg: bool | str = False if system == "in-process" else True
        with shardwalk.Engine.open(path, ray=ray_arg) as engine:
            docs = engine.collection("docs")
            opened = time.perf_counter() - t
            driver = rss_bytes() - before
            stats = docs.stats()["index_stats"]
            actors = stats.get("ray", {}).get("actors", [])
            print(
                f"{system}: opened in {opened:.1f} s, driver +{driver / 2**20:.0f} MiB", flush=True
            )
            result = measure(docs, data, truth, args)
            actors = docs.stats()["index_stats"].get("ray", {}).get("actors", [])
        return {
            "open_seconds": opened,
            "driver_rss_delta_bytes": driver,
            "actors": [
                {k: a[k] for k in ("node", "partitions", "rss_bytes", "memory_bytes", "threads")}
                for a in actors
            ],
            "index_memory_bytes": stats.get("memory_bytes"),
            "scopes": result,
        }
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--tenants", type=int, default=100)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--data", default=None, help="data directory (default: /tmp, kept)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    path = Path(args.data or f"/tmp/shardwalk-ray-serve-{args.n}x{args.dim}")
    data = build(path, args)
    print(f"data ready in {data['build_seconds']:.0f} s; load {load()}", flush=True)
    truth = truths(data)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    result: dict[str, Any] = {
        "dataset": f"clustered-{args.n}x{args.dim}-{args.tenants}tenants",
        "partitions": args.partitions,
        "queries": args.queries,
        "rounds": args.rounds,
        "commit": commit,
        "cores": os.cpu_count(),
        "systems": {},
    }
    for system in args.systems.split(","):
        result["systems"][system] = run_system(system, path, data, truth, args)
    base = result["systems"].get("in-process")
    if base:
        result["ratios_vs_in_process"] = {
            system: {
                scope: {
                    "p50": got["scopes"][scope]["p50_ms"] / base["scopes"][scope]["p50_ms"],
                    "qps_8_threads": got["scopes"][scope]["qps_8_threads"]
                    / base["scopes"][scope]["qps_8_threads"],
                    "qps_batch_100": got["scopes"][scope]["qps_batch_100"]
                    / base["scopes"][scope]["qps_batch_100"],
                }
                for scope in got["scopes"]
            }
            for system, got in result["systems"].items()
            if system != "in-process"
        }
    out = Path(args.out or HERE / "results" / f"ray_serve-{args.n}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result.get("ratios_vs_in_process", {}), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
