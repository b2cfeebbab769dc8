"""FastRP: the kernel pipeline against a dense numpy reference, and basic embedding quality."""

from __future__ import annotations

import numpy as np
import pytest
from shardwalk.walks.fastrp import fastrp
from shardwalk.walks.graph import CSRGraph
from shardwalk.walks.kernels.fastrp import sparse_projection_rows

from shardwalk.errors import InvalidArgumentError

from .conftest import dense_transition, random_graph


def normalize(x):
    nrm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, nrm, out=np.zeros_like(x), where=nrm > 0)


@pytest.mark.parametrize("weighted", [False, True])
def test_matches_dense_reference(weighted):
    g = random_graph(50, 200, seed=3, dangling=4, weighted=weighted)
    beta, weights, self_w, dim, density = -0.5, (0.5, 1.0, 2.0), 0.3, 16, 0.25
    emb = fastrp(g, dim=dim, iteration_weights=weights, normalization_strength=beta,
                 self_influence=self_w, density=density, seed=9)  # fmt: skip
    deg = np.zeros(50)
    for u in range(50):
        a, b = g.indptr[u], g.indptr[u + 1]
        deg[u] = (b - a) if g.weights is None else g.weights[a:b].sum(dtype=np.float64)
    R = sparse_projection_rows(50, dim, density, 9, np.maximum(deg, 1) ** beta).astype(np.float64)
    P = dense_transition(g, "drop")
    ref = self_w * normalize(R)
    cur = R
    for w in weights:
        cur = P @ cur
        ref = ref + w * normalize(cur)
    np.testing.assert_allclose(emb, normalize(ref), atol=2e-5)
    assert emb.dtype == np.float32 and emb.shape == (50, dim)


def test_projection_density():
    """Each entry is non-zero with probability ``density``: the count over N entries is
    Binomial(N, d); 5 sd allowed. Signs are balanced likewise."""
    R = sparse_projection_rows(2000, 64, 0.1, 1, np.zeros(0))
    nz = np.count_nonzero(R)
    N = R.size
    assert abs(nz - 0.1 * N) < 5 * np.sqrt(N * 0.1 * 0.9)
    assert abs((R > 0).sum() - nz / 2) < 5 * np.sqrt(nz / 4)
    assert np.allclose(np.abs(R[R != 0]), np.sqrt(10))


def test_communities_are_closer_than_strangers():
    """Two 12-cliques joined by one edge (undirected): cosine within a clique is higher than
    across, for every pair of nodes."""
    a = [(i, j) for i in range(12) for j in range(i + 1, 12)]
    b = [(i + 12, j + 12) for i, j in a]
    src, dst = zip(*(a + b + [(0, 12)]), strict=True)
    g = CSRGraph.from_edges(src, dst, directed=False)
    e = fastrp(g, dim=64, seed=1)
    sim = e @ e.T
    grp = np.arange(24) < 12
    same = grp[:, None] == grp[None, :]
    assert sim[same & ~np.eye(24, dtype=bool)].min() > sim[~same].max()
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(e, fastrp(g, dim=64, seed=1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, "dim must be an integer"),
        ({"iteration_weights": []}, "iteration_weights must be a non-empty"),
        ({"iteration_weights": [1.0, float("nan")]}, "finite numbers"),
        ({"density": 0.0}, "density must be finite and > 0"),
        ({"density": 2.0}, r"density must be in \(0, 1\]"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        fastrp(random_graph(10, 20, seed=1), **kwargs)
