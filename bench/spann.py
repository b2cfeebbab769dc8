"""SPANN benchmark: shardwalk's disk-resident ``spann`` index against faiss IndexIVFFlat (in
memory), faiss IndexIVFPQ with exact re-ranking (IndexRefineFlat) and hnswlib, same process,
same data, single queries back to back.

For spann: recall@10, latency (mean/p50/p99), lists probed and bytes read per query over a
sweep of ``eps_search`` and ``max_probes``, with a warm page cache (memory map, and positioned
reads) and a cold one (positioned reads; the posting files' pages dropped with
``posix_fadvise(DONTNEED)`` before each round); build time, peak build memory, resident
memory against the raw vectors; recall after 50% more rows are inserted in 10 batches (lists
split in the background). The baselines sweep nprobe / ef; the ratios compare latencies at
the cheapest setting of each that reaches recall@10 0.90.

Memory is measured, not computed: a spann collection (what a user runs: ``Engine.open``,
``create_collection(index="spann")``, upserts, a checkpoint) is opened from its data directory
in a fresh process, searched, and that process's resident growth over the open is reported
beside the raw vectors' size (and beside the index's own ``resident_bytes`` estimate); the
same process times single queries through ``Collection.search``.

    python bench/spann.py --dataset mnist
    python bench/spann.py --dataset clustered --n 1000000 --dim 64

Writes bench/results/spann-<dataset>.json and .png.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as common
import faiss
import hnswlib
import numpy as np
import psutil
import runinfo
from _memory import PeakRSS, rss_parts
from ann import recall
from shardwalk.index import SpannIndex, exact_search

import shardwalk
from shardwalk.datasets import clustered_vectors

HERE = Path(__file__).resolve().parent
K = 10
TARGET = 0.90


def load(args: argparse.Namespace) -> dict[str, Any]:
    """base, queries, truth, and the rows added later (with the truth over all of them)."""
    rng = np.random.default_rng(args.seed)
    if args.dataset == "mnist":
        base, queries, truth = common.mnist(K)
        name = common.MNIST
        order = rng.permutation(base.shape[0])  # the insert run: 2/3 first, then the rest
        first = order[: base.shape[0] * 2 // 3]
        later = order[base.shape[0] * 2 // 3 :]
        return {
            "name": name,
            "base": base,
            "queries": queries,
            "truth": truth,
            "insert_first": first,
            "insert_later": later,
            "insert_truth": truth,
        }
    total = args.n + args.n // 2
    data = clustered_vectors(total, args.dim, queries=args.queries, seed=args.seed, metadata=False)
    vectors = data.vectors[rng.permutation(total)]  # clusters spread over both parts
    base = np.ascontiguousarray(vectors[: args.n])
    truth = exact_search(base, data.queries, K, "l2").ids
    truth_all = exact_search(vectors, data.queries, K, "l2").ids
    return {
        "name": f"clustered-{args.n}x{args.dim}-seed{args.seed}",
        "base": base,
        "queries": data.queries,
        "truth": truth,
        "all": vectors,
        "insert_first": np.arange(args.n),
        "insert_later": np.arange(args.n, total),
        "insert_truth": truth_all,
    }


def latency(search, queries: np.ndarray, warmup: int = 20) -> tuple[np.ndarray, dict[str, float]]:
    """Single queries back to back (after ``warmup`` queries): ids and latency figures."""
    for q in queries[:warmup]:
        search(q[None, :])
    ids = np.full((queries.shape[0], K), -1, dtype=np.int64)
    lat = np.empty(queries.shape[0])
    for i, q in enumerate(queries):
        t0 = time.perf_counter_ns()
        ids[i] = search(q[None, :])
        lat[i] = time.perf_counter_ns() - t0
    us = lat / 1e3
    return ids, {
        "mean_us": round(float(us.mean()), 1),
        "p50_us": round(float(np.percentile(us, 50)), 1),
        "p99_us": round(float(np.percentile(us, 99)), 1),
    }


def drop_cache(directory: str) -> None:
    for name in os.listdir(directory):
        if name.startswith("postings-"):
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def spann_runs(data: dict[str, Any], args: argparse.Namespace, log) -> dict[str, Any]:
    base, queries, truth = data["base"], data["queries"], data["truth"]
    n, dim = base.shape
    work = tempfile.mkdtemp(prefix="spann-bench-", dir=args.workdir)
    os.environ["SHARDWALK_SPANN_TMPDIR"] = work
    params = {"max_list_size": args.max_list_size}
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        index = SpannIndex(dim=dim, metric="l2", **params)
        for a in range(0, n, args.build_batch):  # the first batch builds; the rest insert
            index.add(np.arange(a, min(n, a + args.build_batch)), base[a : a + args.build_batch])
        index.wait_idle()
        build_seconds = time.perf_counter() - t0
    stats = index.stats()
    saved = os.path.join(work, "saved")
    os.makedirs(saved)
    index.save(saved)
    del index
    log(
        f"spann built in {build_seconds:.1f}s, peak +{mem.peak_mib:.0f} MiB; resident "
        f"{stats['resident_bytes'] / 2**20:.1f} MiB = {stats['resident_ratio']:.3f} of raw; "
        f"{stats['lists']} lists {stats['list_sizes']}, replication {stats['replication_factor']}"
    )
    out: dict[str, Any] = {
        "params": params,
        "build_seconds": round(build_seconds, 2),
        "build_peak_mib": round(mem.peak_mib, 1),
        "stats_after_build": stats,
        "sweep": [],
    }
    settings = [{"eps_search": e, "max_probes": 64} for e in args.eps.split(",")]
    settings += [{"eps_search": 1000.0, "max_probes": int(p)} for p in args.probes.split(",")]
    settings += [
        {"eps_search": e, "max_probes": int(p)}
        for e in args.eps_mixed.split(",")
        for p in args.probes_mixed.split(",")
    ]
    rows = [{k: float(v) if k == "eps_search" else v for k, v in s.items()} for s in settings]
    # one index per pass, unmapped after it: pages mapped by a live index cannot be dropped
    for mode in ("warm_mmap", "warm_pread", "cold_pread"):
        index = SpannIndex.load(saved)
        index.io = "mmap" if mode == "warm_mmap" else "pread"
        for row in rows:
            setting = {"eps_search": row["eps_search"], "max_probes": row["max_probes"]}
            if mode == "cold_pread":
                drop_cache(saved)
            before = dict(index._counters)
            ids, lat = latency(
                lambda q, i=index, s=setting: i.search(q, K, **s).ids,
                queries,
                warmup=0 if mode == "cold_pread" else 20,
            )
            searched = index._counters["searches"] - before["searches"]
            row[mode] = {
                "recall": round(recall(ids, truth), 4),
                **lat,
                "lists_probed": round(
                    (index._counters["lists_probed"] - before["lists_probed"]) / searched, 2
                ),
                "bytes_read": round(
                    (index._counters["bytes_read"] - before["bytes_read"]) / searched
                ),
            }
            log(f"spann {mode} {setting}: {row[mode]}")
        del index
        gc.collect()
    out["sweep"] = rows
    out["inserts"] = spann_inserts(data, args, params, saved, log)
    shutil.rmtree(work, ignore_errors=True)
    return out


def spann_inserts(
    data: dict[str, Any], args: argparse.Namespace, params: dict[str, Any], saved: str, log
) -> dict[str, Any]:
    """Add 50% more rows in 10 batches to an index (the benchmark's own, reopened, when the
    dataset has the rows to add; else one built on 2/3 of them), recall at default search
    parameters before and after."""
    vectors = data.get("all", data["base"])
    first, later, queries = data["insert_first"], data["insert_later"], data["queries"]
    if "all" in data:
        index = SpannIndex.load(saved)
    else:
        index = SpannIndex(dim=vectors.shape[1], metric="l2", **params)
        index.add(first, vectors[first])
        index.wait_idle()
    exact_first = first[exact_search(vectors[first], queries, K, "l2").ids]
    before = recall(index.search(queries, K).ids, exact_first)
    t0 = time.perf_counter()
    for part in np.array_split(later, 10):
        index.add(part, vectors[part])
    acked = time.perf_counter() - t0
    index.wait_idle()
    settled = time.perf_counter() - t0
    after = recall(index.search(queries, K).ids, data["insert_truth"])
    stats = index.stats()
    log(
        f"inserts: recall {before:.4f} -> {after:.4f} after +{later.size} rows "
        f"({acked:.1f}s acknowledged, {settled:.1f}s with splits; {stats['splits']} splits, "
        f"{stats['reassigned']} reassigned; resident {stats['resident_ratio']:.3f} of raw)"
    )
    return {
        "built_on": int(first.size),
        "inserted": int(later.size),
        "recall_before": round(before, 4),
        "recall_after": round(after, 4),
        "insert_seconds_acknowledged": round(acked, 2),
        "insert_seconds_with_splits": round(settled, 2),
        "stats_after": stats,
    }


SETTINGS = ({}, {"eps_search": 0.3, "max_probes": 8})  # the defaults, and the 0.90 setting


def collection_memory(data: dict[str, Any], args: argparse.Namespace, log) -> dict[str, Any]:
    """Build a spann collection in a data directory and checkpoint it; then, in a fresh process
    (``--memory-child``), open it, search it and report the process's resident growth."""
    base, queries, truth = data["base"], data["queries"], data["truth"]
    n, dim = base.shape
    work = tempfile.mkdtemp(prefix="spann-collection-", dir=args.workdir)
    os.environ["SHARDWALK_SPANN_TMPDIR"] = work  # the open posting file, beside the data
    try:
        t0 = time.perf_counter()
        with shardwalk.Engine.open(os.path.join(work, "data")) as engine:
            col = engine.create_collection(
                "docs", dim=dim, index="spann", max_list_size=args.max_list_size
            )
            for a in range(0, n, args.build_batch):
                col.upsert(
                    np.arange(a, min(n, a + args.build_batch)), base[a : a + args.build_batch]
                )
            col.flush()
        seconds = time.perf_counter() - t0
        np.save(os.path.join(work, "queries.npy"), queries)
        np.save(os.path.join(work, "truth.npy"), truth)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", work]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"spann memory child failed: {done.stderr[-2000:]}")
        out = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["build_seconds"] = round(seconds, 2)
    out["raw_vectors_mib"] = round(base.nbytes / 2**20, 1)
    out["resident_over_raw"] = round(out["resident_mib"] / out["raw_vectors_mib"], 3)
    log(f"spann collection in a fresh process: {out}")
    return out


def memory_child(work: str) -> dict[str, Any]:
    """In this fresh process: numba's runtime and the imports first (a tiny collection in
    memory, searched: ~50 MiB once per process whatever the data), then the baseline; open the
    collection, search it; the resident growth, and single-query latency through the
    collection at each of SETTINGS."""
    queries = np.load(os.path.join(work, "queries.npy"))
    truth = np.load(os.path.join(work, "truth.npy"))
    dim = queries.shape[1]
    warm = shardwalk.Engine.memory().create_collection("warm", dim=dim, index="spann")
    rng = np.random.default_rng(0)
    warm.upsert(np.arange(2000), rng.standard_normal((2000, dim), dtype=np.float32))
    warm.wait_indexed()
    for setting in SETTINGS:
        warm.search(queries[:4], k=K, **setting)
        warm.search(queries[0], k=K, **setting)
    del warm
    gc.collect()
    proc = psutil.Process()
    # the first open of a data directory in a process loads code the in-memory warm-up did not
    # (snapshot and log readers, their numba kernels): measured, then closed, and the figure
    # is the second open's growth (the collection's own memory)
    first = proc.memory_info().rss
    with shardwalk.Engine.open(os.path.join(work, "data")) as engine:
        engine.collection("docs").search(queries[:4], k=K)
    gc.collect()
    first_open = proc.memory_info().rss - first
    before, parts_before = proc.memory_info().rss, rss_parts()
    engine = shardwalk.Engine.open(os.path.join(work, "data"))
    col = engine.collection("docs")
    col.search(queries[:1], k=K)
    opened = proc.memory_info().rss
    rows = []
    for setting in SETTINGS:
        ids, lat = latency(lambda q, s=setting: col.search(q, k=K, **s).ids, queries)
        rows.append({**setting, "recall": round(recall(ids, truth), 4), **lat})
    gc.collect()
    after, parts_after = proc.memory_info().rss, rss_parts()
    stats = col.stats()["index_stats"]
    engine.close()
    return {
        "first_open_and_close_mib": round(first_open / 2**20, 1),
        "resident_mib_after_open": round((opened - before) / 2**20, 1),
        "resident_mib": round((after - before) / 2**20, 1),
        # anonymous (heap) and file-backed (the posting files' pages mapped by io="mmap": page
        # cache the kernel can drop, counted in RSS while mapped)
        **{
            f"{key[3:].lower()}_mib": round((parts_after[key] - parts_before[key]) / 2**20, 1)
            for key in parts_after
            if key in parts_before
        },
        "index_resident_bytes_estimate_mib": round(stats["resident_bytes"] / 2**20, 1),
        "search": rows,
    }


def baselines(data: dict[str, Any], args: argparse.Namespace, log) -> dict[str, Any]:
    base, queries, truth = data["base"], data["queries"], data["truth"]
    n, dim = base.shape
    out: dict[str, Any] = {}
    faiss.omp_set_num_threads(args.threads)
    nlist = int(args.nlist or max(16, round(4 * np.sqrt(n))))
    keep: list[Any] = []

    def run(name, make, knob, values, search):
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            handle = make()
            seconds = time.perf_counter() - t0
        log(f"{name} built in {seconds:.1f}s (peak +{mem.peak_mib:.0f} MiB)")
        faiss.omp_set_num_threads(1)  # single queries: no thread team
        rows = []
        for v in values:
            ids, lat = latency(lambda q, h=handle, v=v: search(h, q, v), queries)
            rows.append({knob: v, "recall": round(recall(ids, truth), 4), **lat})
            log(f"{name} {knob}={v}: {rows[-1]}")
        faiss.omp_set_num_threads(args.threads)
        out[name] = {
            "build_seconds": round(seconds, 2),
            "build_peak_mib": round(mem.peak_mib, 1),
            "resident_mib": round(mem.resident_mib, 1),
            "sweep": rows,
        }
        del handle

    def ivfflat():
        quantizer = faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist)
        index.train(base[np.random.default_rng(0).choice(n, min(n, 30 * nlist), replace=False)])
        index.add(base)
        keep.append(quantizer)  # faiss holds a raw pointer (and IVF-PQ reuses its centroids)
        return index

    def search_ivf(index, q, nprobe):
        index.nprobe = nprobe
        return index.search(q, K)[1][0]

    run("faiss-ivfflat", ivfflat, "nprobe", [1, 2, 4, 8, 16, 32, 64, 128], search_ivf)

    def ivfpq():
        quantizer = faiss.clone_index(keep[0])  # IVF-Flat's centroids: trained already
        sub = max(4, dim // 4) if dim % 4 == 0 else dim
        while dim % sub:
            sub -= 1
        ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, sub, 8)
        refine = faiss.IndexRefineFlat(ivf)
        refine.k_factor = 10  # re-rank 100 candidates exactly
        refine.train(base[np.random.default_rng(0).choice(n, min(n, 30 * nlist), replace=False)])
        refine.add(base)
        keep.extend([quantizer, ivf])
        return refine

    def search_pq(index, q, nprobe):
        params = faiss.IndexRefineSearchParameters(
            k_factor=10, base_index_params=faiss.SearchParametersIVF(nprobe=nprobe)
        )
        return index.search(q, K, params=params)[1][0]

    run("faiss-ivfpq-refine", ivfpq, "nprobe", [1, 2, 4, 8, 16, 32, 64, 128], search_pq)

    def hnsw():
        index = hnswlib.Index(space="l2", dim=dim)
        index.init_index(max_elements=n, M=16, ef_construction=200, random_seed=0)
        index.set_num_threads(args.threads)
        index.add_items(base, np.arange(n))
        index.set_num_threads(1)
        return index

    def search_hnsw(index, q, ef):
        index.set_ef(max(ef, K))
        return index.knn_query(q, K)[0][0]

    run("hnswlib", hnsw, "ef", [10, 16, 24, 32, 48, 64, 96, 128, 256], search_hnsw)
    return out


def at_target(rows: list[dict[str, Any]], key: str = "p50_us") -> dict[str, Any] | None:
    """The fastest row reaching the target recall."""
    good = [r for r in rows if r["recall"] >= TARGET]
    return min(good, key=lambda r: r[key]) if good else None


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    spann = result["spann"]
    summary: dict[str, Any] = {"target_recall": TARGET}
    for mode in ("warm_mmap", "warm_pread", "cold_pread"):
        rows = [
            {**r[mode], "eps_search": r["eps_search"], "max_probes": r["max_probes"]}
            for r in spann["sweep"]
        ]
        summary[f"spann_{mode}"] = at_target(rows)
    for name, system in result["baselines"].items():
        summary[name] = at_target(system["sweep"])
    warm = summary["spann_warm_mmap"]
    for name in result["baselines"]:
        if warm and summary[name]:
            for key in ("p50_us", "mean_us"):
                summary[f"spann_warm_over_{name}_{key}"] = round(warm[key] / summary[name][key], 2)
    stats = spann["stats_after_build"]
    measured = result["collection"]["resident_over_raw"]
    summary["index_resident_estimate_over_raw"] = stats["resident_ratio"]
    summary["resident_over_raw"] = measured
    summary["targets"] = {
        "recall_0.90_with_resident_le_15pct": bool(warm) and measured <= 0.15,
        "warm_latency_within_2x_hnswlib": summary.get("spann_warm_over_hnswlib_p50_us", 99) <= 2,
        "warm_latency_below_ivfflat": summary.get("spann_warm_over_faiss-ivfflat_p50_us", 99) < 1,
        "insert_recall_drift_le_0.02": spann["inserts"]["recall_after"]
        >= spann["inserts"]["recall_before"] - 0.02,
    }
    return summary


def plot(result: dict[str, Any], path: Path) -> None:
    fig, ax = common.pyplot().subplots(figsize=(7, 4.5))
    for mode, style in (("warm_mmap", "o"), ("warm_pread", "s"), ("cold_pread", "x")):
        rows = sorted(result["spann"]["sweep"], key=lambda r: r[mode]["recall"])
        ax.plot(
            [r[mode]["recall"] for r in rows],
            [r[mode]["p50_us"] for r in rows],
            style,
            label=f"spann {mode}",
        )
    for name, system in result["baselines"].items():
        rows = system["sweep"]
        ax.plot([r["recall"] for r in rows], [r["p50_us"] for r in rows], ".-", label=name)
    ax.axvline(TARGET, color="grey", lw=0.5)
    ax.set_yscale("log")
    ax.set_xlabel("recall@10")
    ax.set_ylabel("median single-query latency (us)")
    ax.set_title(f"{result['dataset']} (load {result['load_before'][0]:.1f})")
    ax.legend(fontsize=8)
    common.save_figure(fig, path, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=["mnist", "clustered"], default="mnist")
    common.int_flags(parser, n=1_000_000, dim=64, queries=500, seed=0)
    parser.add_argument("--threads", type=int, default=2, help="build threads of every system")
    parser.add_argument("--max-list-size", type=int, default=64)
    parser.add_argument("--build-batch", type=int, default=10_000_000)
    parser.add_argument("--eps", default="0.0,0.05,0.1,0.2,0.3,0.4,0.6,1.0")
    parser.add_argument("--probes", default="2,4,8,16")
    parser.add_argument("--eps-mixed", default="0.2,0.3,0.5", help="crossed with --probes-mixed")
    parser.add_argument("--probes-mixed", default="8,16")
    parser.add_argument("--nlist", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where spann's files go (a real disk)")
    parser.add_argument("--tag", default="")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child)), flush=True)
        return
    meta = runinfo.start()
    data = load(args)

    def log(msg: str) -> None:
        print(f"[{data['name']}] {msg}", flush=True)

    result: dict[str, Any] = {
        "dataset": data["name"],
        "n": int(data["base"].shape[0]),
        "dim": int(data["base"].shape[1]),
        "queries": int(data["queries"].shape[0]),
        "command": " ".join(["python", *sys.argv]),
        "load_before": os.getloadavg(),
        "cores": os.cpu_count(),
    }
    result["params"] = {k: v for k, v in vars(args).items() if k not in ("memory_child",)}
    result["spann"] = spann_runs(data, args, log)
    result["collection"] = collection_memory(data, args, log)
    result["baselines"] = baselines(data, args, log)
    result["load_after"] = os.getloadavg()
    result["run"] = runinfo.finish(meta)
    result["summary"] = summarise(result)
    log(json.dumps(result["summary"], indent=1))
    stem = f"spann-{'mnist' if args.dataset == 'mnist' else f'clustered-{args.n}'}"
    stem += f"-{args.tag}" if args.tag else ""
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1, default=float))
    plot(result, out / f"{stem}.png")
    log(f"wrote {out / stem}.json and .png")


if __name__ == "__main__":
    main()
