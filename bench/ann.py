"""ANN benchmark: shardwalk flat / hnsw / partitioned against raw hnswlib and raw faiss
(IndexHNSWFlat, IndexIVFFlat), same process, same data, same parameters.

Reports recall@10 against exact ground truth, batch QPS and single-query latency (p50/p99) over
an ef (or nprobe) sweep, build time and peak memory, and the ratios the targets are stated in.

    python bench/ann.py --dataset mnist              # ../shared/data/mnist-784-euclidean-test10k
    python bench/ann.py --dataset clustered --n 1000000 --dim 128

Writes bench/results/ann-<dataset>.json and .png.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import hnswlib
import numpy as np
import psutil
from shardwalk.index import exact_search

import shardwalk
from shardwalk.datasets import clustered_vectors

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
K = 10


@dataclass
class Dataset:
    name: str
    base: np.ndarray
    queries: np.ndarray
    truth: np.ndarray  # (q, K) exact neighbour ids
    metric: str = "l2"


def load_mnist() -> Dataset:
    root = DATA / "mnist-784-euclidean-test10k"
    if not root.is_dir():
        sys.exit(f"dataset not found: {root} (see ../shared/data/MANIFEST.md)")
    return Dataset(
        name="mnist-784-euclidean-test10k",
        base=np.ascontiguousarray(np.load(root / "base.npy"), dtype=np.float32),
        queries=np.ascontiguousarray(np.load(root / "query.npy"), dtype=np.float32),
        truth=np.load(root / "gt.npy")[:, :K].astype(np.int64),
    )


def make_clustered(n: int, dim: int, queries: int, seed: int) -> Dataset:
    data = clustered_vectors(n, dim, queries=queries, seed=seed, metadata=False)
    truth = exact_search(data.vectors, data.queries, K, "l2").ids
    return Dataset(
        name=f"clustered-{n}x{dim}-seed{seed}", base=data.vectors, queries=data.queries, truth=truth
    )


class PeakRSS:
    """Samples this process's resident memory in a thread; reports the peak above a baseline."""

    def __init__(self) -> None:
        self.proc = psutil.Process()

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.end = self.proc.memory_info().rss
        self.peak = max(self.peak, self.end)

    @property
    def peak_mib(self) -> float:
        return (self.peak - self.base) / 2**20

    @property
    def resident_mib(self) -> float:
        return (self.end - self.base) / 2**20


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f[:K].tolist()) & set(t.tolist())) / K for f, t in zip(found, truth)])
    )


def measure(
    batch: Callable[[np.ndarray], np.ndarray],
    single: Callable[[np.ndarray], np.ndarray],
    data: Dataset,
    singles: int,
) -> dict[str, float]:
    batch(data.queries[:10])  # warm up
    t0 = time.perf_counter()
    found = batch(data.queries)
    batch_seconds = time.perf_counter() - t0
    lat = []
    for q in data.queries[:singles]:
        s0 = time.perf_counter_ns()
        single(q)
        lat.append(time.perf_counter_ns() - s0)
    lat_us = np.array(lat) / 1e3
    return {
        "recall": round(recall(found, data.truth), 4),
        "batch_qps": round(data.queries.shape[0] / batch_seconds, 1),
        "single_p50_us": round(float(np.percentile(lat_us, 50)), 1),
        "single_p99_us": round(float(np.percentile(lat_us, 99)), 1),
        "single_mean_us": round(float(lat_us.mean()), 1),
    }


def run(data: Dataset, args: argparse.Namespace) -> dict[str, Any]:
    n, dim = data.base.shape
    ids = np.arange(n, dtype=np.int64)
    threads = args.threads
    m, efc = args.m, args.ef_construction
    efs = [int(e) for e in args.efs.split(",")]
    systems: dict[str, Any] = {}
    singles = args.singles

    def log(msg: str) -> None:
        print(f"[{data.name}] {msg}", flush=True)

    def record(name: str, build_s: float, mem: PeakRSS, points: list[dict], **extra: Any) -> None:
        systems[name] = {
            "build_seconds": round(build_s, 2),
            "build_peak_mib": round(mem.peak_mib, 1),
            "resident_mib": round(mem.resident_mib, 1),
            "points": points,
            **extra,
        }
        log(
            f"{name}: build {build_s:.1f}s peak +{mem.peak_mib:.0f} MiB; "
            + "; ".join(
                f"{p.get('ef', p.get('nprobe', '-'))}: r={p['recall']:.3f} qps={p['batch_qps']:.0f} "
                f"p50={p['single_p50_us']:.0f}us"
                for p in points
            )
        )

    # --- shardwalk flat -------------------------------------------------------------------
    engine = shardwalk.Engine.memory()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        col = engine.create_collection("flat", dim=dim, index="flat")
        col.upsert(ids, data.base)
        build = time.perf_counter() - t0
    point = measure(
        lambda q: col.search(q, k=K).ids, lambda q: col.search(q, k=K).ids, data, min(singles, 50)
    )
    record("shardwalk-flat", build, mem, [point])
    engine.drop_collection("flat")
    col = None
    gc.collect()

    # --- raw hnswlib ----------------------------------------------------------------------
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        raw = hnswlib.Index(space="l2", dim=dim)
        raw.init_index(max_elements=n, M=m, ef_construction=efc, random_seed=0)
        raw.add_items(data.base, ids, num_threads=threads)
        build = time.perf_counter() - t0
    points = []
    for ef in efs:
        raw.set_ef(ef)
        p = measure(
            lambda q: raw.knn_query(q, k=K, num_threads=threads)[0],
            lambda q: raw.knn_query(q[None, :], k=K, num_threads=1)[0],
            data,
            singles,
        )
        points.append({"ef": ef, **p})
    record("hnswlib", build, mem, points)
    raw = None
    gc.collect()

    # --- shardwalk hnsw -------------------------------------------------------------------
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        col = engine.create_collection(
            "hnsw", dim=dim, index="hnsw", m=m, ef_construction=efc, threads=threads
        )
        col.upsert(ids, data.base)
        build = time.perf_counter() - t0
    points = []
    for ef in efs:
        p = measure(
            lambda q, c=col, ef=ef: c.search(q, k=K, ef=ef).ids,
            lambda q, c=col, ef=ef: c.search(q, k=K, ef=ef).ids,
            data,
            singles,
        )
        points.append({"ef": ef, **p})
    record("shardwalk-hnsw", build, mem, points)
    engine.drop_collection("hnsw")
    col = None
    gc.collect()

    # --- shardwalk partitioned, 2 threads and 1 thread --------------------------------------
    for t in sorted({1, threads}, reverse=True):
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            col = engine.create_collection(
                f"part{t}",
                dim=dim,
                index="partitioned",
                partitions=args.partitions,
                m=m,
                ef_construction=efc,
                threads=t,
            )
            col.upsert(ids, data.base)
            build = time.perf_counter() - t0
        points = []
        if t == threads:
            for ef in efs:
                p = measure(
                    lambda q, c=col, ef=ef: c.search(q, k=K, ef=ef).ids,
                    lambda q, c=col, ef=ef: c.search(q, k=K, ef=ef).ids,
                    data,
                    singles,
                )
                points.append({"ef": ef, **p})
        record(
            f"shardwalk-partitioned-{t}thread",
            build,
            mem,
            points,
            partitions=args.partitions,
            partition_sizes=col.stats()["index_stats"]["partition_sizes"],
        )
        engine.drop_collection(f"part{t}")
        col = None
        gc.collect()

    # --- faiss HNSW -----------------------------------------------------------------------
    faiss.omp_set_num_threads(threads)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        fh = faiss.IndexHNSWFlat(dim, m)
        fh.hnsw.efConstruction = efc
        fh.add(data.base)
        build = time.perf_counter() - t0
    points = []
    for ef in efs:
        fh.hnsw.efSearch = ef
        p = measure(
            lambda q: fh.search(q, K)[1], lambda q: fh.search(q[None, :], K)[1], data, singles
        )
        points.append({"ef": ef, **p})
    record("faiss-hnsw", build, mem, points)
    fh = None
    gc.collect()

    # --- faiss IVF ------------------------------------------------------------------------
    nlist = args.nlist or int(4 * np.sqrt(n))
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        quantizer = faiss.IndexFlatL2(dim)
        ivf = faiss.IndexIVFFlat(quantizer, dim, nlist)
        sample = data.base[np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False)]
        ivf.train(sample)
        ivf.add(data.base)
        build = time.perf_counter() - t0
    points = []
    for nprobe in [1, 2, 4, 8, 16, 32, 64]:
        ivf.nprobe = nprobe
        p = measure(
            lambda q: ivf.search(q, K)[1], lambda q: ivf.search(q[None, :], K)[1], data, singles
        )
        points.append({"nprobe": nprobe, **p})
    record("faiss-ivfflat", build, mem, points, nlist=nlist)
    ivf = quantizer = None
    gc.collect()

    # --- ratios the targets are stated in -------------------------------------------------
    sw, hl = systems["shardwalk-hnsw"]["points"], systems["hnswlib"]["points"]
    part = systems[f"shardwalk-partitioned-{threads}thread"]["points"]
    ratios = {
        "hnsw_batch_qps_vs_hnswlib": [
            {
                "ef": a["ef"],
                "ratio": round(a["batch_qps"] / b["batch_qps"], 3),
                "recall_shardwalk": a["recall"],
                "recall_hnswlib": b["recall"],
            }
            for a, b in zip(sw, hl)
        ],
        "hnsw_added_single_latency_us": [
            {
                "ef": a["ef"],
                "p50": round(a["single_p50_us"] - b["single_p50_us"], 1),
                "mean": round(a["single_mean_us"] - b["single_mean_us"], 1),
            }
            for a, b in zip(sw, hl)
        ],
        "partitioned_minus_hnsw_recall": [
            {"ef": a["ef"], "delta": round(a["recall"] - b["recall"], 4)} for a, b in zip(part, sw)
        ],
    }
    if threads > 1:
        one = systems["shardwalk-partitioned-1thread"]["build_seconds"]
        many = systems[f"shardwalk-partitioned-{threads}thread"]["build_seconds"]
        ratios[f"partitioned_build_speedup_{threads}_threads"] = round(one / many, 3)
    return {
        "dataset": data.name,
        "n": n,
        "dim": dim,
        "queries": int(data.queries.shape[0]),
        "k": K,
        "params": {
            "m": m,
            "ef_construction": efc,
            "threads": threads,
            "partitions": args.partitions,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "faiss": faiss.__version__,
            "hnswlib": "0.8.0",
        },
        "systems": systems,
        "ratios": ratios,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for name, system in result["systems"].items():
        pts = system["points"]
        if not pts:
            continue
        r = [p["recall"] for p in pts]
        axes[0].plot(r, [p["batch_qps"] for p in pts], marker="o", label=name)
        axes[1].plot(r, [1e6 / p["single_p50_us"] for p in pts], marker="o", label=name)
    for ax, title in zip(
        axes, ["batch (all queries in one call)", "single query (1 / p50 latency)"]
    ):
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries per second")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{result['dataset']}: n={result['n']:,} dim={result['dim']} "
        f"M={result['params']['m']} efC={result['params']['ef_construction']} "
        f"threads={result['params']['threads']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=["mnist", "clustered"], default="mnist")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--efs", default="10,16,32,64,128,256")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--nlist", type=int, default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--singles", type=int, default=500, help="queries timed one at a time")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    data = (
        load_mnist()
        if args.dataset == "mnist"
        else make_clustered(args.n, args.dim, args.queries, args.seed)
    )
    result = run(data, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "ann-mnist" if args.dataset == "mnist" else f"ann-clustered-{args.n}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    plot(result, out / f"{stem}.png")
    print(json.dumps(result["ratios"], indent=1))


if __name__ == "__main__":
    main()
