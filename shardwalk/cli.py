"""The ``shardwalk`` command: quickstart, ingest, search, info."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from shardwalk.errors import InvalidArgumentError, ShardwalkError

__all__ = ["main"]


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, a line per 10% otherwise."""

    def __init__(self, total: int, label: str, *, stream: Any = None) -> None:
        self.total, self.label, self.done = max(total, 1), label, 0
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._last_decile = -1

    def update(self, n: int) -> None:
        self.done += n
        fraction = min(self.done / self.total, 1.0)
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        text = (
            f"{self.label} [{'#' * int(fraction * 30):<30}] {self.done:,}/{self.total:,} "
            f"{rate:,.0f}/s eta {eta:,.0f}s"
        )
        if self.tty:
            self.stream.write("\r" + text)
            if self.done >= self.total:
                self.stream.write("\n")
        elif int(fraction * 10) > self._last_decile:
            self._last_decile = int(fraction * 10)
            self.stream.write(text + "\n")
        self.stream.flush()


def _parse_params(items: Sequence[str]) -> dict[str, int]:
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not value.lstrip("-").isdigit():
            raise InvalidArgumentError(f"--param takes name=integer (e.g. m=16); got {item!r}")
        params[name] = int(value)
    return params


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = sum(len(set(f[:k].tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / truth.size


# -- quickstart ---------------------------------------------------------------------------------
def cmd_quickstart(args: argparse.Namespace) -> int:
    from shardwalk import Engine
    from shardwalk.datasets import clustered_vectors
    from shardwalk.index import exact_search

    out = sys.stdout
    t0 = time.perf_counter()
    data = clustered_vectors(args.n, args.dim, queries=args.queries, tenants=20, seed=args.seed)
    print(
        f"generated {args.n:,} clustered vectors of dimension {args.dim} with 20 tenants and "
        f"attributes (year, score, lang, tags), {args.queries:,} queries, seed {args.seed} "
        f"[{time.perf_counter() - t0:.1f}s]",
        file=out,
    )
    path = os.path.abspath(args.data)
    with Engine.open(path) as engine:
        if "quickstart" in engine.collections():
            engine.drop_collection("quickstart")
        collection = engine.create_collection(
            "quickstart", dim=args.dim, metric="l2", index=args.index
        )
        bar = Progress(args.n, "upsert")
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
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        collection.flush()
        flush = time.perf_counter() - t0
    print(
        f"built a {args.index!r} collection in {path} in {build:.1f}s "
        f"({args.n / build:,.0f} vectors/s, durable in the write-ahead log); "
        f"snapshot written in {flush:.1f}s",
        file=out,
    )

    t0 = time.perf_counter()
    engine = Engine.open(path)
    collection = engine.collection("quickstart")
    opened = time.perf_counter() - t0
    try:
        k = 10
        t0 = time.perf_counter()
        result = collection.search(data.queries, k=k)
        batch_seconds = time.perf_counter() - t0
        singles = []
        for q in data.queries[: min(200, args.queries)]:
            s0 = time.perf_counter()
            collection.search(q, k=k)
            singles.append(time.perf_counter() - s0)
        truth = exact_search(data.vectors, data.queries, k, "l2").ids
        recall = _recall(result.ids, truth)
        records = collection.get(result.ids[0, :3])
        summary = {
            "vectors": args.n,
            "dim": args.dim,
            "index": args.index,
            "build_seconds": round(build, 2),
            "snapshot_seconds": round(flush, 2),
            "reopen_seconds": round(opened, 2),
            "recall_at_10": round(recall, 4),
            "batch_qps": round(args.queries / batch_seconds, 1),
            "single_query_p50_ms": round(float(np.percentile(singles, 50)) * 1e3, 3),
            "single_query_p99_ms": round(float(np.percentile(singles, 99)) * 1e3, 3),
        }
        print(f"reopened in {opened:.2f}s; {len(collection):,} vectors", file=out)
        print(
            f"query 0: top-3 ids {result.ids[0, :3].tolist()} distances "
            f"{np.round(result.distances[0, :3], 3).tolist()}",
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
        # tenant-scoped, attribute-filtered search, checked against exact filtered search
        from shardwalk import F

        tenant = "t0003"
        where = (F("year") >= 2010) & F("lang").isin(["en", "de"])
        q = data.queries[:100]
        filtered = collection.search(q, k=k, tenant=tenant, where=where, explain=True)
        allowed = np.flatnonzero(
            (np.array(data.tenants) == tenant)
            & (np.array(data.attributes["year"]) >= 2010)
            & np.isin(np.array(data.attributes["lang"]), ["en", "de"])
        )
        local = exact_search(data.vectors[allowed], q, k, "l2").ids
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
        if args.edges_per_node > 0:
            summary.update(_quickstart_ppr(engine, collection, data, args, result, out))
        if args.json:
            print(json.dumps(summary), file=out)
    finally:
        engine.close()
    return 0


def _quickstart_ppr(
    engine: Any, collection: Any, data: Any, args: argparse.Namespace, knn: Any, out: Any
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
    built = graph.build_fingerprints(walks_per_node=10, alpha=0.15, seed=args.seed)
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


# -- ingest / search / info ---------------------------------------------------------------------
def cmd_ingest(args: argparse.Namespace) -> int:
    from shardwalk import Engine
    from shardwalk.formats import open_vectors

    source = open_vectors(
        args.path,
        format=args.format,
        batch_size=args.batch,
        limit=args.limit,
        id_column=args.id_column,
        vector_column=args.vector_column,
        tenant_column=args.tenant_column,
        hdf5_dataset=args.hdf5_dataset,
    )
    with Engine.open(args.data) as engine:
        if args.collection in engine.collections():
            collection = engine.collection(args.collection)
        else:
            collection = engine.create_collection(
                args.collection,
                dim=source.dim,
                metric=args.metric,
                index=args.index,
                **_parse_params(args.param),
            )
        bar = Progress(source.count, f"ingest {os.path.basename(args.path)}")
        t0 = time.perf_counter()
        for batch in source.batches:
            collection.upsert(
                batch.ids, batch.vectors, tenants=batch.tenants, attributes=batch.attributes or None
            )
            bar.update(batch.ids.size)
        collection.flush()
        seconds = time.perf_counter() - t0
        print(
            f"ingested {source.count:,} vectors of dimension {source.dim} into "
            f"{args.collection!r} ({len(collection):,} in all) in {seconds:.1f}s"
        )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from shardwalk import Engine

    params = _parse_params(args.param)
    with Engine.open(args.data) as engine:
        collection = engine.collection(args.collection)
        if args.queries:
            from shardwalk.formats import open_vectors

            source = open_vectors(args.queries, limit=args.limit)
            queries = np.concatenate([b.vectors for b in source.batches])
        elif args.id is not None:
            queries = collection.get(args.id).vectors
        else:
            raise InvalidArgumentError("give --queries FILE or --id ID (search by a stored vector)")
        t0 = time.perf_counter()
        result = collection.search(queries, k=args.k, **params)
        seconds = time.perf_counter() - t0
        if args.json:
            for i in range(queries.shape[0]):
                print(
                    json.dumps(
                        {
                            "query": i,
                            "ids": result.ids[i].tolist(),
                            "distances": [float(d) for d in result.distances[i]],
                        }
                    )
                )
        else:
            for i in range(queries.shape[0]):
                pairs = ", ".join(
                    f"{id_}:{d:.4g}"
                    for id_, d in zip(result.ids[i].tolist(), result.distances[i])
                    if id_ >= 0
                )
                print(f"query {i}: {pairs}")
            print(f"{queries.shape[0]} queries in {seconds * 1e3:.1f} ms", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from shardwalk import Engine

    with Engine.open(args.data) as engine:
        names = [args.collection] if args.collection else engine.collections()
        info = {
            "path": engine.path,
            "collections": [engine.collection(n).stats() for n in names],
            "graphs": [] if args.collection else [engine.graph(n).stats() for n in engine.graphs()],
        }
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_graph_ingest(args: argparse.Namespace) -> int:
    from shardwalk import Engine

    options: dict[str, Any] = {"directed": not args.undirected}
    is_parquet = args.format == "parquet" or args.path.endswith((".parquet", ".pq"))
    is_npy = args.format == "npy" or os.path.isdir(args.path)
    if is_parquet:
        if args.weighted:
            options["weight"] = "weight"
    elif is_npy:
        options["use_weights"] = args.weighted  # weights.npy, when present and asked for
    else:
        options["weighted"] = args.weighted
        if args.delimiter:
            options["delimiter"] = args.delimiter
    t0 = time.perf_counter()
    with Engine.open(args.data) as engine:
        graph = engine.load_graph(args.name, args.path, format=args.format, **options)
        print(
            f"graph {args.name!r}: {graph.num_nodes:,} nodes, {graph.num_edges:,} edges "
            f"({'directed' if graph.directed else 'undirected'}) in {time.perf_counter() - t0:.1f}s"
        )
    return 0


def cmd_graph_fingerprints(args: argparse.Namespace) -> int:
    from shardwalk import Engine

    with Engine.open(args.data) as engine:
        graph = engine.graph(args.name)
        stats = graph.build_fingerprints(
            walks_per_node=args.walks_per_node,
            alpha=args.alpha,
            seed=args.seed,
            dangling=args.dangling,
            top_k=args.top_k,
        )
    print(
        f"fingerprints of {args.name!r}: R={args.walks_per_node}, alpha={args.alpha}, "
        f"{stats['seconds']:.2f}s, {stats['steps_per_second'] / 1e6:.1f}M steps/s, "
        f"{stats['nbytes'] / 2**20:.1f} MiB"
    )
    return 0


def cmd_ppr(args: argparse.Namespace) -> int:
    from shardwalk import Engine

    seeds: Any = args.seed[0] if len(args.seed) == 1 else list(args.seed)
    with Engine.open(args.data) as engine:
        result = engine.graph(args.graph).ppr(seeds, k=args.k, method=args.method)
    if args.json:
        print(
            json.dumps(
                {
                    "ids": result.ids[0].tolist(),
                    "scores": [float(x) for x in result.scores[0]],
                    "error": float(result.error[0]),
                    "method": result.method,
                    "seconds": result.seconds,
                }
            )
        )
    else:
        for node, score in zip(result.ids[0].tolist(), result.scores[0].tolist()):
            if node >= 0:
                print(f"{node}\t{score:.6g}")
        print(
            f"{result.method}: error estimate {float(result.error[0]):.3g}, "
            f"{result.seconds * 1e3:.2f} ms",
            file=sys.stderr,
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardwalk", description="Vector search and graph retrieval engine."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("quickstart", help="generate seeded data, build, query, report recall")
    p.add_argument("--data", default="shardwalk-quickstart", help="data directory")
    p.add_argument("--n", type=int, default=200_000, help="vectors to generate")
    p.add_argument("--dim", type=int, default=96)
    p.add_argument("--queries", type=int, default=1_000)
    p.add_argument(
        "--index", default="hnsw", choices=["flat", "hnsw", "partitioned", "multitenant"]
    )
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--edges-per-node",
        type=int,
        default=5,
        help="edges per node of the PPR demo graph (0 skips it)",
    )
    p.add_argument("--json", action="store_true", help="also print a JSON summary line")
    p.set_defaults(run=cmd_quickstart)

    p = sub.add_parser("ingest", help="load vectors from .npy, Parquet, HDF5, .fvecs/.bvecs")
    p.add_argument("path")
    p.add_argument("--data", required=True, help="data directory")
    p.add_argument("--collection", required=True)
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "npy", "parquet", "hdf5", "fvecs", "ivecs", "bvecs"],
    )
    p.add_argument("--metric", default="l2", choices=["l2", "ip", "cosine"])
    p.add_argument(
        "--index", default="hnsw", choices=["flat", "hnsw", "partitioned", "multitenant"]
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=INT",
        help="index parameter, e.g. --param m=16 --param ef_construction=200",
    )
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--limit", type=int, default=None, help="ingest only the first N vectors")
    p.add_argument("--id-column", default="id")
    p.add_argument("--vector-column", default="vector")
    p.add_argument("--tenant-column", default=None)
    p.add_argument("--hdf5-dataset", default="train")
    p.set_defaults(run=cmd_ingest)

    p = sub.add_parser("search", help="k nearest neighbours of query vectors")
    p.add_argument("--data", required=True)
    p.add_argument("--collection", required=True)
    p.add_argument("--queries", help="file of query vectors (any ingest format)")
    p.add_argument("--id", type=int, help="search with the stored vector of this id")
    p.add_argument("--limit", type=int, default=None, help="only the first N queries")
    p.add_argument("--k", type=int, default=10)
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=INT",
        help="search parameter, e.g. --param ef=128",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_search)

    p = sub.add_parser("graph", help="graphs: ingest, fingerprints")
    graph_sub = p.add_subparsers(dest="graph_command", required=True)
    g = graph_sub.add_parser("ingest", help="load a SNAP edge list, Parquet or edges.npy directory")
    g.add_argument("path")
    g.add_argument("--data", required=True)
    g.add_argument("--name", required=True)
    g.add_argument("--format", default="auto", choices=["auto", "snap", "parquet", "npy"])
    g.add_argument("--undirected", action="store_true", help="store every edge both ways")
    g.add_argument(
        "--weighted",
        action="store_true",
        help="read edge weights (third column, 'weight' column or weights.npy; > 0)",
    )
    g.add_argument("--delimiter", default=None)
    g.set_defaults(run=cmd_graph_ingest)
    g = graph_sub.add_parser("fingerprints", help="build Monte Carlo PPR fingerprints")
    g.add_argument("--data", required=True)
    g.add_argument("--name", required=True)
    g.add_argument("--walks-per-node", type=int, default=10, help="R")
    g.add_argument("--alpha", type=float, default=0.15, help="stop probability")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--dangling", default="self_loop", choices=["self_loop", "drop"])
    g.add_argument("--top-k", type=int, default=None)
    g.set_defaults(run=cmd_graph_fingerprints)

    p = sub.add_parser("ppr", help="personalized PageRank from seed nodes")
    p.add_argument("--data", required=True)
    p.add_argument("--graph", required=True)
    p.add_argument(
        "--seed",
        type=int,
        action="append",
        required=True,
        help="seed node id (repeat for several, equally weighted)",
    )
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--method", default=None, choices=["fingerprint", "push", "exact"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_ppr)

    p = sub.add_parser("info", help="collections and their statistics")
    p.add_argument("--data", required=True)
    p.add_argument("--collection")
    p.set_defaults(run=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ShardwalkError as exc:
        print(f"shardwalk: error: {exc} ({exc.code})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
