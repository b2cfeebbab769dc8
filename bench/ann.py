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
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common as common
import faiss
import hnswlib
import numpy as np
import runinfo
from _memory import PeakRSS
from shardwalk.index import exact_search

import shardwalk
from shardwalk.datasets import clustered_vectors

HERE = Path(__file__).resolve().parent
K = 10


@dataclass
class Dataset:
    name: str
    base: np.ndarray
    queries: np.ndarray
    truth: np.ndarray  # (q, K) exact neighbour ids
    metric: str = "l2"


def load_mnist() -> Dataset:
    base, queries, truth = common.mnist(K)
    return Dataset(name=common.MNIST, base=base, queries=queries, truth=truth)


def make_clustered(n: int, dim: int, queries: int, seed: int) -> Dataset:
    data = clustered_vectors(n, dim, queries=queries, seed=seed, metadata=False)
    truth = exact_search(data.vectors, data.queries, K, "l2").ids
    return Dataset(
        name=f"clustered-{n}x{dim}-seed{seed}", base=data.vectors, queries=data.queries, truth=truth
    )


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f[:K].tolist()) & set(t.tolist())) / K for f, t in zip(found, truth)])
    )


def measure(
    batch: Callable[[np.ndarray], np.ndarray],
    single: Callable[[np.ndarray], np.ndarray],
    data: Dataset,
    singles: int,
    min_seconds: float = 0.3,
) -> dict[str, float]:
    """Recall, batch QPS (best of repeated whole-batch calls over at least ``min_seconds``) and
    single-query latency percentiles."""
    batch(data.queries[:10])  # warm up
    found = batch(data.queries)
    best = np.inf
    spent = 0.0
    while spent < min_seconds:
        t0 = time.perf_counter()
        batch(data.queries)
        took = time.perf_counter() - t0
        best, spent = min(best, took), spent + took
    lat = []
    for q in data.queries[:singles]:
        s0 = time.perf_counter_ns()
        single(q)
        lat.append(time.perf_counter_ns() - s0)
    lat_us = np.array(lat) / 1e3
    return {
        "recall": round(recall(found, data.truth), 4),
        "batch_qps": round(data.queries.shape[0] / best, 1),
        "single_p50_us": round(float(np.percentile(lat_us, 50)), 1),
        "single_p99_us": round(float(np.percentile(lat_us, 99)), 1),
        "single_mean_us": round(float(lat_us.mean()), 1),
    }


@dataclass
class System:
    """A built index: how to search it at each setting of its accuracy knob."""

    name: str
    knob: str  # "ef", "nprobe" or "-"
    settings: list[int]
    batch: Callable[[int], Callable[[np.ndarray], np.ndarray]]
    single: Callable[[int], Callable[[np.ndarray], np.ndarray]]
    build_seconds: float
    memory: PeakRSS
    singles: int
    extra: dict[str, Any]


def build(
    name: str, make: Callable[[], tuple[Any, dict[str, Any]]], log: Callable[[str], None]
) -> tuple[Any, float, PeakRSS, dict[str, Any]]:
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        handle, extra = make()
        seconds = time.perf_counter() - t0
    log(
        f"built {name} in {seconds:.1f}s (peak +{mem.peak_mib:.0f} MiB, resident +{mem.resident_mib:.0f} MiB)"
    )
    return handle, seconds, mem, extra


def run(data: Dataset, args: argparse.Namespace) -> dict[str, Any]:
    """Build every system, then measure them interleaved (each setting of each system in turn,
    ``rounds`` times, keeping each point's best time), so a busy moment of the machine does
    not favour whichever system happened to run in a quiet one."""
    n, dim = data.base.shape
    ids = np.arange(n, dtype=np.int64)
    threads = args.threads
    m, efc = args.m, args.ef_construction
    efs = [int(e) for e in args.efs.split(",")]
    only = set(args.only.split(",")) if args.only else None
    engine = shardwalk.Engine.memory()
    faiss.omp_set_num_threads(threads)
    systems: list[System] = []

    def log(msg: str) -> None:
        print(f"[{data.name}] {msg}", flush=True)

    def want(name: str) -> bool:
        return only is None or name in only or (name == "hnswlib-rebuild" and "hnswlib" in only)

    def add(name, knob, settings, make, batch, single, singles=args.singles):
        if not want(name):
            return
        handle, seconds, mem, extra = build(name, make, log)
        systems.append(
            System(
                name,
                knob,
                settings,
                lambda s, h=handle: batch(h, s),
                lambda s, h=handle: single(h, s),
                seconds,
                mem,
                singles,
                extra,
            )
        )

    def collection(name: str, index: str, **params: Any):
        def make():
            col = engine.create_collection(name, dim=dim, index=index, **params)
            col.upsert(ids, data.base)
            extra = {}
            if index == "partitioned":
                extra["partition_sizes"] = col.stats()["index_stats"]["partition_sizes"]
            return col, extra

        return make

    def sw_search(col, ef):
        kwargs = {} if ef is None else {"ef": ef}
        return lambda q: col.search(q, k=K, **kwargs).ids

    add(
        "shardwalk-flat",
        "-",
        [None],
        collection("flat", "flat"),
        sw_search,
        sw_search,
        singles=min(args.singles, 50),
    )

    def make_hnswlib():
        raw = hnswlib.Index(space="l2", dim=dim)
        raw.init_index(max_elements=n, M=m, ef_construction=efc, random_seed=0)
        raw.add_items(data.base, ids, num_threads=threads)
        return raw, {}

    def hnswlib_batch(raw, ef):
        def go(q):
            raw.set_ef(ef)
            return raw.knn_query(q, k=K, num_threads=threads)[0]

        return go

    def hnswlib_single(raw, ef):
        def go(q):
            raw.set_ef(ef)
            return raw.knn_query(q[None, :], k=K, num_threads=1)[0]

        return go

    add("hnswlib", "ef", efs, make_hnswlib, hnswlib_batch, hnswlib_single)
    if args.rebuild_hnswlib:
        # a second, identical raw build: multi-threaded insertion is nondeterministic, so this
        # shows how much recall differs between two builds of the same graph
        add("hnswlib-rebuild", "ef", efs, make_hnswlib, hnswlib_batch, hnswlib_single)
    add(
        "shardwalk-hnsw",
        "ef",
        efs,
        collection("hnsw", "hnsw", m=m, ef_construction=efc, threads=threads),
        sw_search,
        sw_search,
    )
    for t in sorted({1, threads}, reverse=True):
        name = f"shardwalk-partitioned-{t}thread"
        add(
            name,
            "ef",
            efs if t == threads else [],
            collection(
                f"part{t}",
                "partitioned",
                partitions=args.partitions,
                m=m,
                ef_construction=efc,
                threads=t,
            ),
            sw_search,
            sw_search,
        )

    def make_faiss_hnsw():
        index = faiss.IndexHNSWFlat(dim, m)
        index.hnsw.efConstruction = efc
        index.add(data.base)
        return index, {}

    def faiss_hnsw(index, ef, single=False):
        def go(q):
            index.hnsw.efSearch = ef
            return index.search(q[None, :] if single else q, K)[1]

        return go

    add(
        "faiss-hnsw",
        "ef",
        efs,
        make_faiss_hnsw,
        faiss_hnsw,
        lambda index, ef: faiss_hnsw(index, ef, single=True),
    )

    nlist = args.nlist or int(4 * np.sqrt(n))

    def make_ivf():
        quantizer = faiss.IndexFlatL2(dim)
        ivf = faiss.IndexIVFFlat(quantizer, dim, nlist)
        sample = data.base[np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False)]
        ivf.train(sample)
        ivf.add(data.base)
        return (ivf, quantizer), {"nlist": nlist}  # the quantizer must outlive the index

    def ivf_search(handle, nprobe, single=False):
        ivf = handle[0]

        def go(q):
            ivf.nprobe = nprobe
            return ivf.search(q[None, :] if single else q, K)[1]

        return go

    add(
        "faiss-ivfflat",
        "nprobe",
        [1, 2, 4, 8, 16, 32, 64],
        make_ivf,
        ivf_search,
        lambda ivf, p: ivf_search(ivf, p, single=True),
    )

    # --- measure, interleaved -----------------------------------------------------------------
    best: dict[tuple[str, Any], dict[str, float]] = {}
    for round_ in range(args.rounds):
        for system in systems:
            for setting in system.settings:
                point = measure(system.batch(setting), system.single(setting), data, system.singles)
                key = (system.name, setting)
                old = best.get(key)
                if old is None:
                    best[key] = point
                else:
                    old["batch_qps"] = max(old["batch_qps"], point["batch_qps"])
                    for f in ("single_p50_us", "single_p99_us", "single_mean_us"):
                        old[f] = min(old[f], point[f])
        log(f"measurement round {round_ + 1}/{args.rounds} done")

    out: dict[str, Any] = {}
    for system in systems:
        points = [
            {system.knob: s, **best[(system.name, s)]}
            if system.knob != "-"
            else best[(system.name, s)]
            for s in system.settings
        ]
        out[system.name] = {
            "build_seconds": round(system.build_seconds, 2),
            "build_peak_mib": round(system.memory.peak_mib, 1),
            "resident_mib": round(system.memory.resident_mib, 1),
            "points": points,
            **system.extra,
        }
        log(
            f"{system.name}: "
            + "; ".join(
                f"{p.get(system.knob, '-')}: r={p['recall']:.3f} qps={p['batch_qps']:.0f} "
                f"p50={p['single_p50_us']:.0f}us"
                for p in points
            )
        )

    ratios: dict[str, Any] = {}
    if "hnswlib-rebuild" in out and "hnswlib" in out:
        ratios["hnswlib_rebuild_minus_hnswlib_recall"] = [
            {"ef": a["ef"], "delta": round(a["recall"] - b["recall"], 4)}
            for a, b in zip(out["hnswlib-rebuild"]["points"], out["hnswlib"]["points"])
        ]
    if "shardwalk-hnsw" in out and "hnswlib" in out:
        sw, hl = out["shardwalk-hnsw"]["points"], out["hnswlib"]["points"]
        ratios["hnsw_batch_qps_vs_hnswlib"] = [
            {
                "ef": a["ef"],
                "ratio": round(a["batch_qps"] / b["batch_qps"], 3),
                "recall_shardwalk": a["recall"],
                "recall_hnswlib": b["recall"],
            }
            for a, b in zip(sw, hl)
        ]
        ratios["hnsw_added_single_latency_us"] = [
            {
                "ef": a["ef"],
                "p50": round(a["single_p50_us"] - b["single_p50_us"], 1),
                "mean": round(a["single_mean_us"] - b["single_mean_us"], 1),
            }
            for a, b in zip(sw, hl)
        ]
    if "shardwalk-hnsw" in out and "faiss-hnsw" in out:
        # the collection's hnsw index is faiss's IndexHNSWFlat: what the wrapper costs
        sw, fh = out["shardwalk-hnsw"]["points"], out["faiss-hnsw"]["points"]
        ratios["hnsw_vs_faiss_hnsw"] = [
            {
                "ef": a["ef"],
                "batch_qps_ratio": round(a["batch_qps"] / b["batch_qps"], 3),
                "added_p50_us": round(a["single_p50_us"] - b["single_p50_us"], 1),
                "recall_shardwalk": a["recall"],
                "recall_faiss": b["recall"],
            }
            for a, b in zip(sw, fh)
        ]
    part_name = f"shardwalk-partitioned-{threads}thread"
    if part_name in out and "shardwalk-hnsw" in out:
        ratios["partitioned_minus_hnsw_recall"] = [
            {"ef": a["ef"], "delta": round(a["recall"] - b["recall"], 4)}
            for a, b in zip(out[part_name]["points"], out["shardwalk-hnsw"]["points"])
        ]
    if part_name in out and "hnswlib" in out:
        ratios["partitioned_minus_hnswlib_recall"] = [
            {"ef": a["ef"], "delta": round(a["recall"] - b["recall"], 4)}
            for a, b in zip(out[part_name]["points"], out["hnswlib"]["points"])
        ]
    if threads > 1 and part_name in out and "shardwalk-partitioned-1thread" in out:
        ratios[f"partitioned_build_speedup_{threads}_threads"] = round(
            out["shardwalk-partitioned-1thread"]["build_seconds"] / out[part_name]["build_seconds"],
            3,
        )
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
            "rounds": args.rounds,
            "efs": efs,
            "singles": args.singles,
            "nlist": args.nlist or int(4 * np.sqrt(n)),
            "seed": args.seed,
            "only": args.only,
            "rebuild_hnswlib": args.rebuild_hnswlib,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "faiss": faiss.__version__,
            "hnswlib": "0.8.0",
        },
        "systems": out,
        "ratios": ratios,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    fig, axes = common.pyplot().subplots(1, 2, figsize=(13, 5))
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
    common.save_figure(
        fig,
        path,
        f"{result['dataset']}: n={result['n']:,} dim={result['dim']} "
        f"M={result['params']['m']} efC={result['params']['ef_construction']} "
        f"threads={result['params']['threads']}",
    )


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--dataset", choices=["mnist", "clustered"], default="mnist")
    common.int_flags(parser, n=1_000_000, dim=128, queries=1000, seed=0, m=16, ef_construction=200)
    parser.add_argument("--efs", default="10,16,32,64,128,256")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--nlist", type=int, default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--singles", type=int, default=500, help="queries timed one at a time")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved measurement rounds")
    parser.add_argument("--only", default="", help="comma-separated system names to run")
    parser.add_argument(
        "--rebuild-hnswlib",
        action="store_true",
        help="build raw hnswlib twice (build-to-build recall variance)",
    )
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--tag", default="", help="suffix of the results' file name")
    args = parser.parse_args()
    meta = runinfo.start()
    data = (
        load_mnist()
        if args.dataset == "mnist"
        else make_clustered(args.n, args.dim, args.queries, args.seed)
    )
    result = run(data, args)
    result["run"] = runinfo.finish(meta)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "ann-mnist" if args.dataset == "mnist" else f"ann-clustered-{args.n}"
    if args.only or args.rebuild_hnswlib:
        stem += "-variance" if args.rebuild_hnswlib else "-subset"
    stem += f"-{args.tag}" if args.tag else ""
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    plot(result, out / f"{stem}.png")
    print(json.dumps(result["ratios"], indent=1))


if __name__ == "__main__":
    main()
