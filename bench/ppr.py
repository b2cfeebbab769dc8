"""PPR benchmark: fingerprint build, walk throughput, query latency/throughput and accuracy for
every method, against the exact solver and (where installed) networkx and igraph PPR.

Graphs: the small real graphs of ../shared/data (see its MANIFEST.md), a seeded power-law graph
(``--generated N M``), and with ``--large`` the 1M-node / 5M-edge power-law graph the targets
refer to. Writes ``bench/results/ppr-<tag>.json`` and ``.png``.

Examples::

    python bench/ppr.py --real email-Eu-core wiki-Vote --generated 100000 500000
    python bench/ppr.py --no-fastrp --max-edges-networkx 0 --social 80000 10   # issue 22
    python bench/ppr.py --large --real               # only the 1M-node / 5M-edge graph (~10 min)
    python bench/ppr.py --large                      # the real graphs and the large one

Accuracy follows shardwalk.walks.evaluate: ground truth by power iteration to l1 <= 1e-10 with
the same alpha, weights and dangling rule; sources sampled uniformly and per out-degree bucket.
Competitors use the restart-to-seed dangling convention (networkx's default personalization
handling and igraph PRPACK's), so they are checked against our exact solver under "restart".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numba
import numpy as np
from _common import REAL_GRAPHS, UNDIRECTED, engine_source  # engine_source: the engine's commit
from shardwalk.walks import PPRIndex, build_fingerprints, load_npy_dir
from shardwalk.walks.calibration import calibrate_accuracy
from shardwalk.walks.evaluate import evaluate, ground_truth, query_metrics, sample_sources
from shardwalk.walks.fastrp import fastrp
from shardwalk.walks.generators import power_law_graph, social_graph
from shardwalk.walks.graph import CSRGraph

from shardwalk.graph import ACCURACY

ROOT = Path(__file__).resolve().parent
# ../shared/data next to the checkout; SHARDWALK_DATA names it elsewhere (e.g. from a worktree)
DATA = Path(os.environ.get("SHARDWALK_DATA", ROOT.parents[1] / "shared" / "data"))

TARGETS = {  # from ../shared/research/ppr_anchors.md section 6.3, for the 1M / 5M graph
    "fingerprint_build_seconds_R10": 20.0,
    "fingerprint_mib_R10": 250.0,
    "fast_p50_ms": 1.5,
    "fast_precision_at_100": 0.8,
    "high_p50_ms": 25.0,
    "high_precision_at_100": 0.95,
    "batch_qps_2_cores": 1400.0,
    "walk_steps_per_second_per_core": 10e6,
}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_real(name: str) -> CSRGraph:
    # weights of the signed bitcoin graph are ratings in [-10, 10]: shift them to [1, 21]
    # (the documented explicit transform for signed graphs)
    d = DATA / name
    if (d / "weights.npy").exists():
        w = np.load(d / "weights.npy").astype(np.float64)
        ids = np.load(d / "ids.npy")
        e = np.load(d / "edges.npy")
        return CSRGraph.from_edges(ids[e[:, 0]], ids[e[:, 1]], w - w.min() + 1.0, node_ids=ids)
    return load_npy_dir(d, directed=name not in UNDIRECTED)


PREVIOUS_FAST = "hybrid r_max=2e-5 prune=0.1 (fast, previous session)"


def settings_for(large: bool) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        # accuracy="fast" and "high" with fingerprints: what the graph's calibration chose
        ("hybrid", "accuracy=fast", dict(ACCURACY["fast"]["hybrid"])),
        ("hybrid", "accuracy=high", dict(ACCURACY["high"]["hybrid"])),
        # what fast ran on most graphs after issue 22's first session (its calibration's choice)
        ("hybrid", PREVIOUS_FAST, {"r_max": 2e-5, "absorb": False, "prune": 0.1}),
        # what they ran before issue 22 (no contribution pruning), for the ratio
        ("hybrid", "hybrid r_max=5e-5 (fast before)", {"r_max": 5e-5}),
        ("hybrid", "hybrid r_max=3e-6 via hubs (high before)", {"r_max": 3e-6, "absorb": False}),
        ("fingerprint", "fp T=5 thr=1e-4", {"rounds": 5, "threshold": 1e-4}),
        *([("fingerprint", "fp T=7 thr=1e-6", {"rounds": 7, "threshold": 1e-6})] if large else []),
        ("push", "push r_max=1e-6", {"r_max": 1e-6}),
        ("exact", "exact l1<=1e-10", {}),
    ]


def time_queries(
    idx: PPRIndex,
    method: str,
    params: dict,
    sources: np.ndarray,
    k: int,
    budget: float,
    repeat: int = 1,
) -> dict:
    """Single-query latency over ``sources``, stopping early once ``budget`` seconds are spent
    (at least 5 queries). Each query runs ``repeat`` times back to back and keeps its fastest
    time (on a shared machine, the run least slowed by other processes). Also the counted
    work per query (``PPRResult.work``: pushed out-edges + entries composed + nodes touched),
    which no load changes, and the CPU time of the calling thread (a single query runs its
    kernel there): what a query costs without the time it waits for a core."""
    idx.query(int(sources[0]), k=k, method=method, **params)  # warm (compile, scratch)
    lat, cpu, work = [], [], []
    start = time.perf_counter()
    for s in sources:
        best = best_cpu = float("inf")
        for _ in range(repeat):
            c0 = time.thread_time()
            t0 = time.perf_counter()
            r = idx.query(int(s), k=k, method=method, **params)
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.thread_time() - c0)
        lat.append(best)
        cpu.append(best_cpu)
        work.append(int(r.work.sum()))
        if len(lat) >= 5 and time.perf_counter() - start > budget:
            break
    lat_ms = np.array(lat) * 1e3
    return {
        "queries": len(lat),
        "repeat": repeat,
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
        "mean_ms": float(lat_ms.mean()),
        "work_p50": float(np.median(work)),
        "cpu_p50_ms": float(np.median(cpu) * 1e3),
    }


def time_batch(
    idx: PPRIndex,
    method: str,
    params: dict,
    sources: np.ndarray,
    k: int,
    per_query_s: float,
    budget: float,
) -> dict:
    """Throughput of one ``query_batch`` call, its size capped so it takes about ``budget``
    seconds at the measured single-query time."""
    size = int(min(sources.size, max(16, budget / max(per_query_s, 1e-6))))
    batch = sources[:size]
    idx.query_batch(batch[:4], k=k, method=method, **params)
    t0 = time.perf_counter()
    idx.query_batch(batch, k=k, method=method, **params)
    sec = time.perf_counter() - t0
    return {"batch": int(batch.size), "seconds": sec, "qps": batch.size / sec}


def competitors(g: CSRGraph, alpha: float, sources: np.ndarray, k: int, max_edges_nx: int) -> dict:
    """networkx / igraph personalized PageRank timings and accuracy against our exact solver
    under the restart rule (their convention)."""
    out: dict[str, Any] = {}
    idx = PPRIndex(g, alpha=alpha, dangling="restart")
    n = g.num_nodes
    rows = np.repeat(np.arange(n), np.diff(g.indptr))
    cols = np.asarray(g.indices)
    w = None if g.weights is None else np.asarray(g.weights, np.float64)
    truth = {int(s): idx.vector(int(s), method="exact") for s in g.to_external(sources)}
    ours = time_queries(idx, "exact", {}, g.to_external(sources), k, budget=60.0)
    ours["precision_at_k_vs_our_exact"] = 1.0

    def score(dense: np.ndarray, s_ext: int) -> dict:
        e_ids, e_vals, _ = truth[s_ext]
        nz = np.flatnonzero(dense)
        return query_metrics(e_ids, e_vals, g.to_external(nz), dense[nz], k=k, n=n)

    try:
        import networkx as nx
    except ImportError:
        out["networkx"] = "not installed"
    else:
        if g.num_edges > max_edges_nx:
            out["networkx"] = f"skipped: {g.num_edges} edges > --max-edges-networkx {max_edges_nx}"
        else:
            t0 = time.perf_counter()
            G = nx.DiGraph()
            G.add_nodes_from(range(n))
            if w is None:
                G.add_edges_from(zip(rows.tolist(), cols.tolist(), strict=True))
            else:
                G.add_weighted_edges_from(
                    zip(rows.tolist(), cols.tolist(), w.tolist(), strict=True)
                )
            build = time.perf_counter() - t0
            times, mets = [], []
            for s in sources:
                t0 = time.perf_counter()
                pr = nx.pagerank(
                    G, alpha=1 - alpha, personalization={int(s): 1.0}, tol=1e-12, max_iter=1000
                )
                times.append(time.perf_counter() - t0)
                dense = np.zeros(n)
                dense[list(pr.keys())] = list(pr.values())
                mets.append(score(dense, int(g.to_external(np.array([s]))[0])))
            out["networkx"] = _comp_summary(nx.__version__, build, times, mets, ours)
    try:
        import igraph as ig
    except ImportError:
        out["igraph"] = "not installed"
    else:
        t0 = time.perf_counter()
        G = ig.Graph(n=n, edges=np.column_stack([rows, cols]).tolist(), directed=True)
        build = time.perf_counter() - t0
        times, mets = [], []
        for s in sources:
            t0 = time.perf_counter()
            pr = G.personalized_pagerank(
                reset_vertices=[int(s)], damping=1 - alpha, directed=True, weights=None if w is None else w.tolist(),
                implementation="prpack",
            )  # fmt: skip
            times.append(time.perf_counter() - t0)
            mets.append(score(np.asarray(pr), int(g.to_external(np.array([s]))[0])))
        out["igraph"] = _comp_summary(ig.__version__, build, times, mets, ours)
    out["ours_exact_restart"] = ours
    return out


def _comp_summary(version: str, build: float, times: list, mets: list, ours: dict) -> dict:
    return {
        "version": version,
        "graph_build_seconds": build,
        "per_query_seconds_median": float(np.median(times)),
        "queries": len(times),
        "precision_at_k_vs_our_exact": float(np.mean([m["precision"] for m in mets])),
        "l1_vs_our_exact": float(np.mean([m["l1"] for m in mets])),
        "speedup_of_our_exact": float(np.median(times) / (ours["p50_ms"] / 1e3)),
    }


def bench_graph(name: str, g: CSRGraph, args: argparse.Namespace, threads: int) -> dict:
    print(f"== {name}: {g}", flush=True)
    res: dict[str, Any] = {
        "graph": name,
        "nodes": g.num_nodes,
        "edges": g.num_edges,
        "directed": g.directed,
        "weighted": g.weighted,
        "dangling": int((g.out_degrees() == 0).sum()),
        "csr_mib": g.nbytes / 2**20,
    }
    alpha, k = args.alpha, args.k
    rss0 = peak_rss_mib()
    # walk throughput on one core, then the build on all threads
    numba.set_num_threads(1)
    build_fingerprints(
        g, walks_per_node=1, alpha=alpha, seed=0
    )  # warm: load kernels, touch the graph
    fp1 = build_fingerprints(g, walks_per_node=args.walks_per_node, alpha=alpha, seed=1)
    numba.set_num_threads(threads)
    fp = build_fingerprints(
        g, walks_per_node=args.walks_per_node, alpha=alpha, seed=1, hubs=args.hubs
    )
    hub_bytes = fp.nbytes - fp1.nbytes  # fp1: the same rows without hub rows
    res["fingerprints"] = {
        "walks_per_node": args.walks_per_node,
        "build_seconds_1_thread": fp1.stats["seconds"],
        "build_seconds": fp.stats["seconds"],
        "threads": threads,
        "walk_steps": fp.stats["steps"],
        "walk_steps_per_second_per_core": fp1.stats["steps_per_second"],
        "walk_steps_per_second_all_threads": fp.stats["steps_per_second"],
        "store_mib": fp.nbytes / 2**20,
        "hubs": fp.num_hubs,
        "hub_walks": fp.hub_walks,
        "hub_rows_mib": hub_bytes / 2**20,
        "store_mib_without_hubs": fp1.nbytes / 2**20,
        "entries_per_node": fp.stats["entries_per_node"],
        "counts_dtype": str(fp.counts.dtype),
        "peak_rss_growth_mib": peak_rss_mib() - rss0,
    }
    print("  fingerprints:", json.dumps(res["fingerprints"]), flush=True)
    del fp1
    idx = PPRIndex(g, fp)
    rng = np.random.default_rng(args.seed)
    live = np.flatnonzero(g.out_degrees() > 0)
    lat_src = g.to_external(rng.choice(live, size=min(args.queries, live.size), replace=False))
    batch_src = g.to_external(rng.choice(live, size=args.batch, replace=True))
    eval_src = sample_sources(
        g, uniform=args.eval_uniform, per_bucket=args.eval_per_bucket, seed=args.seed
    )
    t0 = time.perf_counter()
    truth = ground_truth(idx, eval_src)
    res["ground_truth_seconds_per_source"] = (time.perf_counter() - t0) / max(len(truth), 1)
    res["methods"] = []
    t0 = time.perf_counter()
    calibration = calibrate_accuracy(g, fp, seed=1)  # what Graph.build_fingerprints records
    res["fingerprints"]["calibration_seconds"] = time.perf_counter() - t0
    res["fingerprints"]["accuracy_calibration"] = calibration
    res["load_before_methods"] = list(os.getloadavg())
    for method, label, params in settings_for(args.large):
        if label.startswith("accuracy="):
            chosen = calibration[label.split("=")[1]]
            method, params = chosen["method"], chosen["params"]
        row: dict[str, Any] = {"method": method, "label": label, "params": params}
        n_lat = lat_src if method != "exact" else lat_src[: args.exact_queries]
        row["latency"] = time_queries(
            idx,
            method,
            params,
            n_lat,
            k,
            args.budget,
            repeat=1 if method == "exact" else args.repeat,
        )
        if method != "exact":
            per_q = row["latency"]["mean_ms"] / 1e3
            row["batch"] = time_batch(idx, method, params, batch_src, k, per_q, args.budget)
        rep = evaluate(idx, eval_src, method=method, k=k, truth=truth, **params)
        row["accuracy"] = rep.summary
        res["methods"].append(row)
        a = rep.summary["all"]
        print(
            f"  {label:18s} p50 {row['latency']['p50_ms']:8.3f} ms  p99 {row['latency']['p99_ms']:8.3f} ms"
            f"  work {row['latency']['work_p50']:9.0f}"
            + (f"  batch {row['batch']['qps']:8.0f} q/s" if "batch" in row else "")
            + f"  p@{k} {a['precision']:.3f}  ndcg {a['ndcg']:.4f}  l1 {a['l1']:.4f}"
            f"  maxrel(>1/n) {a['max_rel_error']:.3g}  reported err {a['reported_error']:.4f}"
            f"  covers l1 in {a['error_coverage']:.0%}",
            flush=True,
        )
    if not args.no_competitors:
        comp_src = rng.choice(live, size=min(args.competitor_queries, live.size), replace=False)
        res["competitors"] = competitors(g, alpha, comp_src, k, args.max_edges_networkx)
        by = {m["label"]: m for m in res["methods"]}
        for lib in ("networkx", "igraph"):
            c = res["competitors"].get(lib)
            if isinstance(c, dict):  # ratios the targets talk about: per query, and in batch
                per_q = c["per_query_seconds_median"]
                c["speedup_of_fp_T5_single"] = per_q / (
                    by["fp T=5 thr=1e-4"]["latency"]["p50_ms"] / 1e3
                )
                c["speedup_of_fp_T5_batch"] = per_q * by["fp T=5 thr=1e-4"]["batch"]["qps"]
                if "fp T=7 thr=1e-6" in by:
                    c["speedup_of_fp_T7_batch"] = per_q * by["fp T=7 thr=1e-6"]["batch"]["qps"]
        print("  competitors:", json.dumps(res["competitors"]), flush=True)
    if not args.no_fastrp:
        t0 = time.perf_counter()
        emb = fastrp(g, dim=128, seed=1)
        res["fastrp"] = {"dim": 128, "seconds": time.perf_counter() - t0, "mib": emb.nbytes / 2**20}
        del emb
        print("  fastrp:", json.dumps(res["fastrp"]), flush=True)
    res["peak_rss_mib"] = peak_rss_mib()
    res["load_after"] = list(os.getloadavg())
    res["accuracy_targets"] = accuracy_targets(res)
    print("  accuracy= targets:", json.dumps(res["accuracy_targets"]), flush=True)
    if args.large or args.check_targets:
        res["targets"] = check_targets(res, threads)
    return res


ACCURACY_TARGETS = {"fast": (0.8, 2.0), "high": (0.95, 25.0)}  # (precision@100, p50 ms)


def accuracy_targets(res: dict) -> dict:
    """Issue 12's bar for accuracy="fast" and "high" on every graph, and the memory of the
    store with hub rows against the one without (at most 2x)."""
    by = {m["label"]: m for m in res["methods"]}
    out: dict[str, Any] = {}
    for name, label in (("fast", "accuracy=fast"), ("high", "accuracy=high")):
        precision_bar, p50_bar = ACCURACY_TARGETS[name]
        row = by[label]
        got_p, got_ms = row["accuracy"]["all"]["precision"], row["latency"]["p50_ms"]
        out[name] = {
            "precision": got_p,
            "p50_ms": got_ms,
            "error_coverage": row["accuracy"]["all"]["error_coverage"],
            "met": got_p >= precision_bar and got_ms <= p50_bar,
            "cpu_p50_ms": row["latency"]["cpu_p50_ms"],
            "met_by_cpu_time": got_p >= precision_bar and row["latency"]["cpu_p50_ms"] <= p50_bar,
        }
    fpr = res["fingerprints"]
    ratio = fpr["store_mib"] / max(fpr["store_mib_without_hubs"], 1e-9)
    out["memory_ratio"] = {"measured": ratio, "met": ratio <= 2.0}
    return out


def check_targets(res: dict, threads: int) -> dict:
    fpr = res["fingerprints"]
    by = {m["label"]: m for m in res["methods"]}
    fast, high = by["fp T=5 thr=1e-4"], by["fp T=7 thr=1e-6"]
    got = {
        "fingerprint_build_seconds_R10": fpr["build_seconds"],
        "fingerprint_mib_R10": fpr["store_mib"],
        "fast_p50_ms": fast["latency"]["p50_ms"],
        "fast_precision_at_100": fast["accuracy"]["all"]["precision"],
        "high_p50_ms": high["latency"]["p50_ms"],
        "high_precision_at_100": high["accuracy"]["all"]["precision"],
        "batch_qps_2_cores": fast["batch"]["qps"],
        "walk_steps_per_second_per_core": fpr["walk_steps_per_second_per_core"],
    }
    higher_better = {
        "fast_precision_at_100",
        "high_precision_at_100",
        "batch_qps_2_cores",
        "walk_steps_per_second_per_core",
    }
    return {
        key: {
            "target": tgt,
            "measured": got[key],
            "met": got[key] >= tgt if key in higher_better else got[key] <= tgt,
        }
        for key, tgt in TARGETS.items()
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    markers = {
        "fp T=5 thr=1e-4": "o",
        "fp T=7 thr=1e-6": "s",
        "fp T=5 thr=1e-4 compose>=1e-7": "D",
        "push r_max=1e-6": "^",
        "push r_max=1e-7": "v",
        "exact l1<=1e-10": "*",
    }
    colors = plt.cm.tab10(np.linspace(0, 1, max(len(results), 1)))
    for c, r in zip(colors, results, strict=True):
        for m in r["methods"]:
            axes[0].scatter(
                m["latency"]["p50_ms"], m["accuracy"]["all"]["precision"], color=c,
                marker=markers.get(m["label"], "x"), s=60,
            )  # fmt: skip
        axes[0].plot([], [], color=c, label=r["graph"])
    for lab, mk in markers.items():
        axes[0].scatter([], [], color="gray", marker=mk, label=lab)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("query latency p50 (ms, log)")
    axes[0].set_ylabel("precision@k vs exact")
    axes[0].set_title("accuracy vs latency, per method")
    axes[0].legend(fontsize=7)
    labels = [lab for lab in markers if not lab.startswith("exact")]
    x = np.arange(len(labels))
    width = 0.8 / max(len(results), 1)
    for i, (c, r) in enumerate(zip(colors, results, strict=True)):
        by = {m["label"]: m for m in r["methods"]}
        qps = [by[lab]["batch"]["qps"] if lab in by and "batch" in by[lab] else 0 for lab in labels]
        axes[1].bar(x + i * width, qps, width, color=c, label=r["graph"])
    axes[1].set_xticks(x + 0.4 - width / 2, labels, rotation=20, fontsize=8)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("batch throughput (queries/s, log)")
    axes[1].set_title("batched queries")
    names = [r["graph"] for r in results]
    steps = [r["fingerprints"]["walk_steps_per_second_per_core"] / 1e6 for r in results]
    build = [r["fingerprints"]["build_seconds"] for r in results]
    axes[2].bar(np.arange(len(names)), steps, color=colors)
    axes[2].set_xticks(np.arange(len(names)), names, rotation=20, fontsize=8)
    axes[2].set_ylabel("walk steps / s / core (millions)")
    for i, b in enumerate(build):
        axes[2].annotate(f"build {b:.2f}s", (i, steps[i]), ha="center", va="bottom", fontsize=7)
    axes[2].set_title(
        f"fingerprint walks (R={results[0]['fingerprints']['walks_per_node'] if results else '?'})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--real", nargs="*", default=None, help=f"real graphs from {DATA} (default: all)"
    )
    ap.add_argument(
        "--generated", nargs=2, type=int, metavar=("NODES", "EDGES"), action="append", default=[]
    )
    ap.add_argument(
        "--social",
        nargs=2,
        type=int,
        metavar=("NODES", "EDGES_PER_NODE"),
        action="append",
        default=[],
        help="a generated Holme-Kim social graph (walks.generators.social_graph), seeded",
    )
    ap.add_argument(
        "--large", action="store_true", help="add the 1M-node / 5M-edge power-law graph"
    )
    ap.add_argument("--alpha", type=float, default=0.15)
    ap.add_argument("--walks-per-node", type=int, default=10)
    ap.add_argument(
        "--hubs",
        default="auto",
        type=lambda v: v if v == "auto" else int(v),
        help="hub rows of the fingerprints: auto or a count (0: none)",
    )
    ap.add_argument("-k", type=int, default=100)
    ap.add_argument("--queries", type=int, default=200, help="latency queries per method")
    ap.add_argument("--exact-queries", type=int, default=10)
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per latency query, the fastest kept (1: every run counts)",
    )
    ap.add_argument("--batch", type=int, default=4000, help="max batch size for throughput")
    ap.add_argument(
        "--budget", type=float, default=4.0, help="seconds per latency / batch measurement"
    )
    ap.add_argument(
        "--eval-uniform", type=int, default=30, help="sources with out-edges, uniformly"
    )
    ap.add_argument("--eval-per-bucket", type=int, default=3)
    ap.add_argument("--competitor-queries", type=int, default=3)
    ap.add_argument("--max-edges-networkx", type=int, default=1_500_000)
    ap.add_argument("--no-competitors", action="store_true")
    ap.add_argument("--no-fastrp", action="store_true")
    ap.add_argument(
        "--check-targets", action="store_true", help="report the 5M-edge targets for every graph"
    )
    ap.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default=None, help="output name: bench/results/ppr-<tag>.json/.png")
    args = ap.parse_args(argv)

    graphs: list[tuple[str, Any]] = []
    real = REAL_GRAPHS if args.real is None else args.real
    for name in real:
        if (DATA / name / "edges.npy").exists():
            graphs.append((name, lambda name=name: load_real(name)))
        else:
            print(f"skipping {name}: not in {DATA}", file=sys.stderr)
    for n, m in args.generated:
        graphs.append((f"powerlaw-{n}-{m}", lambda n=n, m=m: power_law_graph(n, m, seed=args.seed)))
    for n, m in args.social:
        graphs.append((f"holme-kim-{n}-{m}", lambda n=n, m=m: social_graph(n, m, seed=args.seed)))
    if args.large:
        graphs.append(
            ("powerlaw-1M-5M", lambda: power_law_graph(1_000_000, 5_000_000, seed=args.seed))
        )

    if not graphs:
        ap.error("no graph to run: name real graphs after --real, or add --large / --generated")
    results = []
    load_at_start = list(os.getloadavg())
    for name, make in graphs:
        t0 = time.perf_counter()
        g = make()
        load = time.perf_counter() - t0
        r = bench_graph(name, g, args, args.threads)
        r["load_seconds"] = load
        results.append(r)
    tag = args.tag or ("large" if args.large else "small")
    out_dir = ROOT / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "argv": sys.argv[1:],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": list(os.getloadavg()),
        "engine": engine_source(),
        "note": "2-core shared machine: timings vary up to ~2x between runs (see ppr_anchors.md 2.5)",
    }
    (out_dir / f"ppr-{tag}.json").write_text(
        json.dumps({"meta": meta, "graphs": results}, indent=2)
    )
    plot(results, out_dir / f"ppr-{tag}.png")
    print(f"wrote {out_dir / f'ppr-{tag}.json'} and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
