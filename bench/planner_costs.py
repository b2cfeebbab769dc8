"""The filtered planner's cost constant (issue 26, item 3): what scoring one row of an exact
scan costs against one step of a filtered HNSW search's beam (``EXACT_ROWS_PER_EF`` in
shardwalk/index/planner.py is their ratio, about 40 here).

One HNSW graph (clustered 64-d rows, M=16, efConstruction=100), single queries: the planner's
exact scan over m random rows, and the graph searched with a filter admitting a share of the
rows at several ef. Prints per-row and per-ef times; a quick check, no results file.

    python bench/planner_costs.py [rows]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from shardwalk.index.hnsw import HNSWIndex
from shardwalk.index.planner import _exact

from shardwalk.datasets import clustered_vectors


def per_query(fn, queries: np.ndarray, reps: int = 200) -> float:
    fn(queries[0:1])
    t0 = time.perf_counter()
    for i in range(reps):
        fn(queries[i % len(queries)][None, :])
    return (time.perf_counter() - t0) / reps


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 60_000
    data = clustered_vectors(n, 64, queries=200, seed=0, metadata=False)
    index = HNSWIndex(dim=64, metric="l2", m=16, ef_construction=100, ef=64)
    index.add(np.arange(n), data.vectors)
    rng = np.random.default_rng(0)
    for m in (2000, 5000, 10000):
        rows = np.sort(rng.choice(n, m, replace=False))
        took = per_query(lambda q, rows=rows: _exact(index.store, q, rows, 10, False), data.queries)
        print(f"exact over {m} rows: {took * 1e6:.0f} us, {took / m * 1e9:.1f} ns a row")
    for share in (0.05, 0.1, 0.3):
        rows = np.sort(rng.choice(n, int(share * n), replace=False))
        bits = np.packbits(np.isin(np.arange(n), rows), bitorder="little")
        admitted = (index.admit(bits), rows)
        for ef in (64, 160, 320):
            took = per_query(
                lambda q, ef=ef, a=admitted: index.search(q, 10, ef=ef, admitted=a), data.queries
            )
            print(
                f"graph filter {share:.0%}, ef {ef}: {took * 1e6:.0f} us, {took / ef * 1e6:.2f} us an ef"
            )


if __name__ == "__main__":
    main()
