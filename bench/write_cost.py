"""The write path's own CPU under reads (issue 26): a 10-row upsert and a 10-row delete of a
sliding window on an hnsw collection like bench/streaming.py's (30K rows of its clustered data,
100 Zipf tenants, an integer ``y``), with the tenant and filter masks cached (a tenant-scoped
and a filtered search between writes keep them in use). Per pair: the calling thread's CPU
(``time.thread_time``: the group commit runs in the caller), and the process's (with the
background indexer's); and the spread of a single call's CPU (p50, p99, max: a call holds the
GIL for about that long, in one stretch, as nothing in it blocks). ``--profile`` prints
cProfile's top functions.

    python bench/write_cost.py --pairs 2000
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streaming import Shardwalk, clustered


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--window", type=int, default=30_000)
    p.add_argument("--pairs", type=int, default=2000)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--profile", action="store_true")
    p.add_argument("order", nargs="?", default="tottime", choices=("tottime", "cumulative"))
    args = p.parse_args()
    data = clustered(2 * args.window, 10, seed=0)
    sw = Shardwalk(data, "")
    for lo in range(0, args.window, 1000):
        sw.upsert(np.arange(lo, lo + 1000))
    sw.settle()
    q = data.queries[0]
    b, lo, hi = args.batch, 0, args.window

    calls: dict[str, list[float]] = {"upsert": [], "delete": []}  # each call's CPU

    def pairs(n: int) -> tuple[float, float]:
        nonlocal lo, hi
        up = de = 0.0
        for i in range(n):
            if i % 50 == 0:  # the masks stay in use, as under searches
                sw.search(q, "tenant")
                sw.search(q, "filter")
            t0 = time.thread_time()
            sw.upsert(np.arange(hi, hi + b))
            t1 = time.thread_time()
            sw.delete(np.arange(lo, lo + b))
            t2 = time.thread_time()
            calls["upsert"].append(t1 - t0)
            calls["delete"].append(t2 - t1)
            de += t2 - t1
            up += t1 - t0
            lo, hi = lo + b, hi + b
        return up, de

    pairs(200)  # warm
    sw.settle()
    calls["upsert"].clear()
    calls["delete"].clear()
    if args.profile:
        prof = cProfile.Profile(time.thread_time)  # this thread's CPU only
        prof.enable()
    c0, w0 = time.process_time(), time.perf_counter()
    up, de = pairs(args.pairs)
    c1, w1 = time.process_time(), time.perf_counter()
    if args.profile:
        prof.disable()
        pstats.Stats(prof).sort_stats(
            sys.argv[-1] if sys.argv[-1] in ("cumulative", "tottime") else "tottime"
        ).print_stats(45)
    n = args.pairs
    print(
        f"per pair of {b}-row writes: caller CPU {1e6 * (up + de) / n:.0f} us "
        f"(upsert {1e6 * up / n:.0f}, delete {1e6 * de / n:.0f}); process CPU "
        f"{1e6 * (c1 - c0) / n:.0f} us; wall {1e6 * (w1 - w0) / n:.0f} us"
    )
    for kind, cpu in calls.items():
        p50, p99 = np.percentile(cpu, [50, 99]) * 1e6
        print(
            f"{kind}: caller CPU a call p50 {p50:.0f} us, p99 {p99:.0f}, max {1e6 * max(cpu):.0f}"
        )
    sw.close()


if __name__ == "__main__":
    main()
