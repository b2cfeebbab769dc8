"""Recall@10 of a search whose scope matches every row (a filter, a tenant) against the same
search unfiltered, per index kind: a scoped search must never lose recall (issue 8).

    python bench/scope_recall.py     # 10K x 128 uniform vectors; mnist too when ../shared/data has it
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from shardwalk.index import exact_search

import shardwalk
from shardwalk import F

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-784-euclidean-test10k"
KINDS = {"hnsw": {}, "partitioned": {"partitions": 4}, "multitenant": {}}


def recall(result: shardwalk.SearchResult, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(
        np.mean([len(set(a) & set(b)) / k for a, b in zip(result.ids.tolist(), truth.tolist())])
    )


def run(name: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> None:
    n = base.shape[0]
    for kind, params in KINDS.items():
        with shardwalk.Engine.memory() as engine:
            col = engine.create_collection("c", dim=base.shape[1], index=kind, **params)
            col.upsert(np.arange(n), base, tenants=["all"] * n, attributes={"u": np.zeros(n)})
            plain = recall(col.search(queries, k=10), truth)
            where = recall(col.search(queries, k=10, where=F("u") >= 0), truth)
            tenant = recall(col.search(queries, k=10, tenant="all"), truth)
        print(
            f"{name:11} {kind:12} unfiltered {plain:.4f}  where-all {where:.4f}  tenant-all {tenant:.4f}"
        )


def main() -> None:
    rng = np.random.default_rng(0)
    base = rng.random((10_000, 128), dtype=np.float32)
    queries = rng.random((1000, 128), dtype=np.float32)
    run("uniform10k", base, queries, exact_search(base, queries, 10, "l2").ids)
    if MNIST.exists():
        truth = np.load(MNIST / "gt.npy")[:, :10]
        run("mnist", np.load(MNIST / "base.npy"), np.load(MNIST / "query.npy"), truth)


if __name__ == "__main__":
    main()
