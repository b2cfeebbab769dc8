"""Composed retrieval quality (issue 25): does kNN-seeded PPR retrieve better than kNN alone,
and do calibrated defaults get what the best setting gets? With HippoRAG's recipe as a peer.

The task (no labels): hold out 300 nodes with >= 3 edges (their edges leave the graph, their
rows the collection), query with each one's own vector, score recall@10 of its held-out
neighbours (|top-10 & neighbours| / |neighbours|). Run on

* Cora (../shared/data/cora-planetoid: 2,708 papers, 1,433 binary words, 5,278 citations):
  features idf-weighted and L2-normalised, cosine, flat index; citations undirected;
  fingerprints with 20 walks per node (alpha 0.5, compose's library default);
* a generated planted-partition graph (shardwalk.datasets.planted_partition: communities of
  50, nodes' features a noisy map of their latent position) that no constant here was tuned
  on (``--generated-n`` nodes).

Measured in one run, per graph, on the same 300 held-out queries:

* kNN alone (``Collection.search``);
* compose at its library defaults (``Engine.compose`` with no parameters, before calibration);
* compose after ``Engine.calibrate_compose`` (which samples its own held-out nodes from the
  remaining data: it never sees the benchmark's queries), at defaults, i.e. no parameters;
* the issue's grid (knn_k 5/10/20 x alpha 0.05/0.1/0.2/0.3 x rrf / weighted 0.2-0.8), scored
  with ``shardwalk.evaluate`` on exactly these held-out nodes (tests/compose/test_compose_calibration.py
  checks that a setting scores there what compose returns), and its best setting run again
  through ``Engine.compose``;
* the fused variants side by side (seed weighting x fusion, each at its best knn_k, alpha,
  weight over a small grid);
* HippoRAG's recipe as application code: kNN in a faiss flat index, then PPR in igraph
  (``personalized_pagerank``, reset = the similarity-weighted seeds, damping 1 - alpha),
  ranked by PPR, one call per stage (in process: no network round trip, so its latency is
  a floor).

Latency: single-query p50 of kNN alone and of compose at the calibrated defaults, back to
back per query, and of the peer's two stages. Calibration time is reported per graph;
``--large N`` also times calibration and compose's added latency on a generated graph of N
nodes (HNSW collection), the issue's 1M when the machine allows.

    python bench/compose_quality.py                       # Cora + 10K generated: ~5 min
    python bench/compose_quality.py --skip-cora --generated-n 0 --large 1000000 \\
        --out compose_quality-large                       # calibration time at 1M nodes

Writes bench/results/compose_quality.json; ``python bench/report.py compose_quality`` renders
the table in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

import shardwalk
from shardwalk._threads import delegated
from shardwalk.compose import FUSIONS
from shardwalk.datasets import planted_partition
from shardwalk.evaluate import GRID, _Scorer, held_out, recall

RESULTS = Path(__file__).resolve().parent / "results"
# ../shared/data next to the checkout (SHARDWALK_DATA overrides: a worktree lives deeper)
DATA = Path(
    os.environ.get("SHARDWALK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
K = 10
ISSUE_GRID = [
    {"knn_k": kk, "alpha": a, "fuse": f, "weight": w}
    for kk in (5, 10, 20)
    for a in (0.05, 0.1, 0.2, 0.3)
    for f, w in [("rrf", None)] + [("weighted", w) for w in (0.2, 0.4, 0.6, 0.8)]
]
VARIANT_GRID = {"knn_k": (10, 20, 40), "alpha": (0.1, 0.2, 0.3), "weight": (0.2, 0.5, 0.8)}
SEEDINGS = {"linear": None, "softmax T=0.2": 0.2, "softmax T=0.35": 0.35, "softmax T=0.6": 0.6}


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip()
    except OSError:
        return "unknown"


def p50_ms(seconds: list[float]) -> float:
    return float(np.percentile(np.asarray(seconds) * 1e3, 50))


def back_to_back(
    engine: Any, col: Any, queries: np.ndarray, args: Any, fingerprints: bool = False
) -> dict[str, float]:
    """Single-query p50 (ms) of kNN alone and compose at the pair's defaults, back to back per
    query, after ``args.warmup`` untimed rounds: with the engine's threads ("knn",
    "compose_calibrated"), and within one thread per call ("..._1t": faiss and numba run
    serially, as each call does when a server runs many at once), where the calling thread's
    CPU time ("..._cpu") is the call's cost whatever the machine's load: at load 15 on 2
    cores a call of 2 ms wall is often preempted for tens of ms, one of 1 ms less often.
    With ``fingerprints``, also compose at the same defaults on the graph's own PPR choice
    (``ppr_params={"accuracy": "fast"}``: its fingerprints), one thread per call
    ("fingerprints_1t", "fingerprints_cpu")."""
    names = ("knn", "compose", "knn_1t", "compose_1t", "knn_cpu", "compose_cpu")
    names += ("fingerprints_1t", "fingerprints_cpu") if fingerprints else ()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.warmup + args.rounds):
        q = queries[r % len(queries)]
        for suffix in ("", "_1t"):
            with delegated(1) if suffix else nullcontext():
                t, c = time.perf_counter(), time.thread_time()
                col.search(q, K)
                t_knn, c_knn = time.perf_counter() - t, time.thread_time() - c
                t, c = time.perf_counter(), time.thread_time()
                engine.compose("docs", "kg", q)
                t_compose, c_compose = time.perf_counter() - t, time.thread_time() - c
                if suffix and fingerprints:
                    t, c = time.perf_counter(), time.thread_time()
                    engine.compose("docs", "kg", q, ppr_params={"accuracy": "fast"})
                    t_fp, c_fp = time.perf_counter() - t, time.thread_time() - c
                    if r >= args.warmup:
                        times["fingerprints_1t"].append(t_fp)
                        times["fingerprints_cpu"].append(c_fp)
            if r >= args.warmup:
                times["knn" + suffix].append(t_knn)
                times["compose" + suffix].append(t_compose)
                if suffix:  # all the work on this thread: its CPU time is the call's cost
                    times["knn_cpu"].append(c_knn)
                    times["compose_cpu"].append(c_compose)
    p50 = {n.replace("compose", "compose_calibrated"): p50_ms(v) for n, v in times.items()}
    p50["added"] = p50["compose_calibrated"] - p50["knn"]
    p50["added_1t"] = p50["compose_calibrated_1t"] - p50["knn_1t"]
    p50["added_cpu"] = p50["compose_calibrated_cpu"] - p50["knn_cpu"]
    if fingerprints:
        p50["added_fingerprints_cpu"] = p50["fingerprints_cpu"] - p50["knn_cpu"]
    return p50


def calibration_grid_best(score: _Scorer) -> dict[str, Any]:
    """The best setting of the calibration's whole grid (GRID) scored on the benchmark's own
    queries: an oracle that the calibration (which never sees them) is judged against."""
    fusions = [{"fuse": "rrf", "weight": None}] + [
        {"fuse": f, "weight": w} for f in FUSIONS[1:] for w in GRID["weight"]
    ]
    best: dict[str, Any] = {"recall": -1.0}
    for kk in GRID["knn_k"]:
        for a in GRID["alpha"]:
            for t in GRID["temperature"]:
                config = {"knn_k": kk, "alpha": a, "temperature": t}
                values = score.fusions(config, fusions)
                i = int(np.argmax(values))
                if values[i] > best["recall"]:
                    best = {**config, **fusions[i], "recall": values[i]}
    return best


def cora() -> tuple[np.ndarray, np.ndarray]:
    directory = DATA / "cora-planetoid"
    features = np.load(directory / "features.npy").astype(np.float64)
    n = features.shape[0]
    tfidf = features * np.log(n / np.maximum(features.sum(axis=0), 1))
    tfidf /= np.maximum(np.linalg.norm(tfidf, axis=1, keepdims=True), 1e-12)
    return tfidf.astype(np.float32), np.load(directory / "edges.npy")


def hold_out(edges: np.ndarray, n: int, seed: int) -> np.ndarray:
    degree = np.bincount(edges.ravel(), minlength=n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(np.flatnonzero(degree >= 3), 300, replace=False))


def setting_name(s: dict[str, Any]) -> str:
    parts = [f"{s['fuse']}", f"knn_k {s['knn_k']}", f"alpha {s['alpha']}"]
    if s.get("weight") is not None:
        parts.append(f"weight {s['weight']}")
    if s.get("temperature") is not None:
        parts.append(f"T {s['temperature']}")
    return ", ".join(parts)


def hipporag(
    vectors: np.ndarray, edges: np.ndarray, rows: np.ndarray, queries: np.ndarray, alpha: float
) -> tuple[np.ndarray, list[float], list[float]]:
    """HippoRAG's retrieval as application code: faiss kNN, then igraph PPR seeded by the
    hits (similarity-weighted), ranked by PPR among the rows."""
    import faiss
    import igraph

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors[rows])
    n = vectors.shape[0]
    g = igraph.Graph(n=n, edges=edges.tolist(), directed=False)
    is_row = np.zeros(n, dtype=bool)
    is_row[rows] = True
    out = np.full((len(queries), K), -1, np.int64)
    knn_s, ppr_s = [], []
    for i, q in enumerate(queries):
        t = time.perf_counter()
        sims, hits = index.search(q[None, :], K)
        knn_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        reset = np.zeros(n)
        reset[rows[hits[0]]] = np.maximum(sims[0], 1e-6)
        scores = np.asarray(g.personalized_pagerank(damping=1 - alpha, reset=reset.tolist()))
        scores[~is_row] = -1.0
        out[i] = np.argsort(-scores, kind="stable")[:K]
        ppr_s.append(time.perf_counter() - t)
    return out, knn_s, ppr_s


def run_graph(
    name: str, vectors: np.ndarray, edges: np.ndarray, held: np.ndarray, args: Any
) -> dict[str, Any]:
    n = vectors.shape[0]
    print(f"\n== {name}: {n:,} nodes, {len(edges):,} edges, {held.size} held out; load {load()}")
    # the library's task on the full data, holding out exactly these nodes (grid, variants)
    with shardwalk.Engine.memory() as full:
        col = full.create_collection("docs", dim=vectors.shape[1], metric="cosine", index="flat")
        col.upsert(np.arange(n), vectors)
        graph = full.create_graph("kg", edges, directed=False, node_ids=np.arange(n))
        task = held_out(col, graph, nodes=held, min_degree=3, knn_depth=40)
        score = _Scorer(task, K)
        t = time.perf_counter()
        grid = [
            {**s, "temperature": None, "recall": score(s | {"temperature": None})}
            for s in ISSUE_GRID
        ]
        grid_seconds = time.perf_counter() - t
        variants = []
        for seeding, temperature in SEEDINGS.items():
            for fuse in FUSIONS:
                weights = (None,) if fuse == "rrf" else VARIANT_GRID["weight"]
                best = max(
                    (
                        {
                            "knn_k": kk,
                            "alpha": a,
                            "fuse": fuse,
                            "weight": w,
                            "temperature": temperature,
                        }
                        for kk in VARIANT_GRID["knn_k"]
                        for a in VARIANT_GRID["alpha"]
                        for w in weights
                    ),
                    key=score,
                )
                variants.append({"seeds": seeding, **best, "recall": score(best)})
        full_grid = calibration_grid_best(score)
        print(
            f"grids + variants scored in {time.perf_counter() - t:.0f}s ({grid_seconds:.0f}s "
            "the issue's grid)"
        )
    grid_best = max(grid, key=lambda s: s["recall"])
    held = task.query_ids  # (a node whose neighbours are all held out has nothing to find)

    # the issue's protocol: held-out rows and edges removed for real
    keep_rows = np.setdiff1d(np.arange(n), held)
    kept = edges[~np.isin(edges, held).any(axis=1)]
    queries = vectors[held]
    truth = task.truth
    engine = shardwalk.Engine.memory()
    col = engine.create_collection("docs", dim=vectors.shape[1], metric="cosine", index="flat")
    col.upsert(keep_rows, vectors[keep_rows])
    graph = engine.create_graph("kg", kept, directed=False, node_ids=np.arange(n))
    graph.build_fingerprints(walks_per_node=20, alpha=0.5, seed=0)
    knn = col.search(queries, K)
    defaults = engine.compose("docs", "kg", queries)
    rerun = {n_: grid_best[n_] for n_ in ("knn_k", "alpha", "fuse", "weight")}
    grid_best_compose = engine.compose("docs", "kg", queries, **rerun)
    t, cpu = time.perf_counter(), time.process_time()
    record = engine.calibrate_compose("docs", "kg", seed=0)
    calibration_seconds = time.perf_counter() - t
    calibration_cpu = time.process_time() - cpu
    if record["alpha"] != 0.5:  # fingerprints at the calibrated alpha, for the side figure
        graph.build_fingerprints(walks_per_node=20, alpha=record["alpha"], seed=0)
    calibrated = engine.compose("docs", "kg", queries)
    assert all(v["source"] == "calibrated" for v in calibrated.explain.values())
    ppr_method = calibrated.ppr_method

    # latency, back to back per query: kNN alone, compose at the calibrated defaults
    times = back_to_back(engine, col, queries, args, fingerprints=True)
    engine.close()
    peer_alpha = record["alpha"]
    peer_ids, peer_knn, peer_ppr = hipporag(vectors, kept, keep_rows, queries, peer_alpha)
    # HippoRAG's own damping 0.5 too where igraph is quick enough (it solves the whole graph
    # per query)
    peer_half = hipporag(vectors, kept, keep_rows, queries, 0.5)[0] if n <= 5000 else None

    r_knn = recall(knn.ids, truth)
    out = {
        "nodes": n,
        "edges": len(edges),
        "queries": int(held.size),
        "recall": {
            "knn": r_knn,
            "compose_defaults": recall(defaults.ids, truth),
            "compose_calibrated": recall(calibrated.ids, truth),
            "grid_best": grid_best["recall"],
            "grid_best_compose": recall(grid_best_compose.ids, truth),
            "calibration_grid_best": full_grid["recall"],
            "calibrated_scored": score(
                {n_: record[n_] for n_ in ("knn_k", "alpha", "fuse", "weight", "temperature")}
            ),
            "hipporag_calibrated_alpha": recall(peer_ids, truth),
        },
        "peer_alpha": peer_alpha,
        "grid_best_setting": {k_: grid_best[k_] for k_ in ("knn_k", "alpha", "fuse", "weight")},
        "calibration_grid_best_setting": {k_: v for k_, v in full_grid.items() if k_ != "recall"},
        "calibrated": record,
        "calibration_seconds": calibration_seconds,
        "calibration_cpu_seconds": calibration_cpu,
        "ppr_method_calibrated": ppr_method,
        "grid": grid,
        "variants": variants,
        "latency_p50_ms": {
            **times,
            "hipporag_knn": p50_ms(peer_knn),
            "hipporag_ppr": p50_ms(peer_ppr),
            "hipporag_total": p50_ms([a + b for a, b in zip(peer_knn, peer_ppr)]),
        },
        "load": load(),
    }
    if peer_half is not None:
        out["recall"]["hipporag_damping_0.5"] = recall(peer_half, truth)
    rec = out["recall"]
    lat = out["latency_p50_ms"]
    out["ratios"] = {
        "calibrated_vs_knn": rec["compose_calibrated"] / r_knn,
        "defaults_vs_knn": rec["compose_defaults"] / r_knn,
        "grid_best_vs_knn": rec["grid_best"] / r_knn,
        "calibrated_minus_grid_best": rec["compose_calibrated"] - rec["grid_best"],
        "calibrated_minus_calibration_grid_best": (
            rec["compose_calibrated"] - rec["calibration_grid_best"]
        ),
        "compose_added_p50_ms": lat["added"],
        "compose_added_p50_ms_1t": lat["added_1t"],
        "compose_added_p50_cpu_ms": lat["added_cpu"],
        "hipporag_vs_compose_p50": lat["hipporag_total"] / lat["compose_calibrated"],
    }
    print(json.dumps({"recall": rec, "ratios": out["ratios"], "latency_p50_ms": lat}, indent=1))
    print(f"calibrated: {setting_name(record)} in {calibration_seconds:.1f}s")
    return out


def run_large(n: int, args: Any) -> dict[str, Any]:
    """Calibration time and compose's added p50 on a generated graph of n nodes (HNSW
    collection, or ``--large-index``). No fingerprints: compose's own PPR is push."""
    t0 = time.perf_counter()
    data = planted_partition(n, dim=64, noise=3.0, seed=7)
    generated = time.perf_counter() - t0
    engine = shardwalk.Engine.memory()
    params = {"m": 16, "ef_construction": 40} if args.large_index == "hnsw" else {}
    col = engine.create_collection(
        "docs", dim=64, metric="cosine", index=args.large_index, **params
    )
    col.upsert(data.ids, data.vectors)
    col.wait_indexed()
    graph = engine.create_graph("kg", data.edges, directed=False, node_ids=data.ids)
    built = time.perf_counter() - t0 - generated
    print(
        f"\n== generated {n:,} nodes, {graph.num_edges:,} stored edges; generated in "
        f"{generated:.0f}s, built in {built:.0f}s; load {load()}",
        flush=True,
    )
    load_before = load()
    t, cpu = time.perf_counter(), time.process_time()
    record = engine.calibrate_compose("docs", "kg", seed=0)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    print(f"calibrated in {seconds:.1f}s ({cpu:.1f}s CPU); load {load()}", flush=True)
    queries = data.vectors[np.random.default_rng(1).choice(n, 200, replace=False)] + 0.01
    times = back_to_back(engine, col, queries, args)
    engine.close()
    out = {
        "nodes": n,
        "stored_edges": graph.num_edges,
        "index": args.large_index,
        "generate_seconds": generated,
        "build_seconds": built,
        "calibration_seconds": seconds,
        "calibration_cpu_seconds": cpu,
        "calibration_load": load_before,
        "calibrated": record,
        "latency_p50_ms": times,
        "load": load(),
    }
    print(json.dumps({k: v for k, v in out.items() if k != "calibrated"}, indent=1))
    print(
        f"calibrated: {setting_name(record)}, recall {record['recall']:.3f} vs kNN {record['knn_recall']:.3f}"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generated-n", type=int, default=10_000, help="0: skip")
    parser.add_argument(
        "--large", type=int, default=0, help="also time a generated graph of N nodes"
    )
    parser.add_argument("--large-index", default="hnsw", help="the large run's index kind")
    parser.add_argument("--rounds", type=int, default=400, help="timed single queries")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--skip-cora", action="store_true")
    parser.add_argument("--out", default="compose_quality", help="results file stem")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "commit": commit(),
        "load_start": load(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "k": K,
        "graphs": {},
    }
    if not args.skip_cora:
        vectors, edges = cora()
        results["graphs"]["cora"] = run_graph(
            "cora", vectors, edges, hold_out(edges, vectors.shape[0], seed=0), args
        )
    if args.generated_n:
        data = planted_partition(args.generated_n, dim=64, noise=3.0, seed=1)
        results["graphs"]["generated"] = run_graph(
            f"planted partition {args.generated_n:,}",
            data.vectors / np.linalg.norm(data.vectors, axis=1, keepdims=True),
            data.edges,
            hold_out(data.edges, args.generated_n, seed=0),
            args,
        )
    if args.large:
        results["large"] = run_large(args.large, args)
    results["load_end"] = load()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{args.out}.json"
    path.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
