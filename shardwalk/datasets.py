"""Seeded synthetic data: clustered vectors with tenants and attributes, and exact ground truth.

Scale for tests and benchmarks comes from here, never from a download. The same seed gives the
same data on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ClusteredData", "clustered_vectors"]


@dataclass(frozen=True)
class ClusteredData:
    """Base vectors, queries drawn from the same distribution, and per-vector metadata."""

    vectors: np.ndarray  # (n, dim) float32
    queries: np.ndarray  # (q, dim) float32
    ids: np.ndarray  # (n,) int64
    tenants: list[str]  # owner tenant per vector, Zipf-distributed sizes
    attributes: dict[str, list]  # "year" int, "score" float, "lang" string, "tags" list of str


def clustered_vectors(
    n: int,
    dim: int,
    *,
    queries: int = 100,
    clusters: int | None = None,
    tenants: int = 10,
    spread: float = 0.35,
    seed: int = 0,
    metadata: bool = True,
) -> ClusteredData:
    """Gaussian clusters of different sizes around random centres (a common shape of real
    embeddings, harder than uniform noise for partitioning and easier than it for graphs).

    Parameters
    ----------
    n, dim : int
        Number and dimension of the base vectors.
    queries : int
        Query vectors, drawn like the base vectors (not copies of them).
    clusters : int, optional
        Number of Gaussian clusters (default ``max(8, sqrt(n) / 4)``).
    tenants : int
        Owner tenants ``t0000``.. with Zipf(1.1)-distributed sizes.
    spread : float
        Standard deviation of each cluster relative to the spacing of the centres.
    seed : int
        Everything is derived from it.
    metadata : bool
        Also generate tenants and attributes (skip for large benchmark sets).
    """
    rng = np.random.default_rng(seed)
    clusters = clusters or max(8, int(np.sqrt(n) / 4))
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    weights = rng.pareto(1.5, clusters) + 1.0
    weights /= weights.sum()

    def draw(count: int) -> np.ndarray:
        which = rng.choice(clusters, size=count, p=weights)
        out = np.empty((count, dim), dtype=np.float32)
        step = 1 << 16
        for start in range(0, count, step):
            stop = min(count, start + step)
            noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
            out[start:stop] = centres[which[start:stop]] + spread * noise
        return out

    base = draw(n)
    query = draw(queries)
    ids = np.arange(n, dtype=np.int64)
    owner: list[str] = []
    attributes: dict[str, list] = {}
    if metadata:
        ranks = np.arange(1, tenants + 1, dtype=np.float64)
        p = ranks**-1.1
        owner_idx = rng.choice(tenants, size=n, p=p / p.sum())
        owner = [f"t{i:04d}" for i in owner_idx.tolist()]
        langs = np.array(["en", "de", "fr", "es", "ja"])
        tag_pool = np.array(["news", "sport", "tech", "art", "science", "travel"])
        tag_count = rng.integers(0, 3, size=n)
        tag_idx = rng.integers(0, tag_pool.size, size=(n, 2))
        attributes = {
            "year": rng.integers(1990, 2026, size=n).tolist(),
            "score": rng.random(n).round(4).tolist(),
            "lang": langs[rng.choice(langs.size, size=n, p=[0.5, 0.2, 0.15, 0.1, 0.05])].tolist(),
            "tags": [tag_pool[tag_idx[i, : tag_count[i]]].tolist() for i in range(n)],
        }
    return ClusteredData(vectors=base, queries=query, ids=ids, tenants=owner, attributes=attributes)
