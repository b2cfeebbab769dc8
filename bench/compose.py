"""Compose latency (issue 9): ``Engine.compose`` single-query latency in process, with its stage
split, next to its parts run alone in the same run (``Collection.search`` of the same query and
``Graph.ppr`` of the same seeds), so the cost of composing is a ratio measured under the same
load.

Data: ``clustered_vectors(n, 128, seed=0)`` in an HNSW collection (M=16, efConstruction=200,
ef=64), owner tenants as generated (Zipf sizes over 10 tenants); ``power_law_graph(n,
edges, seed=0)`` over the same ids (0..n-1) with fingerprints (R=10 walks per node, alpha 0.5,
the compose default, so the fingerprints serve it). k=10, knn_k=10, fuse="rrf".

Measured back to back: each round runs, for one query, the search alone, the PPR alone (seeded
as compose seeds it) and compose, unscoped and then scoped to a tenant (``--tenant``), cycling
through the queries; the first ``--warmup`` rounds are not recorded (JIT, caches, pages).

    python bench/compose.py                         # 100K x 128, 1M edges: about 2 min on 2 cores
    python bench/compose.py --n 20000 --rounds 500  # a quick look

Writes bench/results/compose-<n>.json and prints p50/p90/p99 and the stage split.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import _common as common
import numpy as np
from shardwalk.walks.generators import power_law_graph

import shardwalk
from shardwalk.datasets import clustered_vectors

RESULTS = Path(__file__).resolve().parent / "results"


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {f"p{p}": float(np.percentile(ms, p)) for p in (50, 90, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.int_flags(parser, n=100_000, dim=128, edges=1_000_000, queries=200)
    parser.add_argument("--rounds", type=int, default=2000, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--knn-k", type=int, default=10)
    parser.add_argument("--tenant", default="t0001", help="tenant of the scoped runs")
    parser.add_argument("--threads", type=int, default=None, help="engine thread budget")
    args = parser.parse_args()

    t0 = time.perf_counter()
    data = clustered_vectors(args.n, args.dim, queries=args.queries, seed=0)
    csr = power_law_graph(args.n, args.edges, seed=0)
    engine = shardwalk.Engine.memory(threads=args.threads)
    col = engine.create_collection("docs", dim=args.dim, index="hnsw", m=16, ef_construction=200)
    col.upsert(data.ids, data.vectors, tenants=data.tenants)
    graph = engine.create_graph("kg", csr)
    fp = graph.build_fingerprints(walks_per_node=10, alpha=0.5, seed=0)
    build = time.perf_counter() - t0
    share = float(np.mean(np.asarray(data.tenants) == args.tenant))
    print(
        f"built in {build:.0f}s: {args.n:,} x {args.dim} hnsw, graph {graph.num_nodes:,} nodes "
        f"{graph.num_edges:,} edges, fingerprints {fp['nbytes'] / 2**20:.0f} MiB; tenant "
        f"{args.tenant!r} owns {share:.1%} of the rows"
    )

    runs: dict[str, list[float]] = {
        name: []
        for name in ("search", "ppr", "compose", "search_tenant", "ppr_tenant", "compose_tenant")
    }
    stages: dict[str, list[tuple[float, float, float]]] = {"compose": [], "compose_tenant": []}
    methods = set()
    opts = {"k": args.k, "knn_k": args.knn_k}
    for r in range(args.warmup + args.rounds):
        q = data.queries[r % args.queries]
        for suffix, tenant in (("", None), ("_tenant", args.tenant)):
            t = time.perf_counter()
            hits = col.search(q, args.knn_k, tenant=tenant)
            t_search = time.perf_counter() - t
            d = hits.distances[0][hits.ids[0] >= 0].astype(np.float64)
            span = d.max() - d.min() if d.size else 0.0
            sim = (d.max() - d) / span if span > 0 else np.ones(d.size)
            seeds = {int(i): 0.5 * (1 + s) for i, s in zip(hits.ids[0][hits.ids[0] >= 0], sim)}
            t = time.perf_counter()
            graph.ppr(seeds, k=max(args.k, args.knn_k), alpha=0.5)
            t_ppr = time.perf_counter() - t
            t = time.perf_counter()
            result = engine.compose("docs", "kg", q, tenant=tenant, **opts)
            t_compose = time.perf_counter() - t
            methods.add(result.ppr_method)
            if r >= args.warmup:
                runs["search" + suffix].append(t_search)
                runs["ppr" + suffix].append(t_ppr)
                runs["compose" + suffix].append(t_compose)
                stages["compose" + suffix].append(
                    (result.knn_seconds, result.ppr_seconds, result.fuse_seconds)
                )

    report = {name: percentiles(times) for name, times in runs.items()}
    split = {
        name: dict(zip(("knn_p50", "ppr_p50", "fuse_p50"), np.median(np.asarray(v), axis=0) * 1e3))
        for name, v in stages.items()
    }
    print(f"ppr method: {sorted(map(str, methods))}; {args.rounds} timed rounds, ms:")
    print(f"{'':16} {'p50':>7} {'p90':>7} {'p99':>7}")
    for name, p in report.items():
        print(f"{name:16} {p['p50']:7.3f} {p['p90']:7.3f} {p['p99']:7.3f}")
    for name, s in split.items():
        parts = report["search" + name[7:]]["p50"] + report["ppr" + name[7:]]["p50"]
        print(
            f"{name}: stages knn {s['knn_p50']:.3f} + ppr {s['ppr_p50']:.3f} + fuse/filter "
            f"{s['fuse_p50']:.3f} ms (medians); p50 / (search p50 + ppr p50) = "
            f"{report[name]['p50'] / parts:.2f}"
        )
    out = {
        "n": args.n,
        "dim": args.dim,
        "edges": graph.num_edges,
        "k": args.k,
        "knn_k": args.knn_k,
        "tenant": args.tenant,
        "tenant_share": share,
        "rounds": args.rounds,
        "ppr_methods": sorted(map(str, methods)),
        "latency_ms": report,
        "stages_ms": split,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"compose-{args.n}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    engine.close()


if __name__ == "__main__":
    main()
