"""Balanced k-means: partitions of near-equal size, so parallel builds and fan-out queries are
not held up by one oversized partition."""

from __future__ import annotations

import faiss
import numpy as np
from shardwalk.index._kernels import capacity_assign
from shardwalk.index.base import IndexMetric

__all__ = ["balanced_kmeans"]


def balanced_kmeans(
    vectors: np.ndarray,
    parts: int,
    *,
    metric: IndexMetric = "l2",
    slack: float = 0.05,
    iterations: int = 20,
    refinements: int = 2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ``vectors`` into ``parts`` partitions of at most ``ceil(n/parts * (1+slack))``.

    k-means (faiss, on a sample of up to 256 points per centroid) places the centroids; then a
    capacity-constrained assignment puts each point in its nearest partition that still has
    room, taking the points by distance, closest first, and the centroids are re-estimated from
    the balanced assignment ``refinements`` times.

    Returns
    -------
    centroids : (parts, dim) float32
    assignment : (n,) int32 in [0, parts)
    """
    n, dim = vectors.shape
    if parts <= 1 or n <= parts:
        return (
            np.ascontiguousarray(vectors[: max(parts, 1)].copy()),
            (np.arange(n) % max(parts, 1)).astype(np.int32),
        )
    km = faiss.Kmeans(
        dim,
        parts,
        niter=iterations,
        seed=seed,
        spherical=(metric == "ip"),
        verbose=False,
        min_points_per_centroid=1,
    )
    km.train(vectors)
    assert km.centroids is not None  # (set by train)
    centroids = km.centroids.copy()
    capacity = int(np.ceil(n / parts * (1.0 + slack)))
    assignment = np.zeros(n, dtype=np.int32)
    for _ in range(refinements + 1):
        index = faiss.IndexFlatL2(dim) if metric == "l2" else faiss.IndexFlatIP(dim)
        index.add(centroids)
        distances, nearest = index.search(vectors, parts)
        if metric == "ip":
            distances = -distances  # faiss IP: larger is closer
        order = np.argsort(distances, axis=None, kind="stable")
        assignment = capacity_assign(order, nearest.astype(np.int32), parts, capacity)
        for p in range(parts):
            members = vectors[assignment == p]
            if members.shape[0]:
                centroids[p] = members.mean(axis=0)
                if metric == "ip":
                    centroids[p] /= max(float(np.linalg.norm(centroids[p])), 1e-12)
    return np.ascontiguousarray(centroids, dtype=np.float32), assignment
