"""Multi-tenant and filtered search benchmark, per selectivity bucket.

Systems, same process, same data:
  (a) shardwalk: a ``multitenant`` collection (one shared clustering, per-tenant leaf lists),
      searched with ``tenant=`` or ``where=``; the planner picks the path;
  (b) one hnswlib index per tenant (tenant buckets only);
  (c) one shared hnswlib index with its filter function (a Python callable: hnswlib's only
      filter; all queries in one call on one thread, as hnswlib's README advises for filters);
  (d) faiss IndexHNSWFlat with its own C++ filter, an IDSelectorBitmap, all queries in one call
      on every thread: at the benchmark's ef, and at the smallest efSearch of a sweep that
      reaches shardwalk's recall on the scope (recall-matched);
  (e) exact scan of the matching rows (faiss flat on the gathered matches).

Buckets: 0.1%, 1%, 10%, 50%, 100% of the collection. A bucket is a set of tenants of about
that size (Zipf-sized tenants) where such tenants exist, else an attribute filter
(``F("u") < x`` over a uniform attribute in [0, 1000)).

    python bench/filtered.py --dataset clustered --n 1000000 --tenants 1000
    python bench/filtered.py --dataset mnist      # digit labels as tenants and as an attribute

Writes bench/results/filtered-<dataset>.json and .png.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import hnswlib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common
import runinfo
from _memory import PeakRSS

import shardwalk
from shardwalk import F
from shardwalk.datasets import clustered_vectors

HERE = Path(__file__).resolve().parent
K = 10


def zipf_tenants(
    n: int, tenants: int, rng: np.random.Generator, exponent: float = 1.0
) -> np.ndarray:
    weights = np.arange(1, tenants + 1, dtype=np.float64) ** -exponent
    sizes = np.floor(weights / weights.sum() * n).astype(np.int64)
    sizes[0] += n - sizes.sum()
    owner = np.repeat(np.arange(tenants), sizes)
    rng.shuffle(owner)
    return owner


def load(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    if args.dataset == "mnist":
        base, queries, _ = common.mnist(10)
        owner = np.load(common.DATA / common.MNIST / "base_labels.npy").astype(np.int64)
        name = common.MNIST
    else:
        data = clustered_vectors(
            args.n, args.dim, queries=args.queries, seed=args.seed, metadata=False
        )
        base, queries = data.vectors, data.queries
        owner = zipf_tenants(args.n, args.tenants, rng)
        name = f"clustered-{args.n}x{args.dim}-{args.tenants}tenants"
    n = base.shape[0]
    shared = [[] for _ in range(n)]
    for row in rng.choice(n, size=max(1, n // 1000), replace=False):  # a few shared vectors
        shared[row] = [f"t{int(rng.integers(owner.max() + 1)):04d}"]
    return {
        "name": name,
        "base": base,
        "queries": queries,
        "owner": owner,
        "shared": shared,
        "u": rng.integers(0, 1000, n),
        "label": owner if args.dataset == "mnist" else None,
    }


def scopes(d: dict[str, Any], per_bucket: int) -> list[dict[str, Any]]:
    """Per bucket: tenants whose size is within 2x of the target, else an attribute filter."""
    n = d["base"].shape[0]
    owner, shared = d["owner"], d["shared"]
    sizes = np.bincount(owner)
    out = []
    for bucket, fraction in [
        ("0.1%", 0.001),
        ("1%", 0.01),
        ("10%", 0.1),
        ("50%", 0.5),
        ("100%", 1.0),
    ]:
        target = fraction * n
        near = np.flatnonzero((sizes >= target / 2) & (sizes <= target * 2))
        near = near[np.argsort(np.abs(sizes[near] - target))][:per_bucket]
        for t in near.tolist():
            name = f"t{t:04d}"
            mask = (owner == t) | np.array([name in s for s in shared])
            out.append(
                {"bucket": bucket, "tenant": name, "tenant_id": t, "mask": mask, "where": None}
            )
        if near.size == 0:
            below = round(fraction * 1000)
            out.append(
                {"bucket": bucket, "tenant": None, "mask": d["u"] < below, "where": F("u") < below}
            )
    return out


def timed(fn: Callable[[], np.ndarray], min_seconds: float = 0.2) -> tuple[np.ndarray, float]:
    """The result, and the best time of repeated calls (at least one, at least min_seconds)."""
    found = fn()
    best, spent = np.inf, 0.0
    while spent < min_seconds or best == np.inf:
        t0 = time.perf_counter()
        fn()
        took = time.perf_counter() - t0
        best, spent = min(best, took), spent + took
    return found, best


def recall(found: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> float:
    hits = []
    for f, t in zip(found, truth):
        want = t[t >= 0]
        if want.size:
            hits.append(len(set(f.tolist()) & set(want.tolist())) / want.size)
    return float(np.mean(hits)) if hits else 1.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    d = load(args)
    base, queries, owner, shared = d["base"], d["queries"], d["owner"], d["shared"]
    n, dim = base.shape
    ids = np.arange(n, dtype=np.int64)
    tenants = [f"t{t:04d}" for t in owner.tolist()]
    faiss.omp_set_num_threads(args.threads)
    log = lambda msg: print(f"[{d['name']}] {msg}", flush=True)  # noqa: E731
    memory: dict[str, float] = {}
    build: dict[str, float] = {}

    # numba's runtime (LLVM) takes ~50 MiB the first time any kernel runs in a process, whatever
    # the data: load it before measuring, so the figure is the collection's own memory
    warm = shardwalk.Engine.memory().create_collection(
        "warm", dim=dim, index="multitenant", train_size=64, quantization=args.quantization
    )
    warm.upsert(np.arange(256), base[:256], tenants=["w"] * 256)
    warm.search(queries[:2], k=K)
    warm.search(queries[:2], k=K, tenant="w")
    del warm

    # (a) shardwalk multitenant collection
    engine = shardwalk.Engine.memory()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        col = engine.create_collection(
            "mt", dim=dim, index="multitenant", quantization=args.quantization
        )
        attributes = {"u": d["u"]}
        if d["label"] is not None:
            attributes["digit"] = d["label"]
        col.upsert(ids, base, tenants=tenants, shared_with=shared, attributes=attributes)
        build["shardwalk"] = time.perf_counter() - t0
    memory["shardwalk"] = mem.resident_mib
    index_stats = col.stats()["index_stats"]
    log(f"shardwalk multitenant built in {build['shardwalk']:.1f}s, +{mem.resident_mib:.0f} MiB")

    # (c) one shared hnswlib index
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        shared_index = hnswlib.Index(space="l2", dim=dim)
        shared_index.init_index(
            max_elements=n, M=args.m, ef_construction=args.ef_construction, random_seed=0
        )
        shared_index.add_items(base, ids, num_threads=args.threads)
        build["hnswlib-shared"] = time.perf_counter() - t0
    memory["hnswlib-shared"] = mem.resident_mib
    log(f"shared hnswlib built in {build['hnswlib-shared']:.1f}s, +{mem.resident_mib:.0f} MiB")

    # (d) faiss HNSW (selectors)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        fh = faiss.IndexHNSWFlat(dim, args.m)
        fh.hnsw.efConstruction = args.ef_construction
        fh.add(base)
        build["faiss-hnsw-bitmap"] = time.perf_counter() - t0
    memory["faiss-hnsw-bitmap"] = mem.resident_mib
    log(f"faiss HNSW built in {build['faiss-hnsw-bitmap']:.1f}s, +{mem.resident_mib:.0f} MiB")

    # (b) per-tenant hnswlib indexes, for the tenants benchmarked (memory for all is estimated
    # from the ones built: per-vector cost times n)
    buckets = scopes(d, args.per_bucket)
    per_tenant: dict[int, tuple[hnswlib.Index, np.ndarray]] = {}
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        built_rows = 0
        for s in buckets:
            if s["tenant"] is None or s["tenant_id"] in per_tenant:
                continue
            rows = np.flatnonzero(s["mask"])
            index = hnswlib.Index(space="l2", dim=dim)
            index.init_index(
                max_elements=max(rows.size, 1),
                M=args.m,
                ef_construction=args.ef_construction,
                random_seed=0,
            )
            index.add_items(base[rows], rows, num_threads=args.threads)
            per_tenant[s["tenant_id"]] = (index, rows)
            built_rows += rows.size
        seconds = time.perf_counter() - t0
    memory["hnswlib-per-tenant (all tenants, extrapolated)"] = (
        mem.resident_mib / max(built_rows, 1) * n
    )
    build["hnswlib-per-tenant (all tenants, extrapolated)"] = seconds / max(built_rows, 1) * n
    log(f"per-tenant hnswlib: {len(per_tenant)} indexes, {built_rows:,} vectors in {seconds:.1f}s")

    def run_scope(s: dict[str, Any]) -> dict[str, Any]:
        mask = s["mask"]
        rows = np.flatnonzero(mask)
        q = queries[: args.queries]
        exact_index = faiss.IndexFlatL2(dim)
        exact_index.add(base[rows])
        _, local = exact_index.search(q, K)
        truth = np.where(local >= 0, rows[np.maximum(local, 0)], -1)
        entry: dict[str, Any] = {
            "bucket": s["bucket"],
            "tenant": s["tenant"],
            "matches": int(rows.size),
            "selectivity": rows.size / n,
            "systems": {},
        }

        def record(name: str, fn: Callable[[], np.ndarray], count: int) -> None:
            found, seconds = timed(fn)
            ok = bool(np.all(mask[found[found >= 0]]))
            entry["systems"][name] = {
                "recall": round(recall(found, truth, mask), 4),
                "qps": round(count / seconds, 1),
                "in_scope": ok,
            }

        kwargs = {"tenant": s["tenant"]} if s["tenant"] else {"where": s["where"]}
        record("shardwalk", lambda: col.search(q, k=K, **kwargs).ids, q.shape[0])
        entry["shardwalk_path"] = col.explain(q[:1], k=K, **kwargs).path
        if s["tenant"] is not None:
            index, trows = per_tenant[s["tenant_id"]]
            index.set_ef(max(args.ef, K))
            record(
                "hnswlib-per-tenant",
                lambda: index.knn_query(q, k=min(K, trows.size), num_threads=args.threads)[0],
                q.shape[0],
            )
        shared_index.set_ef(max(args.ef, K))
        allowed = mask
        few = q[: args.filtered_queries]

        def hnswlib_filtered():
            out = np.full((few.shape[0], K), -1, dtype=np.int64)
            labels, _ = shared_index.knn_query(
                few, k=min(K, rows.size), num_threads=1, filter=lambda label: bool(allowed[label])
            )
            out[:, : labels.shape[1]] = labels
            return out

        found, seconds = timed(hnswlib_filtered, min_seconds=0.0)
        entry["systems"]["hnswlib-shared-filter"] = {
            "recall": round(recall(found, truth[: few.shape[0]], mask), 4),
            "qps": round(few.shape[0] / seconds, 1),
            "in_scope": bool(np.all(mask[found[found >= 0]])),
        }
        bits = np.packbits(mask, bitorder="little")
        selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))

        def faiss_bitmap(ef: int) -> Callable[[], np.ndarray]:
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
            return lambda: fh.search(q, K, params=params)[1]

        record("faiss-hnsw-bitmap", faiss_bitmap(max(args.ef, K)), q.shape[0])
        # recall-matched: the smallest efSearch of the sweep reaching shardwalk's recall on this
        # scope (less 0.005); the last one tried when none does
        want = entry["systems"]["shardwalk"]["recall"] - 0.005
        sweep = []
        for ef in sorted({max(args.ef, K), *args.faiss_efs}):
            record("faiss-hnsw-bitmap-matched", faiss_bitmap(ef), q.shape[0])
            point = {"ef": ef, **entry["systems"]["faiss-hnsw-bitmap-matched"]}
            sweep.append(point)
            if point["recall"] >= want:
                break
        entry["systems"]["faiss-hnsw-bitmap-matched"]["ef"] = sweep[-1]["ef"]
        entry["systems"]["faiss-hnsw-bitmap-matched"]["reached"] = sweep[-1]["recall"] >= want
        entry["faiss_bitmap_sweep"] = sweep

        def exact_scan():
            sub = faiss.IndexFlatL2(dim)
            sub.add(base[rows])
            _, local = sub.search(q, K)
            return np.where(local >= 0, rows[np.maximum(local, 0)], -1)

        record("exact-scan", exact_scan, q.shape[0])
        log(
            f"{s['bucket']:>5} {s['tenant']!s:>6} matches={rows.size:>8,} path={entry['shardwalk_path']:<16} "
            + " ".join(
                f"{k}: r={v['recall']:.3f} qps={v['qps']:.0f}" for k, v in entry["systems"].items()
            )
        )
        gc.collect()
        return entry

    results = [run_scope(s) for s in buckets]

    # aggregate per bucket
    summary: dict[str, Any] = {}
    for bucket in ["0.1%", "1%", "10%", "50%", "100%"]:
        rows = [r for r in results if r["bucket"] == bucket]
        names = sorted({name for r in rows for name in r["systems"]})
        summary[bucket] = {
            name: {
                "recall": round(
                    float(
                        np.mean(
                            [r["systems"][name]["recall"] for r in rows if name in r["systems"]]
                        )
                    ),
                    4,
                ),
                "qps": round(
                    float(
                        np.mean([r["systems"][name]["qps"] for r in rows if name in r["systems"]])
                    ),
                    1,
                ),
            }
            for name in names
        }
        sw = summary[bucket]["shardwalk"]
        if "hnswlib-per-tenant" in summary[bucket]:
            sw["qps_vs_per_tenant"] = round(
                sw["qps"] / summary[bucket]["hnswlib-per-tenant"]["qps"], 3
            )
        sw["qps_vs_shared_filter"] = round(
            sw["qps"] / summary[bucket]["hnswlib-shared-filter"]["qps"], 2
        )
        sw["qps_vs_faiss_bitmap_matched"] = round(
            sw["qps"] / summary[bucket]["faiss-hnsw-bitmap-matched"]["qps"], 2
        )
        matched = [r["systems"]["faiss-hnsw-bitmap-matched"] for r in rows]
        summary[bucket]["faiss-hnsw-bitmap-matched"]["ef"] = [m["ef"] for m in matched]
        summary[bucket]["faiss-hnsw-bitmap-matched"]["reached"] = all(m["reached"] for m in matched)
    memory_ratio = round(memory["shardwalk"] / memory["hnswlib-shared"], 3)
    return {
        "dataset": d["name"],
        "n": n,
        "dim": dim,
        "tenants": int(owner.max() + 1),
        "queries_per_scope": int(min(args.queries, queries.shape[0])),
        "params": {
            "m": args.m,
            "ef_construction": args.ef_construction,
            "ef": args.ef,
            "threads": args.threads,
            "per_bucket": args.per_bucket,
            "queries": args.queries,
            "filtered_queries": args.filtered_queries,
            "faiss_efs": args.faiss_efs,
            "quantization": args.quantization,
            "seed": args.seed,
        },
        "memory_mib": {k: round(v, 1) for k, v in memory.items()},
        "memory_ratio_shardwalk_vs_shared_hnswlib": memory_ratio,
        "build_seconds": {k: round(v, 1) for k, v in build.items()},
        "shardwalk_index": index_stats,
        "buckets": summary,
        "scopes": results,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    plt = common.pyplot()
    buckets = list(result["buckets"])
    names = sorted({n for b in buckets for n in result["buckets"][b]})
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for name in names:
        xs = [b for b in buckets if name in result["buckets"][b]]
        axes[0].plot(xs, [result["buckets"][b][name]["qps"] for b in xs], marker="o", label=name)
        axes[1].plot(xs, [result["buckets"][b][name]["recall"] for b in xs], marker="o", label=name)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("queries per second")
    axes[1].set_ylabel("recall@10")
    for ax in axes:
        ax.set_xlabel("selectivity")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    common.save_figure(
        fig,
        path,
        f"{result['dataset']}: memory shardwalk / shared hnswlib = "
        f"{result['memory_ratio_shardwalk_vs_shared_hnswlib']}",
    )


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--dataset", choices=["mnist", "clustered"], default="mnist")
    common.int_flags(
        parser,
        n=1_000_000,
        dim=128,
        tenants=1000,
        queries=(200, "queries per scope"),
        filtered_queries=(50, "queries per scope for hnswlib's Python filter (slow)"),
        per_bucket=(3, "tenants per tenant bucket"),
        m=16,
        ef_construction=100,
        ef=64,
        threads=2,
    )
    parser.add_argument(
        "--quantization",
        default="none",
        choices=["none", "sq8"],
        help="shardwalk multitenant first pass: float vectors or SQ8 codes",
    )
    parser.add_argument(
        "--faiss-efs",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[128, 256, 512, 1024, 2048, 4096],
        help="efSearch values tried for faiss's bitmap filter until it reaches shardwalk's recall",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="", help="suffix of the results' file name")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    meta = runinfo.start()
    result = run(args)
    result["run"] = runinfo.finish(meta)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "filtered-mnist" if args.dataset == "mnist" else f"filtered-clustered-{args.n}"
    if args.quantization != "none":
        stem += f"-{args.quantization}"
    stem += f"-{args.tag}" if args.tag else ""
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1, default=str))
    plot(result, out / f"{stem}.png")
    print(
        json.dumps(
            {
                "memory_ratio": result["memory_ratio_shardwalk_vs_shared_hnswlib"],
                "buckets": result["buckets"],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
