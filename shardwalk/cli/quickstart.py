"""``shardwalk quickstart``: seeded data, a collection built, searched and checked against exact
search, then a graph's PPR and kNN-seeded PPR (``--edges-per-node``), and the same answers
through the gRPC server (``--serve``). Each step prints what it did and adds its figures to the
``--json`` summary."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, TextIO

import numpy as np

from shardwalk.cli.common import INDEXES, add_command, count_type
from shardwalk.cli.progress import progress_bar, stage_bars, waiting

__all__ = ["add_quickstart", "cmd_quickstart"]

K = 10  # neighbours per query of every search step


def cmd_quickstart(args: argparse.Namespace) -> int:
    from shardwalk import Engine

    out = sys.stdout
    data = _generate(args, out)
    path = os.path.abspath(args.data)
    summary = _build(args, data, path, out)
    t0 = time.perf_counter()
    engine = Engine.open(path)
    collection = engine.collection("quickstart")
    opened = time.perf_counter() - t0
    try:
        summary["reopen_seconds"] = round(opened, 2)
        print(f"reopened in {opened:.2f}s; {len(collection):,} vectors", file=out)
        result = _search(args, data, collection, summary, out)
        where = _filtered_search(data, collection, summary, out)
        if args.edges_per_node > 0:
            summary.update(_ppr_demo(engine, collection, data, args, result, out))
        if args.serve:
            summary.update(_serve_demo(engine, data, args, where, out))
        if args.json:
            print(json.dumps(summary), file=out)
    finally:
        engine.close()
    return 0


def _generate(args: argparse.Namespace, out: TextIO) -> Any:
    """The seeded clustered vectors, their tenants and attributes, and the queries."""
    from shardwalk.datasets import clustered_vectors

    t0 = time.perf_counter()
    data = clustered_vectors(args.n, args.dim, queries=args.queries, tenants=20, seed=args.seed)
    print(
        f"generated {args.n:,} clustered vectors of dimension {args.dim} with 20 tenants and "
        f"attributes (year, score, lang, tags), {args.queries:,} queries, seed {args.seed} "
        f"[{time.perf_counter() - t0:.1f}s]",
        file=out,
    )
    return data


def _build(args: argparse.Namespace, data: Any, path: str, out: TextIO) -> dict[str, Any]:
    """The collection "quickstart" (made anew) upserted in batches, then snapshotted; returns
    the summary's first figures."""
    from shardwalk import Engine

    with Engine.open(path) as engine:
        if "quickstart" in engine.collections():
            engine.drop_collection("quickstart")
        collection = engine.create_collection(
            "quickstart", dim=args.dim, metric="l2", index=args.index
        )
        bar = progress_bar(args.n, "upsert")
        try:
            t0 = time.perf_counter()
            for start in range(0, args.n, args.batch):
                stop = min(args.n, start + args.batch)
                collection.upsert(
                    data.ids[start:stop],
                    data.vectors[start:stop],
                    tenants=data.tenants[start:stop],
                    attributes={n: v[start:stop] for n, v in data.attributes.items()},
                )
                bar.update(stop - start)
        finally:
            bar.close()
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        with waiting("snapshot"):
            collection.flush()
        flush = time.perf_counter() - t0
    print(
        f"built a {args.index!r} collection in {path} in {build:.1f}s "
        f"({args.n / build:,.0f} vectors/s, durable in the write-ahead log); "
        f"snapshot written in {flush:.1f}s",
        file=out,
    )
    return {
        "vectors": args.n,
        "dim": args.dim,
        "index": args.index,
        "build_seconds": round(build, 2),
        "snapshot_seconds": round(flush, 2),
    }


def _search(
    args: argparse.Namespace, data: Any, collection: Any, summary: dict[str, Any], out: TextIO
) -> Any:
    """The queries as one batch (recall against exact search) and one by one (latency);
    returns the batch's result."""
    from shardwalk.index import exact_search

    t0 = time.perf_counter()
    result = collection.search(data.queries, k=K)
    batch_seconds = time.perf_counter() - t0
    singles = []
    for q in data.queries[: min(200, args.queries)]:
        s0 = time.perf_counter()
        collection.search(q, k=K)
        singles.append(time.perf_counter() - s0)
    truth = exact_search(data.vectors, data.queries, K, "l2").ids
    recall = _recall(result.ids, truth)
    records = collection.get(result.ids[0, :3])
    summary.update(
        {
            "recall_at_10": round(recall, 4),
            "batch_qps": round(args.queries / batch_seconds, 1),
            "single_query_p50_ms": round(float(np.percentile(singles, 50)) * 1e3, 3),
            "single_query_p99_ms": round(float(np.percentile(singles, 99)) * 1e3, 3),
        }
    )
    print(
        f"query 0: top-3 ids {result.ids[0, :3].tolist()} distances "
        f"{[round(float(d), 3) for d in result.distances[0, :3]]}",
        file=out,
    )
    for i, id_ in enumerate(records.ids.tolist()):
        attrs = {n: v[i] for n, v in records.attributes.items()}
        print(f"  id {id_}: tenant {records.tenants[i]} {attrs}", file=out)
    print(f"recall@10 against exact search: {recall:.4f}", file=out)
    print(
        f"batch of {args.queries:,} queries: {summary['batch_qps']:,.0f} queries/s; "
        f"single query p50 {summary['single_query_p50_ms']} ms, "
        f"p99 {summary['single_query_p99_ms']} ms",
        file=out,
    )
    return result


def _filtered_search(data: Any, collection: Any, summary: dict[str, Any], out: TextIO) -> Any:
    """A tenant-scoped, attribute-filtered search, checked against exact filtered search;
    returns the filter (the served demo asks it again)."""
    from shardwalk import F
    from shardwalk.index import exact_search

    tenant = "t0003"
    where = (F("year") >= 2010) & F("lang").isin(["en", "de"])
    q = data.queries[:100]
    filtered = collection.search(q, k=K, tenant=tenant, where=where, explain=True)
    allowed = np.flatnonzero(
        (np.array(data.tenants) == tenant)
        & (np.array(data.attributes["year"]) >= 2010)
        & np.isin(np.array(data.attributes["lang"]), ["en", "de"])
    )
    local = exact_search(data.vectors[allowed], q, K, "l2").ids
    filtered_recall = _recall(filtered.ids, allowed[local])
    report = filtered.explain
    summary["filtered_recall_at_10"] = round(filtered_recall, 4)
    summary["filtered_path"] = report.path
    print(
        f"tenant {tenant!r} where year >= 2010 and lang in (en, de): {report.matches:,} of "
        f"{report.visible:,} visible vectors match; path {report.path!r} ({report.reason}); "
        f"recall@10 against exact filtered search {filtered_recall:.4f}; "
        f"{len(q) / report.seconds:,.0f} queries/s",
        file=out,
    )
    return where


def _serve_demo(engine: Any, data: Any, args: argparse.Namespace, where: Any, out: TextIO) -> dict:
    """Serve the engine on 127.0.0.1 (a free port) and query it through shardwalk.Client: the
    same answers as in process, tenant-scoped by the API key."""
    import secrets

    from shardwalk.client import Client
    from shardwalk.server.app import Server
    from shardwalk.server.config import parse_config

    admin_key, tenant_key = secrets.token_hex(16), secrets.token_hex(16)
    config = parse_config(
        {
            "api_keys": [
                {"key": admin_key, "role": "admin"},
                {"key": tenant_key, "tenant": "t0003"},
            ]
        }
    )
    server = Server(engine, config, host="127.0.0.1", port=0).start()
    address = f"127.0.0.1:{server.port}"
    try:
        with (
            Client(address, api_key=admin_key) as admin,
            Client(address, api_key=tenant_key) as tenant,
        ):
            queries = data.queries[: min(200, args.queries)]
            remote = admin.collection("quickstart").search(queries, k=10)
            local = engine.collection("quickstart").search(queries, k=10)
            same = bool((remote.ids == local.ids).all())
            singles = []
            for q in queries:
                s0 = time.perf_counter()
                admin.collection("quickstart").search(q, k=10)
                singles.append(time.perf_counter() - s0)
            scoped = tenant.collection("quickstart").search(queries[:20], k=10, where=where)
            owners = set(
                engine.collection("quickstart").get(np.unique(scoped.ids[scoped.ids >= 0])).tenants
            )
            p50 = float(np.percentile(singles, 50)) * 1e3
            print(
                f"served on {address}: {len(queries)} searches through shardwalk.Client equal "
                f"the in-process results: {same}; single query p50 {p50:.3f} ms over gRPC; a "
                f"tenant key's filtered search returns only tenant {sorted(owners)} rows",
                file=out,
            )
            summary: dict[str, Any] = {"served_same_results": same, "served_p50_ms": round(p50, 3)}
            if "quickstart" in engine.graphs():
                hits = tenant.graph("quickstart").ppr(
                    scoped.ids[0, :3].tolist(), 10, collection="quickstart"
                )
                print(
                    f"PPR through the server, scoped to the tenant: top-3 {hits.ids[0, :3].tolist()} "
                    f"({hits.method})",
                    file=out,
                )
    finally:
        server.stop(grace=1)
    return summary


def _ppr_demo(
    engine: Any, collection: Any, data: Any, args: argparse.Namespace, knn: Any, out: TextIO
) -> dict[str, Any]:
    """A power-law graph over the same ids: fingerprints, PPR against exact, kNN-seeded PPR."""
    from shardwalk.walks.evaluate import query_metrics
    from shardwalk.walks.generators import power_law_graph

    t0 = time.perf_counter()
    csr = power_law_graph(args.n, args.edges_per_node * args.n, seed=args.seed)
    if "quickstart" in engine.graphs():
        engine.drop_graph("quickstart")
    graph = engine.create_graph("quickstart", csr)
    made = time.perf_counter() - t0
    with stage_bars("fingerprints") as progress:
        built = graph.build_fingerprints(
            walks_per_node=10, alpha=0.15, seed=args.seed, progress=progress
        )
    print(
        f"graph: {graph.num_nodes:,} nodes, {graph.num_edges:,} edges (power law, seed "
        f"{args.seed}) in {made:.1f}s; fingerprints R=10 in {built['seconds']:.2f}s "
        f"({built['steps_per_second'] / 1e6:.1f}M walk steps/s, "
        f"{built['nbytes'] / 2**20:.0f} MiB)",
        file=out,
    )
    sources = np.random.default_rng(args.seed).choice(graph.node_ids, size=10, replace=False)
    precisions, latencies, exact_seconds = [], [], []
    for s in sources.tolist():
        t0 = time.perf_counter()
        fast = graph.ppr(s, k=100)
        latencies.append(time.perf_counter() - t0)
        exact = graph.ppr(s, k=100, method="exact")
        exact_seconds.append(exact.seconds)
        keep = fast.ids[0] >= 0
        m = query_metrics(
            exact.ids[0],
            exact.scores[0],
            fast.ids[0][keep],
            fast.scores[0][keep],
            k=100,
            n=graph.num_nodes,
        )
        precisions.append(m["precision"])
    p50 = float(np.median(latencies)) * 1e3
    print(
        f"PPR (alpha 0.15) from 10 random nodes: fingerprint p50 {p50:.2f} ms, precision@100 "
        f"{np.mean(precisions):.3f} against exact power iteration "
        f"({np.median(exact_seconds) * 1e3:.0f} ms per query)",
        file=out,
    )
    # kNN-seeded PPR: the first query's neighbours, weighted by similarity, personalise PPR
    hits = knn.ids[0][knn.ids[0] >= 0]
    weights = 1.0 / (1.0 + knn.distances[0][: hits.size])
    seeded = graph.ppr({int(h): float(w) for h, w in zip(hits.tolist(), weights)}, k=5)
    print(
        f"kNN-seeded PPR for query 0: seeds {hits[:5].tolist()}... -> top nodes "
        f"{seeded.ids[0].tolist()}",
        file=out,
    )
    return {
        "graph_nodes": graph.num_nodes,
        "graph_edges": graph.num_edges,
        "fingerprint_seconds": round(built["seconds"], 2),
        "ppr_p50_ms": round(p50, 3),
        "ppr_precision_at_100": round(float(np.mean(precisions)), 4),
    }


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = sum(len(set(f[:k].tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / truth.size


def add_quickstart(sub: Any) -> None:
    p = add_command(
        sub, "quickstart", "generate seeded data, build, query, report recall", run=cmd_quickstart
    )
    p.add_argument("--data", default="shardwalk-quickstart", help="data directory")
    p.add_argument("--n", type=count_type, default=200_000, help="vectors to generate")
    p.add_argument("--dim", type=count_type, default=96, help="vector dimension")
    p.add_argument("--queries", type=count_type, default=1_000, help="queries to generate")
    p.add_argument("--index", default="hnsw", choices=INDEXES, help="index kind")
    p.add_argument("--batch", type=count_type, default=10_000, help="vectors per upsert")
    p.add_argument("--seed", type=int, default=0, help="random seed of the data")
    p.add_argument(
        "--edges-per-node",
        type=int,
        default=5,
        help="edges per node of the PPR demo graph (0 skips it)",
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="also serve the data on 127.0.0.1 (a free port) and query it through the client",
    )
    p.add_argument("--json", action="store_true", help="also print a JSON summary line")
