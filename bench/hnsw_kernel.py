"""A single query's latency at rest: faiss's HNSW search (``HNSWIndex.search``, what a plain
query ran before issue 26's last step) against the numba kernel over faiss's arrays that lets it
run beside inserts (``HNSWIndex.search_beside``), on the same graph with the same ef.

The data as ``bench/streaming.py`` builds it (``clustered_vectors``, 64 dims; M=16,
efConstruction=100, ef=64, k=10). The two alternate query by query, in ``--rounds`` rounds,
so the machine's load falls on both alike; it prints mean, p50 and p99 per side and round,
their ratios, the share of queries whose ids agree, and the load before and after. No results
JSON: figures for a report, not for bench/README.md.

    python bench/hnsw_kernel.py --n 200000
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from shardwalk.index import HNSWIndex

from shardwalk.datasets import clustered_vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="rows (200,000)")
    parser.add_argument("--queries", type=int, default=2000, help="queries a round (2,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ef", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"load at start {os.getloadavg()[0]:.2f}", flush=True)
    data = clustered_vectors(args.n, 64, queries=args.queries, seed=args.seed, metadata=False)
    index = HNSWIndex(dim=64, metric="l2", m=16, ef_construction=100, ef=args.ef)
    t0 = time.perf_counter()
    index.add(np.arange(args.n), data.vectors)
    print(f"built {args.n} x 64 in {time.perf_counter() - t0:.1f} s", flush=True)
    index.reserve(1024)  # as a collection keeps it: room for the rows to come
    queries = np.ascontiguousarray(data.queries, dtype=np.float32)

    def faiss_search(q: np.ndarray) -> np.ndarray:
        return index.search(q, args.k, ef=args.ef).ids

    def kernel_search(q: np.ndarray) -> np.ndarray:
        found = index.search_beside(q, args.k, limit=args.n, ef=args.ef)
        assert found is not None
        return found.ids

    kernel_search(queries[:1])  # compiled (or loaded from numba's cache) before timing
    same = sum(np.array_equal(faiss_search(q[None]), kernel_search(q[None])) for q in queries)
    print(f"same ids as faiss: {same} / {queries.shape[0]} queries", flush=True)
    for r in range(args.rounds):
        times: dict[str, list[float]] = {"faiss": [], "kernel": []}
        for i, q in enumerate(queries):
            q = q[None]
            order = [("faiss", faiss_search), ("kernel", kernel_search)]
            for name, search in order if i % 2 else order[::-1]:
                t = time.perf_counter()
                search(q)
                times[name].append(time.perf_counter() - t)
        stats = {}
        for name, ts in times.items():
            us = np.array(ts) * 1e6
            stats[name] = (us.mean(), np.percentile(us, 50), np.percentile(us, 99))
            print(
                f"round {r} {name:6s} mean {stats[name][0]:7.1f} us  p50 {stats[name][1]:7.1f}"
                f"  p99 {stats[name][2]:7.1f}",
                flush=True,
            )
        ratio = [k / f for k, f in zip(stats["kernel"], stats["faiss"])]
        print(
            f"round {r} kernel / faiss: mean {ratio[0]:.2f}, p50 {ratio[1]:.2f}, "
            f"p99 {ratio[2]:.2f}  (load {os.getloadavg()[0]:.2f})",
            flush=True,
        )
    print(f"load at end {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
