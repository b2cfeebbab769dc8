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
    spread: float = 3.0,
    intrinsic_dim: int | None = None,
    separation: float = 1.0,
    decay: float = 1.0,
    noise_level: float = 0.05,
    seed: int = 0,
    metadata: bool = True,
) -> ClusteredData:
    """Clusters of different sizes, each an anisotropic Gaussian along its own random directions
    with a power-law spectrum, plus a little isotropic noise: the shape of real embeddings
    (many clusters, low effective dimension; recall curves of HNSW on it resemble SIFT's).
    Isotropic Gaussian clusters would be near-random data, unlike any real embedding and the
    worst case for every ANN index.

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
        Standard deviation along each of a cluster's directions (centres are N(0, 1) per
        coordinate, so about sqrt(2 dim) apart).
    intrinsic_dim : int, optional
        Directions each cluster spreads along (default: all ``dim``).
    separation : float
        Standard deviation of the cluster centres per coordinate.
    decay : float
        The j-th direction of a cluster has standard deviation ``spread * j**-decay``.
    noise_level : float
        Standard deviation of the full-dimensional noise added to every coordinate.
    seed : int
        Everything is derived from it.
    metadata : bool
        Also generate tenants and attributes (skip for large benchmark sets).
    """
    rng = np.random.default_rng(seed)
    clusters = clusters or max(8, int(np.sqrt(n) / 4))
    intrinsic = min(intrinsic_dim or dim, dim)
    centres = separation * rng.standard_normal((clusters, dim)).astype(np.float32)
    # each cluster spreads along its own random unit directions
    bases = rng.standard_normal((clusters, intrinsic, dim)).astype(np.float32)
    bases /= np.linalg.norm(bases, axis=2, keepdims=True)
    # variance along a cluster's directions decays as a power law (as in real embeddings'
    # spectra): a few strong directions, a long tail of weak ones
    scales = (np.arange(1, intrinsic + 1, dtype=np.float32) ** -decay).astype(np.float32)
    weights = rng.pareto(1.5, clusters) + 1.0
    weights /= weights.sum()

    def draw(count: int) -> np.ndarray:
        which = rng.choice(clusters, size=count, p=weights)
        out = np.empty((count, dim), dtype=np.float32)
        order = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[order], np.arange(clusters + 1))
        for c in range(clusters):
            rows = order[bounds[c] : bounds[c + 1]]
            if rows.size == 0:
                continue
            latent = rng.standard_normal((rows.size, intrinsic), dtype=np.float32) * scales
            noise = rng.standard_normal((rows.size, dim), dtype=np.float32)
            out[rows] = centres[c] + spread * (latent @ bases[c]) + noise_level * noise
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
