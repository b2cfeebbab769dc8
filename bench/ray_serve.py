"""Serving a partitioned collection from Ray actors, against the same collection in process.

One data directory (clustered vectors, Zipf tenants, an int attribute), opened in turn by:
- ``in-process``: ``Engine.open(path)``, the partitions in this process;
- ``ray-local``: ``Engine.open(path, ray=True)``, a local Ray (127.0.0.1) with 2 CPUs, one
  actor per CPU; ``ray-local-1``: the same with one actor holding every partition;
- ``cluster-2``: a two-node cluster on 127.0.0.1 (``ray.cluster_utils.Cluster``, one CPU per
  node), an actor on each node.

The systems of a phase are open at once (each on a hard-linked copy of the directory) and
measured round by round in turn, so that they share the machine's load: the local ones in one
phase, then the cluster with the in-process engine again. For each: single-query latency back
to back (steady load: the kernel here pages out memory idle for about a second), unscoped, for
a 2% tenant and with a 30% filter; throughput of 8 client threads; batches of 100; recall@10
against exact search (the same for every system: the same graphs answer); memory of the
driver (this process, measured as each system opens) and of the actors. The floor: a no-op
call to 1 and to 2 actors at once, on the same Ray, back to back.

    python bench/ray_serve.py                      # 200K x 128
    python bench/ray_serve.py --n 1000000 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every Ray node on 127.0.0.1

import _common as common
import numpy as np
from filtered import zipf_tenants
from shardwalk.index import exact_search

import shardwalk
from shardwalk import F
from shardwalk._threads import rss_bytes
from shardwalk.datasets import clustered_vectors

HERE = Path(__file__).resolve().parent
K = 10
SYSTEMS = ("in-process", "ray-local", "ray-local-1", "cluster-2")


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


def scopes_of(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "search": {},
        "tenant-2%": {"tenant": data["tenant"]},
        "filter-30%": {"where": F("bucket") < 30},
    }


def measure(
    collections: dict[str, Any], data: dict[str, Any], truth: dict, args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Every system on every scope, the systems interleaved round by round (the same load)."""
    queries = data["queries"]
    out: dict[str, dict[str, Any]] = {system: {} for system in collections}
    for name, scope in scopes_of(data).items():
        times: dict[str, list[float]] = {system: [] for system in collections}
        qps8: dict[str, list[float]] = {system: [] for system in collections}
        batch: dict[str, list[float]] = {system: [] for system in collections}
        found = {system: np.zeros((len(queries), K), np.int64) for system in collections}
        for docs in collections.values():
            for q in queries[:50]:  # warm: caches, scope masks, actors' scope bitmaps
                docs.search(q, K, **scope)
        for _ in range(args.rounds):
            for system, docs in collections.items():
                for i, q in enumerate(queries):  # back to back, one caller
                    t = time.perf_counter()
                    found[system][i] = docs.search(q, K, **scope).ids[0]
                    times[system].append(time.perf_counter() - t)
                with ThreadPoolExecutor(8) as pool:  # 8 callers
                    t = time.perf_counter()
                    list(pool.map(lambda q, d=docs, s=scope: d.search(q, K, **s), queries))
                    qps8[system].append(len(queries) / (time.perf_counter() - t))
                t = time.perf_counter()
                for lo in range(0, len(queries), 100):
                    docs.search(queries[lo : lo + 100], K, **scope)
                batch[system].append(len(queries) / (time.perf_counter() - t))
        for system in collections:
            ms = np.array(times[system]) * 1e3
            out[system][name] = {
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
                "qps_1": float(1e3 / ms.mean()),
                "qps_8_threads": float(np.median(qps8[system])),
                "qps_batch_100": float(np.median(batch[system])),
                "recall@10": recall(found[system], truth[name]),
            }
            print(f"  {system} {name}: {out[system][name]}", flush=True)
        print(f"  load {load()}", flush=True)
        for system in collections:
            out[system][name]["load"] = load()
    return out


def ray_floor() -> dict[str, float]:
    """p50 of a no-op call to 1 and to 2 actors at once (a (1, 128) array there and back)."""
    import ray

    @ray.remote
    class Noop:
        def echo(self, q: np.ndarray) -> np.ndarray:
            return q

    actors = [Noop.options(num_cpus=0).remote() for _ in range(2)]
    q = np.zeros((1, 128), np.float32)
    ray.get([a.echo.remote(q) for a in actors])
    out = {}
    for n in (1, 2):
        times = []
        for _ in range(500):
            t = time.perf_counter()
            ray.get([a.echo.remote(q) for a in actors[:n]])
            times.append(time.perf_counter() - t)
        out[f"{n}_actors"] = float(np.percentile(times, 50) * 1e3)
    for a in actors:
        ray.kill(a)
    return out


def run_phase(
    systems: list[str], path: Path, data: dict, truth: dict, args: argparse.Namespace
) -> dict[str, Any]:
    """Open every system of a phase at once (each on its own hard-linked copy of the data
    directory: one engine per directory), then measure them interleaved."""
    import ray
    from ray.cluster_utils import Cluster
    from shardwalk.index.distributed import connect

    cluster = None
    if "cluster-2" in systems:
        node = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
        cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
        cluster.add_node(**node)
        cluster.wait_for_nodes()
        connect(cluster.address)
    else:
        connect(None, 2)
    engines: dict[str, Any] = {}
    result: dict[str, Any] = {}
    try:
        floor = ray_floor()
        for system in systems:
            copy = path.with_name(f"{path.name}-{system}")
            if not copy.exists():
                # hard links, but not the lock file (an flock is on the file)
                shutil.copytree(
                    path, copy, copy_function=os.link, ignore=shutil.ignore_patterns("LOCK")
                )
            before = rss_bytes()
            t = time.perf_counter()
            on_ray = system != "in-process"
            engine = shardwalk.Engine.open(
                copy, ray=on_ray, ray_actors=1 if system == "ray-local-1" else None
            )
            engines[system] = engine
            engine.collection("docs")
            opened = time.perf_counter() - t
            driver = rss_bytes() - before
            print(f"{system}: opened in {opened:.1f} s, driver +{driver >> 20} MiB", flush=True)
            result[system] = {
                "ray_noop_floor_p50_ms": floor if on_ray else None,
                "open_seconds": opened,
                "driver_rss_delta_bytes": driver,
            }
        scopes = measure({s: e.collection("docs") for s, e in engines.items()}, data, truth, args)
        for system, engine in engines.items():
            stats = engine.collection("docs").stats()["index_stats"]
            result[system]["index_memory_bytes"] = stats.get("memory_bytes")
            result[system]["actors"] = [
                {k: a[k] for k in ("node", "partitions", "rss_bytes", "memory_bytes", "threads")}
                for a in stats.get("ray", {}).get("actors", [])
            ]
            result[system]["scopes"] = scopes[system]
        return result
    finally:
        for engine in engines.values():
            engine.close()
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.int_flags(
        p, n=200_000, dim=128, queries=1000, tenants=100, partitions=8, rounds=2, seed=0
    )
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
    wanted = args.systems.split(",")
    local = [s for s in wanted if s != "cluster-2"]
    phases = [local] if local else []
    if "cluster-2" in wanted:
        phases.append(["in-process", "cluster-2"])
    result["ratios_vs_in_process"] = {}
    for phase in phases:
        got = run_phase(phase, path, data, truth, args)
        base = got.get("in-process")
        for system, found in got.items():
            key = system if system not in result["systems"] else f"{system} (with cluster-2)"
            result["systems"][key] = found
            if base is None or system == "in-process":
                continue
            result["ratios_vs_in_process"][system] = {
                scope: {
                    metric: found["scopes"][scope][metric] / base["scopes"][scope][metric]
                    for metric in ("p50_ms", "qps_8_threads", "qps_batch_100")
                }
                for scope in found["scopes"]
            }
    out = Path(args.out or HERE / "results" / f"ray_serve-{args.n}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result.get("ratios_vs_in_process", {}), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
