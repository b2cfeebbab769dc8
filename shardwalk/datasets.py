"""Seeded synthetic data: clustered vectors with tenants and attributes, and exact ground truth.

Scale for tests and benchmarks comes from here, never from a download. The same seed gives the
same data on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ClusteredData", "GraphData", "clustered_vectors", "planted_partition"]


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


@dataclass(frozen=True)
class GraphData:
    """Nodes with feature vectors and edges over the same ids (a collection plus a graph)."""

    ids: np.ndarray  # (n,) int64, 0..n-1
    vectors: np.ndarray  # (n, dim) float32
    edges: np.ndarray  # (E, 2) int64, each undirected edge once
    communities: np.ndarray  # (n,) int64 planted community of each node


def planted_partition(
    n: int,
    *,
    dim: int = 64,
    community_size: int = 50,
    latent_dim: int = 8,
    degree: float = 8.0,
    mixing: float = 0.1,
    noise: float = 1.5,
    seed: int = 0,
) -> GraphData:
    """A planted-partition graph whose nodes carry noisy features of their position: the
    shape of a citation graph (papers cite related papers of their field, and their text
    says roughly what they are about), generated with ground truth and no download.

    Each node has a latent position: its community's centre (N(0, 3^2) per coordinate of
    ``latent_dim``) plus N(0, 1). Each node draws ``1 + Poisson(degree / 2 - 1)`` edges; each
    goes, with probability ``1 - mixing``, to a node drawn among its ``2 * degree`` nearest
    (latent) members of its own community, else to a node drawn uniformly (undirected:
    average degree about ``degree``). Features are a fixed random linear map of the latent
    position into ``dim`` coordinates plus N(0, noise^2) per coordinate: similar features
    mean nearby positions only on average, so the graph knows more than the features.

    Parameters
    ----------
    n : int
        Nodes.
    dim, latent_dim : int
        Feature and latent dimensions.
    community_size : int
        Average community size (communities: ``max(1, n // community_size)``, uniform).
    degree : float
        Average degree (>= 2).
    mixing : float
        Share of edges between communities, in [0, 1].
    noise : float
        Feature noise (standard deviation per coordinate; the signal has about 3 sqrt(latent_dim)).
    seed : int
    """
    if n < 2 or degree < 2 or not 0.0 <= mixing <= 1.0 or noise < 0:
        raise ValueError(
            f"planted_partition needs n >= 2, degree >= 2, mixing in [0, 1], noise >= 0; got "
            f"n={n}, degree={degree}, mixing={mixing}, noise={noise}"
        )
    rng = np.random.default_rng(seed)
    count = max(1, n // community_size)
    community = rng.integers(0, count, size=n)
    centres = 3.0 * rng.standard_normal((count, latent_dim))
    latent = centres[community] + rng.standard_normal((n, latent_dim))
    draws = 1 + rng.poisson(max(degree / 2 - 1, 0.0), size=n)
    src = np.repeat(np.arange(n), draws)
    dst = np.empty(src.size, dtype=np.int64)
    near = 2 * round(degree)
    order = np.argsort(community, kind="stable")
    bounds = np.searchsorted(community[order], np.arange(count + 1))
    starts = np.concatenate([[0], np.cumsum(draws)])
    for c in range(count):
        members = order[bounds[c] : bounds[c + 1]]
        if members.size < 2:
            continue
        pos = latent[members]
        d = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(axis=2)
        np.fill_diagonal(d, np.inf)
        nearest = np.argsort(d, axis=1)[:, : min(near, members.size - 1)]
        per = draws[members]
        rows = np.repeat(np.arange(members.size), per)
        picks = rng.integers(0, nearest.shape[1], size=rows.size)
        # each member's edges are contiguous in dst, from starts[member]
        slots = np.repeat(starts[members], per) + (
            np.arange(rows.size) - np.repeat(np.cumsum(per) - per, per)
        )
        dst[slots] = members[nearest[rows, picks]]
    lone = np.isin(src, order[bounds[:-1][np.diff(bounds) < 2]]) if count else np.zeros(0, bool)
    random = (rng.random(src.size) < mixing) | lone
    dst[random] = rng.integers(0, n, size=int(random.sum()))
    keep = src != dst
    edges = np.unique(np.sort(np.stack([src[keep], dst[keep]], axis=1), axis=1), axis=0)
    projection = rng.standard_normal((latent_dim, dim)) / np.sqrt(latent_dim)
    vectors = latent @ projection + noise * rng.standard_normal((n, dim))
    return GraphData(
        ids=np.arange(n, dtype=np.int64),
        vectors=vectors.astype(np.float32),
        edges=edges.astype(np.int64),
        communities=community.astype(np.int64),
    )
